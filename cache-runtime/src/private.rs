//! What the attribute expansions call. Not a public API: names and signatures
//! change without notice.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::{Instrument, Span};

use serde::Serialize;

use crate::backend::{Backend, WriteEnd};
use crate::entry::envelope::{Meta, Opener, Sealer};
use crate::entry::shared::Reader;
pub use crate::entry::shared::{Keep, KeepNothing, KeepProbe};
use crate::entry::EntryKey;
use crate::flight::FlightGuard;
use crate::kind::Split;
pub use crate::kind::{
    CacheValue, Kind, OptionKind, PlainKind, PlainProbe, Probe, ResultKind, ResultWithErrKind,
};
use crate::lease::{LeaseGuard, WriteGuard};
use crate::observe::metrics;
use crate::observe::ok_or_warn;
use crate::observe::{bump, Warning};
use crate::read::{Found, Read};
use crate::retry::{self, Eviction};
use crate::{Cache, Error};

pub use std::time::Duration as StdDuration;

/// The group of a `#[cached]` without `group = ...`, from the `type_name` of
/// a closure in its body: the function's path as the compiler prints it, with
/// the module, a method's self type and trait, and a generic function's type
/// arguments (`app::Users::get`, `app::<app::Pg as app::Store>::load`,
/// `app::parse<u64>`). No two functions, nor two instantiations of one, share
/// it.
pub fn default_group(closure: &'static str) -> &'static str {
    let mut name = closure;
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    if name.contains(['{', '}']) {
        // A closure among the type arguments: braces would end the hash tag.
        return without_braces(name);
    }
    name
}

/// `name` with its braces made parentheses, made once per name.
fn without_braces(name: &'static str) -> &'static str {
    static NAMES: LazyLock<Mutex<HashMap<&'static str, &'static str>>> =
        LazyLock::new(Mutex::default);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    names.entry(name).or_insert_with(|| {
        let replaced = name.replace('{', "(").replace('}', ")");
        Box::leak(replaced.into_boxed_str())
    })
}

/// The cache for an attribute without `cache = ...`.
pub fn current() -> Cache {
    crate::cache::ambient::current()
}

/// The cache named by `cache = expr`.
pub fn handle(cache: &Cache) -> Cache {
    cache.clone()
}

/// An argument that is part of a default key. The diagnostic below is what a
/// user sees for an argument that is not `Serialize`, spanned on it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is part of the cache key but does not implement `serde::Serialize`",
    label = "this argument is part of the cache key",
    note = "add this argument's name to `skip(...)` to leave it out of the key, or choose the key with `key = ...`"
)]
pub trait KeyPart {
    /// The argument as a type-erased key part, so that the tuple of parts is
    /// `Serialize` whatever the arguments: one error per argument, not two.
    fn as_key_part(&self) -> &dyn erased_serde::Serialize;
    /// The key of a function whose one argument this is, encoded without
    /// erasure (no virtual call per value).
    fn entry_key(&self) -> Result<EntryKey, Error>;
}

impl<T: Serialize> KeyPart for T {
    fn as_key_part(&self) -> &dyn erased_serde::Serialize {
        self
    }
    fn entry_key(&self) -> Result<EntryKey, Error> {
        EntryKey::new(self)
    }
}

/// Checks (at compile time, spanned on the argument) that an argument can be
/// part of a key.
pub fn key_part<T: KeyPart>(value: &T) -> &dyn erased_serde::Serialize {
    value.as_key_part()
}

/// The key of a function with one key argument, checked as [`key_part`] is.
pub fn key_of<T: KeyPart>(value: &T) -> Result<EntryKey, Error> {
    value.entry_key()
}

/// Encodes a key value.
pub fn key<K: Serialize + ?Sized>(key: &K) -> Result<EntryKey, Error> {
    EntryKey::new(key)
}

/// The policy of an attribute whose options choose the kind of return value
/// (`result`, `option`, `plain`, `cache_none`, `cache_err`).
pub fn policy<K: Kind<R>, R>(group: &str) -> Policy<'_, K, R>
where
    K::Value: CacheValue,
{
    Policy::new(group)
}

type Predicate<'a, T> = Box<dyn Fn(&T) -> bool + Send + Sync + 'a>;
type TtlFn<'a, T> = Box<dyn Fn(&T) -> Duration + Send + Sync + 'a>;

