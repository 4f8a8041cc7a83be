//! The consistency core: what every path calls so that a write is visible
//! on the next read, whichever path reads and whichever path wrote.
//!
//! Two calls, and the state behind them:
//!
//! - [`Cache::begin_read`] starts every read: the single-key attributes,
//!   `each`, `get`/`has`/`get_or_load`, the HTTP layer's reads and the
//!   dependency checks. Inside a load it pins the records of what is read
//!   (so a write the read misses changes a token noted before it). The
//!   [`ReadStart`] it returns says, per key, whether the read must pass the
//!   cache by (an eviction of it failed and is [pending] retry in
//!   this process), whether the local tier may be read, and whether a
//!   stamped hit still holds.
//! - [`Cache::end_write`] ends every write: evictions, puts, group
//!   evictions, `set`/`delete`/`evict_group`, the HTTP layer's writes,
//!   write-behind, and a put stopped early. It detaches the key's (or the
//!   group's) [flight], so that a caller arriving after the write
//!   loads afresh; drops this process's local copies; when the write
//!   failed, queues its eviction for [retry] (read past
//!   until then); and inside a load, leaves that load unstored.
//!
//! Below them, the protocol each path runs, and the only code that touches
//! its state:
//!
//! - [`lookup`]: a single-key read: a hit, or a miss with the read
//!   [lease] that makes this caller the one that loads, other
//!   callers of this process following its [flight];
//! - [`fill`]: a miss's value stored under its lease, or the lease given
//!   back; [`bulk`]: the same for every key of a bulk call at once;
//! - [`write`](mod@write): a put's writer record, registered before its body and ended
//!   after it (also when the put stops early);
//! - [`pending`] and [`retry`]: the evictions that failed, read past in
//!   this process until their retry succeeds.
//!
//! A new path that reads or writes calls these, and keeps every promise by
//! doing so; `docs/design.md` draws the two calls.

pub(crate) mod bulk;
pub(crate) mod fill;
pub(crate) mod flight;
pub(crate) mod lease;
pub(crate) mod lookup;
pub(crate) mod pending;
pub(crate) mod retry;
pub(crate) mod write;

use std::future::Future;
use std::sync::Arc;

use futures_util::future::Either;

use crate::deps::capture::{self, Capture};
use crate::deps::stamps;
use crate::deps::Record;
use crate::entry::shared::Kept;
use crate::entry::{EntryKey, Invalidation};
use crate::local::Local;
use crate::observe::metrics;
use crate::{Cache, Error};
use pending::Eviction;

/// A read once begun: what it may use. See [`Cache::begin_read`].
pub(crate) struct ReadStart {
    capture: Option<Arc<Capture>>,
}

impl Cache {
    /// Begins a read of `keys` of `group`: inside a load, pins each key's
    /// record before it is read. Every read path starts here. Outside a
    /// load (every hit but a dependent's) it is ready at once: no future
    /// to build, poll or drop.
    #[inline]
    pub(crate) fn begin_read<'a>(
        &'a self,
        group: &'a str,
        keys: &'a [EntryKey],
    ) -> impl Future<Output = ReadStart> + Send + 'a {
        match capture::current() {
            None => Either::Left(std::future::ready(ReadStart { capture: None })),
            Some(capture) => Either::Right(Box::pin(async move {
                self.pin_reads(&capture, group, keys).await;
                ReadStart {
                    capture: Some(capture),
                }
            })),
        }
    }

    /// Ends a write of `written`: its flights detached, its local copies
    /// dropped, and when it `failed`, its eviction queued for retry (this
    /// process reads past it until that succeeds). Every write path ends
    /// here, whether or not the write reached the backend.
    ///
    /// A write made inside a load (a handler that writes through, then
    /// answers with what it wrote) leaves that load unstored: its value may
    /// embed what was written, which no stamp tracks, so a later write
    /// would not reach it.
    pub(crate) fn end_write(&self, written: Invalidation<'_>, failed: Option<&Error>) {
        if let Some(load) = capture::current() {
            load.poison();
        }
        match written {
            Invalidation::Key(group, key) => self.flights().detach(group, key),
            Invalidation::Group(group) => self.flights().detach_group(group),
        }
        if let Some(local) = self.local() {
            local.invalidate(&written);
        }
        if let Some(error) = failed {
            retry::queue(self, Eviction::of(written), error);
        }
    }

    /// Evicts an entry or a group, and ends the write; says whether the
    /// entry held a value (a group: `false`).
    pub(crate) async fn evict(&self, target: Invalidation<'_>) -> Result<bool, Error> {
        let evicted = self.evict_once(target).await;
        self.end_write(target, evicted.as_ref().err());
        evicted
    }

    /// One attempt at an eviction, counted when it succeeds; not ended.
    pub(super) async fn evict_once(&self, target: Invalidation<'_>) -> Result<bool, Error> {
        let (group, evicted) = match target {
            Invalidation::Key(group, key) => {
                (group, self.op(self.backend().invalidate(group, key)).await)
            }
            Invalidation::Group(group) => {
                let evicted = self.op(self.backend().evict_group(group)).await;
                (group, evicted.map(|()| false))
            }
        };
        if evicted.is_ok() {
            metrics::evicted(self.counters(), group);
        }
        evicted
    }
}

impl ReadStart {
    /// Whether the read of `key` must pass the cache by: an eviction of it,
    /// or of its group, failed and waits for its retry, so what the cache
    /// holds may be what that write replaced; or reads settle after an
    /// outage, while other processes land the evictions they could not
    /// make during it.
    #[inline]
    pub(crate) fn passes(&self, cache: &Cache, group: &str, key: &EntryKey) -> bool {
        cache.pending().blocks(group, key) || cache.settling()
    }

    /// Whether no read of this process must pass the cache by: then
    /// [`passes`](Self::passes) is false for every key.
    #[inline]
    pub(crate) fn passes_none(&self, cache: &Cache) -> bool {
        cache.pending().is_empty() && !cache.settling()
    }

    /// The local tier, when this read may use it: not inside a load, which
    /// pins what it reads in the backend (the tier may lag a write).
    #[inline]
    pub(crate) fn local<'c>(&self, cache: &'c Cache) -> Option<&'c Local> {
        cache.local().filter(|_| self.capture.is_none())
    }

    /// Whether a hit may be served: one without dependency stamps always
    /// (ready at once); one with them while none of what it depends on has
    /// an eviction pending here and every record still holds its stamped
    /// token (the stamps are then noted in the load in progress, if any).
    #[inline]
    pub(crate) fn holds<'a>(
        &'a self,
        cache: &'a Cache,
        kept: &'a Kept,
    ) -> impl Future<Output = bool> + Send + 'a {
        if !stamps::stamped(kept.bytes()) {
            return Either::Left(std::future::ready(true));
        }
        Either::Right(Box::pin(async move {
            let pending = cache.pending();
            let passed = |group: &str, record: &Record| match record {
                Record::Key(key) => pending.blocks(group, key),
                Record::Group => pending.blocks_group(group),
            };
            cache
                .stamps_hold(kept.bytes(), self.capture.as_deref(), passed)
                .await
        }))
    }
}
