//! A miss's read lease, given back if the caller stops early (its future
//! dropped, its body panicked), so that waiters take over at once instead of
//! waiting for it to expire.

use std::time::{Duration, Instant};

use crate::backend::Lease;
use crate::background;
use crate::background::Backoff;
use crate::entry::EntryKey;
use crate::Cache;

pub(crate) struct LeaseGuard {
    cache: Cache,
    group: String,
    key: EntryKey,
    lease: Option<Lease>,
    /// Whether this caller created the lease (only the creator gives it back:
    /// a lease shared with lock off is still its creator's to fill).
    owned: bool,
}

impl LeaseGuard {
    pub(crate) fn new(
        cache: &Cache,
        group: &str,
        key: &EntryKey,
        lease: Lease,
        owned: bool,
    ) -> Self {
        LeaseGuard {
            cache: cache.clone(),
            group: group.to_owned(),
            key: key.clone(),
            lease: Some(lease),
            owned,
        }
    }

    pub(crate) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    pub(crate) fn owned(&self) -> bool {
        self.owned
    }

    /// The lease was used (filled) or given back: nothing to do on drop.
    pub(crate) fn disarm(&mut self) {
        self.lease = None;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take().filter(|_| self.owned) else {
            return;
        };
        release_later(
            &self.cache,
            std::mem::take(&mut self.group),
            self.key.clone(),
            lease,
        );
    }
}

/// Gives a lease back from a background task, retrying with backoff for a
/// few seconds: the release may first meet the failure (a dead master, an
/// open breaker) that stopped its holder. A lease that cannot be given back
/// expires by its TTL.
pub(crate) fn release_later(cache: &Cache, group: String, key: EntryKey, lease: Lease) {
    let cache = cache.clone();
    // Outside a runtime the lease expires by its TTL.
    background::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match cache
                .op(cache.backend().release(&group, &key, &lease))
                .await
            {
                Ok(()) => return,
                Err(error) if Instant::now() >= deadline => {
                    tracing::warn!(group, %error, "could not give back an abandoned cache lease; it expires by its TTL");
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(backoff.pause()).await;
                }
            }
        }
    });
}
