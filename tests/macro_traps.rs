//! Forms that used to serve wrong values or cache what they should not:
//! methods sharing a name, generic instantiations, `Result` aliases,
//! `#[async_trait]` impls, and negative caching of errors. On every backend.

mod logs;
mod support;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cache_runtime::{cache_evict, cache_put, cached, Cache};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use support::eventually;

/// Counts the runs of the bodies of one test's functions.
#[derive(Default)]
struct Runs(AtomicUsize);

impl Runs {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

// Two impls with a method of one name, no `group`: two default groups.

#[derive(Default)]
struct Users(Runs);
#[derive(Default)]
struct Orders(Runs);

impl Users {
    #[cached(ttl = 60)]
    async fn get(&self, id: u64) -> String {
        self.0.bump();
        format!("user {id}")
    }
}

impl Orders {
    #[cached(ttl = 60)]
    async fn get(&self, id: u64) -> String {
        self.0.bump();
        format!("order {id}")
    }
}

async fn methods_of_two_impls_never_share_entries(cache: Cache) {
    Cache::scope(cache.clone(), async {
        let (users, orders) = (Users::default(), Orders::default());
        assert_eq!(users.get(1).await, "user 1");
        assert_eq!(
            orders.get(1).await,
            "order 1",
            "Orders::get ran its own body"
        );
        assert_eq!(users.get(1).await, "user 1");
        assert_eq!(orders.get(1).await, "order 1");
        assert_eq!(
            (users.0.get(), orders.0.get()),
            (1, 1),
            "one load each, then hits"
        );
    })
    .await;
    // The default group is the method's path.
    let stored = cache.get::<String>("macro_traps::Orders::get", &1u64).await;
    assert_eq!(stored.unwrap().as_deref(), Some("order 1"));
}

// Two impls of one trait (native async fn in traits).

trait Store {
    async fn load(&self, id: u64) -> String;
}

#[derive(Default)]
struct Pg(Runs);
#[derive(Default)]
struct Mongo(Runs);

impl Store for Pg {
    #[cached(ttl = 60)]
    async fn load(&self, id: u64) -> String {
        self.0.bump();
        format!("pg {id}")
    }
}

impl Store for Mongo {
    #[cached(ttl = 60)]
    async fn load(&self, id: u64) -> String {
        self.0.bump();
        format!("mongo {id}")
    }
}

async fn two_impls_of_one_trait_never_share_entries(cache: Cache) {
    Cache::scope(cache.clone(), async {
        let (pg, mongo) = (Pg::default(), Mongo::default());
        for _ in 0..2 {
            assert_eq!(pg.load(7).await, "pg 7");
            assert_eq!(mongo.load(7).await, "mongo 7");
        }
        assert_eq!((pg.0.get(), mongo.0.get()), (1, 1));
    })
    .await;
    let group = "<macro_traps::Mongo as macro_traps::Store>::load";
    let stored = cache.get::<String>(group, &7u64).await;
    assert_eq!(stored.unwrap().as_deref(), Some("mongo 7"));
}

// Instantiations of a generic function.

#[cached(ttl = 60, skip(runs))]
async fn parse<T>(runs: &Runs, text: String) -> Option<T>
where
    T: FromStr + Serialize + DeserializeOwned,
{
    runs.bump();
    text.parse().ok()
}

async fn generic_instantiations_have_their_own_entries(cache: Cache) {
    let runs = Runs::default();
    Cache::scope(cache.clone(), async {
        for _ in 0..3 {
            assert_eq!(parse::<u64>(&runs, "42".into()).await, Some(42u64));
            assert_eq!(parse::<i64>(&runs, "42".into()).await, Some(42i64));
        }
    })
    .await;
    assert_eq!(runs.get(), 2, "one load per instantiation, then hits");
    assert_eq!(
        cache.stats().undecodable,
        0,
        "no entry read as another type"
    );
    // `Some` is stored as the value it holds.
    let stored = cache.get::<i64>("macro_traps::parse<i64>", "42").await;
    assert_eq!(stored.unwrap(), Some(42));
}

// Values that serialize alike read alike: borrowed and owned forms of one
// type meet, whichever stored them.

#[cached(group = "names", skip(runs))]
async fn name_of(runs: &Runs, id: u64) -> String {
    runs.bump();
    format!("name {id}")
}

async fn borrowed_and_owned_values_read_alike(cache: Cache) {
    cache.set("texts", &1, &"hello", None).await.unwrap();
    let read = cache.get::<String>("texts", &1).await.unwrap();
    assert_eq!(read.as_deref(), Some("hello"), "&str is read as a String");
    let boxed = cache.get::<Box<str>>("texts", &1).await.unwrap();
    assert_eq!(boxed.as_deref(), Some("hello"));
    cache
        .set("texts", &2, &["a", "b"].as_slice(), None)
        .await
        .unwrap();
    let list = cache.get::<Vec<String>>("texts", &2).await.unwrap();
    assert_eq!(
        list,
        Some(vec!["a".to_owned(), "b".to_owned()]),
        "[&str] is a Vec<String>"
    );

    // The API and an attribute meet both ways.
    let runs = Runs::default();
    cache
        .set("names", &7u64, &"set by hand", None)
        .await
        .unwrap();
    Cache::scope(cache.clone(), async {
        assert_eq!(name_of(&runs, 7).await, "set by hand");
        assert_eq!(name_of(&runs, 8).await, "name 8");
    })
    .await;
    let stored = cache
        .get::<std::borrow::Cow<'static, str>>("names", &8u64)
        .await;
    assert_eq!(stored.unwrap().as_deref(), Some("name 8"));
    assert_eq!((runs.get(), cache.stats().undecodable), (1, 0));
}

// Two instantiations of a generic function given one group share its keys:
// what one stores, the other cannot read. That is said once, with the fix.

#[cached(ttl = 60, group = "shared", skip(runs))]
async fn parse_shared<T>(runs: &Runs, text: String) -> Option<T>
where
    T: FromStr + Serialize + DeserializeOwned,
{
    runs.bump();
    text.parse().ok()
}

#[test]
fn instantiations_sharing_a_group_are_told_once() {
    let told = logs::Logged::new(&[tracing::Level::WARN], Some("give each its own `group`"));
    logs::run_traced(told.clone(), async {
        let (cache, runs) = (Cache::in_memory(), Runs::default());
        Cache::scope(cache.clone(), async {
            for _ in 0..3 {
                assert_eq!(parse_shared::<u64>(&runs, "42".into()).await, Some(42));
                assert_eq!(parse_shared::<i64>(&runs, "42".into()).await, Some(42));
            }
        })
        .await;
        assert_eq!(runs.get(), 6, "they thrash: every call loads");
    });
    assert_eq!(told.count(), 1, "said once");
}

// A `Result` alias, recognised by its type.

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ApiError {
    NotFound,
    Unavailable,
}

type ApiResult<T> = Result<T, ApiError>;

#[cached(ttl = 60, group = "api", skip(runs, fail))]
async fn api_get(runs: &Runs, fail: bool, id: u64) -> ApiResult<String> {
    runs.bump();
    if fail {
        return Err(ApiError::Unavailable);
    }
    Ok(format!("item {id}"))
}

async fn an_alias_of_result_never_caches_errors(cache: Cache) {
    let runs = Runs::default();
    Cache::scope(cache, async {
        assert_eq!(api_get(&runs, true, 1).await, Err(ApiError::Unavailable));
        assert_eq!(api_get(&runs, false, 1).await, Ok("item 1".into()));
        assert_eq!(runs.get(), 2, "the error was not served from the cache");
        assert_eq!(api_get(&runs, true, 1).await, Ok("item 1".into()), "a hit");
        assert_eq!(runs.get(), 2);
    })
    .await;
}

// Negative caching of chosen errors.

#[cached(
    ttl = 60,
    group = "catalog",
    skip(runs, found),
    cache_err = |e| *e == ApiError::NotFound,
    err_ttl = 1,
    jitter = 0.0
)]
async fn find_item(runs: &Runs, found: Option<bool>, id: u64) -> ApiResult<String> {
    runs.bump();
    match found {
        Some(true) => Ok(format!("item {id}")),
        Some(false) => Err(ApiError::NotFound),
        None => Err(ApiError::Unavailable),
    }
}