/// What to store, where and for how long: the options of one attribute.
/// Options left unset take the cache's defaults.
#[must_use]
pub struct Policy<'a, K: Kind<R>, R> {
    group: &'a str,
    ttl: Option<Duration>,
    /// Which `None` or `Err` to store (`cache_none`, `cache_err`).
    negative: Option<Predicate<'a, K::Negative>>,
    negative_ttl: Option<Duration>,
    unless: Option<Predicate<'a, K::Item>>,
    ttl_fn: Option<TtlFn<'a, K::Item>>,
    lock: Option<bool>,
    lock_timeout: Option<Duration>,
    early: Option<f64>,
    jitter: Option<f64>,
    stale_while_revalidate: Option<Duration>,
    /// A hit at least this old is loaded again (HTTP `max-age=N`, `no-cache`).
    revalidate_after: Option<Duration>,
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
    pub fn new(group: &'a str) -> Self {
        Policy {
            group,
            ttl: None,
            negative: None,
            negative_ttl: None,
            unless: None,
            ttl_fn: None,
            lock: None,
            lock_timeout: None,
            early: None,
            jitter: None,
            stale_while_revalidate: None,
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
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    pub fn cache_none(mut self) -> Self {
        self.negative = Some(Box::new(|_| true));
        self
    }
    pub fn cache_err(mut self, f: impl Fn(&K::Negative) -> bool + Send + Sync + 'a) -> Self {
        self.negative = Some(Box::new(f));
        self
    }
    /// The TTL of a stored `None` or error (`none_ttl`, `err_ttl`).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }
    pub fn unless(mut self, f: impl Fn(&K::Item) -> bool + Send + Sync + 'a) -> Self {
        self.unless = Some(Box::new(f));
        self
    }
    pub fn ttl_fn(mut self, f: impl Fn(&K::Item) -> Duration + Send + Sync + 'a) -> Self {
        self.ttl_fn = Some(Box::new(f));
        self
    }
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = Some(lock);
        self
    }
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }
    pub fn early(mut self, beta: f64) -> Self {
        self.early = Some(beta);
        self
    }
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = Some(fraction);
        self
    }
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
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
    fn decide<'r>(&self, ret: &'r R, cache: &Cache) -> Option<(&'r K::Value, Duration)>
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

    fn reader(&self) -> Reader<K::Value> {
        Reader {
            open: self.open,
            keep: self.keep,
        }
    }

    fn read<'c>(&self, cache: &'c Cache, key: &'c EntryKey) -> Read<'c>
    where
        'a: 'c,
    {
        Read {
            cache,
            group: self.group,
            key,
            epoch: cache.local().map_or(0, |local| local.epoch()),
            lock: self.lock.unwrap_or(cache.settings().lock),
            lock_timeout: self.lock_timeout.unwrap_or(cache.settings().lock_timeout),
        }
    }

    /// Whether a hit should be refreshed now: XFetch (Vattani et al., VLDB
    /// 2015) recomputes when `now - delta * beta * ln(rand) >= expiry`.
    fn refresh_early(&self, cache: &Cache, meta: &Meta) -> bool {
        let Some(beta) = self.early.or(cache.settings().early) else {
            return false;
        };
        let head_start = -f64::from(meta.load_ms) * beta * (1.0 - fastrand::f64()).ln();
        head_start >= meta.fresh_for_ms() as f64
    }

    /// The envelope to store for a return value and its TTL (freshness plus
    /// the stale-while-revalidate window), if it is to be stored.
    fn seal(&self, cache: &Cache, ret: &R, load: Duration) -> Option<(Vec<u8>, Duration)> {
        let (value, fresh) = self.decide(ret, cache)?;
        let sealed = (self.seal)(cache.codec(), value, load, fresh);
        let bytes = ok_or_warn(cache.counters(), "encode", self.group, sealed)?;
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
        Some((
            bytes,
            fresh + self.stale_while_revalidate.unwrap_or_default(),
        ))
    }
}

/// Stores a sealed value under `lease`, or gives the lease back when there is
/// nothing to store (so that waiters take over at once).
async fn fill(
    cache: &Cache,
    group: &str,
    key: &EntryKey,
    mut lease: LeaseGuard,
    sealed: Option<(Vec<u8>, Duration)>,
) {
    let Some(held) = lease.lease().cloned() else {
        return;
    };
    let outcome = match sealed {
        Some((bytes, ttl)) => cache
            .op(cache.backend().fill(group, key, &held, bytes, ttl))
            .await
            .map(|stored| {
                if stored {
                    metrics::stored(cache.counters(), group);
                }
            }),
        None if lease.owned() => cache.op(cache.backend().release(group, key, &held)).await,
        None => Ok(()),
    };
    // Disarmed only now: dropped mid-request, the guard gives the lease back.
    lease.disarm();
    if outcome.is_err() && lease.owned() {
        // The store (or release) may not have happened: give the lease back,
        // so that the next caller need not wait for it.
        crate::lease::release_later(cache, group.to_owned(), key.clone(), held);
    }
    ok_or_warn(cache.counters(), "store", group, outcome);
}

