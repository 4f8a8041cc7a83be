//! Fail-safe (README "When the database fails"; guarantee 11 of
//! docs/design.md): a value kept past its TTL stands in for a failing body,
//! in every process, at most one body call per key per throttle, and never
//! after a write. Each case runs with two caches (two processes' worth of
//! connections) on memory, one Redis server and a 3-master cluster.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{cache_evict, cached, Cache, LoadOptions};
use support::{eventually, RedisServer, ScratchDir};

/// A database that can go down or slow, counting its calls.
#[derive(Default)]
struct Db {
    value: AtomicU64,
    down: AtomicBool,
    slow: AtomicBool,
    calls: AtomicUsize,
    finished: AtomicUsize,
}

impl Db {
    fn new(value: u64) -> Arc<Self> {
        let db = Db::default();
        db.value.store(value, Ordering::SeqCst);
        Arc::new(db)
    }
    async fn load(&self) -> Result<u64, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err("connection refused".to_owned());
        }
        Ok(self.value.load(Ordering::SeqCst))
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

const TTL: Duration = Duration::from_millis(300);

#[cached(group = "fs", ttl = TTL, jitter = 0.0, fail_safe = 30,
         fail_safe_throttle = 30, skip(cache, db), cache = cache)]
async fn get(cache: &Cache, db: &Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.load().await
}

#[cached(group = "fs", ttl = TTL, jitter = 0.0, fail_safe = Duration::from_secs(1),
         skip(cache, db), cache = cache)]
async fn get_briefly_kept(cache: &Cache, db: &Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.load().await
}

#[cached(group = "fs", ttl = TTL, jitter = 0.0, fail_safe = 30,
         soft_timeout = Duration::from_millis(100), skip(cache, db), cache = &cache)]
async fn get_soft(cache: Cache, db: Arc<Db>, id: u64) -> Result<u64, String> {
    let _ = id;
    db.load().await
}

#[cached(group = "fs_bulk", ttl = TTL, jitter = 0.0, fail_safe = 30, each = ids,
         skip(cache, db), cache = cache)]
async fn get_many(cache: &Cache, db: &Db, ids: &[u64]) -> Result<HashMap<u64, u64>, String> {
    let value = db.load().await?;
    Ok(ids.iter().map(|id| (*id, value)).collect())
}

#[cached(group = "fs_items", ttl = 60, skip(cache), cache = cache)]
async fn item(cache: &Cache, id: u64) -> u64 {
    id * 10
}

/// A value that embeds an item, read through the cache: a dependency.
#[cached(group = "fs_lists", ttl = TTL, jitter = 0.0, fail_safe = 30,
         skip(cache, db), cache = cache)]
async fn list(cache: &Cache, db: &Db, id: u64) -> Result<u64, String> {
    let item = item(cache, id).await;
    Ok(item + db.load().await?)
}

#[cache_evict(group = "fs_items", skip(cache), cache = cache)]
async fn touch_item(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

/// `cache_err` makes "not found" an answer, stored like a value: not a
/// failure to stand in for.
#[cached(group = "fs_answers", ttl = TTL, jitter = 0.0, fail_safe = 30,
         cache_err = |e| e == "not found", skip(cache, gone), cache = cache)]
async fn find(cache: &Cache, gone: bool, id: u64) -> Result<u64, String> {
    if gone {
        return Err("not found".to_owned());
    }
    Ok(id)
}

