//! Failed evictions, retried in the background.
//!
//! An eviction that fails (Redis down, hung, or the breaker open) must not be
//! forgotten: until it happens, readers can be served the value it was meant
//! to remove. One background task per cache retries every pending eviction,
//! 25 ms after a failure and then at most every 200 ms (while the breaker is
//! open an attempt costs nothing, and the first one after its cool-down is
//! the probe that closes it), for the configured window
//! (`CacheBuilder::eviction_retry`, default 60 s); logged (rate-limited) and
//! counted; after that the entry's TTL bounds how long it can be served. The
//! task ends with the last handle of its cache.
//!
//! While an eviction is pending, this process reads the key (or the group)
//! past the cache: the body runs and nothing is stored. So within a process a
//! write is visible on the next read even while Redis is failing; other
//! processes may serve the old value until the retry succeeds or the TTL ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::cache::Inner;
use crate::entry::EntryKey;
use crate::observe::{bump, Warning};
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

/// The background task of a cache that retries its failed evictions,
/// started with the first one.
#[derive(Default)]
pub(crate) struct Retrier {
    queue: Mutex<Option<mpsc::UnboundedSender<Eviction>>>,
}

const FIRST_RETRY: Duration = Duration::from_millis(25);
const MAX_RETRY: Duration = Duration::from_millis(200);

/// Queues a failed eviction for retry in the background.
pub(crate) fn queue(cache: &Cache, eviction: Eviction, error: &Error) {
    if cache.refused() {
        return; // it serves nothing: nothing to invalidate
    }
    let counters = cache.counters();
    bump(&counters.evictions_queued);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        bump(&counters.evictions_abandoned);
        tracing::error!(group = eviction.group(), %error, "cache eviction failed outside a runtime; the entry lives until its TTL");
        return;
    };
    counters.warn_limited(Warning::Failure, |count| {
        tracing::warn!(group = eviction.group(), %error, count, "cache eviction failed; retrying in the background");
    });
    cache.pending().add(&eviction);
    let mut queue = cache
        .retrier()
        .queue
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let eviction = match queue.as_ref() {
        Some(sender) => match sender.send(eviction) {
            Ok(()) => return,
            Err(mpsc::error::SendError(eviction)) => eviction,
        },
        None => eviction,
    };
    // The first failure (or the task ended with its runtime): start it.
    let (sender, receiver) = mpsc::unbounded_channel();
    let _ = sender.send(eviction);
    *queue = Some(sender);
    runtime.spawn(retry_all(cache.downgrade(), receiver));
}

/// Retries the pending evictions until each succeeds or its window ends,
/// and stops with the last handle of its cache.
async fn retry_all(cache: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<Eviction>) {
    let mut waiting: Vec<(Eviction, Instant)> = Vec::new();
    let mut delay = FIRST_RETRY;
    loop {
        let next = if waiting.is_empty() {
            queue.recv().await
        } else {
            tokio::select! {
                next = queue.recv() => next,
                () = tokio::time::sleep(delay) => None,
            }
        };
        let Some(cache) = Cache::upgrade(&cache) else {
            return;
        };
        let window = cache.settings().eviction_retry;
        for eviction in next
            .into_iter()
            .chain(std::iter::from_fn(|| queue.try_recv().ok()))
        {
            waiting.push((eviction, Instant::now() + window));
        }
        let mut failed = false;
        let mut kept = Vec::with_capacity(waiting.len());
        for (eviction, deadline) in waiting.drain(..) {
            match eviction.run(&cache).await {
                Ok(()) => {
                    cache.pending().remove(&eviction);
                    bump(&cache.counters().evictions_retried);
                    tracing::debug!(
                        group = eviction.group(),
                        "cache eviction succeeded on retry"
                    );
                }
                Err(error) if Instant::now() >= deadline => {
                    cache.pending().remove(&eviction);
                    bump(&cache.counters().evictions_abandoned);
                    cache.counters().warn_limited(Warning::Failure, |count| {
                        tracing::error!(
                            group = eviction.group(),
                            %error,
                            count,
                            "cache eviction given up after the retry window; the entry lives until its TTL"
                        );
                    });
                }
                Err(_) => {
                    failed = true;
                    kept.push((eviction, deadline));
                }
            }
        }
        waiting = kept;
        delay = match failed {
            true => (delay * 2).min(MAX_RETRY),
            false => FIRST_RETRY,
        };
    }
}
