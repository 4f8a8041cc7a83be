//! Bounded load-and-chaos runs: tasks read and write through the attributes
//! while Redis is killed and restarted twice, or, with two caches on it (two
//! processes), frozen twice (loopback only, about 5 s each, they stop by
//! themselves). At the end: no failed call, no read older than the last
//! write completed before it began (in either process), and the counters of
//! what went wrong.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::RedisServer;

const KEYS: u64 = 8;

use support::VersionedDb as Db;

#[cached(group = "chaos", skip(cache, db), cache = cache, ttl = 30)]
async fn read(cache: &Cache, db: &Db, id: u64) -> u64 {
    let version = db.read(id);
    tokio::time::sleep(Duration::from_millis(1)).await;
    version
}

#[cache_evict(group = "chaos", skip(cache, db), cache = cache)]
async fn update(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.bump(id)
}

#[cache_put(group = "chaos", skip(cache, db), cache = cache)]
async fn put(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.bump(id)
}

#[derive(Default)]
struct Tally {
    calls: AtomicUsize,
    failed: AtomicUsize,
    stale: AtomicUsize,
}

/// What happens to Redis during a run.
#[derive(Clone, Copy)]
enum Fault {
    /// Killed, then restarted empty.
    Killed,
    /// Frozen (`SIGSTOP`), then thawed with its data.
    Frozen,
}

async fn cache_on(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis(server.url())
        .op_timeout(Duration::from_millis(100))
        .breaker(3, Duration::from_millis(200))
        .eviction_retry(Duration::from_secs(30))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_survive_redis_being_killed_twice() {
    let mut server = RedisServer::start();
    let cache = cache_on(&server).await;
    run(&mut server, vec![cache], Fault::Killed).await;
}

/// Two processes write while Redis is frozen: their evictions wait, and no
/// read in either process returns a value a completed write replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_survive_redis_being_frozen_twice() {
    let mut server = RedisServer::start();
    let caches = vec![cache_on(&server).await, cache_on(&server).await];
    run(&mut server, caches, Fault::Frozen).await;
}

async fn run(server: &mut RedisServer, caches: Vec<Cache>, fault: Fault) {
    let db = Arc::new(Db::default());
    let completed: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let seed = fastrand::u64(..);

    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let cache = caches[worker as usize % caches.len()].clone();
            let (db, completed, tally, stop) =
                (db.clone(), completed.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed ^ worker);
                while !stop.load(Ordering::SeqCst) {
                    let id = rng.u64(0..KEYS);
                    let floor = completed[id as usize].load(Ordering::SeqCst);
                    let roll = rng.u8(0..100);
                    tally.calls.fetch_add(1, Ordering::SeqCst);
                    let call = async {
                        if roll < 70 {
                            let version = read(&cache, &db, id).await;
                            if version < floor {
                                eprintln!("seed {seed}: key {id} read {version} after {floor} was written");
                                tally.stale.fetch_add(1, Ordering::SeqCst);
                            }
                        } else {
                            let version = if roll < 85 { update(&cache, &db, id).await } else { put(&cache, &db, id).await };
                            completed[id as usize].fetch_max(version, Ordering::SeqCst);
                        }
                    };
                    // a call is failed if it does not return within its body's
                    // time plus a generous bound on the cache's own time
                    if tokio::time::timeout(Duration::from_secs(2), call).await.is_err() {
                        tally.failed.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(rng.u64(0..3))).await;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let at = |ms: u64| tokio::time::sleep_until((started + Duration::from_millis(ms)).into());
    for (down, up) in [(1000, 1500), (2500, 3000)] {
        at(down).await;
        match fault {
            Fault::Killed => server.kill(),
            Fault::Frozen => server.pause(),
        }
        at(up).await;
        match fault {
            Fault::Killed => server.restart(),
            Fault::Frozen => server.resume(),
        }
    }
    at(4500).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("a worker panicked");
    }

    let stats = caches[0].stats();
    eprintln!(
        "chaos: {} calls over {:?}, {} failed, {} stale; {stats:?}",
        tally.calls.load(Ordering::SeqCst),
        started.elapsed(),
        tally.failed.load(Ordering::SeqCst),
        tally.stale.load(Ordering::SeqCst),
    );
    assert!(
        tally.calls.load(Ordering::SeqCst) > 1000,
        "the run did real work"
    );
    assert_eq!(
        tally.failed.load(Ordering::SeqCst),
        0,
        "every call returned"
    );
    assert_eq!(
        tally.stale.load(Ordering::SeqCst),
        0,
        "no read older than a completed write"
    );
    assert!(
        stats.errors > 0 && stats.breaker_trips >= 2,
        "the outages were seen: {stats:?}"
    );
    for cache in &caches {
        for id in 0..KEYS {
            let version = read(cache, &db, id).await;
            assert_eq!(version, db.read(id), "key {id} is current after the run");
        }
    }
}
