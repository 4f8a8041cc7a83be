//! Bulk calls, cached per element (`each = arg`), on every backend.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::{Gate, VersionedDb};

/// Records the keys each body call was given, and counts loads per key.
#[derive(Default)]
struct Db {
    calls: Mutex<Vec<Vec<u64>>>,
    loads: Mutex<HashMap<u64, usize>>,
    /// How long a body takes.
    slow: Mutex<Duration>,
}

impl Db {
    async fn load(&self, ids: &[u64]) -> HashMap<u64, u64> {
        self.calls.lock().unwrap().push(ids.to_vec());
        for id in ids {
            *self.loads.lock().unwrap().entry(*id).or_default() += 1;
        }
        let slow = *self.slow.lock().unwrap();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        // Ids from 100 up do not exist.
        ids.iter()
            .filter(|id| **id < 100)
            .map(|id| (*id, id * 10))
            .collect()
    }
    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().unwrap().clone()
    }
}

#[cached(group = "products", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn get_products(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, u64> {
    db.load(ids).await
}

#[cached(group = "products", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn try_get_products(
    cache: &Cache,
    db: &Db,
    ids: Vec<u64>,
    fail: bool,
) -> Result<BTreeMap<u64, u64>, String> {
    if fail {
        return Err("the database is down".into());
    }
    Ok(db.load(&ids).await.into_iter().collect())
}

#[cached(group = "products", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn get_product_set(cache: &Cache, db: &Db, ids: BTreeSet<u64>) -> HashMap<u64, u64> {
    db.load(&ids.into_iter().collect::<Vec<_>>()).await
}

/// Reprices products: the new values are written through, one entry each.
#[cache_put(group = "products", ttl = 60, each = ids, skip(cache), cache = cache)]
async fn reprice(cache: &Cache, ids: Vec<u64>, fail: bool) -> Result<HashMap<u64, u64>, String> {
    if fail {
        return Err("the database refused".into());
    }
    // Ids from 100 up do not exist.
    Ok(ids
        .iter()
        .filter(|id| **id < 100)
        .map(|id| (*id, id * 11))
        .collect())
}

