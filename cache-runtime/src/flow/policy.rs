//! [`Policy`]: what to store, where and for how long, from one attribute's
//! options; the cache's settings fill in what it leaves unset.

use std::marker::PhantomData;
use std::time::Duration;

use super::returns::{CacheValue, Kind, Split};
use crate::consistency::lookup::Read;
use crate::deps::{stamps, Dep, Stamp};
use crate::entry::envelope::{Meta, Opener, Sealer};
use crate::entry::shared::{Keep, KeepProbe, Reader};
use crate::entry::EntryKey;
use crate::observe::{bump, ok_or_warn, Warning};
use crate::Cache;

type Predicate<'a, T> = Box<dyn Fn(&T) -> bool + Send + Sync + 'a>;
type TtlFn<'a, T> = Box<dyn Fn(&T) -> Duration + Send + Sync + 'a>;
type Declare<'a, T> = Box<dyn Fn(&T) -> Vec<Dep> + Send + Sync + 'a>;

/// Fail-safe's options of one attribute.
struct FailSafe<R> {
    /// How long a value is kept past its TTL (zero: not at all).
    keep: Option<Duration>,
    throttle: Option<Duration>,
    soft_timeout: Option<Duration>,
    /// The error a kept value stands in for, as the log tells it.
    describe: Option<fn(&R) -> Option<String>>,
}

/// What to store, where and for how long: the options of one attribute.
/// Options left unset take the cache's defaults.
#[must_use]
pub struct Policy<'a, K: Kind<R>, R> {
    pub(super) group: &'a str,
    ttl: Option<Duration>,
    /// Which `None` or `Err` to store (`cache_none`, `cache_err`).
    negative: Option<Predicate<'a, K::Negative>>,
    negative_ttl: Option<Duration>,
    unless: Option<Predicate<'a, K::Item>>,
    ttl_fn: Option<TtlFn<'a, K::Item>>,
    depends_on: Option<Declare<'a, K::Item>>,
    lock: Option<bool>,
    lock_timeout: Option<Duration>,
    early: Option<f64>,
    jitter: Option<f64>,
    stale_while_revalidate: Option<Duration>,
    /// Fail-safe's options, boxed: most policies have none, and every call
    /// moves its policy.
    fail_safe: Option<Box<FailSafe<R>>>,
    /// A hit at least this old is loaded again (HTTP `max-age=N`, `no-cache`).
    pub(super) revalidate_after: Option<Duration>,
    /// How values are sealed and opened: the kind's, chosen where the value
    /// type is checked, so that the flows need no bound of their own.
    seal: Sealer<K::Value>,
    open: Opener<K::Value>,
    /// How hits keep decoded values, when they can be cloned.
    keep: Option<Keep<K::Value>>,
    kind: PhantomData<fn() -> (K, R)>,
}

impl<'a, K: Kind<R>, R> Policy<'a, K, R>
where
    K::Value: CacheValue,
{
    /// The policy of entries in `group`, every option at the cache's default.
    pub fn new(group: &'a str) -> Self {
        Policy {
            group,
            ttl: None,
            negative: None,
            negative_ttl: None,
            unless: None,
            ttl_fn: None,
            depends_on: None,
            lock: None,
            lock_timeout: None,
            early: None,
            jitter: None,
            stale_while_revalidate: None,
            fail_safe: None,
            revalidate_after: None,
            seal: K::seal,
            open: K::open,
            keep: None,
            kind: PhantomData,
        }
    }
}

