//! `#[cache_put]`: write-through, with concurrent puts leaving the last
//! write or nothing; with `each`, one write per element.

use std::future::Future;

use tracing::Instrument;

use super::each::Bulk;
use super::policy::Policy;
use super::read::{call_span, load};
use super::returns::{CacheValue, Kind, OptionKind};
use crate::backend::{Ticket, WriteEnd};
use crate::consistency::write_guard::WriteGuard;
use crate::deps::capture::Capture;
use crate::entry::{EntryKey, Invalidation};
use crate::observe::{metrics, ok_or_warn};
use crate::{Cache, Error};

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
    let write = begin(&cache, group, key).await;
    let capture = Capture::open(policy.lifetime(&cache));
    let (ret, sealed) = load(&policy, &cache, &capture, body, true).await;
    let end = if !K::succeeded(&ret) {
        WriteEnd::Abort
    } else {
        match sealed {
            Some((bytes, ttl)) => WriteEnd::Store(bytes, ttl),
            None => WriteEnd::Evict,
        }
    };
    finish(&cache, group, write, end).await;
    ret
}

/// `#[cache_put(each = ids)]`: a write registered per key, the body run
/// once, and each key then ended as a put of its element: stored if the
/// body returned it; if not, evicted, or stored as absent with `cache_none`;
/// left as it was on an `Err`.
pub async fn put_each<R, F>(
    cache: Cache,
    policy: Policy<'_, OptionKind, Option<R::Value>>,
    keys: Result<Vec<EntryKey>, Error>,
    body: F,
) -> R
where
    R: Bulk,
    R::Key: serde::Serialize,
    R::Value: CacheValue,
    F: Future<Output = R>,
{
    let group = policy.group;
    let body = body.instrument(call_span(group, "put"));
    let keys = match keys {
        Ok(keys) => keys,
        Err(error) => {
            tracing::error!(group, %error, "cache key does not encode; the entries cannot be updated");
            return body.await;
        }
    };
    let begun = keys.into_iter().map(|key| begin(&cache, group, key));
    let mut writes = futures_util::future::join_all(begun).await;
    let capture = Capture::open(policy.lifetime(&cache));
    let started = std::time::Instant::now();
    let ret = capture.run(body).await;
    let map = match ret.into_map() {
        Ok(map) => map,
        Err(failed) => {
            let ended = writes
                .into_iter()
                .map(|write| finish(&cache, group, write, WriteEnd::Abort));
            futures_util::future::join_all(ended).await;
            return failed;
        }
    };
    let stamps = cache.finish_load(group, &capture, Vec::new()).await;
    let end = |value: &Option<R::Value>| {
        let sealed = stamps
            .as_ref()
            .and_then(|stamps| policy.seal(&cache, value, started.elapsed(), stamps));
        match sealed {
            Some((bytes, ttl)) => WriteEnd::Store(bytes, ttl),
            None => WriteEnd::Evict,
        }
    };
    let mut ends = Vec::with_capacity(writes.len());
    let mut elements = Vec::new();
    for (key, value) in map {
        let at = EntryKey::new(&key)
            .ok()
            .and_then(|entry| writes.iter().position(|w| w.key == entry));
        let value = Some(value);
        if let Some(at) = at {
            ends.push((writes.swap_remove(at), end(&value)));
        }
        elements.extend(value.map(|value| (key, value)));
    }
    // Keys the body left out: their data may have changed, so they go, or
    // are stored as absent with `cache_none`.
    ends.extend(writes.into_iter().map(|write| (write, end(&None))));
    let ended = ends
        .into_iter()
        .map(|(write, end)| finish(&cache, group, write, end));
    futures_util::future::join_all(ended).await;
    R::from_map(elements.into_iter().collect())
}

/// A write registered before its body: its key, its ticket (`None` when
/// the cache could not register it), and the guard that ends it if the
/// put stops early.
struct Write {
    key: EntryKey,
    ticket: Option<Ticket>,
    guard: WriteGuard,
}

async fn begin(cache: &Cache, group: &str, key: EntryKey) -> Write {
    let token = crate::backend::token();
    let mut guard = WriteGuard::new(cache, group, &key, token.clone());
    let ticket = match cache
        .op(cache.backend().begin_write(group, &key, &token))
        .await
    {
        Ok(ticket) => Some(ticket),
        Err(Error::Unavailable) => {
            guard.disarm(); // never sent
            None
        }
        // It may still run later: the guard ends it when the put is done.
        Err(error) => ok_or_warn(cache.counters(), "write", group, Err(error)),
    };
    Write { key, ticket, guard }
}

/// Ends a write: stores, evicts, or (the body failed) leaves the entry.
async fn finish(cache: &Cache, group: &str, write: Write, end: WriteEnd) {
    let Write {
        key,
        ticket,
        mut guard,
    } = write;
    let backend = cache.backend();
    let evicts = !matches!(end, WriteEnd::Abort);
    if ticket.is_some() {
        guard.disarm(); // ended below
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
    // A failed store or eviction may leave the old value: it must go.
    let failed = outcome.as_ref().err().filter(|_| evicts);
    cache.end_write(Invalidation::Key(group, &key), failed);
    match outcome {
        Ok(true) if stores => metrics::stored(cache.counters(), group),
        Err(error) if !evicts => {
            ok_or_warn(cache.counters(), "write", group, Err::<(), _>(error));
        }
        _ => {}
    }
}
