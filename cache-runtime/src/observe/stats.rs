//! Counters of what the cache did and what went wrong, and rate-limited
//! warnings: a dead Redis logs a line a second per kind of failure, with the
//! number of failures it stands for, not a line per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A snapshot of a cache's counters since it was built
/// ([`Cache::stats`](crate::Cache::stats)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = cache_runtime::Cache::in_memory();
/// cache.set("g", "k", &1, None).await?;
/// let stats = cache.stats();
/// assert_eq!(stats.stores, 1);
/// assert_eq!(stats.errors, 0);
/// assert_eq!(stats.breaker_trips, 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups answered from the cache (stale values included).
    pub hits: u64,
    /// Lookups that found no value to return.
    pub misses: u64,
    /// Loads that may store their value: a miss's body, a refresh.
    pub loads: u64,
    /// Values stored (by loads, puts and `set`).
    pub stores: u64,
    /// Key and group evictions that succeeded.
    pub evictions: u64,
    /// Of the hits, values served past their TTL (stale-while-revalidate).
    pub stale_served: u64,
    /// Kept values returned in place of a body's failure (fail-safe).
    pub fail_safe_served: u64,
    /// Kept values returned at the soft timeout, while the body went on.
    pub soft_timeouts: u64,
    /// Backend operations that failed (errors and timeouts). Those skipped
    /// while the breaker is open are not failures: they are `bypassed`.
    pub errors: u64,
    /// Of those, the ones that timed out.
    pub timeouts: u64,
    /// Times the circuit breaker opened.
    pub breaker_trips: u64,
    /// Backend operations skipped, not tried: while the breaker was open,
    /// or with a server that refused the cache at first contact.
    pub bypassed: u64,
    /// Evictions that failed and were queued for retry in the background.
    pub evictions_queued: u64,
    /// Queued evictions that later succeeded.
    pub evictions_retried: u64,
    /// Queued evictions given up after the retry window.
    pub evictions_abandoned: u64,
    /// Reads that waited `lock_timeout` for another caller's load of their
    /// key and then ran their body, unstored: a slow load, or a lease left
    /// by a caller that crashed (or restored with a snapshot). Logged at
    /// `warn`, rate-limited.
    pub lock_timeouts: u64,
    /// Stored entries that could not be read back (another type, garbage,
    /// truncated, too large): each was a miss and was overwritten.
    pub undecodable: u64,
    /// Values not stored because they exceeded the maximum value size.
    pub oversized: u64,
    /// Keys found holding another Redis type, deleted and read again.
    pub repaired: u64,
    /// Hits served by the local tier.
    pub local_hits: u64,
    /// Times the local tier was flushed (its invalidation feed was made
    /// again, dropped or silent, or the server's database was flushed).
    pub local_flushes: u64,
    /// Client tracking pushes the local tier received (each names keys
    /// another client changed, or a flushed database).
    pub local_invalidations: u64,
    /// Write-behind writes made durable (in the cache and the log).
    pub behind_writes: u64,
    /// Write-behind handler calls that succeeded.
    pub behind_stored: u64,
    /// Write-behind log entries settled: written, coalesced into a newer
    /// write, or dead-lettered. `behind_settled - behind_stored -
    /// behind_dead` writes were saved by coalescing.
    pub behind_settled: u64,
    /// Rounds in which a write-behind consumer settled entries (the average
    /// batch is `behind_settled / behind_batches`).
    pub behind_batches: u64,
    /// Write-behind handler calls that failed (each retried, or dead-lettered).
    pub behind_failures: u64,
    /// Values moved to a write-behind's dead-letter stream.
    pub behind_dead: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) fail_safe_served: AtomicU64,
    pub(crate) soft_timeouts: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) breaker_trips: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) evictions_queued: AtomicU64,
    pub(crate) evictions_retried: AtomicU64,
    pub(crate) evictions_abandoned: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) undecodable: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) repaired: AtomicU64,
    pub(crate) local_hits: AtomicU64,
    pub(crate) local_flushes: AtomicU64,
    pub(crate) local_invalidations: AtomicU64,
    pub(crate) behind_writes: AtomicU64,
    pub(crate) behind_stored: AtomicU64,
    pub(crate) behind_settled: AtomicU64,
    pub(crate) behind_batches: AtomicU64,
    pub(crate) behind_failures: AtomicU64,
    pub(crate) behind_dead: AtomicU64,
    /// The metric handles of each group.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::observe::metrics::Handles,
    warnings: [Limiter; 2],
    /// What the server refused lately (`observe::refused`).
    pub(crate) refusals: super::Refusals,
    /// The groups whose values were read as another type, told once each.
    mismatched: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// When each group last told that a kept value stood in for a failure.
    fail_safe_told: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
}

