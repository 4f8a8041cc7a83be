//! Failed evictions, retried in the background.
//!
//! An eviction that fails (Redis down, hung, or the breaker open) must not be
//! forgotten: until it happens, readers can be served the value it was meant
//! to remove. One background task per cache retries every pending eviction,
//! 25 ms after a failure and then at most every 200 ms (while the breaker is
//! open an attempt costs nothing; its background probe closes it once Redis
//! answers), for the configured window
//! (`CacheBuilder::eviction_retry`, default 60 s); logged (rate-limited) and
//! counted; after that the entry's TTL bounds how long it can be served. The
//! task ends with the last handle of its cache.
//!
//! While an eviction is pending, this process reads the key (or the group)
//! past the cache: the body runs and nothing is stored. So within a process a
//! write is visible on the next read even while Redis is failing; other
//! processes may serve the old value until the retry succeeds or the TTL ends.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use super::pending::Eviction;
use crate::background::Backoff;
use crate::cache::Inner;
use crate::observe::{bump, Warning};
use crate::{Cache, Error};

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
    let mut queue = cache.retrier().queue.lock();
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
    let now = cache.retrier().now.clone();
    runtime.spawn(retry_all(cache.downgrade(), receiver, now));
}

/// Retries the pending evictions until each succeeds or its window ends,
/// and stops with the last handle of its cache.
async fn retry_all(
    cache: Weak<Inner>,
    mut queue: mpsc::UnboundedReceiver<Eviction>,
    now: Arc<Notify>,
) {
    let mut waiting: Vec<(Eviction, Instant)> = Vec::new();
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut delay = backoff.pause();
    loop {
        let next = if waiting.is_empty() {
            queue.recv().await
        } else {
            tokio::select! {
                next = queue.recv() => next,
                () = tokio::time::sleep(delay) => None,
                // The server answers again: land them before reads settle.
                () = now.notified() => None,
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
        // All at once: after an outage, they land within a round trip.
        let runs = waiting.iter().map(|(eviction, _)| run(eviction, &cache));
        let outcomes = futures_util::future::join_all(runs).await;
        for ((eviction, deadline), outcome) in waiting.drain(..).zip(outcomes) {
            match outcome {
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
        if !failed {
            backoff.reset();
        }
        delay = backoff.pause();
    }
}

/// Runs an eviction again; once it succeeds, the write ends as any does.
async fn run(eviction: &Eviction, cache: &Cache) -> Result<(), Error> {
    let target = eviction.target();
    cache.evict_once(target).await?;
    cache.end_write(target, None);
    Ok(())
}
