//! Failed evictions, retried in the background.
//!
//! An eviction that fails (Redis down, hung, or the breaker open) must not be
//! forgotten: until it happens, readers can be served the value it was meant
//! to remove. It is retried with backoff (100 ms doubling to 5 s) for the
//! configured window (`CacheBuilder::eviction_retry`, default 60 s), logged
//! and counted; after that the entry's TTL bounds how long it can be served.
//!
//! While an eviction is pending, this process reads the key (or the group)
//! past the cache: the body runs and nothing is stored. So within a process a
//! write is visible on the next read even while Redis is failing; other
//! processes may serve the old value until the retry succeeds or the TTL ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::key::EntryKey;
use crate::stats::bump;
use crate::{Cache, Error};

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
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Option<EntryKey>>>> {
        self.evictions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether reads of this key must skip the cache.
    pub(crate) fn blocks(&self, group: &str, key: &EntryKey) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.lock()
            .get(group)
            .is_some_and(|keys| keys.iter().any(|k| k.as_ref().is_none_or(|k| k == key)))
    }

    fn add(&self, eviction: &Eviction) {
        let (group, key) = eviction.parts();
        self.lock()
            .entry(group.to_owned())
            .or_default()
            .push(key.cloned());
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn remove(&self, eviction: &Eviction) {
        let (group, key) = eviction.parts();
        let mut evictions = self.lock();
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
    fn group(&self) -> &str {
        self.parts().0
    }

    fn parts(&self) -> (&str, Option<&EntryKey>) {
        match self {
            Eviction::Key(group, key) => (group, Some(key)),
            Eviction::Group(group) => (group, None),
        }
    }

    async fn run(&self, cache: &Cache) -> Result<(), Error> {
        match self {
            Eviction::Key(group, key) => cache.invalidate(group, key).await.map(drop),
            Eviction::Group(group) => cache.evict_group_unchecked(group).await,
        }
    }
}

/// Queues a failed eviction for retry in the background.
pub(crate) fn queue(cache: &Cache, eviction: Eviction, error: &Error) {
    let counters = cache.counters();
    bump(&counters.evictions_queued);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        bump(&counters.evictions_abandoned);
        tracing::error!(group = eviction.group(), %error, "cache eviction failed outside a runtime; the entry lives until its TTL");
        return;
    };
    tracing::warn!(group = eviction.group(), %error, "cache eviction failed; retrying in the background");
    cache.pending().add(&eviction);
    let cache = cache.clone();
    runtime.spawn(async move {
        let deadline = Instant::now() + cache.settings().eviction_retry;
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            match eviction.run(&cache).await {
                Ok(()) => {
                    cache.pending().remove(&eviction);
                    bump(&cache.counters().evictions_retried);
                    tracing::info!(group = eviction.group(), "cache eviction succeeded on retry");
                    return;
                }
                Err(error) if Instant::now() >= deadline => {
                    cache.pending().remove(&eviction);
                    bump(&cache.counters().evictions_abandoned);
                    tracing::error!(
                        group = eviction.group(),
                        %error,
                        "cache eviction given up after the retry window; the entry lives until its TTL"
                    );
                    return;
                }
                Err(_) => {}
            }
        }
    });
}
