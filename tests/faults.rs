//! Guarantees 5, 6 and 9 (docs/design.md) under injected faults: Redis down
//! at start-up, killed, hung, restarted, full, or holding contents it should
//! not.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::{eventually, RedisServer, ScratchDir};

const OP_TIMEOUT: Duration = Duration::from_millis(100);
const BODY: Duration = Duration::from_millis(10);
/// Scheduling slack on a loaded 2-core machine, on top of body + op timeout.
const SLACK: Duration = Duration::from_millis(250);

async fn fast_cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis(server.url())
        .op_timeout(OP_TIMEOUT)
        .breaker(3, Duration::from_millis(300))
        .eviction_retry(Duration::from_secs(10))
        .build()
        .await
        .expect("building never needs the server")
}

#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, u64>>,
    reads: AtomicUsize,
}

impl Db {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
    fn value(&self, id: u64) -> u64 {
        *self.rows.lock().unwrap().get(&id).unwrap_or(&id)
    }
}

#[cached(group = "faults", skip(cache, db), cache = cache, ttl = 60)]
async fn read(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.reads.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(BODY).await;
    db.value(id)
}

#[cache_evict(group = "faults", skip(cache, db), cache = cache)]
async fn update(cache: &Cache, db: &Db, id: u64) -> Result<(), String> {
    *db.rows.lock().unwrap().entry(id).or_insert(id) += 1000;
    Ok(())
}

#[cache_put(group = "faults", skip(cache, db), cache = cache)]
async fn put(cache: &Cache, db: &Db, id: u64) -> u64 {
    let mut rows = db.rows.lock().unwrap();
    let row = rows.entry(id).or_insert(id);
    *row += 1;
    *row
}

/// Runs a read and checks it returned the database's value within the body's
/// time plus the op timeout.
async fn timed_read(cache: &Cache, db: &Db, id: u64) -> Duration {
    let started = Instant::now();
    assert_eq!(
        read(cache, db, id).await,
        db.value(id),
        "the call returns its body's (or a fresh cached) value"
    );
    let took = started.elapsed();
    assert!(
        took <= BODY + OP_TIMEOUT + SLACK,
        "a call took {took:?}, more than body + op timeout"
    );
    took
}

