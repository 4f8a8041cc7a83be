//! Guarantees 4 (stampede) and 6 (nothing left held), docs/design.md:
//! single-flight in one
//! process, one load across processes, bounded waits, early refresh.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{cached, Cache};
use support::RedisServer;
use tokio::sync::Notify;

/// Counts body runs and the most that ever ran at once.
#[derive(Default)]
struct Runs {
    total: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl Runs {
    async fn run(&self, took: Duration) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(took).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

#[cached(group = "cold", skip(cache, runs), cache = cache)]
async fn cold(cache: &Cache, runs: &Runs, id: u64) -> u64 {
    runs.run(Duration::from_millis(50)).await;
    id * 10
}

async fn five_hundred_tasks_on_a_cold_key_run_the_body_once(cache: Cache) {
    let runs = Arc::new(Runs::default());
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move { cold(&cache, &runs, 7).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 70, "every task gets the value");
    }
    assert_eq!(runs.total(), 1, "500 concurrent misses ran the body once");
}

async fn different_keys_load_in_parallel(cache: Cache) {
    let runs = Arc::new(Runs::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|id| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move { cold(&cache, &runs, id).await })
        })
        .collect();
    for (id, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), id as u64 * 10);
    }
    assert_eq!(runs.total(), 50);
    // 50 loads of 50 ms one after the other would take 2.5 s.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "50 misses on 50 keys were serialised: {:?}",
        started.elapsed()
    );
}

/// A body that panics or is abandoned on its first run and succeeds after.
#[derive(Default)]
struct Flaky {
    calls: AtomicUsize,
    holding: Notify,
}

#[cached(group = "flaky", skip(cache, flaky, panic), cache = cache, lock_timeout = 10)]
async fn flaky_load(cache: &Cache, flaky: &Flaky, panic: bool, id: u64) -> u64 {
    if flaky.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        flaky.holding.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if panic {
            panic!("the body failed");
        }
        std::future::pending::<()>().await;
    }
    id
}

/// The first caller takes the lease and then panics or is dropped; the next
/// caller must not wait for the 10 s lock timeout.
async fn abandoned_lease(cache: Cache, panic: bool) {
    let flaky = Arc::new(Flaky::default());
    let first = tokio::spawn({
        let (cache, flaky) = (cache.clone(), flaky.clone());
        async move { flaky_load(&cache, &flaky, panic, 7).await }
    });
    flaky.holding.notified().await;
    let second = tokio::spawn({
        let (cache, flaky) = (cache.clone(), flaky.clone());
        async move { flaky_load(&cache, &flaky, panic, 7).await }
    });
    if !panic {
        tokio::time::sleep(Duration::from_millis(20)).await; // the second caller is waiting
        first.abort();
    }
    let started = Instant::now();
    let value = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second caller waited for the abandoned lease (lock timeout is 10 s)")
        .unwrap();
    assert_eq!(value, 7);
    assert!(
        first.await.is_err(),
        "the first caller panicked or was cancelled"
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        cache.get::<u64>("flaky", &7u64).await.unwrap(),
        Some(7),
        "the second caller stored its value"
    );
    eprintln!(
        "next caller got its value {:?} after the abandonment",
        started.elapsed()
    );
}

async fn a_panicking_body_leaves_no_lease(cache: Cache) {
    abandoned_lease(cache, true).await;
}

async fn a_dropped_caller_leaves_no_lease(cache: Cache) {
    abandoned_lease(cache, false).await;
}

#[cached(group = "hot", skip(cache, runs), cache = cache, ttl = 1, early = 1.0, jitter = 0.0)]
async fn hot(cache: &Cache, runs: &Runs, id: u64) -> u64 {
    runs.run(Duration::from_millis(100)).await;
    id
}

