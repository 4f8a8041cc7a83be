//! `#[cache_put]`: write-through, with concurrent puts leaving the last
//! write or nothing.

use std::future::Future;

use tracing::Instrument;

use super::policy::Policy;
use super::read::{call_span, load};
use super::retry::{self, Eviction};
use super::returns::Kind;
use super::write_guard::WriteGuard;
use crate::backend::WriteEnd;
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
    cache.forget(Invalidation::Key(group, &key));
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
