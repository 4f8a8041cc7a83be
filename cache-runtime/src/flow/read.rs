//! `#[cached]`, `get_or_load` and the HTTP layer's reads: look up, return a
//! hit, or run the body and store its value (`consistency::fill`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, Span};

use super::fail_safe::{self, Next};
use super::policy::Policy;
use super::returns::Kind;
use crate::consistency::fill::{fill, send_fill};
use crate::consistency::flight::FlightGuard;
use crate::consistency::lease::LeaseGuard;
use crate::consistency::lookup::{Found, Read};
use crate::deps::capture::Capture;
use crate::entry::envelope::Meta;
use crate::entry::EntryKey;
use crate::observe::metrics::{self, StoodIn};
use crate::{Cache, Error};

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
        return bypass(&cache, policy.group, Box::pin(body)).await;
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
/// instrumented, where it runs: wrapping a read's whole flow, or the body
/// before the read (a hit drops it unpolled, inside the span), costs every
/// hit. Made with its outcome, not recorded later, which is cheaper when
/// tracing's `log` feature is on (sqlx turns it on).
pub(super) fn call_span(group: &str, outcome: &'static str) -> Span {
    tracing::debug_span!("cache", group, outcome)
}

/// Runs the body without the cache: a miss.
async fn bypass<R>(cache: &Cache, group: &str, body: impl Future<Output = R>) -> R {
    metrics::miss(cache.counters(), group);
    body.instrument(call_span(group, "bypass")).await
}

