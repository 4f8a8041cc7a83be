//! The in-memory backend: the same protocol as Redis, in one process.
//!
//! State sits behind one mutex; no operation awaits while holding it. Expired
//! entries are dropped when touched, and a sweep runs once the operations since
//! the last one outnumber the entries, so its cost is amortised O(1) per call.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{token, Lease, Lookup, Ticket, Want, WriteEnd};
use crate::key::EntryKey;

pub(crate) struct Memory {
    state: Mutex<State>,
    lease_ttl: Duration,
}

#[derive(Default)]
struct State {
    gens: HashMap<String, String>,
    entries: HashMap<String, Entry>,
    writers: HashMap<String, Writers>,
    ops_since_sweep: usize,
}

struct Entry {
    value: Option<(Vec<u8>, String)>,
    lease: Option<Lease>,
    expires: Instant,
}

struct Writers {
    last: String,
    overlapped: bool,
    in_flight: u32,
    expires: Instant,
}

/// The map key of an entry: `{group}key`. A group holds no `}`, so the first
/// `}` ends it and different pairs never share a name.
fn name(group: &str, key: &EntryKey) -> String {
    format!("{{{group}}}{}", key.as_str())
}

impl State {
    fn gen(&mut self, group: &str) -> String {
        self.gens
            .entry(group.to_owned())
            .or_insert_with(token)
            .clone()
    }

    fn live_entry(&mut self, name: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(name).is_some_and(|e| e.expires <= now) {
            self.entries.remove(name);
        }
        self.entries.get_mut(name)
    }

    fn live_writers(&mut self, name: &str, now: Instant) -> Option<&mut Writers> {
        if self.writers.get(name).is_some_and(|w| w.expires <= now) {
            self.writers.remove(name);
        }
        self.writers.get_mut(name)
    }

    /// Removes an entry and marks the writes in flight on it as overlapped;
    /// says whether a live value was there.
    fn invalidate(&mut self, group: &str, name: &str, now: Instant) -> bool {
        let gen = self.gens.get(group).cloned();
        let existed = self
            .live_entry(name, now)
            .and_then(|e| e.value.as_ref())
            .is_some_and(|(_, value_gen)| Some(value_gen) == gen.as_ref());
        self.entries.remove(name);
        if let Some(w) = self.live_writers(name, now) {
            w.overlapped = true;
        }
        existed
    }

    fn sweep_now_and_then(&mut self, now: Instant) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < 1024.max(self.entries.len() + self.writers.len()) {
            return;
        }
        self.ops_since_sweep = 0;
        self.entries.retain(|_, e| e.expires > now);
        self.writers.retain(|_, w| w.expires > now);
    }
}

