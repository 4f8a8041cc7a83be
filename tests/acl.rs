//! ACL users (guarantee 10, docs/design.md, where it concerns rights). A
//! standard application user has no channel rights by default
//! on Redis 7 (`acl-pubsub-default resetchannels`): the cache needs none,
//! its writes publish nothing, and its local tier hears them through client
//! tracking. A user who may not turn tracking on gets a cache without the
//! tier, told why.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::{eventually, RedisServer};

#[cached(group = "acl", cache = cache, skip(cache, loads))]
async fn read(cache: &Cache, loads: &AtomicUsize, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id
}

#[cache_put(group = "acl", cache = cache, key = id)]
async fn write(cache: &Cache, id: u64, value: u64) -> u64 {
    value
}

#[cache_evict(group = "acl", cache = cache, skip(cache))]
async fn remove(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

/// A server with the application user `app` (no channel rights, and
/// `rules` besides); its URL for that user.
async fn server_with_app_user(rules: &[&str]) -> (RedisServer, String) {
    let server = RedisServer::start();
    let mut admin = server.client().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">pw", "~*", "+@all"][..])
        .arg(rules)
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let url = server.url().replacen("redis://", "redis://app:pw@", 1);
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_count_as_done_without_channel_rights() {
    let (_server, url) = server_with_app_user(&[]).await;
    let mut app = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let refused: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg("x")
        .arg("y")
        .query_async(&mut app)
        .await;
    assert!(
        refused.is_err(),
        "the user must lack channel rights for this test to mean anything"
    );

    let cache = Cache::builder().redis(url).build().await.unwrap();
    let loads = AtomicUsize::new(0);
    remove(&cache, 1).await.unwrap();
    assert_eq!(read(&cache, &loads, 1).await, 1);
    assert_eq!(read(&cache, &loads, 1).await, 1);
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "the eviction did not make the key skip the cache"
    );
    write(&cache, 1, 5).await;
    assert_eq!(read(&cache, &loads, 1).await, 5, "the put stored its value");
    cache
        .evict_group("acl")
        .await
        .expect("a group eviction succeeds");
    assert_eq!(read(&cache, &loads, 1).await, 1);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.evictions_queued), (0, 0), "{stats:?}");
}

/// Without channel rights the local tier still hears every write: client
/// tracking's pushes need none. Another process's eviction drops this
/// one's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_tier_hears_writes_without_channel_rights() {
    let (_server, url) = server_with_app_user(&[]).await;
    let tiered = Cache::builder()
        .redis(url.clone())
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&tiered).await;
    let other = Cache::builder().redis(url).build().await.unwrap();
    let loads = AtomicUsize::new(0);
    assert_eq!(read(&tiered, &loads, 9).await, 9);
    eventually(Duration::from_secs(2), "a local hit", || async {
        let hits = tiered.stats().local_hits;
        read(&tiered, &loads, 9).await;
        tiered.stats().local_hits > hits
    })
    .await;
    let before = loads.load(Ordering::SeqCst);
    remove(&other, 9).await.unwrap();
    eventually(
        Duration::from_secs(2),
        "the other process's eviction to drop the copy",
        || async {
            read(&tiered, &loads, 9).await;
            loads.load(Ordering::SeqCst) > before
        },
    )
    .await;
    assert!(
        support::local_tier_hears_all(&tiered).await,
        "the tier is live, through client tracking"
    );
}

/// A user who may not turn on client tracking: the tier could not hear
/// other writers, so it stays off. Every read goes to Redis and sees
/// another process's eviction at once, and `health()` names the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracking_rights_the_local_tier_stays_off() {
    let (_server, url) = server_with_app_user(&["-client|tracking"]).await;
    let tiered = Cache::builder()
        .redis(url.clone())
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let told = |health: &cache_runtime::Health| {
        health
            .problems
            .iter()
            .any(|problem| problem.contains("+client|tracking"))
    };
    eventually(
        Duration::from_secs(5),
        "health() to name the grant",
        || async { told(&tiered.health().await) },
    )
    .await;
    let other = Cache::builder().redis(url).build().await.unwrap();
    let loads = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(read(&tiered, &loads, 4).await, 4);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "Redis hits, not loads");
    remove(&other, 4).await.unwrap();
    assert_eq!(read(&tiered, &loads, 4).await, 4);
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "the other process's eviction is seen at once"
    );
    let stats = tiered.stats();
    assert_eq!((stats.local_hits, stats.hits), (0, 2), "{stats:?}");
    assert!(told(&tiered.health().await), "still told");
}