/// Counts one event.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            loads: get(&self.loads),
            stores: get(&self.stores),
            evictions: get(&self.evictions),
            stale_served: get(&self.stale_served),
            fail_safe_served: get(&self.fail_safe_served),
            soft_timeouts: get(&self.soft_timeouts),
            errors: get(&self.errors),
            timeouts: get(&self.timeouts),
            breaker_trips: get(&self.breaker_trips),
            bypassed: get(&self.bypassed),
            evictions_queued: get(&self.evictions_queued),
            evictions_retried: get(&self.evictions_retried),
            evictions_abandoned: get(&self.evictions_abandoned),
            lock_timeouts: get(&self.lock_timeouts),
            undecodable: get(&self.undecodable),
            oversized: get(&self.oversized),
            repaired: get(&self.repaired),
            local_hits: get(&self.local_hits),
            local_flushes: get(&self.local_flushes),
            local_invalidations: get(&self.local_invalidations),
            behind_writes: get(&self.behind_writes),
            behind_stored: get(&self.behind_stored),
            behind_settled: get(&self.behind_settled),
            behind_batches: get(&self.behind_batches),
            behind_failures: get(&self.behind_failures),
            behind_dead: get(&self.behind_dead),
        }
    }

    /// Whether this is the first time `group`'s values were read as another
    /// type than they were stored as.
    pub(crate) fn first_mismatch(&self, group: &str) -> bool {
        let mut told = self.mismatched.lock();
        !told.contains(group) && told.insert(group.to_owned())
    }

    /// Whether `group` has not told of a kept value standing in for a
    /// failure within `every`: fail-safe logs once per group per throttle.
    pub(crate) fn fail_safe_due(&self, group: &str, every: std::time::Duration) -> bool {
        let now = Instant::now();
        let mut told = self.fail_safe_told.lock();
        match told.get_mut(group) {
            Some(last) if now.duration_since(*last) < every => false,
            Some(last) => {
                *last = now;
                true
            }
            None => {
                told.insert(group.to_owned(), now);
                true
            }
        }
    }

    /// Runs `log` at most once a second for this kind of warning, passing the
    /// number of warnings it stands for.
    pub(crate) fn warn_limited(&self, kind: Warning, log: impl FnOnce(u64)) {
        if let Some(count) = self.warnings[kind as usize].admit() {
            log(count);
        }
    }
}

/// Kinds of rate-limited warnings.
#[derive(Clone, Copy)]
pub(crate) enum Warning {
    /// A backend operation failed.
    Failure,
    /// A stored entry could not be read back.
    Undecodable,
}

/// Admits one event a second and counts the others.
struct Limiter {
    epoch: Instant,
    last_ms: AtomicU64,
    pending: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            pending: AtomicU64::new(0),
        }
    }
}

impl Limiter {
    fn admit(&self) -> Option<u64> {
        let pending = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.pending.fetch_sub(pending, Ordering::Relaxed);
            return Some(pending);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_warning_passes_and_the_next_ones_are_counted() {
        let limiter = Limiter::default();
        assert_eq!(limiter.admit(), Some(1));
        assert_eq!(limiter.admit(), None);
        assert_eq!(limiter.admit(), None);
        assert_eq!(
            limiter.pending.load(Ordering::Relaxed),
            2,
            "the suppressed ones wait for the next line"
        );
    }
}
