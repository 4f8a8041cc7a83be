//! What the attribute expansions call. Not a public API: names and signatures
//! change without notice.

use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Lookup, Want, WriteEnd};
use crate::key::EntryKey;
use crate::{envelope, Cache, Error};

pub use std::time::Duration as StdDuration;

/// The cache for an attribute without `cache = ...`.
pub fn current() -> Cache {
    crate::current::current()
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
}

impl<T: Serialize> KeyPart for T {
    fn as_key_part(&self) -> &dyn erased_serde::Serialize {
        self
    }
}

/// Checks (at compile time, spanned on the argument) that an argument can be
/// part of a key.
pub fn key_part<T: KeyPart>(value: &T) -> &dyn erased_serde::Serialize {
    value.as_key_part()
}

/// Encodes a key value.
pub fn key<K: Serialize + ?Sized>(key: &K) -> Result<EntryKey, Error> {
    EntryKey::new(key)
}

/// How a function's return value maps to what is cached.
pub trait Kind<R> {
    /// What is stored.
    type Value;
    /// What `unless` and `ttl_fn` see.
    type Item;
    /// Whether the call succeeded (only then is anything stored or evicted).
    fn succeeded(ret: &R) -> bool;
    /// The value to store and the item the predicates see; `None` when the
    /// call failed. The item is `None` for a `None` of an `Option` return.
    fn split(ret: &R) -> Option<(&Self::Value, Option<&Self::Item>)>;
    /// Rebuilds a return value from a stored one.
    fn rebuild(value: Self::Value) -> R;
}

/// `Result<T, E>`: only `Ok(T)` is stored.
pub struct ResultKind;
/// `Option<T>`: `Some` is stored; `None` only with `cache_none`.
pub struct OptionKind;
/// Any other type: stored as it is.
pub struct PlainKind;

impl<T, E> Kind<Result<T, E>> for ResultKind {
    type Value = T;
    type Item = T;
    fn succeeded(ret: &Result<T, E>) -> bool {
        ret.is_ok()
    }
    fn split(ret: &Result<T, E>) -> Option<(&T, Option<&T>)> {
        ret.as_ref().ok().map(|v| (v, Some(v)))
    }
    fn rebuild(value: T) -> Result<T, E> {
        Ok(value)
    }
}

impl<T> Kind<Option<T>> for OptionKind {
    type Value = Option<T>;
    type Item = T;
    fn succeeded(_: &Option<T>) -> bool {
        true
    }
    fn split(ret: &Option<T>) -> Option<(&Option<T>, Option<&T>)> {
        Some((ret, ret.as_ref()))
    }
    fn rebuild(value: Option<T>) -> Option<T> {
        value
    }
}

impl<T> Kind<T> for PlainKind {
    type Value = T;
    type Item = T;
    fn succeeded(_: &T) -> bool {
        true
    }
    fn split(ret: &T) -> Option<(&T, Option<&T>)> {
        Some((ret, Some(ret)))
    }
    fn rebuild(value: T) -> T {
        value
    }
}

type Predicate<'a, T> = Box<dyn Fn(&T) -> bool + Send + Sync + 'a>;
type TtlFn<'a, T> = Box<dyn Fn(&T) -> Duration + Send + Sync + 'a>;

/// What to store, where and for how long: the options of one attribute.
#[must_use]
pub struct Policy<'a, K: Kind<R>, R> {
    group: &'a str,
    ttl: Option<Duration>,
    none_ttl: Option<Duration>,
    cache_none: bool,
    unless: Option<Predicate<'a, K::Item>>,
    ttl_fn: Option<TtlFn<'a, K::Item>>,
    kind: PhantomData<fn() -> (K, R)>,
}

/// What to do with a return value.
enum Decision<'r, V> {
    Store(&'r V, Duration),
    Skip,
    Failed,
}

