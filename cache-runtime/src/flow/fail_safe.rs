//! Fail-safe: a value kept past its TTL stands in for its body's failure,
//! or for a body slower than the soft timeout.
//!
//! A kept value is never a hit: a read that finds one takes the lease
//! beside it and runs the body, as a miss does. What it may return instead
//! of the body's failure is what the consistency core still serves, asked
//! again after the failure: it is made fresh for the throttle under the
//! load's lease (which any write in between took away), then read back
//! through every rule a read obeys (a pending eviction, the group's
//! generation, the dependency stamps, the restart epoch). So a write, before
//! or after the TTL, always leaves nothing to fall back on.

use std::time::{Duration, Instant};

use super::policy::Policy;
use super::read::{call_span, hit};
use super::returns::{CacheValue, Kind, OptionKind};
use crate::backend::KEEP_EXPIRY;
use crate::background::Backoff;
use crate::consistency::bulk::{self, Claim};
use crate::consistency::fill::fill;
use crate::consistency::flight::FlightGuard;
use crate::consistency::lease::LeaseGuard;
use crate::consistency::lookup::{Found, Read};
use crate::entry::envelope::{self, Meta};
use crate::entry::EntryKey;
use crate::observe::metrics::{self, StoodIn};
use crate::Cache;

const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(50);

/// What a caller that found a kept value does next. Made once per read of
/// an expired value, and matched at once: its size costs nothing on a hit.
#[allow(clippy::large_enum_variant)]
pub(super) enum Next<'c, R> {
    /// Return this.
    Done(R),
    /// Run the body; `kept` is the timing of the value that may stand in
    /// for its failure (none: the value is gone, nothing stands in).
    Load {
        lease: Option<LeaseGuard>,
        flight: Option<FlightGuard<'c>>,
        kept: Option<Meta>,
    },
}

/// A read found a kept value, `kept`: load it again under the lease beside
/// it, or, while another caller holds that lease, wait for its value.
pub(super) async fn reload<'c, K, R>(
    policy: &Policy<'_, K, R>,
    read: &Read<'c>,
    kept: Meta,
) -> Next<'c, R>
where
    K: Kind<R>,
{
    if let Some(lease) = lease_beside(read, &kept).await {
        return Next::Load {
            lease: Some(lease),
            flight: None,
            kept: Some(kept),
        };
    }
    follow(policy, read).await
}

/// The lease beside the kept value whose timing is `kept`, if no other
/// caller holds it and the value is still that one: a caller that read it
/// just before another's stand-in made it fresh again must not load it
/// again (the throttle holds), and reads it afresh instead.
async fn lease_beside(read: &Read<'_>, kept: &Meta) -> Option<LeaseGuard> {
    let lease = read.refresh_lease().await?;
    let stored = read.stored().await?; // else the lease is given back as it drops
    (envelope::timing(stored.bytes()).as_ref() == Some(kept)).then_some(lease)
}

/// Another caller loads the kept value again: poll until its value (or the
/// one it stood in with) is there, its lease is gone, or a write removed
/// the entry. At the soft timeout the kept value is returned; past
/// `lock_timeout`, the body runs unstored, as a miss's would.
async fn follow<'c, K, R>(policy: &Policy<'_, K, R>, read: &Read<'c>) -> Next<'c, R>
where
    K: Kind<R>,
{
    let (cache, group) = (read.cache, policy.group);
    let started = Instant::now();
    let deadline = started + policy.lock_bound(cache);
    let soft = policy.soft().map(|soft| started + soft);
    let mut backoff = Backoff::new(FIRST_POLL, MAX_POLL);
    loop {
        let now = Instant::now();
        let wake = soft.filter(|soft| *soft > now).unwrap_or(deadline);
        tokio::time::sleep(backoff.pause().min(wake.saturating_duration_since(now))).await;
        match read.resolve(&policy.reader()).await {
            Found::Hit(value, meta) if !policy.expired(cache, &meta) => {
                return Next::Done(hit::<K, R>(cache, group, value));
            }
            Found::Hit(value, _) if soft.is_some_and(|soft| Instant::now() >= soft) => {
                return Next::Done(stood_in::<K, R>(
                    policy,
                    read,
                    value,
                    StoodIn::Timeout,
                    None,
                ));
            }
            Found::Hit(_, meta) => {
                if let Some(lease) = lease_beside(read, &meta).await {
                    return Next::Load {
                        lease: Some(lease),
                        flight: None,
                        kept: Some(meta),
                    };
                }
                if Instant::now() >= deadline {
                    metrics::lock_timed_out(cache.counters(), group, 1);
                    return Next::Load {
                        lease: None,
                        flight: None,
                        kept: None,
                    };
                }
            }
            Found::Load { lease, flight } => {
                return Next::Load {
                    lease,
                    flight,
                    kept: None,
                }
            }
        }
    }
}

