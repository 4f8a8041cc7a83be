//! The in-process log, for the in-memory backend: the Redis log's rules on
//! a mutex, as durable as the process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::entry::EntryKey;

use super::log::{Claim, Dead, Entry, Failed, Id, Pending};

/// The logs of one cache, by group.
#[derive(Default)]
pub(crate) struct Logs {
    logs: Mutex<HashMap<String, Arc<Log>>>,
}

impl Logs {
    pub(crate) fn of(&self, group: &str) -> Arc<Log> {
        let mut logs = self.logs.lock();
        Arc::clone(logs.entry(group.to_owned()).or_default())
    }
}

#[derive(Default)]
pub(crate) struct Log {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: u64,
    /// Entries not given to any consumer yet.
    fresh: VecDeque<Entry>,
    /// Entries given to a consumer and not settled: since when.
    given: BTreeMap<Id, Given>,
    /// The newest pending write of each key, and how often it failed.
    pending: HashMap<String, (Pending, u32)>,
    /// Claims: holder and until when.
    claims: HashMap<String, (String, Instant)>,
    dead: Vec<Dead>,
}

struct Given {
    key: String,
    at: Instant,
}

impl Log {
    /// Appends a write; `store` puts the value in the cache under the same
    /// lock, so that the cache and the log agree on which write is newest.
    pub(crate) fn append(
        &self,
        key: &EntryKey,
        key_json: Vec<u8>,
        value: Vec<u8>,
        store: impl FnOnce(),
    ) -> Id {
        let mut state = self.state.lock();
        store();
        state.last += 1;
        let id = Id {
            ms: 0,
            seq: state.last,
        };
        let key = key.as_str().to_owned();
        state.fresh.push_back(Entry {
            id,
            key: key.clone(),
        });
        let pending = Pending {
            id,
            key: key_json,
            value,
        };
        state.pending.insert(key, (pending, 0));
        id
    }

    pub(crate) fn read(&self, count: usize) -> Vec<Entry> {
        let mut state = self.state.lock();
        let now = Instant::now();
        let take = count.min(state.fresh.len());
        let entries: Vec<Entry> = state.fresh.drain(..take).collect();
        for entry in &entries {
            let given = Given {
                key: entry.key.clone(),
                at: now,
            };
            state.given.insert(entry.id, given);
        }
        entries
    }

    pub(crate) fn take_over(&self, idle: Duration, count: usize) -> Vec<Entry> {
        let mut state = self.state.lock();
        let now = Instant::now();
        let mut taken = Vec::new();
        for (id, given) in &mut state.given {
            if taken.len() == count {
                break;
            }
            if now.duration_since(given.at) >= idle {
                given.at = now;
                taken.push(Entry {
                    id: *id,
                    key: given.key.clone(),
                });
            }
        }
        taken
    }

    pub(crate) fn claim(&self, key: &str, consumer: &str, hold: Duration) -> Claim {
        let mut state = self.state.lock();
        let now = Instant::now();
        if let Some((holder, until)) = state.claims.get(key) {
            if holder != consumer && *until > now {
                return Claim::Busy;
            }
        }
        match state.pending.get(key) {
            None => {
                state.claims.remove(key);
                Claim::Settled
            }
            Some((pending, _)) => {
                let pending = pending.clone();
                state
                    .claims
                    .insert(key.to_owned(), (consumer.to_owned(), now + hold));
                Claim::Pending(pending)
            }
        }
    }

    pub(crate) fn renew(&self, keys: &[String], consumer: &str, hold: Duration) {
        let mut state = self.state.lock();
        let until = Instant::now() + hold;
        for key in keys {
            if let Some((holder, expires)) = state.claims.get_mut(key) {
                if holder == consumer {
                    *expires = until;
                }
            }
        }
    }

    pub(crate) fn written(&self, key: &str, consumer: &str, written: Option<Id>, entries: &[Id]) {
        let mut state = self.state.lock();
        if written.is_some() && state.pending.get(key).map(|(p, _)| p.id) == written {
            state.pending.remove(key);
        }
        state.release(key, consumer);
        state.settle(entries);
    }

    pub(crate) fn failed(
        &self,
        key: &str,
        consumer: &str,
        failed: Id,
        error: &str,
        max_attempts: u32,
        entries: &[Id],
    ) -> Failed {
        let mut state = self.state.lock();
        state.release(key, consumer);
        let Some((pending, attempts)) = state.pending.get_mut(key) else {
            return Failed::Retry(0); // settled meanwhile: the retry acks
        };
        if pending.id != failed {
            return Failed::Retry(0); // a newer write waits: try it
        }
        *attempts += 1;
        if *attempts < max_attempts {
            return Failed::Retry(*attempts);
        }
        if let Some((pending, _)) = state.pending.remove(key) {
            state
                .dead
                .push((pending.key, pending.value, error.to_owned()));
        }
        state.settle(entries);
        Failed::Dead
    }

    pub(crate) fn settled(&self, upto: Id) -> bool {
        let state = self.state.lock();
        state.given.keys().next().is_none_or(|id| *id > upto)
            && state.fresh.front().is_none_or(|entry| entry.id > upto)
    }

    pub(crate) fn dead(&self) -> Vec<Dead> {
        self.state.lock().dead.clone()
    }
}

impl State {
    fn release(&mut self, key: &str, consumer: &str) {
        if self
            .claims
            .get(key)
            .is_some_and(|(holder, _)| holder == consumer)
        {
            self.claims.remove(key);
        }
    }

    fn settle(&mut self, entries: &[Id]) {
        for id in entries {
            self.given.remove(id);
        }
    }
}
