//! Key safety on a real Redis: whatever the group names, evicting one group
//! never touches another, and equal key values of different groups stay apart.
//! (The encoding's injectivity and hash tags are property-tested in
//! `cache-runtime`'s `key` module.)

#[path = "../../tests/support/mod.rs"]
mod support;

use proptest::prelude::*;
use support::RedisServer;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn evicting_a_group_never_touches_another_on_redis(
        g1 in "[^{}]{1,16}", g2 in "[^{}]{1,16}", key in any::<String>(),
    ) {
        prop_assume!(g1 != g2);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let server = RedisServer::start();
        runtime.block_on(async {
            let cache = server.cache().await;
            cache.set(&g1, &key, &1u8, None).await.unwrap();
            cache.set(&g2, &key, &2u8, None).await.unwrap();
            cache.evict_group(&g1).await.unwrap();
            assert_eq!(cache.get::<u8>(&g1, &key).await.unwrap(), None);
            assert_eq!(
                cache.get::<u8>(&g2, &key).await.unwrap(),
                Some(2),
                "{g2:?} lost its entry when {g1:?} was evicted"
            );
        });
    }
}
