//! The attributes' behaviour, as a user sees it, on both backends.

#[path = "support/decodes.rs"]
mod decodes;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::eventually;

/// A fake database that counts its reads.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, String>>,
    reads: AtomicUsize,
}

impl Db {
    fn with(rows: &[(u64, &str)]) -> Db {
        let db = Db::default();
        for (id, name) in rows {
            db.write(*id, name);
        }
        db
    }
    fn read(&self, id: u64) -> Option<String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.rows.lock().unwrap().get(&id).cloned()
    }
    fn write(&self, id: u64, name: &str) {
        self.rows.lock().unwrap().insert(id, name.to_owned());
    }
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[derive(Debug, PartialEq)]
struct NotFound;

#[cached(ttl = 60, group = "products", skip(cache, db), cache = cache)]
async fn get_product(cache: &Cache, db: &Db, id: u64) -> Result<String, NotFound> {
    db.read(id).ok_or(NotFound)
}

#[cache_evict(group = "products", skip(cache, db), cache = cache)]
async fn delete_product(cache: &Cache, db: &Db, id: u64) -> Result<(), NotFound> {
    db.rows
        .lock()
        .unwrap()
        .remove(&id)
        .map(drop)
        .ok_or(NotFound)
}

#[cache_evict(group = "products", key = id, cache = cache)]
async fn update_product(cache: &Cache, db: &Db, id: u64, name: &str) -> Result<(), NotFound> {
    db.write(id, name);
    Ok(())
}

#[cache_put(ttl = 60, group = "products", key = id, cache = cache)]
async fn rename_product(cache: &Cache, db: &Db, id: u64, name: String) -> Result<String, NotFound> {
    db.write(id, &name);
    Ok(name)
}

#[cache_evict(group = "products", all, cache = cache)]
async fn reimport(cache: &Cache) -> Result<(), NotFound> {
    Ok(())
}

#[cache_evict(group = "products", skip(cache, _db), cache = cache, before)]
async fn failing_delete_before(cache: &Cache, _db: &Db, id: u64) -> Result<(), NotFound> {
    Err(NotFound)
}

#[cache_evict(group = "products", skip(cache, _db), cache = cache)]
async fn failing_delete(cache: &Cache, _db: &Db, id: u64) -> Result<(), NotFound> {
    Err(NotFound)
}

async fn miss_then_hit(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    assert_eq!(get_product(&cache, &db, 7).await, Ok("teapot".into()));
    assert_eq!(get_product(&cache, &db, 7).await, Ok("teapot".into()));
    assert_eq!(
        db.reads(),
        1,
        "the second call is a hit and does not run the body"
    );
}

async fn evict_then_fresh_read(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    get_product(&cache, &db, 7).await.unwrap();
    update_product(&cache, &db, 7, "kettle").await.unwrap();
    assert_eq!(get_product(&cache, &db, 7).await, Ok("kettle".into()));
    assert_eq!(db.reads(), 2);
    // the default key of delete_product (its one argument left) meets get_product's
    delete_product(&cache, &db, 7).await.unwrap();
    assert_eq!(get_product(&cache, &db, 7).await, Err(NotFound));
}

async fn put_then_hit(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    get_product(&cache, &db, 7).await.unwrap();
    assert_eq!(
        rename_product(&cache, &db, 7, "kettle".into()).await,
        Ok("kettle".into())
    );
    assert_eq!(get_product(&cache, &db, 7).await, Ok("kettle".into()));
    assert_eq!(db.reads(), 1, "the read after the put is a hit");
}

async fn evict_all(cache: Cache) {
    let db = Db::with(&[(1, "a"), (2, "b")]);
    get_product(&cache, &db, 1).await.unwrap();
    get_product(&cache, &db, 2).await.unwrap();
    reimport(&cache).await.unwrap();
    get_product(&cache, &db, 1).await.unwrap();
    get_product(&cache, &db, 2).await.unwrap();
    assert_eq!(db.reads(), 4, "both entries were evicted with the group");
}

