//! A put's writer record: registered before its body ([`begin`]), ended
//! after it as a store, an eviction or nothing ([`finish`]), so that of
//! overlapping puts none stores; and ended as an eviction if the put stops
//! early (its future dropped, its body panicked), so that later puts of the
//! key are not taken for overlapping ones.

use crate::backend::{Ticket, WriteEnd};
use crate::background;
use crate::entry::{EntryKey, Invalidation};
use crate::observe::{metrics, ok_or_warn, warn_failed};
use crate::{Cache, Error};

/// A put's registered write. Dropped before the put ended, it ends the write
/// as an eviction: the body may have changed the data, so the old value goes.
struct WriteGuard {
    cache: Cache,
    group: String,
    key: EntryKey,
    ticket: Option<Ticket>,
}

impl WriteGuard {
    /// Guards a write about to be registered under `token`, before the
    /// request is sent: if the caller is dropped while it is in flight, the
    /// record it may create is ended all the same.
    fn new(cache: &Cache, group: &str, key: &EntryKey, token: String) -> Self {
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
    fn disarm(&mut self) {
        self.ticket = None;
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let (cache, group, key) = (
            self.cache.clone(),
            std::mem::take(&mut self.group),
            self.key.clone(),
        );
        // Outside a runtime the writer record expires by its TTL.
        background::spawn(async move {
            let ended = cache
                .op(cache
                    .backend()
                    .end_write(&group, &key, &ticket, WriteEnd::Evict))
                .await;
            cache.end_write(Invalidation::Key(&group, &key), ended.err().as_ref());
        });
    }
}

/// A write registered before its body: its key, its ticket (or why the
/// cache could not register it), and the guard that ends it if the put
/// stops early.
pub(crate) struct Write {
    pub(crate) key: EntryKey,
    ticket: Result<Ticket, Error>,
    guard: WriteGuard,
}

pub(crate) async fn begin(cache: &Cache, group: &str, key: EntryKey) -> Write {
    let token = crate::backend::token();
    let mut guard = WriteGuard::new(cache, group, &key, token.clone());
    let ticket = match cache
        .op(cache.backend().begin_write(group, &key, &token))
        .await
    {
        Ok(ticket) => Ok(ticket),
        Err(Error::Unavailable) => {
            guard.disarm(); // never sent
            Err(Error::Unavailable)
        }
        // It may still run later: the guard ends it when the put is done.
        Err(error) => {
            warn_failed(cache.counters(), "write", group, &error);
            Err(error)
        }
    };
    Write { key, ticket, guard }
}

/// Ends a write: stores, evicts, or (the body failed) leaves the entry.
/// Says whether it stored; `Err` when the write could not be registered or
/// ended (its eviction is then retried).
pub(crate) async fn finish(
    cache: &Cache,
    group: &str,
    write: Write,
    end: WriteEnd,
) -> Result<bool, Error> {
    let Write {
        key,
        ticket,
        mut guard,
    } = write;
    let backend = cache.backend();
    let evicts = !matches!(end, WriteEnd::Abort);
    if ticket.is_ok() {
        guard.disarm(); // ended below
    }
    let stores = matches!(end, WriteEnd::Store(..));
    let (outcome, unregistered) = match (ticket, end) {
        (Ok(ticket), end) => {
            let ended = backend.end_write(group, &key, &ticket, end);
            (cache.op(ended).await, None)
        }
        (Err(error), WriteEnd::Abort) => (Ok(false), Some(error)),
        // Without a registered write no store is safe; drop the old value.
        (Err(error), _) => (
            cache
                .op(backend.invalidate(group, &key))
                .await
                .map(|_| false),
            Some(error),
        ),
    };
    // A failed store or eviction may leave the old value: it must go.
    let failed = outcome.as_ref().err().filter(|_| evicts);
    cache.end_write(Invalidation::Key(group, &key), failed);
    match outcome {
        Ok(true) if stores => metrics::stored(cache.counters(), group),
        Err(error) if !evicts => {
            ok_or_warn(cache.counters(), "write", group, Err::<(), _>(error));
            return Ok(false);
        }
        _ => {}
    }
    match unregistered {
        Some(error) => Err(error),
        None => outcome,
    }
}