/// `#[cached]` with an option that runs the body in a background task, hence
/// the `'static` body: `stale_while_revalidate` (a value past its TTL,
/// within the window, is returned at once while one caller across all
/// processes refreshes it) and `soft_timeout` (a kept value is returned
/// when the body is slower; the body goes on and stores its value).
pub async fn cached_owned<K, R, F>(
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
        return bypass(&cache, group, Box::pin(body)).await;
    };
    let read = policy.read(&cache, &key);
    let found = match read.resolve(&policy.reader()).await {
        Found::Hit(value, meta) if meta.fresh_for_ms() < 0 && !policy.expired(&cache, &meta) => {
            let span = call_span(group, "stale");
            if let Some(lease) = read.refresh_lease().await {
                let (cache, key, call) = (cache.clone(), key.clone(), span.clone());
                let capture = Capture::alone(policy.lifetime(&cache));
                let refresh = async move {
                    let started = Instant::now();
                    let body = body.instrument(call);
                    let (_, sealed) = load(&policy, &cache, &capture, body, true).await;
                    metrics::loaded(cache.counters(), policy.group, started.elapsed());
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
    let (Rest::Expired(kept), Some(soft)) = (&rest, policy.soft()) else {
        return complete(&policy, &read, rest, body).await;
    };
    let (lease, kept) = match fail_safe::reload(&policy, &read, *kept).await {
        Next::Done(ret) => return ret,
        Next::Load {
            lease: Some(lease),
            kept: Some(kept),
            ..
        } => (lease, kept),
        Next::Load { lease, flight, .. } => {
            return complete(&policy, &read, Rest::Load { lease, flight }, body).await;
        }
    };
    // This caller holds the lease beside a kept value: the body runs in a
    // task of its own, which stores its value (or lets the kept value stand
    // in for its failure), and this caller waits for it at most `soft`.
    metrics::miss(cache.counters(), group);
    let policy = Arc::new(policy);
    let capture = Capture::open(policy.lifetime(&cache));
    let body = body.instrument(call_span(group, "miss"));
    let load = {
        let (policy, cache, key) = (policy.clone(), cache.clone(), key.clone());
        async move {
            let started = Instant::now();
            let (ret, sealed) = load(&policy, &cache, &capture, body, true).await;
            metrics::loaded(cache.counters(), group, started.elapsed());
            if !policy.failed(&ret) {
                fill(&cache, group, &key, lease, sealed).await;
                return ret;
            }
            let read = policy.read(&cache, &key);
            fail_safe::after_failure(&policy, &read, lease, kept, ret).await
        }
    };
    let mut task = tokio::spawn(load.in_current_span());
    let joined = match tokio::time::timeout(soft, &mut task).await {
        Ok(joined) => joined,
        Err(_) => match read.resolve(&policy.reader()).await {
            Found::Hit(value, meta) if !policy.expired(&cache, &meta) => {
                return hit::<K, R>(&cache, group, value);
            }
            Found::Hit(value, _) => {
                return fail_safe::stood_in(&policy, &read, value, StoodIn::Timeout, None);
            }
            // A write removed the kept value: wait for the body.
            Found::Load { .. } => task.await,
        },
    };
    joined.unwrap_or_else(|failed| match failed.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(cancelled) => std::panic::panic_any(cancelled.to_string()),
    })
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
    /// A value past its TTL, kept by fail-safe: load it again, and let it
    /// stand in if the body fails.
    Expired(Meta),
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
        Found::Hit(_, meta) if policy.expired(cache, &meta) => Settled::Rest(Rest::Expired(meta)),
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
pub(super) fn hit<K: Kind<R>, R>(cache: &Cache, group: &str, value: K::Value) -> R {
    metrics::hit(cache.counters(), group, false);
    drop(call_span(group, "hit"));
    K::rebuild(value)
}

/// Finishes a read that [`settle`] did not: refresh a hit, or run the body
/// and store its value.
///
/// The body is boxed here, off the hit path: held by value, it would be
/// held again by each future that awaits this one, and a cached call inside
/// a cached body (a list reading its products) nests them.
fn complete<'a, K, R, F>(
    policy: &'a Policy<'_, K, R>,
    read: &'a Read<'a>,
    rest: Rest<'a, K::Value>,
    body: F,
) -> impl Future<Output = R> + 'a
where
    K: Kind<R>,
    F: Future<Output = R> + 'a,
{
    let body = Box::pin(body);
    async move {
        let (cache, group) = (read.cache, policy.group);
        let (lease, flight, kept) = match rest {
            Rest::Refresh { value, revalidate } => match read.refresh_lease().await {
                Some(lease) => (Some(lease), None, None),
                // Someone else refreshes it: load without storing.
                None if revalidate => (None, None, None),
                None => return hit::<K, R>(cache, group, value),
            },
            Rest::Load { lease, flight } => (lease, flight, None),
            Rest::Expired(kept) => match fail_safe::reload(policy, read, kept).await {
                Next::Done(ret) => return ret,
                Next::Load {
                    lease,
                    flight,
                    kept,
                } => (lease, flight, kept),
            },
        };
        if lease.is_none() && flight.is_none() {
            return bypass(cache, group, body).await;
        }
        metrics::miss(cache.counters(), group);
        let capture = Capture::open(policy.lifetime(cache));
        let body = body.instrument(call_span(group, "miss"));
        let started = Instant::now();
        let (ret, sealed) = load(policy, cache, &capture, body, lease.is_some()).await;
        let Some(lease) = lease else {
            return ret;
        };
        metrics::loaded(cache.counters(), group, started.elapsed());
        let ret = match kept {
            Some(kept) if policy.failed(&ret) => {
                fail_safe::after_failure(policy, read, lease, kept, ret).await
            }
            _ => {
                send_fill(cache, group, read.key, lease, sealed).await;
                ret
            }
        };
        drop(flight); // this process's waiters read again now
        ret
    }
}

/// Runs a load's body in the dependency scope `capture`, and when `store`,
/// seals its value with the stamps of what it depends on: `None` when it is
/// not to be stored (see [`Cache::finish_load`]).
pub(super) async fn load<K, R>(
    policy: &Policy<'_, K, R>,
    cache: &Cache,
    capture: &Arc<Capture>,
    body: impl Future<Output = R>,
    store: bool,
) -> (R, Option<(Vec<u8>, Duration)>)
where
    K: Kind<R>,
{
    let started = Instant::now();
    let ret = capture.run(body).await;
    if !store && !capture.nested() {
        return (ret, None);
    }
    let stamps = cache
        .finish_load(policy.group, capture, policy.declared(&ret))
        .await;
    if !store {
        return (ret, None);
    }
    let sealed = stamps.and_then(|stamps| policy.seal(cache, &ret, started.elapsed(), &stamps));
    (ret, sealed)
}
