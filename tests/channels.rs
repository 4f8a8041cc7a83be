//! The invalidation channel names the database: pub/sub channels span a
//! server's databases, and caches on other databases must not hear this one.

mod support;

use std::time::Duration;

use cache_runtime::Cache;
use futures_util::StreamExt;
use support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_announces_on_its_own_database_channel() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("cache:3:invalidations").await.unwrap();
    pubsub.subscribe("cache:4:invalidations").await.unwrap();
    let mut messages = pubsub.into_on_message();

    let on_db3 = Cache::builder()
        .redis(format!("{}/3", server.url()))
        .build()
        .await
        .unwrap();
    on_db3.evict_group("products").await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("an announcement within 5 s")
        .expect("the subscription is open");
    assert_eq!(heard.get_channel_name(), "cache:3:invalidations");
}