#[cache_evict(group = "fs", skip(cache), cache = cache)]
async fn delete(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[cache_evict(group = "fs", all, skip(cache), cache = cache)]
async fn delete_all(cache: &Cache) -> Result<(), String> {
    Ok(())
}

/// Waits until the value at `id` has expired: a read runs the body.
async fn expire(cache: &Cache, db: &Db, id: u64) {
    let before = db.calls();
    tokio::time::sleep(TTL).await;
    eventually(Duration::from_secs(5), "the value to expire", || async {
        let _ = get(cache, db, id).await;
        db.calls() > before
    })
    .await;
}

/// A failing body returns the kept value, in the process that loaded it and
/// in another, and the failure is counted.
async fn the_kept_value_stands_in_in_another_process(a: Cache, b: Cache) {
    let db = Db::new(1);
    assert_eq!(get(&a, &db, 1).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(get(&b, &db, 1).await, Ok(1), "the kept value stood in");
    assert_eq!(db.calls(), 2, "the body ran once past the TTL");
    assert_eq!(b.stats().fail_safe_served, 1);
    // Served as fresh for the throttle, in every process: no body call.
    assert_eq!(get(&a, &db, 1).await, Ok(1));
    assert_eq!(get(&b, &db, 1).await, Ok(1));
    assert_eq!(db.calls(), 2, "the throttle holds");
}

/// Concurrent callers in two caches past the TTL run the failing body once.
async fn the_throttle_holds_across_processes(a: Cache, b: Cache) {
    let db = Db::new(1);
    assert_eq!(get(&a, &db, 2).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    let calls = (0..16).map(|i| {
        let (cache, db) = (if i % 2 == 0 { &a } else { &b }, &db);
        async move { get(cache, db, 2).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    assert!(
        answers.iter().all(|answer| *answer == Ok(1)),
        "every caller got the kept value: {answers:?}"
    );
    assert_eq!(
        db.calls(),
        2,
        "one body call past the TTL, not one per caller"
    );
}

/// An eviction, before or after the TTL, or a group eviction, leaves
/// nothing to fall back on: the failure is returned.
async fn a_write_leaves_nothing_to_fall_back_on(a: Cache, b: Cache) {
    let db = Db::new(1);
    // Evicted before the TTL.
    assert_eq!(get(&a, &db, 3).await, Ok(1));
    delete(&b, 3).await.unwrap();
    db.down.store(true, Ordering::SeqCst);
    assert_eq!(get(&a, &db, 3).await, Err("connection refused".to_owned()));

    // Evicted after the TTL, while kept.
    db.down.store(false, Ordering::SeqCst);
    assert_eq!(get(&a, &db, 4).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    delete(&b, 4).await.unwrap();
    assert_eq!(get(&a, &db, 4).await, Err("connection refused".to_owned()));

    // The group evicted while kept.
    db.down.store(false, Ordering::SeqCst);
    assert_eq!(get(&a, &db, 5).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    delete_all(&b).await.unwrap();
    assert_eq!(get(&a, &db, 5).await, Err("connection refused".to_owned()));

    // Evicted while the kept value stands in (within the throttle).
    db.down.store(false, Ordering::SeqCst);
    assert_eq!(get(&a, &db, 6).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    expire(&a, &db, 6).await;
    assert_eq!(a.stats().fail_safe_served, 1, "the expiring read stood in");
    assert_eq!(
        get(&b, &db, 6).await,
        Ok(1),
        "standing in, in the other process"
    );
    delete(&b, 6).await.unwrap();
    assert_eq!(get(&a, &db, 6).await, Err("connection refused".to_owned()));
}

/// A write to what a kept value depends on leaves it nothing to stand in
/// for; the value beside it, whose dependency was not written, stands in.
async fn a_write_to_a_dependency_leaves_nothing(a: Cache, b: Cache) {
    let db = Db::new(1);
    assert_eq!(list(&a, &db, 11).await, Ok(111));
    assert_eq!(list(&a, &db, 12).await, Ok(121));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    touch_item(&b, 11).await.unwrap();
    assert_eq!(
        list(&a, &db, 11).await,
        Err("connection refused".to_owned())
    );
    assert_eq!(list(&a, &db, 12).await, Ok(121), "untouched, it stands in");
}

/// A value is kept `fail_safe` past its TTL, and no longer.
async fn the_window_ends_at_ttl_plus_fail_safe(a: Cache, b: Cache) {
    let db = Db::new(1);
    assert_eq!(get_briefly_kept(&a, &db, 7).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(
        get_briefly_kept(&b, &db, 7).await,
        Ok(1),
        "within the window"
    );
    // The window (TTL + 1 s from the store) ends although the throttle
    // (30 s by default) would still serve it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get_briefly_kept(&b, &db, 7).await,
        Err("connection refused".to_owned()),
        "past TTL + fail_safe nothing is kept"
    );
}

/// A 1.5 s body returns the kept value at a 100 ms soft timeout, goes on,
/// and its value is a hit afterwards, in the other process too.
async fn a_slow_body_returns_the_kept_value_at_the_soft_timeout(a: Cache, b: Cache) {
    let db = Db::new(1);
    assert_eq!(get_soft(a.clone(), db.clone(), 8).await, Ok(1));
    db.slow.store(true, Ordering::SeqCst);
    db.value.store(2, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(
        get_soft(a.clone(), db.clone(), 8).await,
        Ok(1),
        "the kept value"
    );
    assert_eq!(
        db.finished.load(Ordering::SeqCst),
        1,
        "returned before the body finished"
    );
    assert_eq!(a.stats().soft_timeouts, 1);
    db.slow.store(false, Ordering::SeqCst);
    eventually(
        Duration::from_secs(5),
        "the body's value stored",
        || async { db.finished.load(Ordering::SeqCst) == 2 },
    )
    .await;
    eventually(Duration::from_secs(2), "the new value read", || async {
        get_soft(b.clone(), db.clone(), 8).await == Ok(2)
    })
    .await;
    assert_eq!(db.calls(), 2, "the new value is a hit");
}

/// Without a kept value there is nothing to stand in: the failure is
/// returned and nothing is stored.
async fn a_first_failure_is_returned(a: Cache, _b: Cache) {
    let db = Db::new(1);
    db.down.store(true, Ordering::SeqCst);
    assert_eq!(get(&a, &db, 9).await, Err("connection refused".to_owned()));
    assert_eq!(a.stats().fail_safe_served, 0);
    db.down.store(false, Ordering::SeqCst);
    assert_eq!(get(&a, &db, 9).await, Ok(1));
}

/// A bulk call's one failing body call falls back per element; a key with
/// no kept value leaves the failure to be returned.
async fn a_bulk_call_falls_back_per_element(a: Cache, b: Cache) {
    let db = Db::new(1);
    let both: HashMap<u64, u64> = [(1, 1), (2, 1)].into();
    assert_eq!(get_many(&a, &db, &[1, 2]).await, Ok(both.clone()));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(get_many(&b, &db, &[1, 2]).await, Ok(both.clone()));
    assert_eq!(db.calls(), 2, "one body call for both keys");
    assert_eq!(b.stats().fail_safe_served, 2, "each element stood in");
    assert_eq!(
        get_many(&a, &db, &[1, 2]).await,
        Ok(both),
        "fresh for the throttle"
    );
    assert_eq!(db.calls(), 2);
    assert_eq!(
        get_many(&a, &db, &[1, 2, 3]).await,
        Err("connection refused".to_owned()),
        "3 has nothing kept"
    );
}

/// `try_get_or_load` takes the same options: a kept value stands in for
/// the loader's failure, in the other cache too.
async fn the_programmatic_api_keeps_values_too(a: Cache, b: Cache) {
    let options = LoadOptions::new()
        .ttl(TTL)
        .fail_safe(Duration::from_secs(30));
    let db = Db::new(1);
    let load = || async { db.load().await };
    assert_eq!(
        a.try_get_or_load("fs_api", &1, options, load)
            .await
            .unwrap(),
        Ok(1)
    );
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(
        b.try_get_or_load("fs_api", &1, options, load)
            .await
            .unwrap(),
        Ok(1)
    );
    assert_eq!(db.calls(), 2);
    assert_eq!(b.stats().fail_safe_served, 1);
    // Without fail-safe the same failure is returned.
    let plain = LoadOptions::new().ttl(TTL);
    assert_eq!(
        b.try_get_or_load("fs_api", &2, plain, load).await.unwrap(),
        Err("connection refused".to_owned())
    );
}

/// An error that `cache_err` stores is an answer: the kept value does not
/// stand in for it.
async fn an_error_cached_as_an_answer_is_returned(a: Cache, b: Cache) {
    assert_eq!(find(&a, false, 1).await, Ok(1));
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(find(&b, true, 1).await, Err("not found".to_owned()));
    assert_eq!(
        find(&a, false, 1).await,
        Err("not found".to_owned()),
        "stored"
    );
    assert_eq!(b.stats().fail_safe_served, 0);
}

with_two_caches!(
    an_error_cached_as_an_answer_is_returned,
    the_programmatic_api_keeps_values_too,
    a_bulk_call_falls_back_per_element,
    the_kept_value_stands_in_in_another_process,
    the_throttle_holds_across_processes,
    a_write_leaves_nothing_to_fall_back_on,
    a_write_to_a_dependency_leaves_nothing,
    the_window_ends_at_ttl_plus_fail_safe,
    a_slow_body_returns_the_kept_value_at_the_soft_timeout,
    a_first_failure_is_returned,
);

#[cached(group = "fs_default", ttl = TTL, jitter = 0.0, skip(cache, db), cache = cache)]
async fn get_by_default(cache: &Cache, db: &Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.load().await
}

/// The builder's fail-safe is every `#[cached]`'s default; off unless set.
#[tokio::test]
async fn the_builder_sets_a_cache_wide_default() {
    let on = Cache::builder()
        .fail_safe(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let off = Cache::in_memory();
    let db = Db::new(1);
    assert_eq!(get_by_default(&on, &db, 1).await, Ok(1));
    assert_eq!(get_by_default(&off, &db, 1).await, Ok(1));
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(get_by_default(&on, &db, 1).await, Ok(1), "kept by default");
    assert_eq!(
        get_by_default(&off, &db, 1).await,
        Err("connection refused".to_owned()),
        "off unless set"
    );
}

/// Redis restarts from a snapshot taken before an eviction, so the evicted
/// value is back, past its TTL: it stands in for nothing (the restart
/// epoch makes it unknown). Without the restart check it would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_back_from_an_older_snapshot_stands_in_for_nothing() {
    let dir = ScratchDir::new("fail-safe");
    let mut server = RedisServer::start_with(&["--dir", &dir.arg()]);
    let checked = server.cache().await;
    let unchecked = Cache::builder()
        .redis(server.url())
        .op_timeout(Duration::from_secs(2))
        .check_restarts(false)
        .build()
        .await
        .unwrap();
    let db = Db::new(1);
    assert_eq!(get(&checked, &db, 30).await, Ok(1));
    let mut admin = server.client().await;
    let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();
    delete(&checked, 30).await.unwrap();

    server.kill();
    server.restart(); // loads the snapshot: the evicted value is back
    db.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    // First the cache without the check (a checked read renews the group's
    // generation, which would hide the value from it). The first call of
    // each may meet the broken connection, and run the body.
    let _ = get(&unchecked, &db, 30).await;
    assert_eq!(
        get(&unchecked, &db, 30).await,
        Ok(1),
        "with the check off, the restored value stands in (so the scenario tests it)"
    );
    let _ = get(&checked, &db, 30).await;
    assert_eq!(
        get(&checked, &db, 30).await,
        Err("connection refused".to_owned()),
        "the restored value stands in for nothing"
    );
}