/// The body failed (`ret`) while its caller held the lease beside a kept
/// value: make that value fresh for the throttle, under the lease, and
/// return what a read then finds. `ret` when a write came in between (the
/// lease is gone, or the value changed), or the value cannot be had.
pub(super) async fn after_failure<K, R>(
    policy: &Policy<'_, K, R>,
    read: &Read<'_>,
    lease: LeaseGuard,
    kept: Meta,
    ret: R,
) -> R
where
    K: Kind<R>,
{
    let (cache, group) = (read.cache, policy.group);
    let Some(stored) = read.stored().await else {
        return ret;
    };
    // Another value is there (another caller's stand-in, or a put's): not
    // this caller's to refresh, and what a read finds decides.
    if let Some(bytes) = envelope::refreshed(stored.bytes(), &kept, policy.throttle(cache)) {
        if !fill(cache, group, read.key, lease, Some((bytes, KEEP_EXPIRY))).await {
            return ret;
        }
    }
    match read.resolve(&policy.reader()).await {
        Found::Hit(value, meta) if !policy.expired(cache, &meta) => {
            stood_in(policy, read, value, StoodIn::Error, Some(&ret))
        }
        Found::Hit(..) | Found::Load { .. } => ret,
    }
}

/// A bulk call's body failed while it held the lease beside every missing
/// key's kept value: each is made fresh for the throttle under its lease,
/// then read back as a bulk read reads. The elements that stand in (absent
/// ones left out), or `None` when any key cannot (a write came in between):
/// an element missing from the map would read as one that does not exist.
pub(super) async fn stand_in_each<K, V>(
    cache: &Cache,
    policy: &Policy<'_, OptionKind, Option<V>>,
    leases: Vec<(EntryKey, Option<LeaseGuard>)>,
    kept: Vec<(K, Meta)>,
    failed: &str,
) -> Option<Vec<(K, V)>>
where
    V: CacheValue,
{
    let group = policy.group;
    let throttle = policy.throttle(cache);
    let entries: Vec<EntryKey> = leases.iter().map(|(entry, _)| entry.clone()).collect();
    let stored = bulk::peek_all(cache, group, &entries).await;
    let fills = leases.into_iter().zip(stored).zip(&kept).map(
        |(((entry, lease), claim), (_, meta))| async move {
            let (Some(lease), Claim::Hit(stored)) = (lease, claim) else {
                return false;
            };
            // Another value is there: the read back decides.
            let Some(bytes) = envelope::refreshed(stored.bytes(), meta, throttle) else {
                return true;
            };
            fill(cache, group, &entry, lease, Some((bytes, KEEP_EXPIRY))).await
        },
    );
    if !futures_util::future::join_all(fills)
        .await
        .into_iter()
        .all(|stored| stored)
    {
        return None;
    }
    let start = cache.begin_read(group, &entries).await;
    let reader = policy.reader();
    let read = bulk::peek_all(cache, group, &entries).await;
    let mut elements = Vec::with_capacity(kept.len());
    for ((entry, claim), (key, _)) in entries.iter().zip(read).zip(kept) {
        let Claim::Hit(stored) = claim else {
            return None;
        };
        if start.passes(cache, group, entry) || !start.holds(cache, &stored).await {
            return None;
        }
        let (value, meta) = cache.open(group, entry, &stored, &reader)?;
        if policy.expired(cache, &meta) {
            return None;
        }
        elements.extend(value.map(|value| (key, value)));
    }
    drop(call_span(group, "fail_safe"));
    for _ in 0..entries.len() {
        metrics::stood_in(cache.counters(), group, StoodIn::Error, throttle, || {
            Some(failed.to_owned())
        });
    }
    Some(elements)
}

/// Returns a kept value in place of the body's, counted, logged and in
/// its span.
pub(super) fn stood_in<K, R>(
    policy: &Policy<'_, K, R>,
    read: &Read<'_>,
    value: K::Value,
    why: StoodIn,
    failed: Option<&R>,
) -> R
where
    K: Kind<R>,
{
    let (cache, group) = (read.cache, policy.group);
    let outcome = match why {
        StoodIn::Error => "fail_safe",
        StoodIn::Timeout => "soft_timeout",
    };
    drop(call_span(group, outcome));
    metrics::stood_in(cache.counters(), group, why, policy.throttle(cache), || {
        failed.and_then(|ret| policy.failure(ret))
    });
    K::rebuild(value)
}

/// A return value that may hold the failure a kept value stands in for, as
/// the log tells it: by its `Display` when its error has one (the
/// expansion calls `(&&Failed(ret)).describe()`, which method resolution
/// sends to [`DescribeDisplay`] first), else by its type's name.
pub struct Failed<'r, R>(pub &'r R);

/// Tells a failure by its `Display`.
pub trait DescribeDisplay {
    /// The failure, if the return value holds one.
    fn describe(&self) -> Option<String>;
}

impl<T, E: std::fmt::Display> DescribeDisplay for &Failed<'_, Result<T, E>> {
    fn describe(&self) -> Option<String> {
        self.0.as_ref().err().map(ToString::to_string)
    }
}

/// Tells a failure whose error has no `Display` by its type's name.
pub trait DescribeOther {
    /// The failure's type, for a return value that may hold one.
    fn describe(&self) -> Option<String>;
}

impl<R> DescribeOther for Failed<'_, R> {
    fn describe(&self) -> Option<String> {
        Some(format!("an error in `{}`", std::any::type_name::<R>()))
    }
}