async fn evict_before_runs_even_when_the_body_fails(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    get_product(&cache, &db, 7).await.unwrap();
    assert_eq!(failing_delete(&cache, &db, 7).await, Err(NotFound));
    get_product(&cache, &db, 7).await.unwrap();
    assert_eq!(db.reads(), 1, "a failed body evicts nothing");
    assert_eq!(failing_delete_before(&cache, &db, 7).await, Err(NotFound));
    get_product(&cache, &db, 7).await.unwrap();
    assert_eq!(db.reads(), 2, "`before` evicts before the body runs");
}

async fn err_is_not_cached(cache: Cache) {
    let db = Db::default();
    assert_eq!(get_product(&cache, &db, 9).await, Err(NotFound));
    assert_eq!(get_product(&cache, &db, 9).await, Err(NotFound));
    assert_eq!(db.reads(), 2);
}

#[cached(group = "find", skip(cache, db), cache = cache)]
async fn find(cache: &Cache, db: &Db, id: u64) -> Option<String> {
    db.read(id)
}

#[cached(group = "find_negative", skip(cache, db), cache = cache, cache_none, none_ttl = Duration::from_millis(300))]
async fn find_negative(cache: &Cache, db: &Db, id: u64) -> Option<String> {
    db.read(id)
}

async fn none_is_cached_only_with_cache_none(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    assert_eq!(find(&cache, &db, 9).await, None);
    assert_eq!(find(&cache, &db, 9).await, None);
    assert_eq!(db.reads(), 2, "None is not cached by default");
    assert_eq!(find(&cache, &db, 7).await.as_deref(), Some("teapot"));
    assert_eq!(find(&cache, &db, 7).await.as_deref(), Some("teapot"));
    assert_eq!(db.reads(), 3, "Some is cached");

    assert_eq!(find_negative(&cache, &db, 9).await, None);
    assert_eq!(find_negative(&cache, &db, 9).await, None);
    assert_eq!(db.reads(), 4, "None is cached with cache_none");
    eventually(
        Duration::from_secs(5),
        "the None to expire after none_ttl",
        || async {
            find_negative(&cache, &db, 9).await;
            db.reads() > 4
        },
    )
    .await;
}

#[cached(group = "unless", skip(cache, db), cache = cache, unless = |name| name.starts_with("draft"))]
async fn get_published(cache: &Cache, db: &Db, id: u64) -> Result<String, NotFound> {
    db.read(id).ok_or(NotFound)
}

async fn unless_skips_storing(cache: Cache) {
    let db = Db::with(&[(1, "draft: soon"), (2, "final")]);
    get_published(&cache, &db, 1).await.unwrap();
    get_published(&cache, &db, 1).await.unwrap();
    assert_eq!(db.reads(), 2, "a value matching `unless` is not stored");
    get_published(&cache, &db, 2).await.unwrap();
    get_published(&cache, &db, 2).await.unwrap();
    assert_eq!(db.reads(), 3);
}

#[cached(group = "ttl_fn", skip(cache, db), cache = cache,
         ttl_fn = |name| if name.starts_with("short") { Duration::from_millis(200) } else { Duration::from_secs(60) })]
async fn get_with_ttl_fn(cache: &Cache, db: &Db, id: u64) -> Result<String, NotFound> {
    db.read(id).ok_or(NotFound)
}

async fn ttl_fn_sets_the_ttl_from_the_value(cache: Cache) {
    let db = Db::with(&[(1, "short lived"), (2, "long lived")]);
    get_with_ttl_fn(&cache, &db, 1).await.unwrap();
    get_with_ttl_fn(&cache, &db, 2).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the short-lived entry to expire",
        || async {
            let before = db.reads();
            get_with_ttl_fn(&cache, &db, 1).await.unwrap();
            db.reads() > before
        },
    )
    .await;
    let before = db.reads();
    get_with_ttl_fn(&cache, &db, 2).await.unwrap();
    assert_eq!(db.reads(), before, "the long-lived entry is still a hit");
}

