//! Storing a miss's value under the read lease it took.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tracing::{Instrument, Span};

use super::lease::LeaseGuard;
use crate::backend::Backend;
use crate::entry::EntryKey;
use crate::observe::{metrics, ok_or_warn};
use crate::Cache;

/// Stores a sealed value under `lease`, or gives the lease back when there is
/// nothing to store (so that waiters take over at once). Returns whether it
/// stored: no write took the lease away in between.
pub(crate) async fn fill(
    cache: &Cache,
    group: &str,
    key: &EntryKey,
    mut lease: LeaseGuard,
    sealed: Option<(Vec<u8>, Duration)>,
) -> bool {
    let Some(held) = lease.lease().cloned() else {
        return false;
    };
    let outcome = match sealed {
        Some((bytes, ttl)) => cache
            .op(cache.backend().fill(group, key, &held, bytes, ttl))
            .await
            .inspect(|stored| {
                if *stored {
                    metrics::stored(cache.counters(), group);
                }
            }),
        None if lease.owned() => cache
            .op(cache.backend().release(group, key, &held))
            .await
            .map(|()| false),
        None => Ok(false),
    };
    // Disarmed only now: dropped mid-request, the guard gives the lease back.
    lease.disarm();
    if outcome.is_err() && lease.owned() {
        // The store (or release) may not have happened: give the lease back,
        // so that the next caller need not wait for it.
        super::lease::release_later(cache, group.to_owned(), key.clone(), held);
    }
    ok_or_warn(cache.counters(), "store", group, outcome).unwrap_or(false)
}

/// Stores a miss's value as [`fill`] does, but returns once the fill is sent:
/// a background task awaits Redis's reply, so a miss costs its caller two
/// round trips (the peek and the lease), as a hand-written `GET` and `SET`
/// do. The fill script arbitrates, not its timing: it stores only under a
/// lease that no write has dropped since. Sent before this returns, it
/// precedes this process's later reads of the key on the connection; another
/// process that reads in between finds the lease and waits for the value.
pub(crate) async fn send_fill(
    cache: &Cache,
    group: &str,
    key: &EntryKey,
    lease: LeaseGuard,
    sealed: Option<(Vec<u8>, Duration)>,
) {
    let Some(runtime) = reply_later(cache, group) else {
        fill(cache, group, key, lease, sealed).await;
        return;
    };
    let (cache, group, key) = (cache.clone(), group.to_owned(), key.clone());
    send(runtime, async move {
        fill(&cache, &group, &key, lease, sealed).await;
    })
    .await;
}

/// The runtime to leave a fill's reply to, when the fill may be sent and
/// not awaited: on Redis, once a fill of the group has answered. In process
/// a fill is done when called; a first fill may load its script; without
/// tokio, there is nothing to hand the reply to.
pub(super) fn reply_later(cache: &Cache, group: &str) -> Option<tokio::runtime::Handle> {
    match (cache.backend(), tokio::runtime::Handle::try_current()) {
        (Backend::Redis(redis), Ok(runtime)) if redis.fills_at_once(group) => Some(runtime),
        _ => None,
    }
}

/// Polls `fill` once, which puts its script on the connection (or finishes
/// it), and leaves the rest, its reply, to a task on `runtime`.
pub(super) async fn send(
    runtime: tokio::runtime::Handle,
    fill: impl Future<Output = ()> + Send + 'static,
) {
    let mut sent = Box::pin(fill);
    let pending = std::future::poll_fn(|cx| Poll::Ready(sent.as_mut().poll(cx).is_pending()));
    if pending.await {
        runtime.spawn(sent.instrument(Span::current()));
    }
}
