//! `#[cache_put]`: write-through, with concurrent puts leaving the last
//! write or nothing; with `each`, one write per element.

use std::future::Future;

use tracing::Instrument;

use super::each::Bulk;
use super::policy::Policy;
use super::read::{call_span, load};
use super::returns::{CacheValue, Kind, OptionKind};
use crate::backend::WriteEnd;
use crate::consistency::write::{begin, finish};
use crate::deps::capture::Capture;
use crate::entry::EntryKey;
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
    // Failures are logged, counted and retried by the core.
    let _ = finish(&cache, group, write, end).await;
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
