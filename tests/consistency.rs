//! Guarantee 8 (docs/design.md): every path keeps every promise. The cases
//! found off the single-key attribute path (a bulk read, a record of the
//! wrong type, a key of negative zero, an explicit dependency's first load,
//! negative caching beside a bulk read, a changed dependent's lease held),
//! each on every backend where it can occur.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache, Dep};
use support::{eventually, Gate, Store};

/// A table whose rows change: every read is counted, per id.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, u64>>,
    loads: Mutex<Vec<Vec<u64>>>,
}

impl Db {
    fn row(&self, id: u64) -> u64 {
        *self.rows.lock().unwrap().get(&id).unwrap_or(&id)
    }
    fn set(&self, id: u64, value: u64) {
        self.rows.lock().unwrap().insert(id, value);
    }
    fn load(&self, ids: &[u64]) -> HashMap<u64, u64> {
        self.loads.lock().unwrap().push(ids.to_vec());
        ids.iter().map(|id| (*id, self.row(*id))).collect()
    }
    fn loads(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.loads.lock().unwrap())
    }
}

#[cached(group = "items", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn get_items(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, u64> {
    db.load(ids)
}

#[cached(group = "items", ttl = 60, skip(cache, db), cache = cache)]
async fn get_item(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.load(&[id])[&id]
}

#[cache_evict(group = "items", skip(cache), cache = cache)]
async fn delete_item(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

/// Makes the server refuse `DEL` (so every eviction fails, and waits for
/// its retry) while it answers reads; or accept it again.
fn refuse_deletes(store: &Store, refuse: bool) {
    let rule = if refuse { "-del" } else { "+del" };
    for answer in store.on_every_node(&["ACL", "SETUSER", "default", rule]) {
        assert_eq!(answer.trim(), "OK", "ACL SETUSER default {rule}");
    }
}

/// An entry whose eviction failed is read past by every read of the
/// process that made the write, the bulk read included, until the retry
/// succeeds; the other keys of the bulk call stay hits.
async fn a_bulk_read_passes_an_eviction_pending_retry(store: Store) {
    let cache = store.cache().await;
    let db = Db::default();
    assert_eq!(
        get_items(&cache, &db, &[1, 2]).await,
        [(1, 1), (2, 2)].into()
    );
    assert_eq!(db.loads(), vec![vec![1, 2]]);

    refuse_deletes(&store, true);
    db.set(1, 1001);
    delete_item(&cache, 1).await.unwrap();
    assert_eq!(cache.stats().evictions_queued, 1, "the eviction failed");

    assert_eq!(
        get_items(&cache, &db, &[1, 2]).await,
        [(1, 1001), (2, 2)].into(),
        "the bulk read passes the pending key by"
    );
    assert_eq!(
        db.loads(),
        vec![vec![1]],
        "and reads the other from the cache"
    );
    assert_eq!(
        get_item(&cache, &db, 1).await,
        1001,
        "as the single-key read does"
    );
    assert_eq!(db.loads(), vec![vec![1]]);
    assert_eq!(cache.get::<u64>("items", &1u64).await.unwrap(), None);

    refuse_deletes(&store, false);
    eventually(Duration::from_secs(10), "the eviction's retry", || async {
        cache.stats().evictions_retried == 1
    })
    .await;
    assert_eq!(
        get_items(&cache, &db, &[1, 2]).await,
        [(1, 1001), (2, 2)].into()
    );
    assert_eq!(
        get_items(&cache, &db, &[1, 2]).await,
        [(1, 1001), (2, 2)].into()
    );
    assert_eq!(
        db.loads(),
        vec![vec![1]],
        "once evicted, it is cached again"
    );
}

on_each_store!(a_bulk_read_passes_an_eviction_pending_retry);

#[cached(group = "prices", ttl = 60, skip(cache, loads), cache = cache)]
async fn price_at(cache: &Cache, loads: &AtomicUsize, x: f64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst) as u64
}

#[cache_evict(group = "prices", skip(cache), cache = cache)]
async fn reprice_at(cache: &Cache, x: f64) {
    let _ = x;
}

/// `0.0 == -0.0`: an eviction at one reaches the entry read at the other.
async fn negative_zero_is_the_entry_of_zero(cache: Cache) {
    let loads = AtomicUsize::new(0);
    assert_eq!(price_at(&cache, &loads, -0.0).await, 0);
    assert_eq!(price_at(&cache, &loads, 0.0).await, 0, "one entry");
    reprice_at(&cache, 0.0).await;
    assert_eq!(price_at(&cache, &loads, -0.0).await, 1, "evicted at 0.0");
    reprice_at(&cache, -0.0).await;
    assert_eq!(price_at(&cache, &loads, 0.0).await, 2, "evicted at -0.0");
    assert!(cache.delete("prices", &-0.0f64).await.unwrap());
    assert!(!cache.has("prices", &0.0f64).await.unwrap());
}

