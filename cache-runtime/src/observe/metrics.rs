//! What the cache does, as it happens. Each event is counted in
//! [`Stats`](crate::Stats) and, with the feature `metrics`, emitted through
//! the [`metrics`](https://docs.rs/metrics) facade under Micrometer's cache
//! names, so that a Prometheus exporter shows it as Spring users know it:
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `cache_gets_total` | `group`, `result` = `hit` \| `miss` | lookups by annotated calls, `get_or_load` and the HTTP layer (a stale value served is a hit) |
//! | `cache_puts_total` | `group` | values stored |
//! | `cache_evictions_total` | `group` | key and group evictions that succeeded |
//! | `cache_fail_safe_total` | `group`, `reason` = `error` \| `timeout` | kept values returned in place of a failed body, or at the soft timeout |
//! | `cache_load_duration_seconds` | `group` | histogram of the loads that may store (a miss's body, a refresh) |
//! | `cache_errors_total` | `kind` = `timeout` \| `unreachable` \| `backend` | backend operations that failed |
//! | `cache_bypassed_total` | `reason` = `breaker_open` \| `refused` | backend operations skipped: the breaker was open, or the server refused the cache at first contact |
//! | `cache_local_invalidations_total` | | client tracking pushes the local tier received |
//! | `cache_local_tracking` | | gauge: 1 while the local tier hears every writer (client tracking, answering its heartbeat), else 0 |
//!
//! With no recorder installed, the facade drops each event after one check.

#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::time::Duration;

use crate::observe::{bump, Counters, Warning};

/// A lookup answered from the cache; `stale` when past its TTL
/// (stale-while-revalidate).
pub(crate) fn hit(counters: &Counters, group: &str, stale: bool) {
    bump(&counters.hits);
    if stale {
        bump(&counters.stale_served);
    }
    #[cfg(feature = "metrics")]
    counters.metrics.with(group, |m| m.hit.increment(1));
}

/// The local tier received a client tracking push.
pub(crate) fn local_invalidated(counters: &Counters) {
    bump(&counters.local_invalidations);
    #[cfg(feature = "metrics")]
    ::metrics::counter!("cache_local_invalidations_total").increment(1);
}

/// Whether the local tier now hears every writer (its feed is client
/// tracking, and answers).
pub(crate) fn local_tracking(hears_all: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!("cache_local_tracking").set(if hears_all { 1.0 } else { 0.0 });
}

/// A lookup that found nothing to return.
pub(crate) fn miss(counters: &Counters, group: &str) {
    bump(&counters.misses);
    #[cfg(feature = "metrics")]
    counters.metrics.with(group, |m| m.miss.increment(1));
}

/// A load that may store its value took `took`.
pub(crate) fn loaded(counters: &Counters, group: &str, took: Duration) {
    bump(&counters.loads);
    #[cfg(feature = "metrics")]
    counters
        .metrics
        .with(group, |m| m.load.record(took.as_secs_f64()));
}

/// A value was stored.
pub(crate) fn stored(counters: &Counters, group: &str) {
    bump(&counters.stores);
    #[cfg(feature = "metrics")]
    counters.metrics.with(group, |m| m.put.increment(1));
}

/// A key or a group was evicted.
pub(crate) fn evicted(counters: &Counters, group: &str) {
    bump(&counters.evictions);
    #[cfg(feature = "metrics")]
    counters.metrics.with(group, |m| m.eviction.increment(1));
}

/// A read waited `lock_timeout` for another caller's load of `keys` keys,
/// and runs its body without the cache.
pub(crate) fn lock_timed_out(counters: &Counters, group: &str, keys: u64) {
    counters
        .lock_timeouts
        .fetch_add(keys, std::sync::atomic::Ordering::Relaxed);
    counters.warn_limited(Warning::Failure, |count| {
        tracing::warn!(
            group,
            count,
            "cache read waited lock_timeout for another caller's load; running the body \
             without the cache (a slow load, or a lease left by a crashed caller or restored \
             from a snapshot)"
        );
    });
}