#[cached(group = "ttl", skip(cache, db), cache = cache, ttl = Duration::from_millis(300))]
async fn get_short(cache: &Cache, db: &Db, id: u64) -> Result<String, NotFound> {
    db.read(id).ok_or(NotFound)
}

async fn ttl_expires(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    get_short(&cache, &db, 7).await.unwrap();
    get_short(&cache, &db, 7).await.unwrap();
    assert_eq!(db.reads(), 1);
    eventually(Duration::from_secs(5), "the entry to expire", || async {
        get_short(&cache, &db, 7).await.unwrap();
        db.reads() > 1
    })
    .await;
}

async fn undecodable_entry_is_a_miss_and_is_overwritten(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    // an entry of another type, as after a deploy that changed the struct
    cache
        .set("products", &7u64, &vec![1, 2, 3], None)
        .await
        .unwrap();
    assert_eq!(get_product(&cache, &db, 7).await, Ok("teapot".into()));
    assert_eq!(db.reads(), 1, "the undecodable entry was a miss");
    assert_eq!(get_product(&cache, &db, 7).await, Ok("teapot".into()));
    assert_eq!(db.reads(), 1, "and it was overwritten with a good one");
}

#[cached(group = "echo", skip(cache, calls), cache = cache)]
async fn echo(cache: &Cache, calls: &AtomicUsize, key: String) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    key
}

#[cached(group = "echo_pairs", skip(cache, calls), cache = cache)]
async fn echo_pair(cache: &Cache, calls: &AtomicUsize, a: &str, b: &str) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    format!("{a}|{b}")
}

