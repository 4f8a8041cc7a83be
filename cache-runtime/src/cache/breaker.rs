//! The circuit breaker: after repeated failures to reach the backend, skip it,
//! so that a dead Redis does not add a timeout to every call. While it is
//! open, a background task asks Redis every [`PROBE_EVERY`] whether it
//! answers (`gate`), and closes it the moment it does; should that task be
//! unable to run, the first call after a cool-down probes instead.
//!
//! Only failures to reach the server count (connection errors, timeouts). An
//! error the server answers with (out of memory, wrong type) shows that it is
//! up, and closes the breaker.
//!
//! When the breaker closes after an outage, reads *settle*: for a probe
//! interval plus an op timeout they pass the cache by (writes go on), long
//! enough for every other process that saw the outage to have probed the
//! server and landed the evictions it could not make during it. So no
//! process reads what another's write during the outage replaced.
//!
//! A timeout with no success since its operation began makes the server
//! *suspect*: the breaker opens at once, whatever the threshold, and the
//! prober asks at once. So a frozen Redis costs a request one op timeout,
//! not one per cached call it makes; a timeout while other operations
//! succeed (one slow script) counts as any failure.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    /// Whether a background task is probing the backend.
    prober: AtomicBool,
    /// Milliseconds since `epoch` of the last success; 0 for none.
    succeeded_ms: AtomicU64,
    /// How long reads settle after the breaker closes.
    settle: Duration,
    /// Milliseconds since `epoch` until which reads settle; 0 when not.
    settle_until_ms: AtomicU64,
}

/// How often the background prober asks an unreachable Redis again.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Whether an operation may go to the backend.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Closed,
    /// The first call after a cool-down: its outcome decides.
    Probe,
    Open,
}

impl Breaker {
    /// A breaker whose reads settle for a probe interval plus `op_timeout`
    /// once it closes after an outage.
    pub(crate) fn new(threshold: u32, cool_down: Duration, op_timeout: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            prober: AtomicBool::new(false),
            succeeded_ms: AtomicU64::new(0),
            settle: PROBE_EVERY + op_timeout,
            settle_until_ms: AtomicU64::new(0),
        }
    }

    /// Whether reads pass the cache by, settling after an outage: one
    /// atomic load when they do not.
    #[inline]
    pub(crate) fn settling(&self) -> bool {
        let until = self.settle_until_ms.load(Ordering::Acquire);
        until != 0 && self.settled(until)
    }

    #[cold]
    fn settled(&self, until: u64) -> bool {
        if self.now_ms() < until {
            return true;
        }
        let _ =
            self.settle_until_ms
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire);
        false
    }

    /// Whether calls skip the backend now (or after the cool-down, probe it).
    pub(crate) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    /// Claims the one background prober; `false` when one runs already.
    pub(crate) fn start_prober(&self) -> bool {
        self.prober
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The background prober stopped.
    pub(crate) fn end_prober(&self) {
        self.prober.store(false, Ordering::Release);
    }

    /// The breaker's clock, milliseconds (at least 1), for
    /// [`failed`](Self::failed)'s `since`.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub(crate) fn pass(&self) -> Pass {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Pass::Closed;
        }
        if self.now_ms() < open_until {
            return Pass::Open;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Pass::Probe,
            Err(_) => Pass::Open,
        }
    }

    /// The server answered; says whether that closed the breaker (reads
    /// then settle).
    pub(crate) fn succeeded(&self, pass: &Pass) -> bool {
        let now = self.now_ms();
        self.succeeded_ms.store(now, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        if *pass == Pass::Probe || self.open_until_ms.load(Ordering::Relaxed) != 0 {
            let settle = u64::try_from(self.settle.as_millis()).unwrap_or(u64::MAX / 2);
            self.settle_until_ms.store(now + settle, Ordering::Release);
            self.open_until_ms.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            return true;
        }
        false
    }

    /// The server could not be reached by an operation begun at `since`
    /// (by [`now_ms`](Self::now_ms)), which `timed_out` or not; says
    /// whether the breaker opened.
    pub(crate) fn failed(&self, pass: &Pass, since: u64, timed_out: bool) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let suspect = timed_out && self.succeeded_ms.load(Ordering::Relaxed) < since;
        if *pass == Pass::Probe
            || ((suspect || failures >= self.threshold)
                && self.open_until_ms.load(Ordering::Relaxed) == 0)
        {
            let until =
                self.now_ms() + u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX / 2);
            self.open_until_ms.store(until, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            return *pass != Pass::Probe;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_probe() {
        let breaker = Breaker::new(3, Duration::from_millis(20), Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(breaker.pass(), Pass::Closed);
            assert!(!breaker.failed(&Pass::Closed, breaker.now_ms(), false));
        }
        assert!(
            breaker.failed(&Pass::Closed, breaker.now_ms(), false),
            "the third failure opens it"
        );
        assert_eq!(breaker.pass(), Pass::Open);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.pass(), Pass::Probe);
        assert_eq!(breaker.pass(), Pass::Open, "one probe at a time");
        assert!(
            !breaker.failed(&Pass::Probe, breaker.now_ms(), false),
            "a failed probe reopens without counting a new trip"
        );
        assert_eq!(breaker.pass(), Pass::Open);
        std::thread::sleep(Duration::from_millis(25));
        let probe = breaker.pass();
        assert_eq!(probe, Pass::Probe);
        assert!(!breaker.settling());
        assert!(breaker.succeeded(&probe), "closed");
        assert_eq!(breaker.pass(), Pass::Closed);
        assert!(breaker.settling(), "reads settle once it closes");
        std::thread::sleep(PROBE_EVERY + Duration::from_millis(35));
        assert!(
            !breaker.settling(),
            "for a probe interval and an op timeout"
        );
        assert!(!breaker.succeeded(&Pass::Closed), "already closed");
        assert!(!breaker.settling());
    }

    #[test]
    fn a_timeout_with_no_success_since_opens_it_at_once() {
        let breaker = Breaker::new(3, Duration::from_secs(60), Duration::from_millis(100));
        let began = breaker.now_ms();
        std::thread::sleep(Duration::from_millis(2));
        assert!(!breaker.succeeded(&Pass::Closed));
        assert!(
            !breaker.failed(&Pass::Closed, began, true),
            "a success since: one slow operation"
        );
        std::thread::sleep(Duration::from_millis(2));
        let began = breaker.now_ms();
        assert!(breaker.failed(&Pass::Closed, began, true), "suspect");
        assert_eq!(breaker.pass(), Pass::Open);
    }
}
