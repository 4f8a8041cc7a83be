//! `#[cached(each = ids)]`: a bulk call cached per element, in the entries
//! the single-key functions of the group share.
//!
//! Every key is looked up at once (the hits of one group are one batched
//! read), then the misses' read leases are taken at once. The body runs
//! once, with the keys this caller holds the lease of, and each element it
//! returns is filled under its key's lease, as a single-key miss is: a write
//! in between takes the lease away. Keys whose lease another caller holds
//! are waited for; while waiting, this caller holds no lease, so two bulk
//! calls that overlap never wait for each other (each gives its leases back
//! and tries again a little later, at random). Past `lock_timeout` the keys
//! still held are loaded too, and not stored.
//!
//! Elements are sealed as `Option<V>` values are: a present one as the `V`
//! it holds, which single-key functions share; a key the body left out, with
//! `cache_none`, as an absent entry, which later calls skip.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fail_safe;
use super::policy::Policy;
use super::read::call_span;
use super::returns::{CacheValue, OptionKind};
use crate::backend::Want;
use crate::background::Backoff;
use crate::consistency::bulk::{self, Claim};
use crate::consistency::lease::LeaseGuard;
use crate::deps::capture::Capture;
use crate::entry::envelope::Meta;
use crate::entry::EntryKey;
use crate::observe::metrics;
use crate::Cache;
use tracing::Instrument;

/// What a bulk function returns: a map of its elements, bare or in a
/// `Result` (only `Ok` is stored).
pub trait Bulk: Sized {
    /// The key of an element.
    type Key;
    /// An element's value: what the single-key function stores.
    type Value;
    /// The map of elements.
    type Map: IntoIterator<Item = (Self::Key, Self::Value)> + FromIterator<(Self::Key, Self::Value)>;
    /// The map, or the return value itself when it is an error.
    fn into_map(self) -> Result<Self::Map, Self>;
    /// A return value holding `map`.
    fn from_map(map: Self::Map) -> Self;
}

impl<K: Eq + Hash, V, S: BuildHasher + Default> Bulk for HashMap<K, V, S> {
    type Key = K;
    type Value = V;
    type Map = Self;
    fn into_map(self) -> Result<Self, Self> {
        Ok(self)
    }
    fn from_map(map: Self) -> Self {
        map
    }
}

impl<K: Ord, V> Bulk for BTreeMap<K, V> {
    type Key = K;
    type Value = V;
    type Map = Self;
    fn into_map(self) -> Result<Self, Self> {
        Ok(self)
    }
    fn from_map(map: Self) -> Self {
        map
    }
}

impl<K: Eq + Hash, V, S: BuildHasher + Default, E> Bulk for Result<HashMap<K, V, S>, E> {
    type Key = K;
    type Value = V;
    type Map = HashMap<K, V, S>;
    fn into_map(self) -> Result<Self::Map, Self> {
        self.map_err(Err)
    }
    fn from_map(map: Self::Map) -> Self {
        Ok(map)
    }
}

impl<K: Ord, V, E> Bulk for Result<BTreeMap<K, V>, E> {
    type Key = K;
    type Value = V;
    type Map = BTreeMap<K, V>;
    fn into_map(self) -> Result<Self::Map, Self> {
        self.map_err(Err)
    }
    fn from_map(map: Self::Map) -> Self {
        Ok(map)
    }
}

/// The longest pause between two tries at the held keys.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// One key of a bulk call: where it was first asked for, its entry, itself.
struct Wanted<K> {
    at: usize,
    entry: EntryKey,
    key: K,
    /// The stored value may not be served (undecodable, or what it depends
    /// on changed): take the lease past it.
    past_value: bool,
    /// The stored value is past its TTL, kept by fail-safe (its timing):
    /// take the lease beside it, and let it stand in if the body fails.
    kept: Option<Meta>,
}

impl<K> Wanted<K> {
    /// What the lease script is asked to do with the stored value.
    fn want(&self) -> Want {
        match (self.past_value, self.kept) {
            (true, _) => Want::ForceLock,
            (false, Some(_)) => Want::Beside,
            (false, None) => Want::Lock,
        }
    }
}