async fn keys_are_injective(cache: Cache) {
    let long = "x".repeat(500);
    let mut keys: Vec<String> = [
        "a", "a:b", "a:", ":b", "{x}", "{", "}", "*", "?", "[a]", "a b", " ", "", "ü", "日本",
        "\"", "\\", "null", "7", "e:7", "#", "\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push(long.clone());
    keys.push(format!("{long}y"));
    let calls = AtomicUsize::new(0);
    for key in &keys {
        assert_eq!(&echo(&cache, &calls, key.clone()).await, key);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        keys.len(),
        "no two keys met on the first pass"
    );
    for key in &keys {
        assert_eq!(
            &echo(&cache, &calls, key.clone()).await,
            key,
            "a hit returns its own key's value"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        keys.len(),
        "the second pass is all hits"
    );

    let pairs = [
        ("a:", "b"),
        ("a", ":b"),
        ("a", "b"),
        ("a,b", ""),
        ("", "a,b"),
    ];
    for (a, b) in pairs {
        assert_eq!(echo_pair(&cache, &calls, a, b).await, format!("{a}|{b}"));
    }
    for (a, b) in pairs {
        assert_eq!(echo_pair(&cache, &calls, a, b).await, format!("{a}|{b}"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), keys.len() + pairs.len());
}

#[cached(group = "limits", skip(cache, calls), cache = cache)]
async fn count_under(cache: &Cache, calls: &AtomicUsize, limit: Option<f64>) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    format!("{limit:?}")
}

/// serde_json writes every non-finite float as `null`; as keys, NaN and
/// the two infinities are three keys, none of them `None`. (`-0.0` is the
/// key of `0.0`, as they are equal: tests/consistency.rs.)
async fn non_finite_floats_are_keys_of_their_own(cache: Cache) {
    let limits = [
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(f64::NAN),
        None,
        Some(0.0),
    ];
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        for limit in limits {
            assert_eq!(
                count_under(&cache, &calls, limit).await,
                format!("{limit:?}")
            );
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        limits.len(),
        "one miss each, then hits"
    );
}

async fn groups_sharing_a_prefix_are_independent(cache: Cache) {
    let groups = ["a", "a:b", "ab", "a:", "b"];
    for group in groups {
        cache
            .set(group, "k", &group.to_string(), None)
            .await
            .unwrap();
    }
    cache.evict_group("a").await.unwrap();
    assert_eq!(cache.get::<String>("a", "k").await.unwrap(), None);
    for group in &groups[1..] {
        assert_eq!(
            cache.get::<String>(group, "k").await.unwrap().as_deref(),
            Some(*group)
        );
    }
    assert!(cache.delete("a:b", "k").await.unwrap());
    assert_eq!(
        cache.get::<String>("ab", "k").await.unwrap().as_deref(),
        Some("ab")
    );
}

async fn programmatic_api_meets_the_attributes(cache: Cache) {
    let db = Db::with(&[(7, "teapot"), (8, "kettle")]);
    get_product(&cache, &db, 7).await.unwrap();
    assert_eq!(
        cache
            .get::<String>("products", &7u64)
            .await
            .unwrap()
            .as_deref(),
        Some("teapot")
    );
    assert!(cache.has("products", &7u64).await.unwrap());
    assert!(cache.delete("products", &7u64).await.unwrap());
    assert!(
        !cache.delete("products", &7u64).await.unwrap(),
        "a second delete finds nothing"
    );
    assert!(!cache.has("products", &7u64).await.unwrap());

    cache
        .set("products", &7u64, &"set by hand".to_string(), None)
        .await
        .unwrap();
    assert_eq!(get_product(&cache, &db, 7).await, Ok("set by hand".into()));
    assert_eq!(db.reads(), 1);

    let loaded: String = cache
        .get_or_load("products", &8u64, None, || async { db.read(8).unwrap() })
        .await
        .unwrap();
    assert_eq!(loaded, "kettle");
    assert_eq!(get_product(&cache, &db, 8).await, Ok("kettle".into()));
    assert_eq!(db.reads(), 2, "get_or_load stored what get_product reads");

    cache.evict_group("products").await.unwrap();
    assert!(!cache.has("products", &8u64).await.unwrap());
    assert!(matches!(
        cache.get::<String>("bad{group}", &1).await,
        Err(cache_runtime::Error::InvalidGroup(_))
    ));
}

#[cached(group = "listings", skip(cache, db), cache = cache)]
async fn get_listing(cache: &Cache, db: &Db, id: u64) -> Result<String, NotFound> {
    db.read(id).ok_or(NotFound)
}

#[cache_evict(group = "products", skip(cache, db), cache = cache)]
#[cache_evict(group = "listings", skip(cache, db), cache = cache)]
async fn retire(cache: &Cache, db: &Db, id: u64) -> Result<(), NotFound> {
    db.write(id, "retired");
    Ok(())
}

async fn stacked_evictions_cascade_across_groups(cache: Cache) {
    let db = Db::with(&[(7, "teapot")]);
    get_product(&cache, &db, 7).await.unwrap();
    get_listing(&cache, &db, 7).await.unwrap();
    retire(&cache, &db, 7).await.unwrap();
    assert_eq!(get_product(&cache, &db, 7).await, Ok("retired".into()));
    assert_eq!(get_listing(&cache, &db, 7).await, Ok("retired".into()));
    assert_eq!(db.reads(), 4);
}

struct Repo {
    cache: Cache,
    db: Db,
}

impl Repo {
    #[cached(group = "repo", cache = &self.cache)]
    async fn get(&self, id: u64) -> Result<String, NotFound> {
        self.db.read(id).ok_or(NotFound)
    }

    #[cache_put(group = "repo", key = id, cache = &self.cache)]
    async fn rename(&mut self, id: u64, name: String) -> Result<String, NotFound> {
        self.db.write(id, &name);
        Ok(name)
    }
}

async fn methods_with_self(cache: Cache) {
    let mut repo = Repo {
        cache,
        db: Db::with(&[(7, "teapot")]),
    };
    assert_eq!(repo.get(7).await, Ok("teapot".into()));
    repo.rename(7, "kettle".into()).await.unwrap();
    assert_eq!(repo.get(7).await, Ok("kettle".into()));
    assert_eq!(repo.db.reads(), 1);
}

#[cached(group = "scoped")]
async fn scoped_square(n: u64) -> u64 {
    n * n
}

async fn scope_sets_the_default_cache(cache: Cache) {
    assert_eq!(Cache::scope(cache.clone(), scoped_square(12)).await, 144);
    assert_eq!(cache.get::<u64>("scoped", &12u64).await.unwrap(), Some(144));
}

on_each_backend!(
    miss_then_hit,
    evict_then_fresh_read,
    put_then_hit,
    evict_all,
    evict_before_runs_even_when_the_body_fails,
    err_is_not_cached,
    none_is_cached_only_with_cache_none,
    unless_skips_storing,
    ttl_fn_sets_the_ttl_from_the_value,
    ttl_expires,
    undecodable_entry_is_a_miss_and_is_overwritten,
    keys_are_injective,
    non_finite_floats_are_keys_of_their_own,
    groups_sharing_a_prefix_are_independent,
    programmatic_api_meets_the_attributes,
    stacked_evictions_cascade_across_groups,
    methods_with_self,
    scope_sets_the_default_cache,
);

#[cached(group = "kept", skip(cache), cache = cache)]
async fn kept_value(cache: &Cache, id: u64) -> decodes::Cloned {
    decodes::Cloned(id)
}

#[cached(group = "opaque", skip(cache), cache = cache)]
async fn opaque_value(cache: &Cache, id: u64) -> decodes::Opaque {
    decodes::Opaque(id)
}

#[cache_put(group = "kept", skip(cache), cache = cache, key = id)]
async fn put_kept(cache: &Cache, id: u64, value: u64) -> decodes::Cloned {
    decodes::Cloned(value)
}

/// In memory, a hit of a `Clone` value clones what the first hit decoded; a
/// write replaces it. A value without `Clone` is decoded on every hit.
#[tokio::test]
async fn in_memory_hits_clone_what_the_first_hit_decoded() {
    let cache = Cache::in_memory();
    assert_eq!(kept_value(&cache, 1).await, decodes::Cloned(1)); // miss
    let before = decodes::decoded();
    for _ in 0..10 {
        assert_eq!(kept_value(&cache, 1).await, decodes::Cloned(1));
    }
    assert_eq!(decodes::decoded() - before, 1, "ten hits, one decode");
    put_kept(&cache, 1, 2).await;
    for _ in 0..10 {
        assert_eq!(
            kept_value(&cache, 1).await,
            decodes::Cloned(2),
            "the put's value"
        );
    }
    assert_eq!(decodes::decoded() - before, 2, "the new entry decoded once");

    assert_eq!(opaque_value(&cache, 1).await, decodes::Opaque(1));
    let before = decodes::opaque_decoded();
    for _ in 0..10 {
        assert_eq!(opaque_value(&cache, 1).await, decodes::Opaque(1));
    }
    assert_eq!(
        decodes::opaque_decoded() - before,
        10,
        "not Clone: decoded every hit"
    );
}

#[cached(group = "borrowed", skip(cache), cache = cache)]
async fn borrowed_name<'a>(cache: &Cache, name: &'a str) -> std::borrow::Cow<'a, str> {
    std::borrow::Cow::Borrowed(name)
}

/// A value type that names a lifetime is not probed for keeping (it may not
/// be `'static`): it compiles, and hits decode it.
#[tokio::test]
async fn a_value_that_names_a_lifetime_is_cached_too() {
    let cache = Cache::in_memory();
    assert_eq!(borrowed_name(&cache, "teapot").await, "teapot");
    assert_eq!(borrowed_name(&cache, "teapot").await, "teapot");
    assert_eq!(cache.stats().hits, 1);
}