impl<'a, K: Kind<R>, R> Policy<'a, K, R> {
    pub fn new(group: &'a str) -> Self {
        Policy {
            group,
            ttl: None,
            none_ttl: None,
            cache_none: false,
            unless: None,
            ttl_fn: None,
            kind: PhantomData,
        }
    }
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    pub fn none_ttl(mut self, ttl: Duration) -> Self {
        self.none_ttl = Some(ttl);
        self
    }
    pub fn cache_none(mut self) -> Self {
        self.cache_none = true;
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

    fn decide<'r>(&self, ret: &'r R, default_ttl: Duration) -> Decision<'r, K::Value>
    where
        K::Item: 'r,
    {
        let Some((value, item)) = K::split(ret) else {
            return Decision::Failed;
        };
        let ttl = match item {
            None if !self.cache_none => return Decision::Skip,
            None => self.none_ttl.or(self.ttl),
            Some(item) => {
                if self.unless.as_ref().is_some_and(|unless| unless(item)) {
                    return Decision::Skip;
                }
                self.ttl_fn.as_ref().map(|f| f(item)).or(self.ttl)
            }
        };
        Decision::Store(value, ttl.unwrap_or(default_ttl))
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
    K::Value: Serialize + DeserializeOwned,
    F: Future<Output = R>,
{
    let group = policy.group;
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(group, %error, "cache key does not encode; running without the cache");
            return body.await;
        }
    };
    let backend = cache.backend();
    let lookup = cache.op(backend.lookup(group, &key, Want::Lease)).await;
    let lease = match ok_or_warn("lookup", group, lookup) {
        Some(Lookup::Hit(bytes)) => match cache.open::<K::Value>(group, &key, &bytes) {
            Some(value) => return K::rebuild(value),
            // the entry does not decode: load and overwrite it
            None => {
                let lookup = cache
                    .op(backend.lookup(group, &key, Want::ForceLease))
                    .await;
                match ok_or_warn("lookup", group, lookup) {
                    Some(Lookup::Miss(lease)) => lease,
                    Some(Lookup::Hit(_)) | None => None,
                }
            }
        },
        Some(Lookup::Miss(lease)) => lease,
        None => None,
    };
    let started = Instant::now();
    let ret = body.await;
    let Some(lease) = lease else { return ret };
    if let Decision::Store(value, ttl) = policy.decide(&ret, cache.default_ttl()) {
        let sealed = envelope::seal(cache.codec(), value, started.elapsed());
        if let Some(bytes) = ok_or_warn("encode", group, sealed) {
            let filled = cache
                .op(backend.fill(group, &key, &lease, bytes, ttl))
                .await;
            ok_or_warn("store", group, filled);
        }
    }
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
    K::Value: Serialize,
    F: Future<Output = R>,
{
    let group = policy.group;
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            tracing::error!(group, %error, "cache key does not encode; the entry cannot be updated");
            return body.await;
        }
    };
    let backend = cache.backend();
    let begun = cache.op(backend.begin_write(group, &key)).await;
    let ticket = ok_or_warn("write", group, begun);
    let started = Instant::now();
    let ret = body.await;
    let end = match policy.decide(&ret, cache.default_ttl()) {
        Decision::Failed => WriteEnd::Abort,
        Decision::Skip => WriteEnd::Evict,
        Decision::Store(value, ttl) => {
            let sealed = envelope::seal(cache.codec(), value, started.elapsed());
            match ok_or_warn("encode", group, sealed) {
                Some(bytes) => WriteEnd::Store(bytes, ttl),
                None => WriteEnd::Evict,
            }
        }
    };
    let outcome = match (ticket, end) {
        (_, WriteEnd::Abort) => Ok(false),
        (Some(ticket), end) => cache.op(backend.end_write(group, &key, &ticket, end)).await,
        // Without a registered write no store is safe; drop the old value.
        (None, _) => cache.op(backend.invalidate(group, &key)).await,
    };
    ok_or_warn("write", group, outcome);
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
pub async fn evict<K, R, F>(cache: Cache, group: &str, target: Target, before: bool, body: F) -> R
where
    K: Kind<R>,
    F: Future<Output = R>,
{
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

async fn evict_now(cache: &Cache, group: &str, target: Target) {
    let outcome = match target {
        Target::All => cache.op(cache.backend().evict_group(group)).await,
        Target::Key(Ok(key)) => cache
            .op(cache.backend().invalidate(group, &key))
            .await
            .map(drop),
        Target::Key(Err(error)) => Err(error),
    };
    if let Err(error) = outcome {
        tracing::error!(group, %error, "cache eviction failed; the entry lives until its TTL");
    }
}

/// Logs a failed cache operation and turns it into `None`: the call goes on
/// without the cache.
fn ok_or_warn<T>(what: &str, group: &str, result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(group, %error, "cache {what} failed; continuing without the cache");
            None
        }
    }
}