/// Remembers the ids that do not exist too.
#[cached(group = "products", ttl = 60, each = ids, skip(cache, db), cache = cache, cache_none)]
async fn find_products(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, u64> {
    db.load(ids).await
}

#[cached(group = "products", ttl = 60, skip(cache, db), cache = cache, cache_none)]
async fn find_product(cache: &Cache, db: &Db, id: u64) -> Option<u64> {
    db.load(&[id]).await.get(&id).copied()
}

/// Restocks products, and remembers the ids that do not exist.
#[cache_put(group = "products", ttl = 60, each = ids, skip(cache), cache = cache, cache_none)]
async fn restock(cache: &Cache, ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.iter()
        .filter(|id| **id < 100)
        .map(|id| (*id, id * 12))
        .collect()
}

#[cached(group = "products", ttl = 60, skip(cache, gate, runs), cache = cache)]
async fn slow_product(cache: &Cache, gate: &Gate, runs: &AtomicUsize, id: u64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    gate.pass().await;
    id * 10
}

#[cached(group = "products", ttl = 60, skip(cache), cache = cache)]
async fn get_product(cache: &Cache, id: u64) -> u64 {
    id * 10
}

#[cache_evict(group = "products", each = ids, skip(cache), cache = cache)]
async fn delete_products(cache: &Cache, ids: Vec<u64>) -> Result<(), String> {
    let _ = ids;
    Ok(())
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_slice(cache: &Cache, ids: &[u64], reason: &str) {
    let _ = (ids, reason);
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_vec_ref(cache: &Cache, ids: &Vec<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_hash_set(cache: &Cache, ids: HashSet<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_btree_set(cache: &Cache, ids: BTreeSet<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, skip(cache), cache = cache)]
async fn failing_delete(cache: &Cache, ids: Vec<u64>) -> Result<(), String> {
    let _ = ids;
    Err("the database refused".into())
}

async fn cached_ids(cache: &Cache) -> Vec<u64> {
    let mut out = Vec::new();
    for id in 1..=9u64 {
        if cache.has("products", &id).await.unwrap() {
            out.push(id);
        }
    }
    out
}

async fn a_bulk_eviction_reaches_each_element(cache: Cache) {
    for id in 1..=9 {
        get_product(&cache, id).await;
    }
    delete_products(&cache, vec![2, 4, 4]).await.unwrap();
    assert_eq!(cached_ids(&cache).await, vec![1, 3, 5, 6, 7, 8, 9]);
    delete_slice(&cache, &[1], "discontinued").await;
    delete_vec_ref(&cache, &vec![3]).await;
    delete_hash_set(&cache, HashSet::from([5, 6])).await;
    delete_btree_set(&cache, BTreeSet::from([7])).await;
    assert_eq!(cached_ids(&cache).await, vec![8, 9]);
    failing_delete(&cache, vec![8, 9]).await.unwrap_err();
    assert_eq!(
        cached_ids(&cache).await,
        vec![8, 9],
        "an Err evicts nothing"
    );
    delete_products(&cache, Vec::new()).await.unwrap();
    assert_eq!(cached_ids(&cache).await, vec![8, 9]);
    let loads = cache.stats().loads;
    assert_eq!(get_product(&cache, 2).await, 20);
    assert_eq!(
        cache.stats().loads,
        loads + 1,
        "the single-key entry was evicted"
    );
}

async fn only_the_missing_keys_reach_the_body(cache: Cache) {
    let db = Db::default();
    get_product(&cache, 2).await; // a single-key entry, shared
    let got = get_products(&cache, &db, &[3, 2, 1, 3]).await;
    assert_eq!(got, HashMap::from([(1, 10), (2, 20), (3, 30)]));
    assert_eq!(
        db.calls(),
        vec![vec![3, 1]],
        "the missing keys, once each, in first-seen order"
    );
    let loads = cache.stats().loads;
    assert_eq!(
        get_product(&cache, 3).await,
        30,
        "the single-key function reads the bulk call's entry"
    );
    assert_eq!(cache.stats().loads, loads);
    assert_eq!(get_products(&cache, &db, &[1, 2, 3]).await.len(), 3);
    assert_eq!(get_products(&cache, &db, &[]).await, HashMap::new());
    assert_eq!(
        db.calls().len(),
        1,
        "no body runs on all hits or on no keys"
    );
}

async fn absent_keys_and_errors_store_nothing(cache: Cache) {
    let db = Db::default();
    let got = get_products(&cache, &db, &[5, 105]).await;
    assert_eq!(
        got,
        HashMap::from([(5, 50)]),
        "a key the body leaves out is absent"
    );
    assert!(!cache.has("products", &105u64).await.unwrap());
    assert!(cache.has("products", &5u64).await.unwrap());
    try_get_products(&cache, &db, vec![6, 7], true)
        .await
        .unwrap_err();
    assert!(
        !cache.has("products", &6u64).await.unwrap(),
        "an Err stores nothing"
    );
    let got = try_get_products(&cache, &db, vec![5, 6], false)
        .await
        .unwrap();
    assert_eq!(got, BTreeMap::from([(5, 50), (6, 60)]));
    assert_eq!(db.calls().last().unwrap(), &vec![6]);
    let set = get_product_set(&cache, &db, BTreeSet::from([6, 8])).await;
    assert_eq!(set, HashMap::from([(6, 60), (8, 80)]));
    assert_eq!(
        db.calls().last().unwrap(),
        &vec![8],
        "a set is rebound to the missing keys too"
    );
}

async fn with_cache_none_absent_keys_are_stored_and_shared(cache: Cache) {
    let db = Db::default();
    let got = find_products(&cache, &db, &[7, 107]).await;
    assert_eq!(got, HashMap::from([(7, 70)]));
    let got = find_products(&cache, &db, &[7, 107, 108]).await;
    assert_eq!(got, HashMap::from([(7, 70)]));
    assert_eq!(
        db.calls(),
        vec![vec![7, 107], vec![108]],
        "a key stored as absent is not asked for again"
    );
    assert_eq!(find_product(&cache, &db, 107).await, None);
    assert_eq!(find_product(&cache, &db, 7).await, Some(70));
    assert_eq!(
        db.calls().len(),
        2,
        "a single-key `Option` function reads the bulk call's entries, absent or not"
    );
    assert_eq!(find_product(&cache, &db, 109).await, None);
    assert_eq!(find_product(&cache, &db, 9).await, Some(90));
    assert_eq!(db.calls().len(), 4);
    let got = find_products(&cache, &db, &[9, 109]).await;
    assert_eq!(got, HashMap::from([(9, 90)]));
    assert_eq!(
        db.calls().len(),
        4,
        "a bulk call reads a single-key `Option` function's entries"
    );
    assert_eq!(get_products(&cache, &db, &[107, 109]).await, HashMap::new());
    assert_eq!(
        db.calls().len(),
        4,
        "an absent entry is absent to any bulk call"
    );
    let loads = cache.stats().loads;
    assert_eq!(get_product(&cache, 9).await, 90);
    assert_eq!(
        cache.stats().loads,
        loads,
        "an `Option` function's `Some` is the plain function's value"
    );
    assert_eq!(
        restock(&cache, vec![3, 103]).await,
        HashMap::from([(3, 36)])
    );
    assert_eq!(
        find_products(&cache, &db, &[3, 103]).await,
        HashMap::from([(3, 36)])
    );
    assert_eq!(
        db.calls().len(),
        4,
        "a bulk put with `cache_none` stores the keys it left out as absent"
    );
}

async fn a_bulk_put_reaches_each_element(cache: Cache) {
    for id in [1, 2, 101] {
        get_product(&cache, id).await;
    }
    reprice(&cache, vec![1, 2], true).await.unwrap_err();
    assert_eq!(
        get_product(&cache, 1).await,
        10,
        "an Err leaves the entries as they were"
    );
    let repriced = reprice(&cache, vec![1, 2, 101, 2], false).await.unwrap();
    assert_eq!(repriced, HashMap::from([(1, 11), (2, 22)]));
    let loads = cache.stats().loads;
    assert_eq!(get_product(&cache, 1).await, 11, "written through");
    assert_eq!(get_product(&cache, 2).await, 22);
    assert_eq!(cache.stats().loads, loads, "hits");
    assert!(
        !cache.has("products", &101u64).await.unwrap(),
        "a key the body left out is evicted"
    );
}

async fn a_list_that_reads_through_a_bulk_call_depends_on_each_element(cache: Cache) {
    let db = Db::default();
    let list = || {
        cache.get_or_load("lists", &1u64, None, || async {
            let got = get_products(&cache, &db, &[1, 2]).await;
            got.values().sum::<u64>()
        })
    };
    assert_eq!(list().await.unwrap(), 30);
    let loads = cache.stats().loads;
    assert_eq!(list().await.unwrap(), 30);
    assert_eq!(cache.stats().loads, loads, "a hit");
    cache.set("products", &2u64, &200u64, None).await.unwrap();
    assert_eq!(list().await.unwrap(), 210, "the list embeds product 2");
}

#[cached(group = "products", ttl = 60, skip(cache, db), cache = cache)]
async fn load_product(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.load(&[id]).await[&id]
}

/// 16 overlapping bulk calls and 8 single-key calls, half of them through
/// each of two caches (two processes' connections on Redis).
async fn overlapping_calls_load_each_key_once(a: Cache, b: Cache) {
    let db = Arc::new(Db::default());
    *db.slow.lock().unwrap() = Duration::from_millis(20);
    let bulk = (0..16u64).map(|i| {
        let (cache, db) = ([&a, &b][i as usize % 2].clone(), db.clone());
        tokio::spawn(async move {
            let ids: Vec<u64> = (i..i + 8).map(|j| j % 20).collect();
            let got = get_products(&cache, &db, &ids).await;
            assert_eq!(got.len(), 8);
            assert!(ids.iter().all(|id| got[id] == id * 10));
        })
    });
    let single = (0..8u64).map(|i| {
        let (cache, db) = ([&a, &b][i as usize % 2].clone(), db.clone());
        tokio::spawn(async move {
            let id = i * 5 % 20;
            assert_eq!(load_product(&cache, &db, id).await, id * 10);
        })
    });
    let calls: Vec<_> = bulk.chain(single).collect();
    for call in calls {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("a call finished within 20 s")
            .unwrap();
    }
    let loads = db.loads.lock().unwrap().clone();
    assert_eq!(loads.len(), 20);
    assert!(
        loads.values().all(|n| *n == 1),
        "each key loaded once: {loads:?}"
    );
}

/// Reads rows of a versioned table, then waits at the gate.
#[cached(group = "rows", ttl = 60, each = ids, skip(cache, db, gate), cache = cache)]
async fn gated_rows(
    cache: &Cache,
    db: &VersionedDb,
    gate: &Gate,
    ids: &[u64],
) -> HashMap<u64, u64> {
    let read = ids.iter().map(|id| (*id, db.read(*id))).collect();
    gate.pass().await;
    read
}

#[cached(group = "rows", ttl = 60, skip(cache, db), cache = cache)]
async fn get_row(cache: &Cache, db: &VersionedDb, id: u64) -> u64 {
    db.read(id)
}

#[cache_put(group = "rows", ttl = 60, skip(cache, db), cache = cache)]
async fn bump_row(cache: &Cache, db: &VersionedDb, id: u64) -> u64 {
    db.bump(id)
}

#[cache_evict(group = "rows", each = ids, skip(cache, db), cache = cache)]
async fn bump_rows(cache: &Cache, db: &VersionedDb, ids: Vec<u64>) {
    for id in ids {
        db.bump(id);
    }
}

/// The stale-set guard, per element: a bulk load that read before a write
/// returned does not store what it read, whether the write is a put or an
/// eviction, from another cache; the elements no write touched are stored.
async fn a_bulk_load_across_a_write_stores_nothing_stale(reader: Cache, writer: Cache) {
    let (db, gate) = (Arc::new(VersionedDb::default()), Arc::new(Gate::default()));
    let load = {
        let (cache, db, gate) = (reader.clone(), db.clone(), gate.clone());
        tokio::spawn(async move { gated_rows(&cache, &db, &gate, &[1, 2, 3]).await })
    };
    gate.reached().await;
    assert_eq!(bump_row(&writer, &db, 1).await, 1);
    bump_rows(&writer, &db, vec![2]).await;
    gate.release.notify_one();
    let read = tokio::time::timeout(Duration::from_secs(10), load)
        .await
        .expect("the bulk load ends once released")
        .unwrap();
    assert_eq!(
        read,
        HashMap::from([(1, 0), (2, 0), (3, 0)]),
        "read before the writes"
    );
    for cache in [&reader, &writer] {
        assert_eq!(
            get_row(cache, &db, 1).await,
            1,
            "the put's value, not the load's"
        );
        assert_eq!(get_row(cache, &db, 2).await, 1, "the evicted row, fresh");
    }
    let loads = reader.stats().loads;
    assert_eq!(get_row(&reader, &db, 3).await, 0);
    assert_eq!(reader.stats().loads, loads, "the untouched row was stored");
}

async fn a_bulk_call_waits_for_a_key_another_caller_loads(cache: Cache) {
    let (gate, runs) = (Arc::new(Gate::default()), Arc::new(AtomicUsize::new(0)));
    let single = {
        let (cache, gate, runs) = (cache.clone(), gate.clone(), runs.clone());
        tokio::spawn(async move { slow_product(&cache, &gate, &runs, 42).await })
    };
    // The single-key call holds the lease of 42 once it is in its body.
    gate.reached().await;
    let db = Arc::new(Db::default());
    let bulk = {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move { get_products(&cache, &db, &[41, 42]).await })
    };
    // A window for the bulk call to find 42 held: it must not finish in it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !bulk.is_finished(),
        "the bulk call waits for the key being loaded"
    );
    gate.release.notify_one();
    assert_eq!(single.await.unwrap(), 420);
    let got = tokio::time::timeout(Duration::from_secs(10), bulk)
        .await
        .expect("the bulk call ends once 42 is loaded")
        .unwrap();
    assert_eq!(got, HashMap::from([(41, 410), (42, 420)]));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "42 was loaded once");
    assert_eq!(
        db.calls(),
        vec![vec![41]],
        "the bulk call loaded only the key no one else did"
    );
}

on_each_backend!(
    a_bulk_eviction_reaches_each_element,
    only_the_missing_keys_reach_the_body,
    absent_keys_and_errors_store_nothing,
    with_cache_none_absent_keys_are_stored_and_shared,
    a_bulk_put_reaches_each_element,
    a_list_that_reads_through_a_bulk_call_depends_on_each_element,
    a_bulk_call_waits_for_a_key_another_caller_loads,
);

mod two_caches {
    use super::*;
    with_two_caches!(
        overlapping_calls_load_each_key_once,
        a_bulk_load_across_a_write_stores_nothing_stale,
    );
}

/// With Redis down, a bulk call runs its body with every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_body_gets_every_key() {
    let mut server = support::RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    server.kill();
    let db = Db::default();
    let got = get_products(&cache, &db, &[1, 2]).await;
    assert_eq!(got, HashMap::from([(1, 10), (2, 20)]));
    assert_eq!(db.calls(), vec![vec![1, 2]]);
}