async fn early_refresh_keeps_body_runs_at_two_or_fewer(cache: Cache) {
    let runs = Arc::new(Runs::default());
    let until = Instant::now() + Duration::from_millis(3500);
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move {
                let mut waited = 0;
                while Instant::now() < until {
                    let started = Instant::now();
                    assert_eq!(hot(&cache, &runs, 1).await, 1);
                    // only a caller that ran the 100 ms body itself, or
                    // waited for another's, takes this long
                    if started.elapsed() >= Duration::from_millis(90) {
                        waited += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                waited
            })
        })
        .collect();
    let mut slow_calls = 0;
    for reader in readers {
        slow_calls += reader.await.unwrap();
    }
    let (total, most) = (runs.total(), runs.most_at_once.load(Ordering::SeqCst));
    eprintln!("early refresh: {total} body runs over 3.5 s of a 1 s TTL, at most {most} at once, {slow_calls} slow calls");
    assert!(
        total >= 3,
        "the value was refreshed as it neared expiry ({total} runs)"
    );
    assert!(most <= 2, "at most 2 body runs at once, saw {most}");
    // Without early refresh the entry expires under 20 readers: about 20 of
    // them wait for each reload. With it, the caller that refreshes is the
    // only slow one (plus the 20 of the cold start).
    assert!(
        slow_calls <= 20 + 2 * total,
        "{slow_calls} slow calls for {total} loads: readers waited for expired entries"
    );
}

#[cached(group = "swr", skip(cache, runs), cache = &cache, ttl = Duration::from_millis(300),
         stale_while_revalidate = 10, jitter = 0.0)]
async fn revalidated(cache: Cache, runs: Arc<Runs>, id: u64) -> u64 {
    runs.run(Duration::from_millis(250)).await;
    id
}

async fn stale_while_revalidate_never_makes_a_caller_wait(cache: Cache) {
    let runs = Arc::new(Runs::default());
    revalidated(cache.clone(), runs.clone(), 1).await; // the cold load
    let until = Instant::now() + Duration::from_millis(2000);
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                while Instant::now() < until {
                    let started = Instant::now();
                    assert_eq!(revalidated(cache.clone(), runs.clone(), 1).await, 1);
                    slowest = slowest.max(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                slowest
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for reader in readers {
        slowest = slowest.max(reader.await.unwrap());
    }
    let (total, most) = (runs.total(), runs.most_at_once.load(Ordering::SeqCst));
    eprintln!("stale-while-revalidate: {total} body runs, at most {most} at once, slowest call {slowest:?}");
    assert!(
        total >= 3,
        "the value was revalidated in the background ({total} runs)"
    );
    assert_eq!(most, 1, "one refresher at a time");
    assert!(
        slowest < Duration::from_millis(150),
        "a caller waited for a 250 ms body: {slowest:?}"
    );
}

#[cached(group = "failing", skip(cache, runs), cache = cache)]
async fn failing(cache: &Cache, runs: &Runs, id: u64) -> Result<u64, String> {
    runs.run(Duration::from_millis(20)).await;
    Err(format!("row {id} is unavailable"))
}

/// A failed load is not shared: its waiters each make a fresh call (after
/// following at most two flights), get their own `Err`, and nothing is cached.
async fn errors_reach_every_waiter_and_are_not_cached(cache: Cache) {
    let runs = Arc::new(Runs::default());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move { failing(&cache, &runs, 3).await })
        })
        .collect();
    for task in tasks {
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a waiter of a failed load hung")
            .unwrap();
        assert_eq!(result, Err("row 3 is unavailable".to_owned()));
    }
    assert!(
        (1..=50).contains(&runs.total()),
        "{} body runs",
        runs.total()
    );
    assert!(
        !cache.has("failing", &3u64).await.unwrap(),
        "an Err is never cached"
    );
}

on_each_backend!(
    five_hundred_tasks_on_a_cold_key_run_the_body_once,
    errors_reach_every_waiter_and_are_not_cached,
    different_keys_load_in_parallel,
    a_panicking_body_leaves_no_lease,
    a_dropped_caller_leaves_no_lease,
    early_refresh_keeps_body_runs_at_two_or_fewer,
    stale_while_revalidate_never_makes_a_caller_wait,
);

// ---- several processes ----------------------------------------------------

const WORKER_URL: &str = "STAMPEDE_WORKER_URL";
const WORKER_BODY_MS: &str = "STAMPEDE_WORKER_BODY_MS";