/// Stores a miss's value as [`fill`] does, but returns once the fill is sent:
/// a background task awaits Redis's reply, so a miss costs its caller two
/// round trips (the peek and the lease), as a hand-written `GET` and `SET`
/// do. The fill script arbitrates, not its timing: it stores only under a
/// lease that no write has dropped since. Sent before this returns, it
/// precedes this process's later reads of the key on the connection; another
/// process that reads in between finds the lease and waits for the value.
async fn send_fill(
    cache: &Cache,
    group: &str,
    key: &EntryKey,
    lease: LeaseGuard,
    sealed: Option<(Vec<u8>, Duration)>,
) {
    let runtime = match (cache.backend(), tokio::runtime::Handle::try_current()) {
        (Backend::Redis(redis), Ok(runtime)) if redis.fills_at_once(group) => runtime,
        // In process, a fill is done when called; a first fill may load its
        // script; without tokio, there is nothing to hand the reply to.
        _ => return fill(cache, group, key, lease, sealed).await,
    };
    let (cache, group, key) = (cache.clone(), group.to_owned(), key.clone());
    let mut sent = Box::pin(async move { fill(&cache, &group, &key, lease, sealed).await });
    // One poll puts the script on the connection (or finishes the fill).
    let pending = std::future::poll_fn(|cx| Poll::Ready(sent.as_mut().poll(cx).is_pending()));
    if pending.await {
        runtime.spawn(sent.instrument(Span::current()));
    }
}

/// `#[cached]`: look up; on a hit return the stored value; on a miss run the
/// body and store its value under the read lease taken by the lookup.
pub async fn cached<K, R, F>(
    cache: Cache,
    policy: Policy<'_, K, R>,
    key: Result<EntryKey, Error>,
    body: F,
) -> R
where
    K: Kind<R>,
    F: Future<Output = R>,
{
    let Some(key) = readable_key(policy.group, key) else {
        return bypass(&cache, policy.group, body).await;
    };
    let read = policy.read(&cache, &key);
    let found = read.resolve(&policy.reader()).await;
    let rest = match settle(&policy, &cache, found) {
        Settled::Hit(hit) => return hit,
        Settled::Rest(rest) => rest,
    };
    complete(&policy, &read, rest, body).await
}

/// The span of an annotated call, which its body runs in: `cache`, at
/// `debug`, with its group and its outcome (`hit`, `miss`, `stale`, `bypass`,
/// made once a read knows it; `put`, `evict`). Only the body is
/// instrumented, where it runs: wrapping a read's whole flow cost a hit ~110
/// instructions, and wrapping the body before the read (a hit drops it
/// unpolled, inside the span) about 180. Made with its outcome, not
/// recorded later: with tracing's `log` feature on (sqlx turns it on) a
/// span costs a hit ~160 instructions less so (callgrind).
fn call_span(group: &str, outcome: &'static str) -> Span {
    tracing::debug_span!("cache", group, outcome)
}

/// Runs the body without the cache: a miss.
async fn bypass<R>(cache: &Cache, group: &str, body: impl Future<Output = R>) -> R {
    metrics::miss(cache.counters(), group);
    body.instrument(call_span(group, "bypass")).await
}

/// `#[cached(stale_while_revalidate = ...)]`: as [`cached`], but a value past
/// its TTL (within the window) is returned at once while one caller across
/// all processes refreshes it in the background; hence the `'static` body.
pub async fn cached_swr<K, R, F>(
    cache: Cache,
    policy: Policy<'static, K, R>,
    key: Result<EntryKey, Error>,
    body: F,
) -> R
where
    K: Kind<R> + 'static,
    K::Value: Send,
    K::Item: 'static,
    R: Send + 'static,
    F: Future<Output = R> + Send + 'static,
{
    let group = policy.group;
    let Some(key) = readable_key(group, key) else {
        return bypass(&cache, group, body).await;
    };
    let read = policy.read(&cache, &key);
    let found = match read.resolve(&policy.reader()).await {
        Found::Hit(value, meta) if meta.fresh_for_ms() < 0 => {
            let span = call_span(group, "stale");
            if let Some(lease) = read.refresh_lease().await {
                let (cache, key, call) = (cache.clone(), key.clone(), span.clone());
                let refresh = async move {
                    let started = Instant::now();
                    let ret = body.instrument(call).await;
                    metrics::loaded(cache.counters(), policy.group, started.elapsed());
                    let sealed = policy.seal(&cache, &ret, started.elapsed());
                    fill(&cache, policy.group, &key, lease, sealed).await;
                };
                let span = tracing::debug_span!(
                    "cache_revalidate",
                    group,
                    stale_ms = -meta.fresh_for_ms()
                );
                tokio::spawn(refresh.instrument(span));
            }
            metrics::hit(cache.counters(), group, true);
            return K::rebuild(value);
        }
        found => found,
    };
    let rest = match settle(&policy, &cache, found) {
        Settled::Hit(hit) => return hit,
        Settled::Rest(rest) => rest,
    };
    complete(&policy, &read, rest, body).await
}