#[cache_put(ttl = 60, group = "catalog", key = id)]
async fn put_item(id: u64, name: String) -> ApiResult<String> {
    Ok(name)
}

async fn cache_err_stores_the_errors_it_selects(cache: Cache) {
    let runs = Runs::default();
    Cache::scope(cache, async {
        // Not selected: never stored.
        assert_eq!(find_item(&runs, None, 1).await, Err(ApiError::Unavailable));
        assert_eq!(
            find_item(&runs, Some(false), 1).await,
            Err(ApiError::NotFound)
        );
        assert_eq!(runs.get(), 2);
        // Selected: a hit, with the error, until err_ttl ends.
        assert_eq!(
            find_item(&runs, Some(true), 1).await,
            Err(ApiError::NotFound)
        );
        assert_eq!(runs.get(), 2, "the NotFound was served from the cache");
        eventually(
            Duration::from_secs(5),
            "the cached NotFound to expire",
            || async { find_item(&runs, Some(true), 1).await.is_ok() },
        )
        .await;
        // A value is stored as any other `Ok`, and a put's value is read back.
        let loads = runs.get();
        assert_eq!(find_item(&runs, Some(false), 1).await, Ok("item 1".into()));
        put_item(1, "renamed".into()).await.unwrap();
        assert_eq!(find_item(&runs, Some(false), 1).await, Ok("renamed".into()));
        assert_eq!(runs.get(), loads, "hits after the load and after the put");
    })
    .await;
}

