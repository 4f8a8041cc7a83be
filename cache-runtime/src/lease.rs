//! A held read lease that is given back if its holder stops without filling
//! (its future dropped, its body panicked), so that waiters in this and other
//! processes take over at once instead of waiting for the lease to expire.

use crate::backend::Lease;
use crate::key::EntryKey;
use crate::Cache;

pub(crate) struct LeaseGuard {
    cache: Cache,
    group: String,
    key: EntryKey,
    lease: Option<Lease>,
}

impl LeaseGuard {
    pub(crate) fn new(cache: &Cache, group: &str, key: &EntryKey, lease: Lease) -> Self {
        LeaseGuard {
            cache: cache.clone(),
            group: group.to_owned(),
            key: key.clone(),
            lease: Some(lease),
        }
    }

    /// The lease was used (filled) or the caller gives it back itself.
    pub(crate) fn disarm(&mut self) -> Option<Lease> {
        self.lease.take()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to release it from: the lease expires by its TTL.
            return;
        };
        let (cache, group, key) = (
            self.cache.clone(),
            std::mem::take(&mut self.group),
            self.key.clone(),
        );
        runtime.spawn(async move {
            if let Err(error) = cache.op(cache.backend().release(&group, &key, &lease)).await {
                tracing::warn!(group, %error, "could not release an abandoned cache lease; it expires by its TTL");
            }
        });
    }
}
