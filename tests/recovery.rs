//! After an outage with writes during it: the failed evictions are retried
//! by one task per cache, as soon as Redis answers again, with a few log
//! lines rather than one per failure, and the task ends with the cache.

mod logs;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cached, Cache};
use logs::Logged;
use support::{eventually, RedisServer};

#[cached(group = "recovery", cache = cache, skip(cache, loads))]
async fn read(cache: &Cache, loads: &AtomicUsize, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id
}

#[cache_evict(group = "recovery", cache = cache, skip(cache))]
async fn remove(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[test]
fn evictions_queued_in_an_outage_are_retried_when_redis_returns() {
    // Warnings and errors.
    let loud = Logged::new(&[tracing::Level::WARN, tracing::Level::ERROR], None);
    logs::run_traced(loud.clone(), async {
        let mut server = RedisServer::start();
        let cache = Cache::builder()
            .redis(server.url())
            .op_timeout(Duration::from_millis(100))
            .breaker(3, Duration::from_millis(200))
            .build()
            .await
            .unwrap();
        let loads = AtomicUsize::new(0);
        for id in 0..50 {
            read(&cache, &loads, id).await;
        }
        let tasks_before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();

        server.kill();
        for id in 0..50 {
            remove(&cache, id).await.unwrap(); // each eviction fails and is queued
        }
        let queued = cache.stats().evictions_queued;
        assert_eq!(queued, 50);
        assert!(
            loud.count() <= 10,
            "50 failures logged as {} lines",
            loud.count()
        );

        server.restart();
        let returned = Instant::now();
        eventually(
            Duration::from_secs(10),
            "every queued eviction retried",
            || async { cache.stats().evictions_retried == queued },
        )
        .await;
        let retried = returned.elapsed();
        let loaded = loads.load(Ordering::SeqCst);
        read(&cache, &loads, 7).await; // a miss: loads and stores
        read(&cache, &loads, 7).await; // a hit
        assert_eq!(
            loads.load(Ordering::SeqCst),
            loaded + 1,
            "the cache serves hits again"
        );
        println!("all 50 evictions retried {retried:?} after Redis answered again");

        // Dropped with an eviction pending (Redis down again): its retrier
        // ends with it, rather than retrying for the whole window.
        server.kill();
        remove(&cache, 8).await.unwrap();
        assert_eq!(cache.stats().evictions_queued, queued + 1);
        drop(cache);
        eventually(
            Duration::from_secs(5),
            "the retrier to end with its cache",
            || async {
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
                    <= tasks_before
            },
        )
        .await;
    });
}