#[cached(group = "shared", skip(cache, conn, body_ms), cache = cache, lock_timeout = Duration::from_millis(200))]
async fn shared_load(
    cache: &Cache,
    conn: &::redis::aio::MultiplexedConnection,
    body_ms: u64,
    id: u64,
) -> u64 {
    let _: i64 = ::redis::cmd("INCR")
        .arg("test:body_runs")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(body_ms)).await;
    id + 1
}

/// One worker process: waits for the go signal, then 100 tasks read one cold
/// key. Run by `several_processes_load_a_cold_key_once`, not on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process spawned by the multi-process tests"]
async fn stampede_worker() {
    let url = std::env::var(WORKER_URL).expect("run by the multi-process tests");
    let body_ms: u64 = std::env::var(WORKER_BODY_MS).unwrap().parse().unwrap();
    let cache = Cache::builder().redis(url.as_str()).build().await.unwrap();
    let conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let go = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: bool = ::redis::cmd("EXISTS")
            .arg("test:go")
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        if ready {
            break;
        }
        assert!(Instant::now() < go, "no go signal within 20 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, conn) = (cache.clone(), conn.clone());
            tokio::spawn(async move { shared_load(&cache, &conn, body_ms, 41).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 42);
    }
}

/// Starts 4 worker processes on one cold key and returns how many times the
/// body ran across all of them and how long the slowest process took.
async fn run_workers(server: &RedisServer, body_ms: u64) -> (i64, Duration) {
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "stampede_worker",
                    "--ignored",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(WORKER_URL, server.url())
                .env(WORKER_BODY_MS, body_ms.to_string())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut conn = server.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await; // let the workers connect
    let _: () = ::redis::cmd("SET")
        .arg("test:go")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    for worker in &mut workers {
        loop {
            if let Some(status) = worker.try_wait().unwrap() {
                assert!(status.success(), "a worker failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                for w in &mut workers {
                    let _ = w.kill();
                }
                panic!("a worker hung for 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let runs: i64 = ::redis::cmd("GET")
        .arg("test:body_runs")
        .query_async(&mut conn)
        .await
        .unwrap();
    (runs, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_load_a_cold_key_once() {
    let server = RedisServer::start();
    let (runs, took) = run_workers(&server, 50).await;
    eprintln!("4 processes x 100 tasks, 50 ms body: {runs} body run(s), {took:?}");
    assert_eq!(
        runs, 1,
        "400 concurrent misses in 4 processes ran the body once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_lock_timeout_runs_a_bounded_number_of_times() {
    let server = RedisServer::start();
    // A 700 ms body with a 200 ms lock timeout: the first caller holds the
    // lease; past the timeout one waiter per process loads without it; their
    // followers wake after that, when the holder has stored: 1 + 4 at most.
    let (runs, took) = run_workers(&server, 700).await;
    eprintln!(
        "4 processes x 100 tasks, 700 ms body, 200 ms lock timeout: {runs} body runs, {took:?}"
    );
    assert!((1..=5).contains(&runs), "{runs} body runs");
}

#[cached(group = "jittered", skip(cache), cache = cache, ttl = 100)]
async fn jittered(cache: &Cache, id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_are_jittered_by_default() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.client().await;
    let mut ttls = Vec::new();
    for id in 0..50u64 {
        jittered(&cache, id).await;
        // A miss returns once its fill is sent; the cache's next command on
        // the connection returns after Redis has run it.
        assert!(cache.has("jittered", &id).await.unwrap());
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(format!("cache:{{jittered}}:e:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        ttls.push(ttl);
    }
    let (min, max) = (*ttls.iter().min().unwrap(), *ttls.iter().max().unwrap());
    eprintln!(
        "50 entries with ttl = 100 s and the default jitter 0.1: PTTL from {min} to {max} ms"
    );
    assert!(
        min >= 89_000 && max <= 100_000,
        "TTLs within 10 % below 100 s: {min}..{max}"
    );
    assert!(
        max - min > 1_000,
        "TTLs written together are spread out: {min}..{max}"
    );
}
