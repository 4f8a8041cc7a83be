//! The load in progress: while a body runs to fill an entry, the reads it
//! makes through the cache and the dependencies it names are noted here,
//! in a task-local scope. A load inside a load (a list's body reading a
//! product that misses) opens a scope of its own, and what it notes is
//! noted in every scope around it too: the outer value embeds the inner.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Dep, Record, Stamp};

tokio::task_local! {
    static CAPTURE: Arc<Capture>;
}

/// How many scopes are open in the process: while none is, a read knows
/// without a task-local lookup that it is in none.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Counts a scope open while it lives.
struct Opened;

impl Opened {
    fn new() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Opened
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One load's dependencies.
pub(crate) struct Capture {
    parent: Option<Arc<Capture>>,
    /// When the load began: an explicit dependency written since does not
    /// count.
    pub(crate) started: Instant,
    /// How long the records it pins must live: the entry's own lifetime.
    pub(crate) ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stamps: Vec<Stamp>,
    seen: HashSet<(String, Record)>,
    explicit: Vec<Dep>,
    /// A dependency could not be noted: the value must not be stored.
    poisoned: bool,
}

/// What a finished load depends on.
pub(crate) struct Noted {
    pub(crate) stamps: Vec<Stamp>,
    pub(crate) poisoned: bool,
}

/// The scope of the load in progress in this task, if any.
#[inline]
pub(crate) fn current() -> Option<Arc<Capture>> {
    // A scope of this task was counted before its body first ran, on this
    // thread or before the task moved to this one.
    if OPEN.load(Ordering::Relaxed) == 0 {
        return None;
    }
    CAPTURE.try_with(Arc::clone).ok()
}

/// Notes an explicit dependency in the load in progress, if any.
pub(crate) fn explicit(dep: Dep) {
    let _ = CAPTURE.try_with(|capture| capture.state.lock().explicit.push(dep));
}

impl Capture {
    /// A scope for a load, inside the one in progress (if any).
    pub(crate) fn open(ttl: Duration) -> Arc<Capture> {
        Self::inside(current(), ttl)
    }

    /// A scope for a load whose value only its entry holds (a background
    /// refresh): no scope around it.
    pub(crate) fn alone(ttl: Duration) -> Arc<Capture> {
        Self::inside(None, ttl)
    }

    fn inside(parent: Option<Arc<Capture>>, ttl: Duration) -> Arc<Capture> {
        Arc::new(Capture {
            parent,
            started: Instant::now(),
            ttl,
            state: Mutex::default(),
        })
    }

    /// Whether this load runs inside another, which depends on what it reads.
    pub(crate) fn nested(&self) -> bool {
        self.parent.is_some()
    }

    /// Runs `body` in this scope.
    pub(crate) async fn run<F: Future>(self: &Arc<Self>, body: F) -> F::Output {
        let _open = Opened::new();
        CAPTURE.scope(Arc::clone(self), body).await
    }

    /// The scopes a dependency noted here is noted in: this one and those
    /// around it.
    fn chain(&self) -> impl Iterator<Item = &Capture> {
        std::iter::successors(Some(self), |c| c.parent.as_deref())
    }

    /// Notes stamps; of two stamps of one record, the first (the older
    /// token) is kept.
    pub(crate) fn note(&self, stamps: &[Stamp]) {
        for capture in self.chain() {
            let mut state = capture.state.lock();
            for stamp in stamps {
                if state
                    .seen
                    .insert((stamp.group.clone(), stamp.record.clone()))
                {
                    state.stamps.push(stamp.clone());
                }
            }
        }
    }

    /// A dependency could not be noted: no value of this load, nor of those
    /// around it, may be stored.
    pub(crate) fn poison(&self) {
        for capture in self.chain() {
            capture.state.lock().poisoned = true;
        }
    }

    /// The dependencies the body named, taken out of the scope.
    pub(crate) fn take_explicit(&self) -> Vec<Dep> {
        std::mem::take(&mut self.state.lock().explicit)
    }

    /// What the load noted, taken out of the scope.
    pub(crate) fn take(&self) -> Noted {
        let mut state = self.state.lock();
        Noted {
            stamps: std::mem::take(&mut state.stamps),
            poisoned: state.poisoned,
        }
    }
}