/// Why a kept value was returned (fail-safe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoodIn {
    /// The body failed.
    Error,
    /// The body took longer than the soft timeout.
    Timeout,
}

/// A kept value was returned in place of a body's failure, or at the soft
/// timeout. A failure is told at `warn` once per group per `throttle`.
pub(crate) fn stood_in(
    counters: &Counters,
    group: &str,
    why: StoodIn,
    throttle: Duration,
    failure: impl FnOnce() -> Option<String>,
) {
    let reason = match why {
        StoodIn::Error => {
            bump(&counters.fail_safe_served);
            if counters.fail_safe_due(group, throttle) {
                let error = failure().unwrap_or_else(|| "unknown".to_owned());
                tracing::warn!(
                    group,
                    %error,
                    throttle_ms = throttle.as_millis(),
                    "the body failed; returning the value kept by fail-safe, served as fresh \
                     for the throttle before the body is tried again"
                );
            }
            "error"
        }
        StoodIn::Timeout => {
            bump(&counters.soft_timeouts);
            "timeout"
        }
    };
    tracing::debug!(group, reason, "cache fail-safe value returned");
    #[cfg(feature = "metrics")]
    ::metrics::counter!("cache_fail_safe_total", "group" => group.to_owned(), "reason" => reason)
        .increment(1);
}

/// A backend operation was skipped, not tried: not an error.
pub(crate) fn bypassed(counters: &Counters, reason: &'static str) {
    bump(&counters.bypassed);
    #[cfg(feature = "metrics")]
    ::metrics::counter!("cache_bypassed_total", "reason" => reason).increment(1);
}

/// A backend operation failed (already counted in `Stats`).
pub(crate) fn error(kind: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("cache_errors_total", "kind" => kind).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) use handles::Handles;

/// A group's metric handles, registered once per group and recorder, so that
/// an event costs a lookup rather than building a labelled key (which, with
/// no recorder installed, was 9% of an in-memory hit); with none installed,
/// an event costs one check.
#[cfg(feature = "metrics")]
mod handles {
    use parking_lot::RwLock;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use ::metrics::{Counter, Histogram, Recorder};

    pub(crate) struct Group {
        /// The recorder these were registered with (its address): another
        /// one, installed later, gets its own.
        recorder: usize,
        pub(crate) hit: Counter,
        pub(crate) miss: Counter,
        pub(crate) put: Counter,
        pub(crate) eviction: Counter,
        pub(crate) load: Histogram,
    }

    #[derive(Default)]
    pub(crate) struct Handles {
        groups: RwLock<HashMap<Box<str>, Group, BuildHasherDefault<Fnv>>>,
    }

    impl Handles {
        pub(crate) fn with(&self, group: &str, emit: impl FnOnce(&Group)) {
            let (recorder, size) = ::metrics::with_recorder(|r| {
                (
                    (r as *const dyn Recorder).cast::<()>() as usize,
                    size_of_val(r),
                )
            });
            if size == 0 {
                // The facade's no-op recorder (a real one has state to record
                // into): nothing to look up or register.
                return;
            }
            {
                let groups = self.groups.read();
                if let Some(found) = groups.get(group).filter(|g| g.recorder == recorder) {
                    return emit(found);
                }
            }
            let group_label = group.to_owned();
            let registered = Group {
                recorder,
                hit: ::metrics::counter!("cache_gets_total", "group" => group_label.clone(), "result" => "hit"),
                miss: ::metrics::counter!("cache_gets_total", "group" => group_label.clone(), "result" => "miss"),
                put: ::metrics::counter!("cache_puts_total", "group" => group_label.clone()),
                eviction: ::metrics::counter!("cache_evictions_total", "group" => group_label.clone()),
                load: ::metrics::histogram!("cache_load_duration_seconds", "group" => group_label),
            };
            emit(&registered);
            let mut groups = self.groups.write();
            groups.insert(group.into(), registered);
        }
    }

    /// FNV-1a: group names are short, and this runs on every hit.
    pub(crate) struct Fnv(u64);

    impl Default for Fnv {
        fn default() -> Self {
            Fnv(0xcbf2_9ce4_8422_2325)
        }
    }

    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}
