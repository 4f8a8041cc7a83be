//! [`Cache`]: the handle the attributes use, and the programmatic API.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::__private::{self as private, CacheValue, Kind, PlainKind, Policy, ResultKind};
use crate::backend::{Backend, Lookup, Want, NO_LEASE};
use crate::breaker::{Breaker, Pass};
use crate::config::{CacheBuilder, Settings};
use crate::deadline::Deadline;
use crate::entry::envelope;
use crate::entry::envelope::Meta;
use crate::entry::shared::{Kept, Reader};
use crate::entry::Invalidation;
use crate::entry::{check_group, EntryKey};
use crate::flight::Flights;
use crate::health::Health;
use crate::local::Local;
use crate::observe::metrics;
use crate::observe::{bump, Counters, Stats, Warning};
use crate::retry::{self, Eviction, Pending, Retrier};
use crate::Error;

/// A cache: a backend (Redis or in memory) with its settings.
///
/// `Cache` is a cheap [`Clone`] handle: clones share the backend and its
/// connection. Keys are any `K: Serialize + ?Sized` and address the same
/// entries as the attributes: `cache.get::<Product>("products", &7u64)` reads
/// what `#[cached(group = "products")] async fn get_product(id: u64)` stored
/// for `get_product(7)`.
///
/// ```
/// use cache_runtime::Cache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::in_memory();
/// cache.set("users", &42u64, &"Ada".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("users", &42u64).await?, Some("Ada".to_string()));
/// assert!(cache.delete("users", &42u64).await?);
/// assert!(!cache.has("users", &42u64).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    backend: Backend,
    settings: Settings,
    flights: Flights,
    breaker: Breaker,
    counters: Arc<Counters>,
    pending: Pending,
    retrier: Retrier,
    local: Option<Arc<Local>>,
    /// What the server lets the cache do, once it has answered.
    contact: tokio::sync::OnceCell<Health>,
    /// The in-process write-behind logs (in-memory backend).
    write_behind: crate::write_behind::memory::Logs,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Disabled => "disabled",
        };
        f.debug_struct("Cache")
            .field("backend", &backend)
            .field("default_ttl", &self.inner.settings.default_ttl)
            .field("op_timeout", &self.inner.settings.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub(crate) fn from_parts(
        backend: Backend,
        settings: Settings,
        counters: Arc<Counters>,
        local: Option<Arc<Local>>,
    ) -> Self {
        Cache {
            inner: Arc::new(Inner {
                breaker: Breaker::new(settings.breaker_threshold, settings.breaker_cool_down),
                backend,
                settings,
                flights: Flights::default(),
                counters,
                pending: Pending::default(),
                retrier: Retrier::default(),
                local,
                contact: tokio::sync::OnceCell::new(),
                write_behind: Default::default(),
            }),
        }
    }

    /// A snapshot of this cache's counters: failures, breaker trips, retried
    /// evictions, undecodable and oversized entries.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// An in-memory cache with the default settings.
    pub fn in_memory() -> Self {
        CacheBuilder::default().build_in_memory()
    }

    /// Whether the cache can serve now, and what the server lets it do:
    /// its role, and the user's script and publish rights, checked once on
    /// first contact (the problems are then logged once, at `warn`). Each
    /// call also asks the server, within the op timeout, whether it answers:
    /// a server that does not, or a circuit breaker that is open, is
    /// `reachable: false, serving: false`, so a readiness probe that reads
    /// `serving` fails while every call bypasses the cache.
    pub async fn health(&self) -> Health {
        let deadline = Deadline::after(self.inner.settings.op_timeout);
        let health = match self.contact(deadline).await {
            Ok(health) => health.clone(),
            Err(error) => return unreachable_health(&error),
        };
        match self.backend() {
            Backend::Redis(redis) if health.serving => match self.op(redis.ping()).await {
                Ok(()) => health,
                Err(error) => unreachable_health(&error),
            },
            _ => health,
        }
    }

    /// The verdict of first contact, asking the server if it has not
    /// answered yet.
    async fn contact(&self, deadline: Deadline) -> Result<&Health, Error> {
        match self.inner.contact.get() {
            Some(health) => Ok(health),
            // Boxed: its checks would otherwise make every operation's
            // future larger, and a hit moves that future several times.
            None => deadline.bound(Box::pin(self.first_contact())).await,
        }
    }

    async fn first_contact(&self) -> Result<&Health, Error> {
        self.inner
            .contact
            .get_or_try_init(|| async {
                let health = match self.backend() {
                    Backend::Redis(redis) => {
                        Health::of(Some(redis.rights().await?), redis.channel())
                    }
                    Backend::Memory(_) | Backend::Disabled => Health::of(None, ""),
                };
                for problem in &health.problems {
                    tracing::warn!(
                        problem,
                        "cache: the Redis server limits what the cache can do"
                    );
                }
                Ok(health)
            })
            .await
    }

    /// Whether this is [`Cache::disabled`].
    pub(crate) fn is_disabled(&self) -> bool {
        matches!(self.inner.backend, Backend::Disabled)
    }

    /// Whether first contact found that this cache must serve nothing.
    pub(crate) fn refused(&self) -> bool {
        self.inner
            .contact
            .get()
            .is_some_and(|health| !health.serving)
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
        crate::current::install(self.clone());
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
        crate::current::scope(cache, future).await
    }

    /// Reads a value. An entry that does not decode as `T`, or whose eviction
    /// failed and is being retried, is `None`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
    ) -> Result<Option<T>, Error> {
        let key = entry_key(group, key)?;
        if self.pending().blocks(group, &key) {
            return Ok(None); // an eviction of it is pending retry
        }
        match self.lookup(group, &key, Want::Peek, NO_LEASE).await? {
            Lookup::Hit(kept) => {
                let reader = Reader {
                    open: envelope::open,
                    keep: None,
                };
                Ok(self
                    .open(group, &key, &kept, &reader)
                    .map(|(value, _)| value))
            }
            Lookup::Miss(_) | Lookup::Held => Ok(None),
        }
    }

    /// Stores a value; `ttl: None` means the default TTL.
    ///
    /// When the store fails (Redis down, hung or refusing), the error is
    /// returned and the entry is evicted in the background, as a failed
    /// `#[cache_evict]` is: until that succeeds, this process reads past it,
    /// so no reader is served the value this write replaced.
    pub async fn set<T: Serialize>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let key = entry_key(group, key)?;
        let ttl = ttl.unwrap_or(self.inner.settings.default_ttl);
        let bytes = envelope::seal(self.codec(), value, Duration::ZERO, ttl)?;
        let stored = self.op(self.backend().store(group, &key, bytes, ttl)).await;
        self.flights().detach(group, &key);
        self.forget(Invalidation::Key(group, &key));
        match &stored {
            Ok(()) => metrics::stored(self.counters(), group),
            Err(error) => retry::queue(self, Eviction::Key(group.to_owned(), key), error),
        }
        stored
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
        let deleted = self.invalidate(group, &key).await;
        if let Err(error) = &deleted {
            retry::queue(self, Eviction::Key(group.to_owned(), key), error);
        }
        deleted
    }

    /// Whether an entry holds a value.
    pub async fn has(&self, group: &str, key: &(impl Serialize + ?Sized)) -> Result<bool, Error> {
        let key = entry_key(group, key)?;
        if self.pending().blocks(group, &key) {
            return Ok(false);
        }
        let found = self.lookup(group, &key, Want::Peek, NO_LEASE).await?;
        Ok(matches!(found, Lookup::Hit(_)))
    }

    /// Evicts every entry of a group, in one write whatever the group's size.
    ///
    /// When that fails, the error is returned and the eviction is retried in
    /// the background, as a failed `#[cache_evict(all)]` is; this process
    /// reads past the group until it succeeds.
    pub async fn evict_group(&self, group: &str) -> Result<(), Error> {
        check_group(group)?;
        let evicted = self.evict_group_unchecked(group).await;
        if let Err(error) = &evicted {
            retry::queue(self, Eviction::Group(group.to_owned()), error);
        }
        evicted
    }

    /// Read-through: returns the cached value, or runs `loader`, stores its
    /// value (`ttl: None` means the default TTL) and returns it, with the same
    /// protection against stale stores as `#[cached]`. Fails only for an invalid
    /// group or a key that does not serialize; a failing backend is logged and
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
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.read_through::<PlainKind, T, _, _>(group, key, ttl, loader)
            .await
    }

    /// Read-through for a fallible loader, as `#[cached]` on a `Result`: only
    /// `Ok` is stored; an `Err` is returned as is and nothing is stored. For
    /// a group chosen at run time, which an attribute cannot name. The outer
    /// `Err` is an invalid group or a key that does not serialize.
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
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<Result<T, E>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.read_through::<ResultKind, Result<T, E>, _, _>(group, key, ttl, loader)
            .await
    }

    /// The read flow of `#[cached]` for the programmatic API, reading the
    /// loader's return value as kind `K`.
    async fn read_through<K, R, F, Fut>(
        &self,
        group: &str,
        key: &(impl Serialize + ?Sized),
        ttl: Option<Duration>,
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
        if let Some(ttl) = ttl {
            policy = policy.ttl(ttl);
        }
        Ok(private::cached(self.clone(), policy, Ok(key), loader()).await)
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub(crate) fn codec(&self) -> &crate::entry::codec::ValueCodec {
        &self.inner.settings.codec
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    /// Removes an entry, then detaches its flight in this process: a caller
    /// arriving after this returns starts a new load.
    pub(crate) async fn invalidate(&self, group: &str, key: &EntryKey) -> Result<bool, Error> {
        let existed = self.op(self.backend().invalidate(group, key)).await;
        self.flights().detach(group, key);
        self.forget(Invalidation::Key(group, key));
        if existed.is_ok() {
            metrics::evicted(self.counters(), group);
        }
        existed
    }

    pub(crate) async fn evict_group_unchecked(&self, group: &str) -> Result<(), Error> {
        let evicted = self.op(self.backend().evict_group(group)).await;
        self.flights().detach_group(group);
        self.forget(Invalidation::Group(group));
        if evicted.is_ok() {
            metrics::evicted(self.counters(), group);
        }
        evicted
    }

    /// The in-process write-behind logs, by group.
    pub(crate) fn write_behind_logs(&self) -> &crate::write_behind::memory::Logs {
        &self.inner.write_behind
    }

    /// The local tier, when there is one.
    pub(crate) fn local(&self) -> Option<&Local> {
        self.inner.local.as_deref()
    }

    /// Drops this process's local copies of what a write changes, before the
    /// write returns (other processes hear of it by pub/sub).
    pub(crate) fn forget(&self, invalidation: Invalidation<'_>) {
        if let Some(local) = self.local() {
            local.invalidate(&invalidation);
        }
    }

    /// Evictions pending retry in this process.
    pub(crate) fn pending(&self) -> &Pending {
        &self.inner.pending
    }

    pub(crate) fn retrier(&self) -> &Retrier {
        &self.inner.retrier
    }

    /// A handle that does not keep the cache alive (for its background task).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The cache of a handle made by [`Cache::downgrade`], while one lives.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Cache> {
        weak.upgrade().map(|inner| Cache { inner })
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Looks an entry up: in process at once, on Redis as an operation. A
    /// lease it creates carries `token`, chosen (and guarded) by the caller.
    pub(crate) async fn lookup(
        &self,
        group: &str,
        key: &EntryKey,
        want: Want,
        token: &str,
    ) -> Result<Lookup, Error> {
        match self.backend().lookup_in_process(group, key, want, token) {
            Ok(found) => Ok(found),
            // The lookup keeps the deadline itself: a batched read times
            // out once for all its callers, not once for each.
            Err(redis) => {
                self.guarded(|deadline| {
                    // Boxed: the op moves its future into the await; a box
                    // moves as a pointer.
                    Box::pin(redis.lookup(group, key, want, token, deadline))
                })
                .await
            }
        }
    }

    /// Runs one backend operation within the operation timeout, through the
    /// circuit breaker, counting failures.
    pub(crate) async fn op<T>(
        &self,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if let Backend::Memory(_) | Backend::Disabled = self.backend() {
            // In-process and never blocking: no timeout or breaker to pay for.
            return op.await;
        }
        self.guarded(|deadline| deadline.bound(op)).await
    }

    /// [`op`](Self::op) for an operation that keeps its [`Deadline`]
    /// itself: it must end by then, with [`Deadline::elapsed`] if it could
    /// not.
    async fn guarded<T, F>(&self, op: impl FnOnce(Deadline) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let counters = self.counters();
        if self.refused() {
            bump(&counters.bypassed);
            return Err(Error::Unavailable);
        }
        let breaker = &self.inner.breaker;
        let pass = breaker.pass();
        if pass == Pass::Open {
            bump(&counters.bypassed);
            bump(&counters.errors);
            metrics::error("breaker_open");
            return Err(Error::Unavailable);
        }
        let deadline = Deadline::after(self.inner.settings.op_timeout);
        // First contact is checked within the same bound as the operation.
        let result = match self.contact(deadline).await {
            Ok(health) if health.serving => op(deadline).await,
            Ok(_) => Err(Error::Unavailable),
            Err(error) => Err(error),
        };
        match &result {
            Err(Error::Unavailable) => {
                // Refused on first contact: not a failure of the server.
                bump(&counters.bypassed);
                breaker.succeeded(&pass);
            }
            Err(error) if error.is_unreachable() => {
                if let Backend::Redis(redis) = self.backend() {
                    redis.forget_fills();
                }
                bump(&counters.errors);
                if error.is_timeout() {
                    bump(&counters.timeouts);
                    metrics::error("timeout");
                } else {
                    metrics::error("unreachable");
                }
                if breaker.failed(&pass) {
                    bump(&counters.breaker_trips);
                    tracing::warn!(
                        %error,
                        cool_down = ?self.inner.settings.breaker_cool_down,
                        "cache circuit breaker opened: calls skip the cache until a probe succeeds"
                    );
                }
            }
            Err(_) => {
                bump(&counters.errors);
                metrics::error("backend");
                breaker.succeeded(&pass);
            }
            Ok(_) => breaker.succeeded(&pass),
        }
        result
    }

    /// Opens an envelope, or clones the value it was opened to before; an
    /// entry that does not decode (or is larger than the maximum value size)
    /// is logged, counted and `None`.
    pub(crate) fn open<T>(
        &self,
        group: &str,
        key: &EntryKey,
        kept: &Arc<Kept>,
        reader: &Reader<T>,
    ) -> Option<(T, Meta)> {
        if let Some(opened) = kept.opened(reader) {
            return Some(opened);
        }
        let bytes = kept.bytes();
        let opened = if bytes.len() > self.inner.settings.max_value_size {
            Err(envelope::OpenError::TooLarge(bytes.len()))
        } else {
            (reader.open)(self.codec(), bytes)
        };
        match opened {
            Ok(opened) => {
                // Only an envelope that others hold, or that the local tier
                // will, is read again: a lone Redis hit's is dropped next.
                if Arc::strong_count(kept) > 1 || self.local().is_some() {
                    kept.keep(reader, &opened);
                }
                Some(opened)
            }
            Err(envelope::OpenError::Type(reader)) if self.counters().first_mismatch(group) => {
                bump(&self.counters().undecodable);
                tracing::warn!(
                    group,
                    key = key.as_str(),
                    reader,
                    "cache entry was stored for another type than it is read as: two functions, \
                     or two instantiations of a generic function, share this group with different \
                     value types, and each overwrites the other's entries; give each its own \
                     `group` (or `key`). Said once per group"
                );
                None
            }
            Err(error) => {
                let counters = self.counters();
                bump(&counters.undecodable);
                counters.warn_limited(Warning::Undecodable, |count| {
                    tracing::warn!(group, key = key.as_str(), %error, count, "cache entry does not decode; treating it as a miss");
                });
                None
            }
        }
    }
}

fn entry_key(group: &str, key: &(impl Serialize + ?Sized)) -> Result<EntryKey, Error> {
    check_group(group)?;
    EntryKey::new(key)
}

fn unreachable_health(error: &Error) -> Health {
    let why = match error {
        Error::Timeout(_) => "no answer within the op timeout".to_owned(),
        Error::Unavailable => "the circuit breaker is open after failures".to_owned(),
        error => error.to_string(),
    };
    Health {
        reachable: false,
        serving: false,
        problems: vec![format!(
            "the server does not answer ({why}): calls run their bodies without the cache"
        )],
    }
}
