//! What the server refused lately: refusals that show the cache cannot
//! work fully there (a full server, a read-only replica, a right missing),
//! noted wherever they are met, each said once at `warn` and counted under
//! its own kind; [`Cache::health`](crate::Cache::health) reports them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{metrics, Counters};
use crate::Error;

/// Notes `error` when it is a refusal (logged the first time of its kind,
/// counted as `cache_errors_total{kind}`); says whether it was one.
pub(crate) fn refused(counters: &Counters, error: &Error) -> bool {
    let Some(refusal) = Refusal::of(error) else {
        return false;
    };
    if counters.refusals.note(refusal) {
        tracing::warn!(%error, problem = refusal.problem(), "cache: the Redis server refuses the cache's operations");
    }
    metrics::error(refusal.kind());
    true
}

/// A server's refusal of an operation that shows the cache cannot work
/// fully there, for now or until an operator acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over `maxmemory` with `noeviction`: writes are refused.
    Full,
    /// A read-only replica (after a failover, or a `REPLICAOF`).
    ReadOnly,
    /// The user lacks a right an operation needs.
    NoRight,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::Full, Refusal::ReadOnly, Refusal::NoRight];

    /// The refusal an error is, by its Redis error code.
    fn of(error: &Error) -> Option<Refusal> {
        let Error::Redis(error) = error else {
            return None;
        };
        match error.code()? {
            "OOM" => Some(Refusal::Full),
            "READONLY" => Some(Refusal::ReadOnly),
            "NOPERM" => Some(Refusal::NoRight),
            _ => None,
        }
    }

    /// Its kind, for `cache_errors_total{kind}`.
    fn kind(self) -> &'static str {
        match self {
            Refusal::Full => "oom",
            Refusal::ReadOnly => "readonly",
            Refusal::NoRight => "noperm",
        }
    }

    pub(crate) fn problem(self) -> &'static str {
        match self {
            Refusal::Full => {
                "the server is full (over `maxmemory` with `noeviction`) and refuses the cache's \
                 writes: values are not stored; raise `maxmemory` or use an eviction policy \
                 (`allkeys-lru`)"
            }
            Refusal::ReadOnly => {
                "the server is a read-only replica (a failover, or `REPLICAOF`) and refuses the \
                 cache's writes; point the cache at the master (Sentinel or Cluster follow it)"
            }
            Refusal::NoRight => {
                "the Redis user lacks a right an operation of the cache needs (`NOPERM`); see \
                 `ACL LOG` for which, and grant it"
            }
        }
    }
}

/// What the server refused lately, by kind: when each was last seen, and
/// whether it was said.
pub(crate) struct Refusals {
    epoch: Instant,
    /// Milliseconds after `epoch` (plus one: 0 is never).
    seen_ms: [AtomicU64; 3],
    said: [AtomicBool; 3],
}

/// How long a refusal keeps the cache degraded after it was last seen.
const RECENT: Duration = Duration::from_secs(10);

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            epoch: Instant::now(),
            seen_ms: Default::default(),
            said: Default::default(),
        }
    }
}

impl Refusals {
    /// Notes a refusal; `true` the first time of its kind (to be logged).
    fn note(&self, refusal: Refusal) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.seen_ms[refusal as usize].store(now, Ordering::Relaxed);
        !self.said[refusal as usize].swap(true, Ordering::Relaxed)
    }

    /// The refusals seen within [`RECENT`].
    pub(crate) fn recent(&self) -> impl Iterator<Item = Refusal> + '_ {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let recent = RECENT.as_millis() as u64;
        Refusal::ALL.into_iter().filter(move |refusal| {
            let seen = self.seen_ms[*refusal as usize].load(Ordering::Relaxed);
            seen != 0 && now.saturating_sub(seen) <= recent
        })
    }
}