/// The key of a read, or `None` (logged) when it does not encode: the call
/// then runs without the cache.
fn readable_key(group: &str, key: Result<EntryKey, Error>) -> Option<EntryKey> {
    match key {
        Ok(key) => Some(key),
        Err(error) => {
            tracing::warn!(group, %error, "cache key does not encode; running without the cache");
            None
        }
    }
}

/// What is left of a read once a plain hit is returned.
enum Rest<'c, V> {
    /// A hit to refresh first (early, or as revalidation asked), if a lease
    /// for it can be had.
    Refresh { value: V, revalidate: bool },
    /// Run the body, as [`Found::Load`].
    Load {
        lease: Option<LeaseGuard>,
        flight: Option<FlightGuard<'c>>,
    },
}

/// A read once [`settle`] has seen it: a plain hit to return, or the rest.
enum Settled<'c, R, V> {
    Hit(R),
    Rest(Rest<'c, V>),
}

/// Returns a plain hit at once: not async, so that a hit builds and moves no
/// future for the rest ([`complete`]).
fn settle<'c, K, R>(
    policy: &Policy<'_, K, R>,
    cache: &Cache,
    found: Found<'c, K::Value>,
) -> Settled<'c, R, K::Value>
where
    K: Kind<R>,
{
    match found {
        Found::Hit(value, meta) => {
            let revalidate = policy
                .revalidate_after
                .is_some_and(|age| meta.age_ms() >= age.as_millis());
            if revalidate || policy.refresh_early(cache, &meta) {
                return Settled::Rest(Rest::Refresh { value, revalidate });
            }
            Settled::Hit(hit::<K, R>(cache, policy.group, value))
        }
        Found::Load { lease, flight } => Settled::Rest(Rest::Load { lease, flight }),
    }
}

/// Returns a hit, counted, with its span.
fn hit<K: Kind<R>, R>(cache: &Cache, group: &str, value: K::Value) -> R {
    metrics::hit(cache.counters(), group, false);
    drop(call_span(group, "hit"));
    K::rebuild(value)
}

/// Finishes a read that [`settle`] did not: refresh a hit, or run the body
/// and store its value.
async fn complete<K, R, F>(
    policy: &Policy<'_, K, R>,
    read: &Read<'_>,
    rest: Rest<'_, K::Value>,
    body: F,
) -> R
where
    K: Kind<R>,
    F: Future<Output = R>,
{
    let (cache, group) = (read.cache, policy.group);
    let (lease, flight) = match rest {
        Rest::Refresh { value, revalidate } => match read.refresh_lease().await {
            Some(lease) => (Some(lease), None),
            // Someone else refreshes it: load without storing.
            None if revalidate => (None, None),
            None => return hit::<K, R>(cache, group, value),
        },
        Rest::Load { lease, flight } => (lease, flight),
    };
    if lease.is_none() && flight.is_none() {
        return bypass(cache, group, body).await;
    }
    metrics::miss(cache.counters(), group);
    let started = Instant::now();
    let ret = body.instrument(call_span(group, "miss")).await;
    if let Some(lease) = lease {
        metrics::loaded(cache.counters(), group, started.elapsed());
        let sealed = policy.seal(cache, &ret, started.elapsed());
        send_fill(cache, group, read.key, lease, sealed).await;
    }
    drop(flight); // this process's waiters read again now
    ret
}

