//! In-process single-flight: while one caller loads a key (or waits for
//! another process to), the other callers of this process wait for it to end
//! instead of going to the backend themselves.
//!
//! A flight carries no value: when it ends, its followers read the key again.
//! Every value a caller returns therefore comes from its own lookup or its own
//! body, and an eviction's guarantees need no extra argument. Evictions and
//! puts detach a key's flight, so a caller arriving after them starts anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::entry::EntryKey;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, HashMap<EntryKey, Flight>>>,
    next_id: AtomicU64,
}

struct Flight {
    id: u64,
    done: watch::Receiver<()>,
}

/// How a caller takes part in a key's flight.
pub(crate) enum Joined<'a> {
    /// There was none: this caller leads one until the guard drops.
    Leader(FlightGuard<'a>),
    /// Wait for the leader with [`wait`].
    Follower(watch::Receiver<()>),
}

/// Registration of a flight; dropping it ends the flight (also on panic or
/// cancellation) and wakes the followers.
pub(crate) struct FlightGuard<'a> {
    flights: &'a Flights,
    group: String,
    key: EntryKey,
    id: u64,
    _done: watch::Sender<()>,
}

impl Flights {
    /// Follows the key's flight, or leads a new one.
    pub(crate) fn join(&self, group: &str, key: &EntryKey) -> Joined<'_> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(group).and_then(|keys| keys.get(key)) {
            if flight.done.has_changed().is_ok() {
                return Joined::Follower(flight.done.clone());
            }
        }
        Joined::Leader(self.register(&mut map, group, key))
    }

    /// Leads the key's flight, replacing one that is registered (its
    /// followers still wake when it ends).
    pub(crate) fn lead(&self, group: &str, key: &EntryKey) -> FlightGuard<'_> {
        let mut map = self.map.lock();
        self.register(&mut map, group, key)
    }

    fn register(
        &self,
        map: &mut HashMap<String, HashMap<EntryKey, Flight>>,
        group: &str,
        key: &EntryKey,
    ) -> FlightGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, receiver) = watch::channel(());
        map.entry(group.to_owned())
            .or_default()
            .insert(key.clone(), Flight { id, done: receiver });
        FlightGuard {
            flights: self,
            group: group.to_owned(),
            key: key.clone(),
            id,
            _done: done,
        }
    }

    /// New callers of this key no longer join the flight in progress.
    pub(crate) fn detach(&self, group: &str, key: &EntryKey) {
        let mut map = self.map.lock();
        if let Some(keys) = map.get_mut(group) {
            keys.remove(key);
            if keys.is_empty() {
                map.remove(group);
            }
        }
    }

    /// New callers of this group no longer join the flights in progress.
    pub(crate) fn detach_group(&self, group: &str) {
        self.map.lock().remove(group);
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock();
        if let Some(keys) = map.get_mut(&self.group) {
            if keys.get(&self.key).is_some_and(|f| f.id == self.id) {
                keys.remove(&self.key);
            }
            if keys.is_empty() {
                map.remove(&self.group);
            }
        }
        // `_done` drops after this, waking the followers.
    }
}

/// Waits until the flight ends, however it ends.
pub(crate) async fn wait(mut done: watch::Receiver<()>) {
    while done.changed().await.is_ok() {}
}
