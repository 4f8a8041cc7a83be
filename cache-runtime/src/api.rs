//! The programmatic API: `Cache`'s public methods, for what attributes
//! cannot express (groups chosen at run time, values set by hand).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Lookup, Want, WriteEnd, NO_LEASE};
use crate::cache::builder::CacheBuilder;
use crate::cache::Cache;
use crate::consistency::write;
use crate::entry::envelope;
use crate::entry::shared::{Kept, Reader};
use crate::entry::{check_group, EntryKey, Invalidation};
use crate::flow::policy::Policy;
use crate::flow::read::cached;
use crate::flow::returns::{CacheValue, Kind, PlainKind, ResultKind};
use crate::observe::Stats;
use crate::Error;

impl Cache {
    /// A snapshot of this cache's counters: failures, breaker trips, retried
    /// evictions, undecodable and oversized entries.
    pub fn stats(&self) -> Stats {
        self.counters().snapshot()
    }

    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// An in-memory cache with the default settings.
    pub fn in_memory() -> Self {
        CacheBuilder::default().build_in_memory()
    }

    /// A cache that stores nothing: every annotated call runs its body, every
    /// write succeeds at once, and the HTTP layer passes every request on.
    /// Code keeps its attributes and layers; this switches caching off (to
    /// measure what it buys, or as a kill switch).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::disabled();
    /// let v: u32 = cache.get_or_load("answers", "life", None, || async { 42 }).await?;
    /// assert_eq!(cache.get::<u32>("answers", "life").await?, None);
    /// assert_eq!((v, cache.stats().misses, cache.stats().stores), (42, 1, 0));
    /// # Ok(()) }
    /// ```
    pub fn disabled() -> Self {
        CacheBuilder::default().build_disabled()
    }

    /// A Redis cache at `REDIS_URL` when that variable is set, else an
    /// in-memory cache; default settings otherwise.
    pub async fn from_env() -> Result<Self, Error> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Cache::builder().redis(url).build().await,
            _ => Ok(Cache::in_memory()),
        }
    }

    /// Makes this cache the process-wide default used by the attributes (those
    /// without `cache = ...`), replacing any installed before.
    pub fn install(&self) {
        crate::cache::ambient::install(self.clone());
    }

    /// Runs `future` with `cache` as the default for every attribute it calls,
    /// in this task: a test can give each case its own cache.
    ///
    /// ```
    /// use cache_runtime::{cached, Cache};
    ///
    /// #[cached(group = "squares")]
    /// async fn square(n: u64) -> u64 { n * n }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = Cache::in_memory();
    /// Cache::scope(cache.clone(), square(3)).await;
    /// assert_eq!(cache.get::<u64>("squares", &3u64).await?, Some(9));
    /// # Ok(()) }
    /// ```
    pub async fn scope<F: Future>(cache: Cache, future: F) -> F::Output {
        crate::cache::ambient::scope(cache, future).await
    }

    /// Reads a value. An entry that does not decode as `T`, or whose eviction
    /// failed and is being retried, is `None`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
    ) -> Result<Option<T>, Error> {
        let key = entry_key(group, key)?;
        let Some(kept) = self.read_entry(group, &key).await? else {
            return Ok(None);
        };
        let reader = Reader {
            open: |codec, bytes| envelope::open::<T>(codec, bytes),
            keep: None,
        };
        Ok(self
            .open(group, &key, &kept, &reader)
            .map(|(value, _)| value))
    }

    /// The live envelope of an entry, as `get` and `has` read it: inside a
    /// load, a dependency of it; past an eviction pending retry, or stamped
    /// with dependencies that no longer hold, `None`.
    async fn read_entry(&self, group: &str, key: &EntryKey) -> Result<Option<Arc<Kept>>, Error> {
        let start = self.begin_read(group, std::slice::from_ref(key)).await;
        if start.passes(self, group, key) {
            return Ok(None); // an eviction of it is pending retry
        }
        match self.lookup(group, key, Want::Peek, NO_LEASE).await? {
            Lookup::Hit(kept) => Ok(start.holds(self, &kept).await.then_some(kept)),
            Lookup::Miss(_) | Lookup::Held => Ok(None),
        }
    }

    /// Stores a value; `ttl: None` means the default TTL.
    ///
    /// A write as `#[cache_put]`'s is: registered before the value is
    /// stored, so that of overlapping writes (a put, or a `set` whose store
    /// is delayed by a hung Redis) none stores an older value over a newer
    /// one; the entry is then evicted instead. When the store fails (Redis
    /// down, hung or refusing), the error is returned and the entry is
    /// evicted in the background, as a failed `#[cache_evict]` is: until
    /// that succeeds, this process reads past it, so no reader is served
    /// the value this write replaced.
    pub async fn set<T: Serialize>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let key = entry_key(group, key)?;
        let ttl = ttl.unwrap_or(self.settings().default_ttl);
        let bytes = envelope::seal(self.codec(), value, Duration::ZERO, ttl)?;
        let write = write::begin(self, group, key).await;
        write::finish(self, group, write, WriteEnd::Store(bytes, ttl))
            .await
            .map(drop)
    }

    /// Removes an entry; says whether it held a value.
    ///
    /// When that fails, the error is returned and the eviction is retried in
    /// the background, as a failed `#[cache_evict]` is; this process reads
    /// past the entry until it succeeds.
    pub async fn delete(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
    ) -> Result<bool, Error> {
        let key = entry_key(group, key)?;
        self.evict(Invalidation::Key(group, &key)).await
    }

    /// Whether an entry holds a value.
    pub async fn has(&self, group: &str, key: &(impl Serialize + ?Sized)) -> Result<bool, Error> {
        let key = entry_key(group, key)?;
        Ok(self.read_entry(group, &key).await?.is_some())
    }

    /// Evicts every entry of a group, in one write whatever the group's size.
    ///
    /// When that fails, the error is returned and the eviction is retried in
    /// the background, as a failed `#[cache_evict(all)]` is; this process
    /// reads past the group until it succeeds.
    pub async fn evict_group(&self, group: &str) -> Result<(), Error> {
        check_group(group)?;
        self.evict(Invalidation::Group(group)).await.map(drop)
    }

    /// Read-through: returns the cached value, or runs `loader`, stores its
    /// value and returns it, with the same protection against stale stores
    /// as `#[cached]`. `options` is a TTL (`None` for the default, or a
    /// `Duration`) or [`LoadOptions`]. Fails only for an invalid group or a
    /// key that does not serialize; a failing backend is logged and
    /// bypassed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::in_memory();
    /// let v: u32 = cache.get_or_load("answers", "life", None, || async { 42 }).await?;
    /// let again: u32 = cache.get_or_load("answers", "life", None, || async { 0 }).await?;
    /// assert_eq!((v, again), (42, 42));
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load<T, F, Fut>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
        options: impl Into<LoadOptions>,
        loader: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.read_through::<PlainKind, T, _, _>(group, key, options.into(), loader)
            .await
    }

    /// Read-through for a fallible loader, as `#[cached]` on a `Result`: only
    /// `Ok` is stored; an `Err` is returned as is and nothing is stored,
    /// unless fail-safe ([`LoadOptions::fail_safe`]) kept a value to stand
    /// in for it. For a group chosen at run time, which an attribute cannot
    /// name. The outer `Err` is an invalid group or a key that does not
    /// serialize.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::in_memory();
    /// let group = format!("lists/{}", "books");
    /// let failed = cache.try_get_or_load(&group, &0, None, || async { Err::<u32, _>("db down") }).await?;
    /// let loaded = cache.try_get_or_load(&group, &0, None, || async { Ok::<u32, &str>(7) }).await?;
    /// let cached = cache.try_get_or_load(&group, &0, None, || async { Ok::<u32, &str>(8) }).await?;
    /// assert_eq!((failed, loaded, cached), (Err("db down"), Ok(7), Ok(7)));
    /// # Ok(()) }
    /// ```
    pub async fn try_get_or_load<T, E, F, Fut>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
        options: impl Into<LoadOptions>,
        loader: F,
    ) -> Result<Result<T, E>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.read_through::<ResultKind, Result<T, E>, _, _>(group, key, options.into(), loader)
            .await
    }

    /// The read flow of `#[cached]` for the programmatic API, reading the
    /// loader's return value as kind `K`.
    async fn read_through<K, R, F, Fut>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
        options: LoadOptions,
        loader: F,
    ) -> Result<R, Error>
    where
        K: Kind<R>,
        K::Value: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let key = entry_key(group, key)?;
        let mut policy = Policy::<K, R>::new(group);
        if let Some(ttl) = options.ttl {
            policy = policy.ttl(ttl);
        }
        if let Some(keep) = options.fail_safe {
            policy = policy.fail_safe(keep);
        }
        if let Some(throttle) = options.fail_safe_throttle {
            policy = policy.fail_safe_throttle(throttle);
        }
        Ok(cached(self.clone(), policy, Ok(key), loader()).await)
    }
}