/// `#[cache_put]`: register the write, run the body, then store its value if
/// no other write overlapped it (else drop the entry).
pub async fn put<K, R, F>(
    cache: Cache,
    policy: Policy<'_, K, R>,
    key: Result<EntryKey, Error>,
    body: F,
) -> R
where
    K: Kind<R>,
    F: Future<Output = R>,
{
    let group = policy.group;
    let body = body.instrument(call_span(group, "put"));
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            tracing::error!(group, %error, "cache key does not encode; the entry cannot be updated");
            return body.await;
        }
    };
    let backend = cache.backend();
    let token = crate::backend::token();
    let mut write = WriteGuard::new(&cache, group, &key, token.clone());
    let ticket = match cache.op(backend.begin_write(group, &key, &token)).await {
        Ok(ticket) => Some(ticket),
        Err(Error::Unavailable) => {
            write.disarm(); // never sent
            None
        }
        // It may still run later: the guard ends it when the put is done.
        Err(error) => ok_or_warn(cache.counters(), "write", group, Err(error)),
    };
    let started = Instant::now();
    let ret = body.await;
    let end = if !K::succeeded(&ret) {
        WriteEnd::Abort
    } else {
        match policy.seal(&cache, &ret, started.elapsed()) {
            Some((bytes, ttl)) => WriteEnd::Store(bytes, ttl),
            None => WriteEnd::Evict,
        }
    };
    let evicts = !matches!(end, WriteEnd::Abort);
    if ticket.is_some() {
        write.disarm(); // the put ends it below
    }
    let stores = matches!(end, WriteEnd::Store(..));
    let outcome = match (ticket, end) {
        (ticket, WriteEnd::Abort) => match ticket {
            Some(ticket) => {
                cache
                    .op(backend.end_write(group, &key, &ticket, WriteEnd::Abort))
                    .await
            }
            None => Ok(false),
        },
        (Some(ticket), end) => cache.op(backend.end_write(group, &key, &ticket, end)).await,
        // Without a registered write no store is safe; drop the old value.
        (None, _) => cache.op(backend.invalidate(group, &key)).await,
    };
    cache.flights().detach(group, &key);
    cache.forget(crate::entry::Invalidation::Key(group, &key));
    if stores && matches!(outcome, Ok(true)) {
        metrics::stored(cache.counters(), group);
    }
    if let Err(error) = outcome {
        if evicts {
            // The old value may still be there: make sure it goes.
            retry::queue(&cache, Eviction::Key(group.to_owned(), key), &error);
        } else {
            ok_or_warn(cache.counters(), "write", group, Err::<(), _>(error));
        }
    }
    ret
}

/// What a `#[cache_evict]` evicts.
pub enum Target {
    /// One entry.
    Key(Result<EntryKey, Error>),
    /// The whole group.
    All,
}

/// `#[cache_evict]`: run the body and evict after it succeeded, or evict
/// first with `before`.
pub async fn evict<K, R, F>(
    cache: Cache,
    _kind: K,
    group: &str,
    target: Target,
    before: bool,
    body: F,
) -> R
where
    K: Kind<R>,
    F: Future<Output = R>,
{
    let body = body.instrument(call_span(group, "evict"));
    if before {
        evict_now(&cache, group, target).await;
        return body.await;
    }
    let ret = body.await;
    if K::succeeded(&ret) {
        evict_now(&cache, group, target).await;
    }
    ret
}

pub(crate) async fn evict_now(cache: &Cache, group: &str, target: Target) {
    let (outcome, eviction) = match target {
        Target::All => (
            cache.evict_group_unchecked(group).await,
            Eviction::Group(group.to_owned()),
        ),
        Target::Key(Ok(key)) => (
            cache.invalidate(group, &key).await.map(drop),
            Eviction::Key(group.to_owned(), key),
        ),
        Target::Key(Err(error)) => {
            tracing::error!(group, %error, "cache key does not encode; the entry cannot be evicted");
            return;
        }
    };
    if let Err(error) = outcome {
        retry::queue(cache, eviction, &error);
    }
}

#[cfg(test)]
mod tests {
    use super::default_group;

    #[test]
    fn default_groups_are_the_function_path() {
        assert_eq!(
            default_group("app::<app::Pg as app::Store>::load::{{closure}}::{{closure}}"),
            "app::<app::Pg as app::Store>::load"
        );
        assert_eq!(
            default_group("app::parse<u64>::{{closure}}"),
            "app::parse<u64>"
        );
        let with_closure = default_group("app::run<app::main::{{closure}}>::{{closure}}");
        assert_eq!(with_closure, "app::run<app::main::((closure))>");
        assert!(std::ptr::eq(
            with_closure,
            default_group("app::run<app::main::{{closure}}>::{{closure}}")
        ));
    }
}