/// Waits until reads of `id` hit again: the cache works.
async fn recovers(cache: &Cache, db: &Db, id: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    eventually(limit, "the cache to serve hits again", || async {
        read(cache, db, id).await;
        let before = db.reads();
        read(cache, db, id).await;
        db.reads() == before
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_with_redis_down_then_recovering() {
    let mut server = RedisServer::reserve();
    let cache = fast_cache(&server).await;
    let db = Db::default();
    for id in 0..10 {
        timed_read(&cache, &db, id).await;
    }
    assert_eq!(db.reads(), 10, "every call ran its body");
    server.restart();
    let took = recovers(&cache, &db, 1, Duration::from_secs(2)).await;
    eprintln!(
        "started with Redis down: recovered {took:?} after it answered; {:?}",
        cache.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_then_restarted() {
    let mut server = RedisServer::start();
    let cache = fast_cache(&server).await;
    let db = Db::default();
    timed_read(&cache, &db, 1).await;
    timed_read(&cache, &db, 1).await;
    assert_eq!(db.reads(), 1);

    server.kill();
    let mut slowest = Duration::ZERO;
    for id in 0..30 {
        slowest = slowest.max(timed_read(&cache, &db, id % 3).await);
    }
    let stats = cache.stats();
    eprintln!("Redis killed: slowest call {slowest:?}; {stats:?}");
    assert!(stats.errors >= 3, "failures are counted");
    assert!(stats.breaker_trips >= 1, "the breaker opened");
    assert!(stats.bypassed >= 1, "and calls skipped the dead Redis");

    server.restart();
    let took = recovers(&cache, &db, 1, Duration::from_secs(2)).await;
    eprintln!("Redis restarted: recovered {took:?} after it answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_costs_at_most_the_op_timeout_then_nothing() {
    let server = RedisServer::start();
    let cache = fast_cache(&server).await;
    let db = Db::default();
    timed_read(&cache, &db, 1).await;

    server.pause();
    let mut calls = Vec::new();
    for id in 0..20 {
        calls.push(timed_read(&cache, &db, id % 4).await);
    }
    let after_trip = &calls[5..];
    let worst_after_trip = after_trip.iter().max().copied().unwrap_or_default();
    eprintln!(
        "Redis hung: first calls {:?}, worst after the breaker opened {worst_after_trip:?}",
        &calls[..5]
    );
    assert!(
        cache.stats().timeouts >= 1,
        "timeouts are counted: {:?}",
        cache.stats()
    );
    assert!(
        worst_after_trip < BODY + OP_TIMEOUT,
        "with the breaker open a call does not wait for the op timeout"
    );

    server.resume();
    let took = recovers(&cache, &db, 1, Duration::from_secs(2)).await;
    eprintln!(
        "Redis resumed: recovered {took:?} after; {:?}",
        cache.stats()
    );
}

/// A request that makes three cached calls when Redis has just frozen pays
/// one op timeout, not three: the first timeout makes the server suspect,
/// and the next calls skip it while a probe asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_freeze_costs_a_request_one_op_timeout() {
    const OP_TIMEOUT: Duration = Duration::from_millis(500);
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .op_timeout(OP_TIMEOUT)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    for id in 1..=3 {
        read(&cache, &db, id).await;
    }
    // Hits, read after each fill on the connection: no fill's reply is
    // still out when Redis freezes.
    for id in 1..=3 {
        read(&cache, &db, id).await;
    }
    assert_eq!(db.reads(), 3);
    server.pause();
    let started = Instant::now();
    for id in 1..=3 {
        assert_eq!(read(&cache, &db, id).await, db.value(id));
    }
    let took = started.elapsed();
    server.resume();
    eprintln!(
        "three calls during a fresh freeze: {took:?}; {:?}",
        cache.stats()
    );
    assert!(
        took <= 3 * BODY + OP_TIMEOUT + SLACK,
        "three calls took {took:?}: more than their bodies and one op timeout"
    );
    assert_eq!(cache.stats().timeouts, 1, "{:?}", cache.stats());
    recovers(&cache, &db, 1, Duration::from_secs(5)).await;
}

/// Redis freezes while a process writes: its eviction cannot be sent (its
/// breaker is open) and waits for a retry. Once Redis answers, a process
/// that saw the outage never reads the value that write replaced (its
/// reads settle while the writer lands its evictions), and one that did not
/// see it reads it for at most a probe interval and a round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_freeze_a_write_made_during_it_is_read_by_no_process_that_saw_it() {
    let server = RedisServer::start();
    // An op timeout of 500 ms: reads settle for 550 ms after the outage,
    // room for the writer's probe and retry on a loaded machine (at 300 ms,
    // one stale read in a full CI run, with every suite beside it).
    const OP_TIMEOUT: Duration = Duration::from_millis(500);
    let cache = || async {
        Cache::builder()
            .redis(server.url())
            .op_timeout(OP_TIMEOUT)
            .build()
            .await
            .unwrap()
    };
    let (writer, saw, idle) = (cache().await, cache().await, cache().await);
    let db = Db::default();
    for cache in [&writer, &saw, &idle] {
        read(cache, &db, 1).await;
        read(cache, &db, 1).await;
    }
    assert_eq!(db.reads(), 1, "cached");

    server.pause();
    read(&writer, &db, 2).await; // times out: the breaker opens
    read(&saw, &db, 2).await;
    update(&writer, &db, 1).await.unwrap(); // its eviction waits
    assert_eq!(writer.stats().evictions_queued, 1);
    let new = db.value(1);
    server.resume();
    let resumed = Instant::now();

    let (mut stale_seen, mut last_stale_idle) = (0, None);
    while resumed.elapsed() < Duration::from_millis(1000) {
        if read(&saw, &db, 1).await != new {
            stale_seen += 1;
        }
        if read(&idle, &db, 1).await != new {
            last_stale_idle = Some(resumed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "after the freeze: {stale_seen} stale reads where the outage was seen; \
         the last stale read where it was not {last_stale_idle:?} after Redis answered"
    );
    assert_eq!(
        stale_seen, 0,
        "a process that saw the outage reads no old value"
    );
    let window = Duration::from_millis(50) + OP_TIMEOUT + SLACK;
    assert!(
        last_stale_idle.is_none_or(|at| at <= window),
        "stale until {last_stale_idle:?}, past a probe interval and a round trip"
    );
    assert_eq!(writer.stats().evictions_retried, 1);
    assert_eq!(read(&saw, &db, 1).await, new);
}

/// Callers that arrive together go out in batches, or wait behind the reads
/// of their key on the wire: each of them is still bounded by the op
/// timeout when Redis hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_bounds_every_batched_caller_by_the_op_timeout() {
    let server = RedisServer::start();
    let cache = fast_cache(&server).await;
    let db = Arc::new(Db::default());
    for id in 0..8 {
        read(&cache, &db, id).await;
    }

    server.pause();
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move { timed_read(&cache, &db, i % 8).await })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for call in calls {
        worst = worst.max(call.await.expect("a caller panicked"));
    }
    eprintln!("Redis hung: 64 concurrent callers of 8 keys, the slowest took {worst:?}");
    assert!(
        cache.stats().timeouts >= 1,
        "the hung reads time out: {:?}",
        cache.stats()
    );
    server.resume();
}

/// `delete`, `evict_group` and `set` that fail while Redis hangs return
/// their error, are retried as a failed `#[cache_evict]` is, and this
/// process reads past what they meant to change until then; once retried,
/// another process (a second cache on the server) sees no old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_programmatic_eviction_is_retried_and_read_past() {
    let server = RedisServer::start();
    let (cache, other) = (fast_cache(&server).await, fast_cache(&server).await);
    let old = "old".to_owned();
    for (group, key) in [("lists", "page-1"), ("lists", "page-2"), ("pages", "home")] {
        cache.set(group, key, &old, None).await.unwrap();
    }

    server.pause();
    assert!(
        cache.delete("lists", "page-1").await.is_err(),
        "the error is returned"
    );
    assert!(cache.evict_group("pages").await.is_err());
    assert!(cache.set("lists", "page-2", &"new", None).await.is_err());
    assert_eq!(cache.stats().evictions_queued, 3, "{:?}", cache.stats());
    for (group, key) in [("lists", "page-1"), ("lists", "page-2"), ("pages", "home")] {
        let read = cache.get::<String>(group, key).await.unwrap();
        assert_eq!(
            read, None,
            "{group}/{key} is read past while its eviction is pending"
        );
    }

    server.resume();
    eventually(
        Duration::from_secs(5),
        "the evictions to be retried",
        || async { cache.stats().evictions_retried >= 3 },
    )
    .await;
    for reader in [&cache, &other] {
        assert_eq!(reader.get::<String>("lists", "page-1").await.unwrap(), None);
        assert_eq!(reader.get::<String>("pages", "home").await.unwrap(), None);
        let replaced = reader.get::<String>("lists", "page-2").await.unwrap();
        assert_ne!(
            replaced.as_deref(),
            Some("old"),
            "the set's old value is gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_eviction_is_retried_in_the_background() {
    let server = RedisServer::start();
    let cache = fast_cache(&server).await;
    let db = Db::default();
    timed_read(&cache, &db, 1).await;

    server.pause();
    let started = Instant::now();
    update(&cache, &db, 1).await.unwrap();
    assert!(
        started.elapsed() <= OP_TIMEOUT + SLACK,
        "the eviction did not hold the call"
    );
    assert!(
        cache.stats().evictions_queued >= 1,
        "the failed eviction was queued"
    );
    server.resume();
    eventually(
        Duration::from_secs(5),
        "the eviction to be retried",
        || async { cache.stats().evictions_retried >= 1 },
    )
    .await;
    assert_eq!(
        read(&cache, &db, 1).await,
        1001,
        "the next read sees the write"
    );
    eprintln!("failed eviction: {:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_full_writes_fail_calls_succeed_reads_hit() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let cache = fast_cache(&server).await;
    let db = Db::default();
    timed_read(&cache, &db, 1).await;
    timed_read(&cache, &db, 2).await;
    assert_eq!(db.reads(), 2);

    server.make_full().await;

    let reads = db.reads();
    timed_read(&cache, &db, 1).await;
    assert_eq!(db.reads(), reads, "a cached entry still hits");
    timed_read(&cache, &db, 3).await;
    timed_read(&cache, &db, 3).await;
    assert_eq!(
        db.reads(),
        reads + 2,
        "a miss runs the body and cannot be stored"
    );
    update(&cache, &db, 2).await.unwrap();
    assert_eq!(
        read(&cache, &db, 2).await,
        1002,
        "an eviction still removes the entry"
    );
    assert_eq!(put(&cache, &db, 1).await, 2, "a put returns its value");
    assert!(
        !cache.has("faults", &1u64).await.unwrap(),
        "a full Redis stored nothing for it"
    );
    assert_eq!(
        read(&cache, &db, 1).await,
        2,
        "and the value it could not store is not served stale"
    );
    assert_eq!(
        cache.stats().breaker_trips,
        0,
        "a full Redis is up: the breaker stays closed"
    );
    eprintln!("Redis full: {:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_contents_are_misses_and_are_overwritten() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .max_value_size(64 * 1024)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    let mut conn = server.client().await;
    read(&cache, &db, 100).await; // creates the group's generation
    let gen: Vec<u8> = redis::cmd("GET")
        .arg("cache:{faults}:gen")
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry = |id: u64| format!("cache:{{faults}}:e:{id}");
    let set = |id: u64, value: Vec<u8>| {
        let mut cmd = redis::cmd("SET");
        cmd.arg(entry(id)).arg([gen.as_slice(), &value].concat());
        cmd
    };

    // a key of another Redis type
    let _: () = redis::cmd("HSET")
        .arg(entry(7))
        .arg("not")
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
    // garbage bytes, and a huge value
    let _: () = set(8, b"\x00\xff garbage".to_vec())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = set(9, vec![b'x'; 1 << 20])
        .query_async(&mut conn)
        .await
        .unwrap();
    // a truncated envelope of a good entry
    read(&cache, &db, 10).await;
    // Its fill has run once the cache's next command returns.
    assert!(cache.has("faults", &10u64).await.unwrap());
    let good: Vec<u8> = redis::cmd("GET")
        .arg(entry(10))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = set(10, good[gen.len()..good.len() - 1].to_vec())
        .query_async(&mut conn)
        .await
        .unwrap();

    for id in [7, 8, 9, 10] {
        let reads = db.reads();
        assert_eq!(read(&cache, &db, id).await, id, "entry {id} is a miss");
        assert_eq!(db.reads(), reads + 1);
        assert_eq!(read(&cache, &db, id).await, id);
        assert_eq!(
            db.reads(),
            reads + 1,
            "entry {id} was overwritten with a good one"
        );
    }

    // the group's generation key of another type
    let _: () = redis::cmd("DEL")
        .arg("cache:{faults}:gen")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("cache:{faults}:gen")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reads = db.reads();
    assert_eq!(read(&cache, &db, 11).await, 11);
    assert_eq!(read(&cache, &db, 11).await, 11);
    assert_eq!(db.reads(), reads + 1, "the group works again");

    let stats = cache.stats();
    eprintln!("untrusted contents: {stats:?}");
    assert!(stats.repaired >= 2, "keys of another type were repaired");
    assert!(
        stats.undecodable >= 3,
        "garbage, huge and truncated entries were counted"
    );
}

#[cached(group = "big", skip(cache, calls), cache = cache)]
async fn big(cache: &Cache, calls: &AtomicUsize, id: u64) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    "x".repeat(100 * 1024 + id as usize)
}

async fn values_over_the_maximum_size_are_not_stored(server_url: Option<String>) {
    let builder = Cache::builder().max_value_size(64 * 1024);
    let cache = match server_url {
        Some(url) => builder.redis(url).build().await.unwrap(),
        None => builder.build().await.unwrap(),
    };
    let calls = AtomicUsize::new(0);
    assert_eq!(big(&cache, &calls, 1).await.len(), 100 * 1024 + 1);
    assert_eq!(big(&cache, &calls, 1).await.len(), 100 * 1024 + 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the value was not stored");
    assert!(cache.stats().oversized >= 2);
}

#[tokio::test]
async fn oversized_values_are_not_stored_in_memory() {
    values_over_the_maximum_size_are_not_stored(None).await;
}

#[tokio::test]
async fn oversized_values_are_not_stored_on_redis() {
    let server = RedisServer::start();
    values_over_the_maximum_size_are_not_stored(Some(server.url())).await;
}

#[cache_put(group = "puts", skip(cache, hold), cache = cache)]
async fn held_put(cache: &Cache, hold: bool, id: u64) -> u64 {
    if hold {
        std::future::pending::<()>().await;
    }
    id * 2
}

/// A put dropped mid-body ends its write: the next put of the key, which
/// overlaps nothing, stores its value.
async fn a_dropped_put_leaves_no_writer_record(cache: Cache) {
    let dropped = tokio::spawn({
        let cache = cache.clone();
        async move { held_put(&cache, true, 5).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // the write is registered
    dropped.abort();
    assert!(dropped.await.is_err());
    eventually(
        Duration::from_secs(2),
        "a later put to store its value",
        || async {
            held_put(&cache, false, 5).await;
            cache.get::<u64>("puts", &5u64).await.unwrap() == Some(10)
        },
    )
    .await;
}

on_each_backend!(a_dropped_put_leaves_no_writer_record);

/// Redis restarts with its data (append-only file) while an eviction is
/// still pending retry: the stale entry is back, and reads must not serve it.
/// The background retrier may win the race to the restarted server (then the
/// stale entry is gone before the reads): the scenario is run again, up to
/// five times, until the reads meet the restored entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_eviction_keeps_reads_off_a_restored_stale_entry() {
    for _attempt in 0..5 {
        if reads_skip_a_restored_stale_entry().await {
            return;
        }
    }
    panic!("in 5 attempts, the retrier always evicted before the reads met the restored entry");
}

/// One run of the scenario; `false` when the retry won the race.
async fn reads_skip_a_restored_stale_entry() -> bool {
    let dir = std::env::temp_dir().join(format!(
        "cache-aof-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut server = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]);
    // The append-only file loses no write, so the restart check is off:
    // what keeps the reads right is the pending eviction alone.
    let cache = Cache::builder()
        .redis(server.url())
        .op_timeout(OP_TIMEOUT)
        .breaker(3, Duration::from_millis(300))
        .eviction_retry(Duration::from_secs(10))
        .check_restarts(false)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    assert_eq!(read(&cache, &db, 1).await, 1);
    assert_eq!(read(&cache, &db, 1).await, 1);
    assert_eq!(db.reads(), 1, "cached");

    server.kill();
    update(&cache, &db, 1).await.unwrap(); // the row is now 1001; the eviction fails
    assert_eq!(cache.stats().evictions_queued, 1);
    server.restart();
    let mut conn = server.client().await;
    let restored: bool = redis::cmd("EXISTS")
        .arg("cache:{faults}:e:1")
        .query_async(&mut conn)
        .await
        .unwrap();
    if !restored || cache.stats().evictions_retried > 0 {
        let _ = std::fs::remove_dir_all(&dir);
        return false; // the retry ran first
    }
    assert_eq!(
        read(&cache, &db, 1).await,
        1001,
        "a read while the eviction is pending skips the stale entry"
    );
    assert_eq!(
        cache.get::<u64>("faults", &1u64).await.unwrap(),
        None,
        "and so does the programmatic API"
    );

    eventually(
        Duration::from_secs(5),
        "the eviction to be retried",
        || async { cache.stats().evictions_retried == 1 },
    )
    .await;
    assert_eq!(read(&cache, &db, 1).await, 1001);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    true
}

/// Guarantee 9: Redis crashes and restarts from a snapshot taken before an
/// eviction, so the evicted entry is back (and the group's generation is the
/// one from before). Neither the process that evicted nor another one
/// serves it; with the restart check off, both would (the last part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_snapshot_serves_no_entry_from_before_it() {
    let dir = ScratchDir::new("snapshot");
    let mut server = RedisServer::start_with(&["--dir", &dir.arg()]);
    let writer = fast_cache(&server).await;
    let other = fast_cache(&server).await;
    let unchecked = Cache::builder()
        .redis(server.url())
        .op_timeout(OP_TIMEOUT)
        .check_restarts(false)
        .build()
        .await
        .unwrap();
    let db = Db::default();
    for cache in [&writer, &other, &unchecked] {
        assert_eq!(read(cache, &db, 1).await, 1);
    }
    assert_eq!(db.reads(), 1, "the value is cached");
    let mut admin = server.client().await;
    let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();

    update(&writer, &db, 1).await.unwrap(); // the row is now 1001
    assert_eq!(writer.stats().evictions_queued, 0, "the eviction landed");
    for cache in [&writer, &other] {
        assert_eq!(read(cache, &db, 1).await, 1001);
    }

    server.kill();
    server.restart(); // loads the snapshot
    let mut admin = server.client().await;
    let restored: bool = redis::cmd("EXISTS")
        .arg("cache:{faults}:e:1")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(restored, "the snapshot brought the evicted entry back");
    // First the cache without the check (a checked one's next write or miss
    // renews the group's generation, which would hide the entry from it).
    // Its first call may meet the broken connection, and run the body.
    let _ = read(&unchecked, &db, 1).await;
    assert_eq!(
        read(&unchecked, &db, 1).await,
        1,
        "with the check off, the restored entry is served (so the scenario tests it)"
    );
    for (cache, who) in [(&writer, "the writer"), (&other, "another process")] {
        let first = read(cache, &db, 1).await;
        assert_eq!(first, 1001, "{who} serves no entry from before the restart");
        assert_eq!(read(cache, &db, 1).await, 1001, "{who}, again");
    }
}

#[cached(group = "restored", skip(cache, gate), cache = cache, ttl = 60)]
async fn gated(cache: &Cache, gate: &tokio::sync::Semaphore, id: u64) -> u64 {
    let _pass = gate.acquire().await.unwrap();
    id
}

/// Why reads stalled after a restart from a snapshot: the snapshot kept a
/// read lease of a load that finished after it, so a miss of that key found
/// the lease held, by a caller that would never store, and waited out its
/// lock timeout. With the restart check, the lease belongs to a generation
/// of the old server and holds no one; without it (the control), the reader
/// waits the lock timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_restored_from_a_snapshot_holds_no_reader() {
    let dir = ScratchDir::new("lease");
    let mut server = RedisServer::start_with(&["--dir", &dir.arg()]);
    let loader = fast_cache(&server).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let load = {
        let (loader, gate) = (loader.clone(), gate.clone());
        tokio::spawn(async move { gated(&loader, &gate, 1).await })
    };
    let mut admin = server.client().await;
    eventually(Duration::from_secs(5), "the load to take its lease", || {
        let mut admin = admin.clone();
        async move {
            redis::cmd("EXISTS")
                .arg("cache:{restored}:l:1")
                .query_async::<bool>(&mut admin)
                .await
                .unwrap_or(false)
        }
    })
    .await;
    let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();
    gate.add_permits(100);
    assert_eq!(load.await.unwrap(), 1);
    eventually(
        Duration::from_secs(5),
        "the load to store its value",
        || {
            let mut admin = admin.clone();
            async move {
                redis::cmd("EXISTS")
                    .arg("cache:{restored}:e:1")
                    .query_async::<bool>(&mut admin)
                    .await
                    .unwrap_or(false)
            }
        },
    )
    .await;

    server.kill();
    server.restart(); // the lease is back, held by a load long finished
    let restored: (bool, bool) = redis::pipe()
        .exists("cache:{restored}:l:1")
        .exists("cache:{restored}:e:1")
        .query_async(&mut server.client().await)
        .await
        .unwrap();
    assert_eq!(
        restored,
        (true, false),
        "the snapshot holds the lease, not the value"
    );
    let reader = |check: bool| {
        Cache::builder()
            .redis(server.url())
            .lock_timeout(Duration::from_millis(500))
            .check_restarts(check)
            .build()
    };
    let (unchecked, checked) = (reader(false).await.unwrap(), reader(true).await.unwrap());
    support::first_contact(&unchecked).await;
    support::first_contact(&checked).await;
    assert_eq!(gated(&unchecked, &gate, 1).await, 1);
    assert_eq!(
        unchecked.stats().lock_timeouts,
        1,
        "without the check, the restored lease makes the reader wait it out"
    );
    assert_eq!(gated(&checked, &gate, 1).await, 1);
    assert_eq!(
        checked.stats().lock_timeouts,
        0,
        "with it, the lease holds no one"
    );
}

#[cached(group = "faults", skip(cache, server), cache = cache, ttl = 60)]
async fn stop_server_then_read(cache: &Cache, server: &RedisServer, id: u64) -> u64 {
    server.pause();
    id
}

/// A miss returns once its fill is sent, not when Redis answers it: a server
/// that stops answering while the body runs does not hold the caller for the
/// op timeout. The fill runs when the server is back, before the cache's
/// next command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_does_not_wait_for_its_fill() {
    let server = RedisServer::start();
    let cache = server.cache().await; // op timeout 2 s
    read(&cache, &Db::default(), 100).await; // the server holds the fill script
    let call = stop_server_then_read(&cache, &server, 6);
    let returned = tokio::time::timeout(Duration::from_secs(1), call).await;
    server.resume();
    assert_eq!(returned, Ok(6), "the miss waited for its fill's reply");
    assert!(
        cache.has("faults", &6u64).await.unwrap(),
        "the fill ran once the server was back"
    );
}

/// After Redis restarts, its scripts gone, the first fill of a group is
/// awaited again: it may have to load its script first, and would then go
/// behind reads sent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_first_fill_is_awaited_again() {
    let mut server = RedisServer::start();
    let cache = fast_cache(&server).await;
    let db = Db::default();
    read(&cache, &db, 1).await; // awaited: the first fill of the group
    read(&cache, &db, 2).await; // sent; its reply awaited by a task
    eventually(Duration::from_secs(2), "the second fill", || async {
        cache.stats().stores == 2
    })
    .await;
    server.kill();
    server.restart();
    eventually(Duration::from_secs(5), "the restarted server", || async {
        cache.has("faults", &1u64).await.is_ok()
    })
    .await;
    let stores = cache.stats().stores;
    read(&cache, &db, 3).await;
    assert_eq!(
        cache.stats().stores,
        stores + 1,
        "the first fill after the restart returned before Redis answered it"
    );
}

/// A caller dropped while its lookup (which takes the lease) is in flight
/// leaves no lease behind: the next caller does not wait for the lock timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_during_its_lookup_leaves_no_lease() {
    let server = RedisServer::start();
    let cache = server.cache().await; // op timeout 2 s, lock timeout 3 s
    let db = Arc::new(Db::default());
    let conn = server.client().await;
    read(&cache, &db, 100).await; // scripts loaded, group generation set

    server.pause();
    let dropped = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { read(&cache, &db, 5).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // the lookup is sent
    dropped.abort();
    assert!(dropped.await.is_err());
    server.resume(); // the lookup runs now and takes the lease

    eventually(
        Duration::from_secs(2),
        "the orphaned lease to be given back",
        || async {
            let lease: Option<String> = redis::cmd("HGET")
                .arg("cache:{faults}:l:5")
                .arg("t")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            lease.is_none()
        },
    )
    .await;
    let started = Instant::now();
    assert_eq!(read(&cache, &db, 5).await, 5);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the next caller waited {:?} for a lease nobody held",
        started.elapsed()
    );
    assert!(
        cache.has("faults", &5u64).await.unwrap(),
        "and stored its value"
    );
}

/// A put dropped while its write registration is in flight leaves no writer
/// record: later puts are not taken for overlapping ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_dropped_during_its_registration_leaves_no_writer_record() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let db = Arc::new(Db::default());
    let conn = server.client().await;
    put(&cache, &db, 100).await; // scripts loaded

    server.pause();
    let dropped = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { put(&cache, &db, 6).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // the registration is sent
    dropped.abort();
    assert!(dropped.await.is_err());
    server.resume();

    eventually(
        Duration::from_secs(2),
        "the orphaned writer record to be ended",
        || async {
            let exists: bool = redis::cmd("EXISTS")
                .arg("cache:{faults}:w:6")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            !exists
        },
    )
    .await;
    let version = put(&cache, &db, 6).await;
    assert_eq!(
        cache.get::<u64>("faults", &6u64).await.unwrap(),
        Some(version),
        "the next put stores its value"
    );
}