impl<'a, K: Kind<R>, R> Policy<'a, K, R> {
    /// Keeps decoded values in process (the in-memory backend, the local
    /// tier, a batched read's callers) and clones them on a hit, when
    /// `probe` finds the value type can be: `keep_values(|v| v.keep())`.
    pub fn keep_values(
        mut self,
        probe: impl FnOnce(KeepProbe<K::Value>) -> Option<Keep<K::Value>>,
    ) -> Self {
        self.keep = probe(KeepProbe::NEW);
        self
    }
    /// `ttl = ...`: how long a stored value lives.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// `cache_none`: store `None` too.
    pub fn cache_none(mut self) -> Self {
        self.negative = Some(Box::new(|_| true));
        self
    }
    /// `cache_err = |e| ...`: store the errors it selects.
    pub fn cache_err(mut self, f: impl Fn(&K::Negative) -> bool + Send + Sync + 'a) -> Self {
        self.negative = Some(Box::new(f));
        self
    }
    /// The TTL of a stored `None` or error (`none_ttl`, `err_ttl`).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }
    /// `unless = |v| ...`: do not store a value for which it is true.
    pub fn unless(mut self, f: impl Fn(&K::Item) -> bool + Send + Sync + 'a) -> Self {
        self.unless = Some(Box::new(f));
        self
    }
    /// `ttl_fn = |v| ...`: the TTL of a value, from the value.
    pub fn ttl_fn(mut self, f: impl Fn(&K::Item) -> Duration + Send + Sync + 'a) -> Self {
        self.ttl_fn = Some(Box::new(f));
        self
    }
    /// `depends_on = |v| ...`: the entries and groups a value embeds besides
    /// those its body read through the cache.
    pub fn depends_on<I>(mut self, f: impl Fn(&K::Item) -> I + Send + Sync + 'a) -> Self
    where
        I: IntoIterator<Item = Dep>,
    {
        self.depends_on = Some(Box::new(move |item| f(item).into_iter().collect()));
        self
    }
    /// `lock = ...`: whether a miss waits for another caller's load.
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = Some(lock);
        self
    }
    /// `lock_timeout = ...`: how long a miss waits for another's load.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }
    /// `early = beta`: refresh a hit early (XFetch).
    pub fn early(mut self, beta: f64) -> Self {
        self.early = Some(beta);
        self
    }
    /// `jitter = ...`: the fraction of the TTL taken off at random.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = Some(fraction);
        self
    }
    /// `stale_while_revalidate = ...`: how long past its TTL a value is
    /// served while one caller refreshes it.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }
    /// `fail_safe = ...`: keep each value this long past its TTL, and return
    /// it in place of the body's failure; zero keeps nothing, whatever the
    /// cache's default.
    pub fn fail_safe(mut self, keep: Duration) -> Self {
        self.fail_safe_options().keep = Some(keep);
        self
    }
    /// `fail_safe_throttle = ...`: how long a kept value that stood in for a
    /// failure is served as fresh before the body is tried again.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_options().throttle = Some(throttle);
        self
    }
    /// `soft_timeout = ...`: how long a caller with a kept value waits for
    /// the body (or another caller's) before it returns the kept value.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.fail_safe_options().soft_timeout = Some(timeout);
        self
    }
    /// How the log tells the failure a kept value stands in for.
    pub fn describe_failure(mut self, describe: fn(&R) -> Option<String>) -> Self {
        self.fail_safe_options().describe = Some(describe);
        self
    }

    fn fail_safe_options(&mut self) -> &mut FailSafe<R> {
        self.fail_safe.get_or_insert_with(|| {
            Box::new(FailSafe {
                keep: None,
                throttle: None,
                soft_timeout: None,
                describe: None,
            })
        })
    }
    /// Seals and opens values with these instead of the kind's (the HTTP
    /// layer frames its responses in binary).
    #[cfg(feature = "http")]
    pub(crate) fn framed(mut self, seal: Sealer<K::Value>, open: Opener<K::Value>) -> Self {
        self.seal = seal;
        self.open = open;
        self
    }
    /// Loads again, and stores, instead of returning a hit at least `age`
    /// old; another caller's refresh in progress is not waited for.
    #[cfg(feature = "http")]
    pub(crate) fn revalidate_after(mut self, age: Duration) -> Self {
        self.revalidate_after = Some(age);
        self
    }

    /// The value to store for a return value, and how long it is fresh;
    /// `None` when nothing is to be stored.
    pub(super) fn decide<'r>(&self, ret: &'r R, cache: &Cache) -> Option<(&'r K::Value, Duration)>
    where
        K::Item: 'r,
        K::Negative: 'r,
    {
        let (value, ttl) = match K::split(ret) {
            Split::Failed => return None,
            Split::Value(value, item) => {
                if self.unless.as_ref().is_some_and(|unless| unless(item)) {
                    return None;
                }
                (value, self.ttl_fn.as_ref().map(|f| f(item)).or(self.ttl))
            }
            Split::Negative(value, negative) => {
                if !self
                    .negative
                    .as_ref()
                    .is_some_and(|select| select(negative))
                {
                    return None;
                }
                (value, self.negative_ttl.or(self.ttl))
            }
        };
        let ttl = ttl.unwrap_or(cache.settings().default_ttl);
        let jitter = self.jitter.unwrap_or(cache.settings().jitter);
        Some((value, ttl.mul_f64(1.0 - jitter * fastrand::f64())))
    }

    /// What `depends_on` names for a return value: nothing unless it is a
    /// value to store.
    pub(super) fn declared(&self, ret: &R) -> Vec<Dep> {
        match (&self.depends_on, K::split(ret)) {
            (Some(declare), Split::Value(_, item)) => declare(item),
            _ => Vec::new(),
        }
    }

    /// How long an entry of this policy lives, unless `ttl_fn` says
    /// otherwise: what the records it depends on are kept for.
    pub(super) fn lifetime(&self, cache: &Cache) -> Duration {
        self.ttl.unwrap_or(cache.settings().default_ttl) + self.past_ttl(cache)
    }

    /// How long past its TTL a value is kept: the stale-while-revalidate
    /// window, then fail-safe's.
    fn past_ttl(&self, cache: &Cache) -> Duration {
        self.stale_while_revalidate.unwrap_or_default() + self.kept_for(cache).unwrap_or_default()
    }

    /// How long fail-safe keeps a value past its TTL (and its
    /// stale-while-revalidate window), when it is on.
    #[inline]
    pub(super) fn kept_for(&self, cache: &Cache) -> Option<Duration> {
        match self.fail_safe.as_deref().and_then(|options| options.keep) {
            Some(keep) => (!keep.is_zero()).then_some(keep),
            None => cache.settings().fail_safe,
        }
    }

    /// Whether a hit is past what may be served as it is (its TTL, and its
    /// stale-while-revalidate window): with fail-safe on, a value kept to
    /// stand in for a failure, and to load again before anything else.
    #[inline]
    pub(super) fn expired(&self, cache: &Cache, meta: &Meta) -> bool {
        if self.kept_for(cache).is_none() {
            return false;
        }
        let served = self.stale_while_revalidate.unwrap_or_default().as_millis();
        meta.fresh_for_ms() < -i128::try_from(served).unwrap_or(i128::MAX)
    }

    /// How long a kept value that stood in for a failure is fresh again.
    pub(super) fn throttle(&self, cache: &Cache) -> Duration {
        self.fail_safe
            .as_deref()
            .and_then(|options| options.throttle)
            .unwrap_or(cache.settings().fail_safe_throttle)
    }

    /// Whether a return value is a failure a kept value may stand in for:
    /// an `Err`, unless `cache_err` stores it as an answer.
    pub(super) fn failed(&self, ret: &R) -> bool {
        if K::succeeded(ret) {
            return false;
        }
        match K::split(ret) {
            Split::Negative(_, error) => !self.negative.as_ref().is_some_and(|keep| keep(error)),
            Split::Failed | Split::Value(..) => true,
        }
    }

    /// `soft_timeout`, when set.
    pub(super) fn soft(&self) -> Option<Duration> {
        self.fail_safe.as_deref()?.soft_timeout
    }

    /// The failure a return value holds, as the log tells it.
    pub(super) fn failure(&self, ret: &R) -> Option<String> {
        let describe = self.fail_safe.as_deref()?.describe?;
        describe(ret)
    }

    pub(super) fn reader(&self) -> Reader<K::Value> {
        Reader {
            open: self.open,
            keep: self.keep,
        }
    }

    pub(super) fn read<'c>(&self, cache: &'c Cache, key: &'c EntryKey) -> Read<'c>
    where
        'a: 'c,
    {
        Read {
            cache,
            group: self.group,
            key,
            epoch: cache.local().map_or(0, |local| local.epoch()),
            lock: self.lock.unwrap_or(cache.settings().lock),
            lock_timeout: self.lock_bound(cache),
        }
    }

    /// How long a miss waits for another caller's load.
    pub(super) fn lock_bound(&self, cache: &Cache) -> Duration {
        self.lock_timeout.unwrap_or(cache.settings().lock_timeout)
    }

    /// Whether a hit should be refreshed now: XFetch (Vattani et al., VLDB
    /// 2015) recomputes when `now - delta * beta * ln(rand) >= expiry`.
    pub(super) fn refresh_early(&self, cache: &Cache, meta: &Meta) -> bool {
        let Some(beta) = self.early.or(cache.settings().early) else {
            return false;
        };
        let head_start = -f64::from(meta.load_ms) * beta * (1.0 - fastrand::f64()).ln();
        head_start >= meta.fresh_for_ms() as f64
    }

    /// The envelope to store for a return value, with the stamps of what it
    /// depends on, and its TTL (freshness plus the stale-while-revalidate
    /// window), if it is to be stored.
    pub(super) fn seal(
        &self,
        cache: &Cache,
        ret: &R,
        load: Duration,
        stamps: &[Stamp],
    ) -> Option<(Vec<u8>, Duration)> {
        let (value, fresh) = self.decide(ret, cache)?;
        let sealed = (self.seal)(cache.codec(), value, load, fresh);
        let mut bytes = ok_or_warn(cache.counters(), "encode", self.group, sealed)?;
        stamps::attach(&mut bytes, stamps);
        let max = cache.settings().max_value_size;
        if bytes.len() > max {
            bump(&cache.counters().oversized);
            cache.counters().warn_limited(Warning::Failure, |count| {
                tracing::warn!(
                    group = self.group,
                    size = bytes.len(),
                    max,
                    count,
                    "cache value larger than the maximum value size; not stored"
                );
            });
            return None;
        }
        Some((bytes, fresh + self.past_ttl(cache)))
    }
}
