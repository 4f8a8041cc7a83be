//! `#[cache_evict]`: invalidate after the body succeeded (or before it),
//! with a failed eviction retried in the background.

use std::future::Future;

use tracing::Instrument;

use super::read::call_span;
use super::returns::Outcome;
use crate::entry::{EntryKey, Invalidation};
use crate::{Cache, Error};

/// What a `#[cache_evict]` evicts.
pub enum Target {
    /// One entry.
    Key(Result<EntryKey, Error>),
    /// One entry per key (`each = arg`).
    Keys(Result<Vec<EntryKey>, Error>),
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
    K: Outcome<R>,
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
    match target {
        Target::All => drop(cache.evict(Invalidation::Group(group)).await),
        Target::Key(Ok(key)) => drop(cache.evict(Invalidation::Key(group, &key)).await),
        Target::Keys(Ok(keys)) => {
            let each = keys
                .iter()
                .map(|key| cache.evict(Invalidation::Key(group, key)));
            futures_util::future::join_all(each).await;
        }
        Target::Key(Err(error)) | Target::Keys(Err(error)) => {
            tracing::error!(group, %error, "cache key does not encode; the entry cannot be evicted");
        }
    }
}
