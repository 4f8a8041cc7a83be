//! The evictions that failed and wait for their retry: read past while
//! pending, and the queue of the task that retries them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::entry::{EntryKey, Invalidation};

/// An eviction to retry.
pub(crate) enum Eviction {
    Key(String, EntryKey),
    Group(String),
}

/// The evictions pending retry in this process, by group: `None` for the
/// whole group. Counted so that the read path checks it without a lock
/// while nothing is pending.
#[derive(Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    evictions: Mutex<HashMap<String, Vec<Option<EntryKey>>>>,
}

impl Pending {
    /// Whether no eviction is pending: one atomic load.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Whether reads of this key must skip the cache.
    #[inline]
    pub(crate) fn blocks(&self, group: &str, key: &EntryKey) -> bool {
        !self.is_empty() && self.blocks_key(group, key)
    }

    #[cold]
    fn blocks_key(&self, group: &str, key: &EntryKey) -> bool {
        self.evictions
            .lock()
            .get(group)
            .is_some_and(|keys| keys.iter().any(|k| k.as_ref().is_none_or(|k| k == key)))
    }

    /// Whether an eviction of the group, or of any key of it, is pending.
    pub(crate) fn blocks_group(&self, group: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.evictions
            .lock()
            .get(group)
            .is_some_and(|keys| !keys.is_empty())
    }

    pub(crate) fn add(&self, eviction: &Eviction) {
        let (group, key) = eviction.parts();
        self.evictions
            .lock()
            .entry(group.to_owned())
            .or_default()
            .push(key.cloned());
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn remove(&self, eviction: &Eviction) {
        let (group, key) = eviction.parts();
        let mut evictions = self.evictions.lock();
        if let Some(keys) = evictions.get_mut(group) {
            if let Some(at) = keys.iter().position(|k| k.as_ref() == key) {
                keys.swap_remove(at);
                self.count.fetch_sub(1, Ordering::AcqRel);
            }
            if keys.is_empty() {
                evictions.remove(group);
            }
        }
    }
}

impl Eviction {
    pub(crate) fn group(&self) -> &str {
        self.parts().0
    }

    /// What the eviction invalidates.
    pub(crate) fn target(&self) -> Invalidation<'_> {
        match self {
            Eviction::Key(group, key) => Invalidation::Key(group, key),
            Eviction::Group(group) => Invalidation::Group(group),
        }
    }

    /// The eviction of what `target` names.
    pub(crate) fn of(target: Invalidation<'_>) -> Eviction {
        match target {
            Invalidation::Key(group, key) => Eviction::Key(group.to_owned(), key.clone()),
            Invalidation::Group(group) => Eviction::Group(group.to_owned()),
        }
    }

    fn parts(&self) -> (&str, Option<&EntryKey>) {
        match self {
            Eviction::Key(group, key) => (group, Some(key)),
            Eviction::Group(group) => (group, None),
        }
    }
}

/// Where a cache's failed evictions go: the queue of its background retry
/// task ([`retry`](super::retry)), started with the first one; and the
/// signal that retries them at once (the server answers again).
#[derive(Default)]
pub(crate) struct Retrier {
    pub(crate) queue: Mutex<Option<mpsc::UnboundedSender<Eviction>>>,
    pub(crate) now: std::sync::Arc<tokio::sync::Notify>,
}