impl Memory {
    pub(crate) fn new(lease_ttl: Duration) -> Self {
        Memory {
            state: Mutex::new(State::default()),
            lease_ttl,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a
        // way that breaks the protocol (each operation is a few inserts), so a
        // poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sweep_now_and_then(Instant::now());
        state
    }

    pub(crate) fn lookup(&self, group: &str, key: &EntryKey, want: Want, token: &str) -> Lookup {
        let now = Instant::now();
        let name = name(group, key);
        let mut state = self.state();
        let gen = match want {
            Want::Peek => match state.gens.get(group) {
                Some(gen) => gen.clone(),
                None => return Lookup::Miss(None),
            },
            _ => state.gen(group),
        };
        let (live, held) = match state.live_entry(&name, now) {
            Some(entry) => (
                entry
                    .value
                    .as_ref()
                    .filter(|(_, g)| *g == gen)
                    .map(|(bytes, _)| bytes.clone()),
                entry.lease.as_ref().filter(|l| l.gen == gen).cloned(),
            ),
            None => (None, None),
        };
        if want == Want::Refresh {
            if live.is_none() || held.is_some() {
                return Lookup::Miss(None);
            }
            let lease = Lease {
                token: token.to_owned(),
                gen,
            };
            if let Some(entry) = state.entries.get_mut(&name) {
                entry.lease = Some(lease.clone());
            }
            return Lookup::Miss(Some(lease));
        }
        if let Some(bytes) = live.filter(|_| want != Want::ForceLease) {
            return Lookup::Hit(bytes);
        }
        if let Some(held) = held {
            return match want {
                Want::Peek => Lookup::Held,
                Want::Lease | Want::ForceLease => Lookup::Miss(Some(held)),
                Want::Lock | Want::Refresh => Lookup::Held,
            };
        }
        if want == Want::Peek {
            return Lookup::Miss(None);
        }
        let lease = Lease {
            token: token.to_owned(),
            gen,
        };
        state.entries.insert(
            name,
            Entry {
                value: None,
                lease: Some(lease.clone()),
                expires: now + self.lease_ttl,
            },
        );
        Lookup::Miss(Some(lease))
    }

    pub(crate) fn release(&self, group: &str, key: &EntryKey, lease: &Lease) {
        let now = Instant::now();
        let name = name(group, key);
        let mut state = self.state();
        let Some(entry) = state.live_entry(&name, now) else {
            return;
        };
        if entry.lease.as_ref().map(|l| &l.token) != Some(&lease.token) {
            return;
        }
        if entry.value.is_some() {
            entry.lease = None;
        } else {
            state.entries.remove(&name);
        }
    }

    pub(crate) fn fill(
        &self,
        group: &str,
        key: &EntryKey,
        lease: &Lease,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        let name = name(group, key);
        let mut state = self.state();
        if state.gens.get(group) != Some(&lease.gen) {
            return false;
        }
        match state.live_entry(&name, now) {
            Some(entry) if entry.lease.as_ref() == Some(lease) => {
                *entry = Entry {
                    value: Some((bytes, lease.gen.clone())),
                    lease: None,
                    expires: now + ttl,
                };
                true
            }
            _ => false,
        }
    }

    pub(crate) fn begin_write(&self, group: &str, key: &EntryKey, token: &str) -> Ticket {
        let now = Instant::now();
        let name = name(group, key);
        let mut state = self.state();
        let ticket = Ticket {
            token: token.to_owned(),
            gen: state.gen(group),
        };
        let expires = now + self.lease_ttl;
        match state.live_writers(&name, now) {
            Some(w) => {
                w.overlapped |= w.in_flight > 0;
                w.last = ticket.token.clone();
                w.in_flight += 1;
                w.expires = expires;
            }
            None => {
                state.writers.insert(
                    name,
                    Writers {
                        last: ticket.token.clone(),
                        overlapped: false,
                        in_flight: 1,
                        expires,
                    },
                );
            }
        }
        ticket
    }

    pub(crate) fn end_write(
        &self,
        group: &str,
        key: &EntryKey,
        ticket: &Ticket,
        end: WriteEnd,
    ) -> bool {
        let now = Instant::now();
        let name = name(group, key);
        let mut state = self.state();
        let gen_unchanged = state.gens.get(group) == Some(&ticket.gen);
        let sole = match state.live_writers(&name, now) {
            Some(w) => {
                let sole = w.last == ticket.token && !w.overlapped && gen_unchanged;
                w.in_flight = w.in_flight.saturating_sub(1);
                if w.in_flight == 0 {
                    state.writers.remove(&name);
                }
                sole
            }
            None => false,
        };
        match end {
            WriteEnd::Abort => false,
            WriteEnd::Evict => {
                state.entries.remove(&name);
                false
            }
            WriteEnd::Store(bytes, ttl) => {
                state.entries.remove(&name);
                if sole {
                    state.entries.insert(
                        name,
                        Entry {
                            value: Some((bytes, ticket.gen.clone())),
                            lease: None,
                            expires: now + ttl,
                        },
                    );
                }
                sole
            }
        }
    }

    pub(crate) fn invalidate(&self, group: &str, key: &EntryKey) -> bool {
        let now = Instant::now();
        let name = name(group, key);
        self.state().invalidate(group, &name, now)
    }

    pub(crate) fn store(&self, group: &str, key: &EntryKey, bytes: Vec<u8>, ttl: Duration) {
        let now = Instant::now();
        let name = name(group, key);
        let mut state = self.state();
        state.invalidate(group, &name, now);
        let gen = state.gen(group);
        state.entries.insert(
            name,
            Entry {
                value: Some((bytes, gen)),
                lease: None,
                expires: now + ttl,
            },
        );
    }

    pub(crate) fn evict_group(&self, group: &str) {
        self.state().gens.insert(group.to_owned(), token());
    }
}
