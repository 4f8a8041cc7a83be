//! Configuration: [`CacheBuilder`].

use std::sync::Arc;
use std::time::Duration;

use crate::backend::server::{Place, Server};
use crate::backend::{memory::Memory, redis::Redis, Backend};
use crate::entry::codec::{Codec, ValueCodec};
use crate::local::{self, Local};
use crate::observe::Counters;
use crate::{Cache, Error};

/// Settings shared by every operation of one [`Cache`].
pub(crate) struct Settings {
    pub(crate) default_ttl: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) codec: ValueCodec,
    pub(crate) lock: bool,
    pub(crate) lock_timeout: Duration,
    pub(crate) jitter: f64,
    pub(crate) early: Option<f64>,
    pub(crate) fail_safe: Option<Duration>,
    pub(crate) fail_safe_throttle: Duration,
    pub(crate) max_value_size: usize,
    pub(crate) eviction_retry: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cool_down: Duration,
    pub(crate) max_dependencies: usize,
    pub(crate) lease_ttl: Duration,
}

enum Target {
    Memory,
    Redis(Place),
}

/// Builds a [`Cache`]. Start from [`Cache::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | backend | in memory |
/// | [`prefix`](Self::prefix) | `"cache"` |
/// | [`default_ttl`](Self::default_ttl) | 300 s |
/// | [`op_timeout`](Self::op_timeout) | 250 ms |
/// | [`lease_ttl`](Self::lease_ttl) | 30 s |
/// | [`codec`](Self::codec) | [`Json`](crate::entry::codec::Json) |
/// | [`lock`](Self::lock) | on |
/// | [`lock_timeout`](Self::lock_timeout) | 3 s |
/// | [`jitter`](Self::jitter) | 0.1 |
/// | [`early`](Self::early) | off |
/// | [`fail_safe`](Self::fail_safe) | off |
/// | [`fail_safe_throttle`](Self::fail_safe_throttle) | 30 s |
/// | [`max_value_size`](Self::max_value_size) | 4 MiB |
/// | [`eviction_retry`](Self::eviction_retry) | 60 s |
/// | [`breaker`](Self::breaker) | 5 failures, 1 s cool-down |
/// | [`max_dependencies`](Self::max_dependencies) | 10,000 |
/// | [`check_restarts`](Self::check_restarts) | on |
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::Cache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::builder()
///     .in_memory() // or .redis("redis://127.0.0.1:6379")
///     .prefix("shop")
///     .default_ttl(Duration::from_secs(60))
///     .build()
///     .await?;
/// cache.install();
/// # Ok(()) }
/// ```
#[must_use]
pub struct CacheBuilder {
    target: Target,
    prefix: String,
    default_ttl: Duration,
    op_timeout: Duration,
    lease_ttl: Duration,
    codec: ValueCodec,
    lock: bool,
    lock_timeout: Duration,
    jitter: f64,
    early: Option<f64>,
    fail_safe: Option<Duration>,
    fail_safe_throttle: Duration,
    max_value_size: usize,
    eviction_retry: Duration,
    breaker_threshold: u32,
    breaker_cool_down: Duration,
    max_dependencies: usize,
    check_restarts: bool,
    local: Option<(usize, Duration)>,
    #[cfg(feature = "tls")]
    tls: Option<crate::Tls>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            target: Target::Memory,
            prefix: "cache".to_owned(),
            default_ttl: Duration::from_secs(300),
            op_timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(30),
            codec: ValueCodec::Json,
            lock: true,
            lock_timeout: Duration::from_secs(3),
            jitter: 0.1,
            early: None,
            fail_safe: None,
            fail_safe_throttle: Duration::from_secs(30),
            max_value_size: 4 << 20,
            eviction_retry: Duration::from_secs(60),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(1),
            max_dependencies: 10_000,
            check_restarts: true,
            local: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl CacheBuilder {
    /// Uses the Redis server at `url` (`redis://[user:password@]host:port/db`;
    /// `rediss://` for TLS, with the `tls` feature; `valkey://` and
    /// `valkeys://` alike). The connection is made
    /// lazily and re-made when it drops, so building succeeds while the
    /// server is down; only a malformed URL fails.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.target = Target::Redis(Place::Single(url.into()));
        self
    }