mod zero {
    use super::*;
    on_each_backend!(negative_zero_is_the_entry_of_zero);
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Missing {
    NotFound,
}

/// Ids from 100 up do not exist; that is remembered (`cache_err`).
#[cached(group = "rows", ttl = 60, skip(cache, db), cache = cache, cache_err = |e| *e == Missing::NotFound)]
async fn find_row(cache: &Cache, db: &Db, id: u64) -> Result<u64, Missing> {
    db.load(&[id]);
    if id >= 100 {
        return Err(Missing::NotFound);
    }
    Ok(db.row(id))
}

#[cached(group = "rows", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn find_rows(cache: &Cache, db: &Db, ids: &[u64]) -> Result<HashMap<u64, u64>, Missing> {
    Ok(db
        .load(ids)
        .into_iter()
        .filter(|(id, _)| *id < 100)
        .collect())
}

/// A group where a single-key function stores its not-found (`cache_err`)
/// and a bulk call reads: the bulk call reads the stored error as an absent
/// element, without running its body for it, and leaves it stored.
async fn a_bulk_read_takes_a_stored_error_for_absent(cache: Cache) {
    let db = Db::default();
    assert_eq!(find_row(&cache, &db, 100).await, Err(Missing::NotFound));
    assert_eq!(find_row(&cache, &db, 100).await, Err(Missing::NotFound));
    assert_eq!(db.loads(), vec![vec![100]], "the not-found is cached");
    assert_eq!(find_rows(&cache, &db, &[1, 100]).await, Ok([(1, 1)].into()));
    assert_eq!(db.loads(), vec![vec![1]], "the stored error is absent");
    assert_eq!(find_rows(&cache, &db, &[1, 100]).await, Ok([(1, 1)].into()));
    assert_eq!(find_row(&cache, &db, 100).await, Err(Missing::NotFound));
    assert_eq!(db.loads(), Vec::<Vec<u64>>::new(), "and stays stored");
    assert_eq!(
        cache.stats().undecodable,
        0,
        "nothing is taken for another type"
    );
}

mod negative {
    use super::*;
    on_each_backend!(a_bulk_read_takes_a_stored_error_for_absent);
}

#[cached(group = "items", ttl = 60, skip(cache, db), cache = cache)]
async fn item_page(cache: &Cache, db: &Db, ids: Vec<u64>) -> Vec<u64> {
    db.load(&[]);
    let mut page = Vec::new();
    for id in ids {
        page.push(get_item(cache, db, id).await);
    }
    page
}

#[cache_put(group = "items", ttl = 60, key = id, skip(cache, db), cache = cache)]
async fn put_item(cache: &Cache, db: &Db, id: u64, value: u64) -> u64 {
    db.set(id, value);
    value
}

/// Puts another Redis type at one of the cache's keys: a hash where a
/// string belongs, a string where a hash does.
fn plant(store: &Store, key: &str) {
    let _ = store.on_key_node(key, &["DEL", key]);
    let planted = match key.rsplit(':').next() {
        Some("1") if key.contains(":l:") || key.contains(":w:") => {
            store.on_key_node(key, &["SET", key, "planted"])
        }
        _ => store.on_key_node(key, &["HSET", key, "planted", "1"]),
    };
    assert!(
        ["OK", "1"].contains(&planted.trim()),
        "planted {key}: {planted}"
    );
}

/// Every key of the cache's namespace that holds another Redis type (a
/// dependency record, the group's records, its generation, a lease, a
/// writer record) is repaired by the write that meets it, and the write
/// goes through: another process reads the new value at once.
async fn a_key_of_the_wrong_type_is_repaired_and_the_write_goes_through(store: Store) {
    let (a, b) = (store.cache().await, store.cache().await);
    let db = Db::default();
    let suffixes = ["v:1", "gv", "gt", "gen", "l:1", "w:1"];
    for (round, suffix) in suffixes.into_iter().enumerate() {
        let key = format!("cache:{{items}}:{suffix}");
        let round = 10 * (round as u64 + 1);
        plant(&store, &key);
        assert_eq!(item_page(&b, &db, vec![1]).await, vec![db.row(1)]);
        db.loads();
        assert_eq!(item_page(&b, &db, vec![1]).await, vec![db.row(1)]);
        assert!(db.loads().is_empty(), "{suffix}: the page is stored");

        plant(&store, &key);
        db.set(1, round + 1);
        delete_item(&a, 1).await.unwrap();
        assert_eq!(get_item(&b, &db, 1).await, round + 1, "{suffix}: evicted");
        assert_eq!(item_page(&b, &db, vec![1]).await, vec![round + 1]);

        plant(&store, &key);
        assert_eq!(put_item(&a, &db, 1, round + 2).await, round + 2);
        assert_eq!(get_item(&b, &db, 1).await, round + 2, "{suffix}: put");
        assert_eq!(item_page(&b, &db, vec![1]).await, vec![round + 2]);

        plant(&store, &key);
        db.set(1, round + 3);
        a.evict_group("items").await.unwrap();
        assert_eq!(get_item(&b, &db, 1).await, round + 3, "{suffix}: group");
        assert_eq!(item_page(&b, &db, vec![1]).await, vec![round + 3]);
        db.loads();
    }
    let stats = (a.stats(), b.stats());
    assert_eq!(stats.0.evictions_queued, 0, "no write failed");
    assert!(
        stats.0.repaired + stats.1.repaired >= suffixes.len() as u64,
        "repairs counted: {} and {}",
        stats.0.repaired,
        stats.1.repaired
    );
}