// `#[async_trait]` impls, stacked with `#[tracing::instrument]` in either order.

#[async_trait]
trait Repo {
    async fn find(&self, id: u64) -> Option<String>;
    async fn find_traced(&self, id: u64) -> Option<String>;
    async fn remove(&self, id: u64) -> Result<(), ApiError>;

    /// A default method: its group names the implementing type.
    #[cached(ttl = 60)]
    async fn describe(&self, id: u64) -> String {
        self.runs().bump();
        format!("{} {id}", self.name())
    }

    fn runs(&self) -> &Runs;
    fn name(&self) -> &'static str;
}

#[derive(Default)]
struct Sql(Runs);
#[derive(Default)]
struct Kv(Runs);

#[async_trait]
impl Repo for Sql {
    #[cached(ttl = 60, group = "repo")]
    #[tracing::instrument(skip(self))]
    async fn find(&self, id: u64) -> Option<String> {
        self.0.bump();
        Some(format!("sql {id}"))
    }

    #[tracing::instrument(skip(self))]
    #[cached(ttl = 60)]
    async fn find_traced(&self, id: u64) -> Option<String> {
        self.0.bump();
        Some(format!("traced {id}"))
    }

    #[cache_evict(group = "repo")]
    async fn remove(&self, id: u64) -> Result<(), ApiError> {
        let _ = id;
        Ok(())
    }

    fn runs(&self) -> &Runs {
        &self.0
    }
    fn name(&self) -> &'static str {
        "sql"
    }
}

#[async_trait]
impl Repo for Kv {
    #[cached(ttl = 60)]
    async fn find(&self, id: u64) -> Option<String> {
        self.0.bump();
        Some(format!("kv {id}"))
    }

    #[cached(ttl = 60)]
    async fn find_traced(&self, id: u64) -> Option<String> {
        self.0.bump();
        Some(format!("kv traced {id}"))
    }

    async fn remove(&self, _id: u64) -> Result<(), ApiError> {
        Ok(())
    }

    fn runs(&self) -> &Runs {
        &self.0
    }
    fn name(&self) -> &'static str {
        "kv"
    }
}

async fn async_trait_methods_are_cached(cache: Cache) {
    Cache::scope(cache, async {
        let (sql, kv) = (Sql::default(), Kv::default());
        for _ in 0..2 {
            assert_eq!(sql.find(3).await.as_deref(), Some("sql 3"));
            assert_eq!(sql.find_traced(3).await.as_deref(), Some("traced 3"));
            assert_eq!(kv.find_traced(3).await.as_deref(), Some("kv traced 3"));
            assert_eq!(sql.describe(3).await, "sql 3");
            assert_eq!(kv.describe(3).await, "kv 3");
        }
        assert_eq!(sql.0.get(), 3, "find, find_traced, describe: one load each");
        assert_eq!(kv.0.get(), 2, "find_traced, describe: one load each");
        // Through a trait object, and evicted by an async-trait method.
        let repo: &dyn Repo = &sql;
        assert_eq!(repo.find(3).await.as_deref(), Some("sql 3"));
        assert_eq!(sql.0.get(), 3, "a hit");
        repo.remove(3).await.unwrap();
        assert_eq!(repo.find(3).await.as_deref(), Some("sql 3"));
        assert_eq!(sql.0.get(), 4, "evicted, then loaded again");
    })
    .await;
}

on_each_backend!(
    methods_of_two_impls_never_share_entries,
    two_impls_of_one_trait_never_share_entries,
    generic_instantiations_have_their_own_entries,
    borrowed_and_owned_values_read_alike,
    an_alias_of_result_never_caches_errors,
    cache_err_stores_the_errors_it_selects,
    async_trait_methods_are_cached,
);
