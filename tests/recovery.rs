//! After an outage with writes during it: the failed evictions are retried
//! by one task per cache, as soon as Redis answers again, with a few log
//! lines rather than one per failure, and the task ends with the cache.

mod logs;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cache_put, cached, Cache};
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
        // Once reads have settled (a probe interval and an op timeout after
        // the breaker closed), a read stores and the next one hits.
        eventually(
            Duration::from_secs(2),
            "the cache to serve hits again",
            || async {
                read(&cache, &loads, 7).await;
                let loaded = loads.load(Ordering::SeqCst);
                read(&cache, &loads, 7).await;
                loads.load(Ordering::SeqCst) == loaded
            },
        )
        .await;
        println!("all 50 evictions retried {retried:?} after Redis answered again");

        // Dropped with an eviction pending (Redis down again): its retrier
        // ends with it, rather than retrying for the whole window.
        server.kill();
        remove(&cache, 8).await.unwrap();
        assert_eq!(cache.stats().evictions_queued, queued + 1);
        drop(cache);
        // Within the 10 s a lease release is retried for: on a loaded
        // machine a lookup may time out before its answer, and its lease
        // is then given back from a task that outlives the cache that long.
        eventually(
            Duration::from_secs(12),
            "the retrier (and any lease release) to end with its cache",
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

/// The data behind the recovery scenarios: key 1 is evicted and key 2 put
/// during the outage, so their values change while Redis is away.
#[derive(Default)]
struct Rows {
    values: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    loads: AtomicUsize,
}

impl Rows {
    fn value(&self, id: u64) -> u64 {
        *self.values.lock().unwrap().get(&id).unwrap_or(&id)
    }
    fn set(&self, id: u64, value: u64) {
        self.values.lock().unwrap().insert(id, value);
    }
}

#[cached(group = "rows", cache = cache, skip(cache, rows))]
async fn row(cache: &Cache, rows: &Rows, id: u64) -> u64 {
    rows.loads.fetch_add(1, Ordering::SeqCst);
    rows.value(id)
}

#[cache_evict(group = "rows", cache = cache, skip(cache, rows))]
async fn change_row(cache: &Cache, rows: &Rows, id: u64) -> Result<(), String> {
    rows.set(id, id + 1000);
    Ok(())
}

#[cache_put(group = "rows", cache = cache, skip(cache, rows))]
async fn put_row(cache: &Cache, rows: &Rows, id: u64) -> u64 {
    rows.set(id, id + 2000);
    id + 2000
}

/// How Redis goes away and comes back.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Killed, and started again on its port, empty.
    Restart,
    /// Frozen (`SIGSTOP`), then thawed (`SIGCONT`) with its data.
    Freeze,
}

/// With default settings (the op timeout aside), how long after Redis
/// answers again the cache serves its first hit, with a write and a put made
/// during the outage; no read ever returns a value older than them.
async fn recovery(outage: Outage) -> Duration {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let rows = Rows::default();
    for id in [1, 2, 3] {
        row(&cache, &rows, id).await;
        assert_eq!(row(&cache, &rows, id).await, id, "cached before the outage");
    }
    match outage {
        Outage::Restart => server.kill(),
        Outage::Freeze => server.pause(),
    }
    // Calls go on through the outage, and open the breaker.
    change_row(&cache, &rows, 1).await.unwrap();
    assert_eq!(put_row(&cache, &rows, 2).await, 2002);
    let outage_ends = Instant::now() + Duration::from_millis(300);
    while Instant::now() < outage_ends {
        assert_eq!(row(&cache, &rows, 1).await, 1001, "fresh during the outage");
        assert_eq!(row(&cache, &rows, 3).await, 3);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match outage {
        Outage::Restart => server.restart(), // returns once it answers
        Outage::Freeze => server.resume(),
    }
    let answering = Instant::now();
    loop {
        assert!(
            answering.elapsed() < Duration::from_secs(5),
            "{outage:?}: no hit 5 s after Redis answered; {:?}",
            cache.stats()
        );
        let loads = rows.loads.load(Ordering::SeqCst);
        assert_eq!(
            row(&cache, &rows, 1).await,
            1001,
            "the evicted key is fresh"
        );
        assert_eq!(row(&cache, &rows, 2).await, 2002, "the put key is fresh");
        if rows.loads.load(Ordering::SeqCst) == loads {
            return answering.elapsed(); // both were hits
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_return_soon_after_a_restarted_redis_answers() {
    let took = recovery(Outage::Restart).await;
    println!("restart: the first hit {took:?} after Redis answered");
    assert!(
        took <= Duration::from_secs(1),
        "hits came back after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_return_soon_after_a_frozen_redis_thaws() {
    let took = recovery(Outage::Freeze).await;
    println!("freeze: the first hit {took:?} after Redis answered");
    assert!(
        took <= Duration::from_secs(1),
        "hits came back after {took:?}"
    );
}

/// The distribution over ten runs of each, for docs/operations.md:
/// `cargo test --test recovery -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten outages of each kind, about a minute; run by hand for the figures"]
async fn recovery_over_ten_runs() {
    for outage in [Outage::Restart, Outage::Freeze] {
        let mut took = Vec::new();
        for _ in 0..10 {
            took.push(recovery(outage).await);
        }
        took.sort();
        println!(
            "{outage:?}: min {:?}, median {:?}, max {:?}",
            took[0], took[5], took[9]
        );
    }
}

/// A 10 s outage under load says what happened in a few lines, not one per
/// failed call: the breaker opening, the retries' rate-limited summaries,
/// and the breaker closing.
#[test]
fn a_ten_second_outage_under_load_logs_under_twenty_lines() {
    let said = Logged::new(
        &[
            tracing::Level::INFO,
            tracing::Level::WARN,
            tracing::Level::ERROR,
        ],
        None,
    );
    let calls = logs::run_traced(said.clone(), async {
        let mut server = RedisServer::start();
        let cache = Cache::builder().redis(server.url()).build().await.unwrap();
        let rows = Rows::default();
        server.kill();
        let outage_ends = Instant::now() + Duration::from_secs(10);
        let mut calls = 0u64;
        while Instant::now() < outage_ends {
            for id in 0..20 {
                row(&cache, &rows, id).await;
                if id % 5 == 0 {
                    change_row(&cache, &rows, id).await.unwrap();
                }
                calls += 1;
            }
            tokio::task::yield_now().await;
        }
        server.restart();
        eventually(
            Duration::from_secs(5),
            "the queued evictions retried",
            || async { cache.stats().evictions_retried == cache.stats().evictions_queued },
        )
        .await;
        calls
    });
    println!(
        "{calls} calls in a 10 s outage logged {} lines",
        said.count()
    );
    assert!(
        said.count() < 20,
        "{} lines for a 10 s outage",
        said.count()
    );
}