mod wrong_type {
    use super::*;
    on_each_store!(a_key_of_the_wrong_type_is_repaired_and_the_write_goes_through);
}

/// A search that names the items it returns (`depends_on`); `gate` holds
/// its load when given.
#[cached(group = "search", ttl = 60, skip(cache, db, gate), cache = cache,
    depends_on = |ids: &Vec<u64>| ids.iter().map(|id| Dep::key("items", id)).collect::<Vec<_>>())]
async fn search(cache: &Cache, db: &Db, gate: Option<&Gate>, query: &str) -> Vec<u64> {
    db.load(&[]);
    if let Some(gate) = gate {
        gate.pass().await;
    }
    match query {
        "pot" => vec![5],
        _ => vec![1, 2],
    }
}

/// A count that depends on the whole group (`depend`).
#[cached(group = "counts", ttl = 60, skip(cache, db), cache = cache)]
async fn item_count(cache: &Cache, db: &Db) -> u64 {
    cache_runtime::depend(Dep::group("items"));
    db.load(&[]);
    db.rows.lock().unwrap().len() as u64
}

/// The first load of a value with explicit dependencies is stored when
/// nothing it names was written during it (their records did not exist
/// yet); one during which a named entry is written is not; and a write
/// afterwards makes it a miss in every process.
async fn an_explicit_dependency_s_first_load_is_stored(a: Cache, b: Cache) {
    let db = Db::default();
    assert_eq!(search(&a, &db, None, "tea").await, vec![1, 2]);
    assert_eq!(search(&b, &db, None, "tea").await, vec![1, 2]);
    assert_eq!(db.loads().len(), 1, "the first search is stored");
    assert_eq!(item_count(&a, &db).await, 0);
    assert_eq!(item_count(&b, &db).await, 0);
    assert_eq!(db.loads().len(), 1, "the first count is stored");

    // A write during a first load to the entry it names, which no load
    // named before: not stored.
    let gate = Gate::default();
    let held = search(&a, &db, Some(&gate), "pot");
    let write = async {
        gate.reached().await;
        delete_item(&b, 5).await.unwrap();
        gate.release.notify_one();
    };
    let (found, ()) = tokio::join!(held, write);
    assert_eq!(found, vec![5]);
    db.loads();
    assert_eq!(search(&b, &db, None, "pot").await, vec![5]);
    assert_eq!(db.loads().len(), 1, "a load during a write is not stored");

    // A write after: a miss in every process.
    db.set(3, 3);
    delete_item(&b, 1).await.unwrap();
    assert_eq!(search(&a, &db, None, "tea").await, vec![1, 2]);
    assert_eq!(item_count(&a, &db).await, 1);
    assert_eq!(db.loads().len(), 2, "both depend on what was written");
}

mod explicit {
    use super::*;
    with_two_caches!(an_explicit_dependency_s_first_load_is_stored);
}

/// A page that shows item 1, read from the database and named as a
/// dependency.
#[cached(group = "held-pages", ttl = 60, skip(cache, db), cache = cache,
    lock_timeout = std::time::Duration::from_millis(300))]
async fn held_page(cache: &Cache, db: &Db, n: u64) -> Vec<u64> {
    cache_runtime::depend(Dep::key("items", &1u64));
    let _ = n;
    vec![db.row(1)]
}

/// Guarantee 4 (docs/design.md) for a derived entry: when what a page
/// depends on changed and
/// its lease is held by another caller while the stale page stays (a lease
/// whose holder's script failed after taking it: the server refused its
/// `DEL`), a reader waits at most `lock_timeout`, then loads the page
/// itself: it does not start its wait again each time it finds the stale
/// page (which nested a future each time, until the stack overflowed).
async fn a_reader_of_a_changed_dependent_waits_one_lock_timeout(store: Store) {
    let (holder, reader) = (store.cache().await, store.cache().await);
    let db = Db::default();
    assert_eq!(held_page(&reader, &db, 0).await, vec![1]);
    db.set(1, 2);
    delete_item(&holder, 1).await.unwrap(); // the page's stamp fails now

    refuse_deletes(&store, true);
    // Takes the page's lease, then fails to drop the stale page: the lease
    // stays until its TTL (30 s).
    assert_eq!(held_page(&holder, &db, 0).await, vec![2]);
    let started = std::time::Instant::now();
    assert_eq!(held_page(&reader, &db, 0).await, vec![2]);
    let waited = started.elapsed();
    refuse_deletes(&store, false);
    assert!(
        waited < Duration::from_millis(1500),
        "the reader waited {waited:?}, past its 300 ms lock timeout"
    );
    assert_eq!(reader.stats().lock_timeouts, 1, "counted (and logged)");
}

mod held {
    use super::*;
    on_each_store!(a_reader_of_a_changed_dependent_waits_one_lock_timeout);
}