/// `#[cached(each = ...)]`: the hits, and the body's elements for the keys
/// that missed, each stored under its own lease.
pub async fn cached_each<R, F, Fut>(
    cache: Cache,
    policy: Policy<'_, OptionKind, Option<R::Value>>,
    keys: Vec<R::Key>,
    body: F,
) -> R
where
    R: Bulk,
    R::Key: Serialize + Clone,
    R::Value: CacheValue,
    F: FnOnce(Vec<R::Key>) -> Fut,
    Fut: Future<Output = R>,
{
    let group = policy.group;
    let mut wanted: Vec<Wanted<R::Key>> = Vec::with_capacity(keys.len());
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for (at, key) in keys.into_iter().enumerate() {
        let entry = match EntryKey::new(&key) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(group, %error, "cache key does not encode; running without the cache");
                let all = wanted.into_iter().map(|w| w.key).chain([key]).collect();
                return body(all).instrument(call_span(group, "bypass")).await;
            }
        };
        if seen.insert(entry.clone()) {
            wanted.push(Wanted {
                at,
                entry,
                key,
                past_value: false,
                kept: None,
            });
        }
    }
    if wanted.is_empty() {
        return R::from_map(std::iter::empty().collect());
    }
    let entries: Vec<EntryKey> = wanted.iter().map(|w| w.entry.clone()).collect();
    let start = cache.begin_read(group, &entries).await;
    let reader = policy.reader();
    let deadline = Instant::now() + policy.lock_bound(&cache);
    let mut found: Vec<(usize, R::Key, R::Value)> = Vec::new();
    let mut absent = 0;
    let mut leased: Vec<(Wanted<R::Key>, LeaseGuard)> = Vec::new();
    // A key whose eviction waits for its retry is read past the cache.
    let (mut unleased, mut pending, mut entries) = if start.passes_none(&cache) {
        (Vec::new(), wanted, Some(entries))
    } else {
        let (past, pending): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|w| start.passes(&cache, group, &w.entry));
        (past, pending, None)
    };
    let mut peek = true;
    let mut backoff = Backoff::new(Duration::from_millis(1), MAX_PAUSE);
    while !pending.is_empty() {
        let claims = if peek {
            // The keys of the first look, as begun unless some passed.
            let entries = entries
                .take()
                .unwrap_or_else(|| pending.iter().map(|w| w.entry.clone()).collect());
            bulk::peek_all(&cache, group, &entries).await
        } else {
            let asks: Vec<(&EntryKey, Want)> =
                pending.iter().map(|w| (&w.entry, w.want())).collect();
            bulk::lock_all(&cache, group, &asks).await
        };
        let mut held = Vec::new();
        let mut next = Vec::new();
        for (mut w, claim) in pending.into_iter().zip(claims) {
            match claim {
                Claim::Hit(kept) => {
                    let holds = start.holds(&cache, &kept).await;
                    match holds.then(|| cache.open(group, &w.entry, &kept, &reader)) {
                        Some(Some((_, meta))) if policy.expired(&cache, &meta) => {
                            w.kept = Some(meta);
                            next.push(w);
                        }
                        Some(Some((Some(value), _))) => found.push((w.at, w.key, value)),
                        Some(Some((None, _))) => absent += 1,
                        _ => {
                            w.past_value = true;
                            next.push(w);
                        }
                    }
                }
                Claim::Leased(lease) => leased.push((w, lease)),
                Claim::Miss if peek => next.push(w),
                Claim::Miss | Claim::Failed => unleased.push(w),
                Claim::Held => held.push(w),
            }
        }
        if !held.is_empty() && Instant::now() < deadline {
            // Wait holding nothing: give this call's leases back, and try
            // them all again after a pause.
            let given_back = leased.drain(..).map(|(w, lease)| {
                let cache = &cache;
                async move {
                    bulk::give_back(cache, group, &w.entry, lease).await;
                    w
                }
            });
            next.extend(futures_util::future::join_all(given_back).await);
            next.extend(held);
            let pause = backoff.pause();
            tokio::time::sleep(pause + pause.mul_f64(fastrand::f64())).await;
        } else {
            if !held.is_empty() {
                metrics::lock_timed_out(cache.counters(), group, held.len() as u64);
            }
            unleased.extend(held);
        }
        pending = next;
        peek = false;
    }
    for _ in 0..found.len() + absent {
        metrics::hit(cache.counters(), group, false);
    }
    if leased.is_empty() && unleased.is_empty() {
        return R::from_map(found.into_iter().map(|(_, k, v)| (k, v)).collect());
    }
    // The body, with the missing keys in the order first asked.
    let mut missing: Vec<(Wanted<R::Key>, Option<LeaseGuard>)> = leased
        .into_iter()
        .map(|(w, lease)| (w, Some(lease)))
        .chain(unleased.into_iter().map(|w| (w, None)))
        .collect();
    missing.sort_by_key(|(w, _)| w.at);
    let mut leases: Vec<(EntryKey, Option<LeaseGuard>)> = Vec::with_capacity(missing.len());
    let mut keys = Vec::with_capacity(missing.len());
    // What may stand in for the body's failure: every missing key's kept
    // value, under its lease, or nothing.
    let mut kept: Option<Vec<(R::Key, Meta)>> = policy
        .kept_for(&cache)
        .map(|_| Vec::with_capacity(missing.len()));
    for (w, lease) in missing {
        metrics::miss(cache.counters(), group);
        kept = kept.and_then(|mut all| {
            all.push((w.key.clone(), w.kept.filter(|_| lease.is_some())?));
            Some(all)
        });
        leases.push((w.entry, lease));
        keys.push(w.key);
    }
    let inner = Capture::open(policy.lifetime(&cache));
    let started = Instant::now();
    let ret = inner
        .run(body(keys).instrument(call_span(group, "miss")))
        .await;
    let map = match ret.into_map() {
        Ok(map) => map,
        Err(failed) => {
            let Some(kept) = kept else {
                return failed; // the leases are given back as they drop
            };
            let error = format!("an error in `{}`", std::any::type_name::<R>());
            return match fail_safe::stand_in_each(&cache, &policy, leases, kept, &error).await {
                Some(stood) => R::from_map(
                    found
                        .into_iter()
                        .map(|(_, k, v)| (k, v))
                        .chain(stood)
                        .collect(),
                ),
                None => failed,
            };
        }
    };
    let stamps = cache.finish_load(group, &inner, Vec::new()).await;
    metrics::loaded(cache.counters(), group, started.elapsed());
    let mut loaded = Vec::new();
    let mut fills = Vec::new();
    for (key, value) in map {
        let lease = EntryKey::new(&key).ok().and_then(|entry| {
            let at = leases.iter().position(|(e, _)| *e == entry)?;
            let (entry, lease) = leases.swap_remove(at);
            Some((entry, lease?))
        });
        let value = Some(value);
        if let (Some((entry, lease)), Some(stamps)) = (lease, &stamps) {
            if let Some((bytes, ttl)) = policy.seal(&cache, &value, started.elapsed(), stamps) {
                fills.push((entry, lease, bytes, ttl));
            }
        }
        loaded.extend(value.map(|value| (key, value)));
    }
    // The keys the body left out: absent, stored as such with `cache_none`.
    // The leases of the keys not stored are given back as they drop.
    for (entry, lease) in leases {
        let sealed = stamps
            .as_ref()
            .and_then(|stamps| policy.seal(&cache, &None, started.elapsed(), stamps));
        if let (Some(lease), Some((bytes, ttl))) = (lease, sealed) {
            fills.push((entry, lease, bytes, ttl));
        }
    }
    bulk::send_fills(&cache, group, fills).await;
    R::from_map(
        found
            .into_iter()
            .map(|(_, k, v)| (k, v))
            .chain(loaded)
            .collect(),
    )
}