    /// Uses a Redis Cluster, discovered from any of these nodes
    /// (`redis://host:port`). A group lives in one slot (its name is the
    /// keys' hash tag), so every operation stays on one node; MOVED and
    /// failovers are followed. Connects on first use, like [`redis`](Self::redis).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn redis_cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.target = Target::Redis(Place::Cluster(nodes.into_iter().map(Into::into).collect()));
        self
    }

    /// Uses the master that Redis Sentinel names `master` (feature
    /// `sentinel`), asking any of `sentinels` (`redis://host:26379`, with
    /// the sentinels' own credentials if they have any). `master` is the
    /// name in the sentinels' configuration, or a URL naming it with the
    /// master's credentials and database: `redis://app:secret@mymaster/2`
    /// (`rediss://` for TLS to the master).
    ///
    /// The cache asks the sentinels on first use, and again whenever the
    /// connection to the master breaks, times out or finds a replica: after a
    /// failover it carries on with the new master, and calls run their
    /// bodies (uncached) while there is none.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_sentinel(
    ///         ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///         "redis://app:secret@mymaster/0",
    ///     )
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sentinel")]
    pub fn redis_sentinel<I, S>(mut self, sentinels: I, master: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.target = Target::Redis(Place::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master.into(),
        });
        self
    }

    /// Certificates for `rediss://` connections (feature `tls`): a CA to
    /// trust instead of the system's roots, and a client certificate for
    /// mutual TLS. They apply to every `rediss://` URL of the deployment
    /// (a cluster's nodes, Sentinel's sentinels and master).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Uses the in-memory backend (the default).
    pub fn in_memory(mut self) -> Self {
        self.target = Target::Memory;
        self
    }

    /// The first segment of every Redis key (`{prefix}:{group}:...`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Time to live of entries stored without an explicit `ttl`.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long one backend operation may take before the cache gives up on it
    /// and the call proceeds without the cache.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long a miss's read lease and a put's writer record live. A body
    /// that runs longer than this returns its value without storing it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Stampede protection (default on): concurrent misses of one key, in
    /// this process or any other on the same Redis, run the body once; the
    /// others wait for its value. Off, every miss runs the body.
    pub fn lock(mut self, on: bool) -> Self {
        self.lock = on;
        self
    }

    /// How long a miss waits for another process's load of the same key
    /// before it takes the load over (default 3 s). Waits within one process
    /// follow the loading caller and end with it.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// TTL jitter (default 0.1): each stored TTL is shortened by a random
    /// fraction up to this, so that entries written together do not expire
    /// together. `0.0` turns it off.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Probabilistic early refresh (XFetch) for every `#[cached]`, with this
    /// `beta` (1.0 is the paper's default; larger refreshes earlier). Off by
    /// default.
    pub fn early(mut self, beta: f64) -> Self {
        self.early = Some(beta);
        self
    }

    /// Fail-safe for every `#[cached]` and `get_or_load` that does not set
    /// its own (off by default): each value is kept this long past its TTL,
    /// and returned in place of its body's `Err` (see the attribute's
    /// `fail_safe`). A write (an eviction, a put, a group eviction, a write
    /// to a dependency) leaves nothing to fall back on.
    pub fn fail_safe(mut self, keep: Duration) -> Self {
        self.fail_safe = Some(keep);
        self
    }

    /// After a body failed and its kept value stood in, that value is served
    /// as fresh this long, in every process, before one caller tries the
    /// body again (default 30 s).
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = throttle;
        self
    }

    /// Values whose envelope is larger than this many bytes are not stored
    /// (logged and counted), and stored entries larger than this are misses
    /// (default 4 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// How long a failed eviction is retried in the background, with backoff
    /// from 100 ms to 5 s, before it is given up (default 60 s). Past that the
    /// entry's TTL bounds how long it can be served.
    pub fn eviction_retry(mut self, window: Duration) -> Self {
        self.eviction_retry = window;
        self
    }

    /// The circuit breaker: after `failures` consecutive failures to reach the
    /// backend, skip it until it answers again. A background task pings it
    /// every 100 ms meanwhile and closes the breaker at the first answer;
    /// should that task not run (no tokio runtime), the first call after
    /// `cool_down` probes instead (default 5 failures, 1 s).
    pub fn breaker(mut self, failures: u32, cool_down: Duration) -> Self {
        self.breaker_threshold = failures;
        self.breaker_cool_down = cool_down;
        self
    }

    /// A value that depends on more entries and groups than this (read
    /// through the cache or named) is returned but not stored, and logged
    /// (default 10,000): each dependency costs its hits a record to check.
    pub fn max_dependencies(mut self, limit: usize) -> Self {
        self.max_dependencies = limit;
        self
    }

    /// Whether entries stored before the Redis server restarted, or before a
    /// failover to another server, are refused (default on). A server that
    /// restarts from a snapshot, or a replica promoted before it received
    /// the last writes, holds entries that those writes had evicted; with
    /// the check on, every entry written before the restart or failover is
    /// a miss, at the price of a cold cache then. It costs the server an
    /// `INFO server` per script (about 5 µs), and the user needs the right
    /// to run `INFO` (without it, the check is off, with a warning).
    ///
    /// Turn it off only when the server loses no acknowledged write across
    /// restarts and failovers: an append-only file with `appendfsync
    /// always`, and failovers that wait for the replica.
    pub fn check_restarts(mut self, on: bool) -> Self {
        self.check_restarts = on;
        self
    }

    /// Adds a local tier: an in-process copy of up to `capacity` entries read
    /// from Redis, each kept at most `max_ttl` (and never past its TTL), so
    /// that hits cost no round trip. Copies are dropped when any client
    /// changes the entry, or the server expires or evicts it (Redis client
    /// tracking, on every master of a cluster), and the whole tier is
    /// flushed and bypassed while that feed is
    /// down, or silent (a heartbeat finds a frozen server within 250 ms).
    /// Needs a Redis backend.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis("redis://127.0.0.1:6379")
    ///     .local(10_000, Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn local(mut self, capacity: usize, max_ttl: Duration) -> Self {
        self.local = Some((capacity, max_ttl));
        self
    }

    /// The value codec (default [`Json`](crate::entry::codec::Json), which is
    /// called directly; a custom codec goes through `erased_serde`).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = ValueCodec::Custom(Box::new(codec));
        self
    }

    /// Builds the cache. Fails on a malformed Redis URL or a prefix holding
    /// `{` or `}`; never because the server is unreachable.
    pub async fn build(mut self) -> Result<Cache, Error> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "prefix {:?} may not contain `{{` or `}}`",
                self.prefix
            )));
        }
        if self.default_ttl.is_zero() || self.lease_ttl.is_zero() || self.op_timeout.is_zero() {
            return Err(Error::Config(
                "durations must be greater than zero".to_owned(),
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(Error::Config(format!(
                "jitter {} is not in [0, 1)",
                self.jitter
            )));
        }
        if self
            .early
            .is_some_and(|beta| !(beta > 0.0 && beta.is_finite()))
        {
            return Err(Error::Config(
                "early refresh needs a positive, finite beta".to_owned(),
            ));
        }
        if self.max_value_size == 0 || self.breaker_threshold == 0 {
            return Err(Error::Config(
                "max_value_size and the breaker's failure count must be greater than zero"
                    .to_owned(),
            ));
        }
        let counters = Arc::new(Counters::default());
        let Target::Redis(place) = std::mem::replace(&mut self.target, Target::Memory) else {
            if self.local.is_some() {
                return Err(Error::Config(
                    "the local tier goes in front of Redis; this cache is in memory".to_owned(),
                ));
            }
            let backend = Backend::Memory(Memory::new(self.lease_ttl));
            return Ok(self.finish(backend, counters, None));
        };
        let server = Server {
            place,
            #[cfg(feature = "tls")]
            tls: self.tls.take(),
        };
        server.check()?;
        let (connection, subscriptions) = server.connect(self.op_timeout, self.check_restarts)?;
        let local = match self.local {
            None => None,
            Some((capacity, max_ttl)) => {
                if capacity == 0 || max_ttl.is_zero() {
                    return Err(Error::Config(
                        "the local tier needs a capacity and a max TTL".to_owned(),
                    ));
                }
                let tier = Arc::new(Local::new(capacity, max_ttl, counters.clone()));
                local::subscribe(Arc::downgrade(&tier), subscriptions, self.prefix.clone());
                Some(tier)
            }
        };
        let backend = Backend::Redis(Redis::new(
            connection,
            self.prefix.clone(),
            self.lease_ttl,
            counters.clone(),
        ));
        Ok(self.finish(backend, counters, local))
    }

    /// Builds an in-memory cache synchronously (the backend needs no I/O).
    pub(crate) fn build_in_memory(self) -> Cache {
        let backend = Backend::Memory(Memory::new(self.lease_ttl));
        self.finish(backend, Arc::default(), None)
    }

    /// Builds a cache that stores nothing.
    pub(crate) fn build_disabled(self) -> Cache {
        self.finish(Backend::Disabled, Arc::default(), None)
    }

    fn finish(self, backend: Backend, counters: Arc<Counters>, local: Option<Arc<Local>>) -> Cache {
        Cache::from_parts(
            backend,
            Settings {
                default_ttl: self.default_ttl,
                op_timeout: self.op_timeout,
                codec: self.codec,
                lock: self.lock,
                lock_timeout: self.lock_timeout,
                jitter: self.jitter,
                early: self.early,
                fail_safe: self.fail_safe.filter(|keep| !keep.is_zero()),
                fail_safe_throttle: self.fail_safe_throttle,
                max_value_size: self.max_value_size,
                eviction_retry: self.eviction_retry,
                breaker_threshold: self.breaker_threshold,
                breaker_cool_down: self.breaker_cool_down,
                max_dependencies: self.max_dependencies,
                lease_ttl: self.lease_ttl,
            },
            counters,
            local,
        )
    }
}