/// The options of a read-through ([`Cache::get_or_load`],
/// [`Cache::try_get_or_load`]): those of `#[cached]` that fit a call. A TTL
/// alone converts into them (`None`, or a `Duration`).
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::{Cache, LoadOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::in_memory();
/// let options = LoadOptions::new()
///     .ttl(Duration::from_secs(60))
///     .fail_safe(Duration::from_secs(3600));
/// let loaded = cache
///     .try_get_or_load("prices", &7, options, || async { Ok::<u32, String>(120) })
///     .await?;
/// assert_eq!(loaded, Ok(120));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct LoadOptions {
    ttl: Option<Duration>,
    fail_safe: Option<Duration>,
    fail_safe_throttle: Option<Duration>,
}

impl LoadOptions {
    /// Every option at the cache's default.
    pub fn new() -> Self {
        LoadOptions::default()
    }

    /// How long a stored value is fresh (`ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Keeps each value this long past its TTL, to stand in for the
    /// loader's `Err` (`fail_safe`); `Duration::ZERO` turns off the cache's
    /// default.
    pub fn fail_safe(mut self, keep: Duration) -> Self {
        self.fail_safe = Some(keep);
        self
    }

    /// How long a value that stood in for a failure is served as fresh
    /// before the loader is tried again (`fail_safe_throttle`).
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = Some(throttle);
        self
    }
}

impl From<Option<Duration>> for LoadOptions {
    fn from(ttl: Option<Duration>) -> Self {
        LoadOptions {
            ttl,
            ..LoadOptions::default()
        }
    }
}

impl From<Duration> for LoadOptions {
    fn from(ttl: Duration) -> Self {
        LoadOptions::new().ttl(ttl)
    }
}

fn entry_key(group: &str, key: &(impl Serialize + ?Sized)) -> Result<EntryKey, Error> {
    check_group(group)?;
    EntryKey::new(key)
}
