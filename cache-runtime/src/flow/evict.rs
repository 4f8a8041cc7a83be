//! `#[cache_evict]`: invalidate after the body succeeded (or before it),
//! with a failed eviction retried in the background.

use std::future::Future;

use tracing::Instrument;

use super::read::call_span;
use super::retry::{self, Eviction};
use super::returns::Kind;
use crate::entry::EntryKey;
use crate::{Cache, Error};

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
