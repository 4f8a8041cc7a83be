//! A bulk call's side of the read protocol: every key looked up at once,
//! the misses' leases taken at once (one script per group), given back
//! while the call waits for keys another caller holds, and the elements
//! filled under them at once. The per-key rules are the single-key read's
//! ([`lookup`](super::lookup), [`fill`](super::fill)).

use std::sync::Arc;
use std::time::Duration;

use super::fill::{reply_later, send};
use super::lease::LeaseGuard;
use crate::backend::{token, Lease, Lookup, Want};
use crate::entry::shared::Kept;
use crate::entry::EntryKey;
use crate::observe::metrics;
use crate::Cache;

/// One key's lookup in a bulk call.
pub(crate) enum Claim {
    Hit(Arc<Kept>),
    /// A miss whose read lease this call now holds.
    Leased(LeaseGuard),
    /// A miss whose lease another caller holds.
    Held,
    /// A miss, no lease asked for yet.
    Miss,
    /// The cache could not answer: load without it.
    Failed,
}

/// The first look at every key: one plain read of the group.
pub(crate) async fn peek_all(cache: &Cache, group: &str, keys: &[EntryKey]) -> Vec<Claim> {
    match cache.op(cache.backend().peek_many(group, keys)).await {
        Ok(found) => found
            .into_iter()
            .map(|lookup| match lookup {
                Lookup::Hit(kept) => Claim::Hit(kept),
                Lookup::Miss(_) | Lookup::Held => Claim::Miss,
            })
            .collect(),
        Err(_) => keys.iter().map(|_| Claim::Failed).collect(),
    }
}

/// The leases of the keys that missed: one script for the group. Each
/// lease carries a token chosen, and guarded, before the script is sent,
/// so that a call dropped while it runs gives back what it took.
///
/// `keys` are each asked with what to do with a stored value:
/// [`Want::Lock`] returns it, [`Want::ForceLock`] takes the lease past it
/// (undecodable, or what it depends on changed), [`Want::Beside`] takes the
/// lease beside it (kept by fail-safe).
pub(crate) async fn lock_all(cache: &Cache, group: &str, keys: &[(&EntryKey, Want)]) -> Vec<Claim> {
    let tokens: Vec<String> = keys.iter().map(|_| token()).collect();
    let mut guards: Vec<LeaseGuard> = keys
        .iter()
        .zip(&tokens)
        .map(|((entry, _), token)| {
            let lease = Lease {
                token: token.clone(),
                gen: String::new(),
            };
            LeaseGuard::new(cache, group, entry, lease, true)
        })
        .collect();
    let asks: Vec<(&EntryKey, &str, Want)> = keys
        .iter()
        .zip(&tokens)
        .map(|((entry, want), token)| (*entry, token.as_str(), *want))
        .collect();
    let found = cache.op(cache.backend().lock_many(group, &asks)).await;
    let found = match found {
        Ok(found) => found,
        Err(error) => {
            if matches!(error, crate::Error::Unavailable) {
                guards.iter_mut().for_each(LeaseGuard::disarm); // never sent
            }
            return keys.iter().map(|_| Claim::Failed).collect();
        }
    };
    guards.iter_mut().for_each(LeaseGuard::disarm); // answered
    found
        .into_iter()
        .zip(keys.iter().zip(&tokens))
        .map(|(lookup, ((entry, _), token))| match lookup {
            Lookup::Hit(kept) => Claim::Hit(kept),
            Lookup::Miss(Some(lease)) => {
                let owned = lease.token == *token;
                Claim::Leased(LeaseGuard::new(cache, group, entry, lease, owned))
            }
            Lookup::Miss(None) => Claim::Failed,
            Lookup::Held => Claim::Held,
        })
        .collect()
}

/// Gives a lease back now, so that the caller waits holding nothing; if
/// that fails, the guard gives it back as it drops.
pub(crate) async fn give_back(cache: &Cache, group: &str, entry: &EntryKey, mut lease: LeaseGuard) {
    if let Some(held) = lease.lease().cloned() {
        let back = cache.op(cache.backend().release(group, entry, &held));
        if back.await.is_ok() {
            lease.disarm();
        }
    }
}

/// Stores a bulk call's elements under their leases, as [`send_fill`](super::fill::send_fill)
/// stores a single-key miss's: sent before this returns, its reply awaited
/// by a task once the group's fills are known to the server.
pub(crate) async fn send_fills(
    cache: &Cache,
    group: &str,
    fills: Vec<(EntryKey, LeaseGuard, Vec<u8>, Duration)>,
) {
    match reply_later(cache, group) {
        Some(runtime) => {
            let (cache, group) = (cache.clone(), group.to_owned());
            send(
                runtime,
                async move { fill_all(&cache, &group, fills).await },
            )
            .await;
        }
        None => fill_all(cache, group, fills).await,
    }
}

/// Stores the elements under their leases: one script for the group.
async fn fill_all(
    cache: &Cache,
    group: &str,
    fills: Vec<(EntryKey, LeaseGuard, Vec<u8>, Duration)>,
) {
    if fills.is_empty() {
        return;
    }
    let leases: Vec<Lease> = fills
        .iter()
        .filter_map(|(_, guard, ..)| guard.lease().cloned())
        .collect();
    if leases.len() != fills.len() {
        return; // a lease already given back: the guards drop the rest
    }
    let mut guards = Vec::with_capacity(fills.len());
    let mut entries = Vec::with_capacity(fills.len());
    let mut payloads = Vec::with_capacity(fills.len());
    for (entry, guard, bytes, ttl) in fills {
        guards.push(guard);
        entries.push(entry);
        payloads.push((bytes, ttl));
    }
    let sends = entries
        .iter()
        .zip(&leases)
        .zip(payloads)
        .map(|((entry, lease), (bytes, ttl))| (entry, lease, bytes, ttl))
        .collect();
    match cache.op(cache.backend().fill_many(group, sends)).await {
        Ok(stored) => {
            guards.iter_mut().for_each(LeaseGuard::disarm);
            for _ in 0..stored {
                metrics::stored(cache.counters(), group);
            }
        }
        // The guards give the leases back as they drop.
        Err(error) => {
            crate::observe::ok_or_warn(cache.counters(), "store", group, Err::<(), _>(error));
        }
    }
}
