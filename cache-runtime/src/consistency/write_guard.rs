//! A put's writer record, ended if the put stops early (its future dropped,
//! its body panicked), so that later puts of the key are not taken for
//! overlapping ones.

use crate::backend::{Ticket, WriteEnd};
use crate::entry::{EntryKey, Invalidation};
use crate::Cache;

/// A put's registered write. Dropped before the put ended, it ends the write
/// as an eviction: the body may have changed the data, so the old value goes.
pub(crate) struct WriteGuard {
    cache: Cache,
    group: String,
    key: EntryKey,
    ticket: Option<Ticket>,
}

impl WriteGuard {
    /// Guards a write about to be registered under `token`, before the
    /// request is sent: if the caller is dropped while it is in flight, the
    /// record it may create is ended all the same.
    pub(crate) fn new(cache: &Cache, group: &str, key: &EntryKey, token: String) -> Self {
        WriteGuard {
            cache: cache.clone(),
            group: group.to_owned(),
            key: key.clone(),
            ticket: Some(Ticket {
                token,
                gen: String::new(),
            }),
        }
    }

    /// The put ended the write itself, or never sent it.
    pub(crate) fn disarm(&mut self) {
        self.ticket = None;
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cache, group, key) = (
            self.cache.clone(),
            std::mem::take(&mut self.group),
            self.key.clone(),
        );
        runtime.spawn(async move {
            let ended = cache
                .op(cache
                    .backend()
                    .end_write(&group, &key, &ticket, WriteEnd::Evict))
                .await;
            cache.end_write(Invalidation::Key(&group, &key), ended.err().as_ref());
        });
    }
}
