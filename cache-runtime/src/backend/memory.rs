//! The in-memory backend: the same protocol as Redis, in one process.
//!
//! State sits behind one mutex; no operation awaits while holding it. Maps are
//! keyed by group, then by key text, so a lookup allocates nothing; a group
//! holds its generation, a random `u64`, beside its entries, so a read finds
//! both with one lookup of the group. Expired entries are dropped when touched,
//! and a sweep runs once the operations since the last one outnumber the
//! entries, so its cost is amortised O(1) per call.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};

use super::{Lease, Lookup, Pinned, Ticket, Want, WriteEnd, KEEP_EXPIRY};
use crate::entry::shared::Kept;
use crate::entry::EntryKey;
use crate::entry::Record;
use crate::Map;

pub(crate) struct Memory {
    state: Mutex<State>,
    lease_ttl: Duration,
}

#[derive(Default)]
struct State {
    groups: Map<String, Group>,
    ops_since_sweep: usize,
    size_at_sweep: usize,
}

#[derive(Default)]
struct Group {
    /// Set by the first operation that needs one, replaced by group eviction.
    gen: Option<u64>,
    entries: Map<String, Entry>,
    writers: Map<String, Writers>,
    /// Dependency records of keys, by key text, and of the group.
    versions: Map<String, Version>,
    version: Option<Version>,
    /// When the group was last evicted, clock microseconds.
    evicted_us: Option<u64>,
    /// When anything in the group was last written (an entry, or the
    /// group's eviction), clock microseconds; 0 for never. A record made
    /// by a pin was last written no later than this.
    written_us: u64,
}

/// A dependency record: its token, which starts with the microsecond it was
/// made or replaced at.
struct Version {
    token: String,
    expires: Instant,
}

impl Version {
    /// A new token, starting with `written_us`: when what it names was
    /// last written.
    fn made(written_us: u64, expires: Instant) -> Self {
        Version {
            token: format!("{written_us}-{:016x}", fastrand::u64(..)),
            expires,
        }
    }

    /// Gives a live record a new token; one that is gone stays gone.
    fn bump(version: Option<&mut Version>, now: Instant, now_us: u64) {
        if let Some(version) = version.filter(|v| v.expires > now) {
            *version = Version::made(now_us, version.expires);
        }
    }

    fn live(&self, now: Instant) -> Option<&str> {
        (self.expires > now).then_some(self.token.as_str())
    }
}

/// The clock dependency records are stamped with, microseconds.
fn clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

struct Entry {
    /// The envelope, shared with the hits that read it, and its generation.
    value: Option<(Arc<Kept>, u64)>,
    /// A read lease: its token and generation.
    lease: Option<(String, u64)>,
    expires: Instant,
}

struct Writers {
    last: String,
    overlapped: bool,
    in_flight: u32,
    expires: Instant,
}

/// A lease as callers see it: the generation as text, as Redis keeps it.
fn lease(token: &str, gen: u64) -> Lease {
    Lease {
        token: token.to_owned(),
        gen: gen.to_string(),
    }
}

impl State {
    /// The group's generation, made on first use.
    fn gen(&mut self, group: &str) -> u64 {
        match self.gen_of(group) {
            Some(gen) => gen,
            None => *self.group(group).gen.insert(fastrand::u64(..)),
        }
    }

    fn gen_of(&self, group: &str) -> Option<u64> {
        self.groups.get(group)?.gen
    }

    fn group(&mut self, group: &str) -> &mut Group {
        self.groups.entry(group.to_owned()).or_default()
    }

    /// The group's generation and the key's live entry, to read, with one
    /// lookup of each (an expired entry is left to the sweep, or to the
    /// write that replaces it); `None` when the group has no generation.
    fn read(&self, group: &str, key: &str, now: Instant) -> Option<(u64, Option<&Entry>)> {
        let group = self.groups.get(group)?;
        let entry = group.entries.get(key).filter(|e| e.expires > now);
        Some((group.gen?, entry))
    }

    fn live_entry(&mut self, group: &str, key: &str, now: Instant) -> Option<&mut Entry> {
        let entries = &mut self.groups.get_mut(group)?.entries;
        if entries.get(key).is_some_and(|e| e.expires <= now) {
            entries.remove(key);
        }
        entries.get_mut(key)
    }

    fn live_writers(&mut self, group: &str, key: &str, now: Instant) -> Option<&mut Writers> {
        let writers = &mut self.groups.get_mut(group)?.writers;
        if writers.get(key).is_some_and(|w| w.expires <= now) {
            writers.remove(key);
        }
        writers.get_mut(key)
    }

    fn remove_entry(&mut self, group: &str, key: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            g.entries.remove(key);
        }
    }

    fn put_entry(&mut self, group: &str, key: &str, entry: Entry) {
        self.group(group).entries.insert(key.to_owned(), entry);
    }

    /// Removes an entry and marks the writes in flight on it as overlapped;
    /// says whether a live value was there.
    fn invalidate(&mut self, group: &str, key: &str, now: Instant) -> bool {
        let gen = self.gen_of(group);
        let existed = self
            .live_entry(group, key, now)
            .and_then(|e| e.value.as_ref())
            .is_some_and(|(_, value_gen)| Some(*value_gen) == gen);
        self.remove_entry(group, key);
        if let Some(w) = self.live_writers(group, key, now) {
            w.overlapped = true;
        }
        self.bump(group, key, now);
        existed
    }

    /// A write of `key` changes the dependency records of the key and of
    /// its group, and the group's write clock.
    fn bump(&mut self, group: &str, key: &str, now: Instant) {
        let now_us = clock_us();
        let g = self.group(group);
        g.written_us = now_us;
        Version::bump(g.versions.get_mut(key), now, now_us);
        Version::bump(g.version.as_mut(), now, now_us);
    }

    fn sweep_now_and_then(&mut self, now: Instant) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < self.size_at_sweep.max(1024) {
            return;
        }
        self.ops_since_sweep = 0;
        let mut size = 0;
        self.groups.retain(|_, g| {
            g.entries.retain(|_, e| e.expires > now);
            g.writers.retain(|_, w| w.expires > now);
            g.versions.retain(|_, v| v.expires > now);
            if g.version.as_ref().is_some_and(|v| v.expires <= now) {
                g.version = None;
            }
            size += g.entries.len() + g.writers.len() + g.versions.len();
            g.gen.is_some() || g.written_us > 0 || !(g.entries.is_empty() && g.writers.is_empty())
        });
        self.size_at_sweep = size;
    }
}

impl Memory {
    pub(crate) fn new(lease_ttl: Duration) -> Self {
        Memory {
            state: Mutex::new(State::default()),
            lease_ttl,
        }
    }

    /// The state, its expired entries swept now and then.
    fn state(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut state = self.state.lock();
        state.sweep_now_and_then(now);
        state
    }

    pub(crate) fn lookup(&self, group: &str, key: &EntryKey, want: Want, token: &str) -> Lookup {
        let now = Instant::now();
        let key = key.as_str();
        let mut state = self.state(now);
        let (gen, entry) = match state.read(group, key, now) {
            Some(read) => read,
            None if want == Want::Peek => return Lookup::Miss(None),
            None => (state.gen(group), None),
        };
        let live = entry
            .and_then(|e| e.value.as_ref())
            .filter(|(_, g)| *g == gen)
            .map(|(kept, _)| kept.clone());
        let held = entry
            .and_then(|e| e.lease.as_ref())
            .filter(|(_, g)| *g == gen)
            .map(|(token, _)| token.clone());
        // The lease beside a live value, which stays in place.
        if matches!(want, Want::Refresh | Want::Beside) && live.is_some() && held.is_none() {
            if let Some(entry) = state.live_entry(group, key, now) {
                entry.lease = Some((token.to_owned(), gen));
            }
            return Lookup::Miss(Some(lease(token, gen)));
        }
        if want == Want::Refresh {
            return Lookup::Miss(None);
        }
        if let Some(kept) =
            live.filter(|_| !matches!(want, Want::ForceLease | Want::ForceLock | Want::Beside))
        {
            return Lookup::Hit(kept);
        }
        if let Some(held) = held {
            return match want {
                Want::Peek => Lookup::Held,
                Want::Lease | Want::ForceLease => Lookup::Miss(Some(lease(&held, gen))),
                Want::Lock | Want::Refresh | Want::ForceLock | Want::Beside => Lookup::Held,
            };
        }
        if want == Want::Peek {
            return Lookup::Miss(None);
        }
        state.put_entry(
            group,
            key,
            Entry {
                value: None,
                lease: Some((token.to_owned(), gen)),
                expires: now + self.lease_ttl,
            },
        );
        Lookup::Miss(Some(lease(token, gen)))
    }

    pub(crate) fn release(&self, group: &str, key: &EntryKey, lease: &Lease) {
        let now = Instant::now();
        let key = key.as_str();
        let mut state = self.state(now);
        let Some(entry) = state.live_entry(group, key, now) else {
            return;
        };
        if entry.lease.as_ref().map(|(token, _)| token) != Some(&lease.token) {
            return;
        }
        if entry.value.is_some() {
            entry.lease = None;
        } else {
            state.remove_entry(group, key);
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
        let key = key.as_str();
        let mut state = self.state(now);
        let Some(gen) = state
            .gen_of(group)
            .filter(|gen| gen.to_string() == lease.gen)
        else {
            return false;
        };
        match state.live_entry(group, key, now) {
            Some(entry)
                if entry
                    .lease
                    .as_ref()
                    .is_some_and(|(token, _)| *token == lease.token) =>
            {
                let expires = match (ttl, &entry.value) {
                    (KEEP_EXPIRY, Some(_)) => entry.expires,
                    (KEEP_EXPIRY, None) => {
                        entry.lease = None;
                        return false;
                    }
                    _ => now + ttl,
                };
                *entry = Entry {
                    value: Some((Kept::new(bytes), gen)),
                    lease: None,
                    expires,
                };
                true
            }
            _ => false,
        }
    }

    pub(crate) fn begin_write(&self, group: &str, key: &EntryKey, token: &str) -> Ticket {
        let now = Instant::now();
        let key = key.as_str();
        let mut state = self.state(now);
        let gen = state.gen(group);
        let expires = now + self.lease_ttl;
        match state.live_writers(group, key, now) {
            Some(w) => {
                w.overlapped |= w.in_flight > 0;
                w.last = token.to_owned();
                w.in_flight += 1;
                w.expires = expires;
            }
            None => {
                let writers = Writers {
                    last: token.to_owned(),
                    overlapped: false,
                    in_flight: 1,
                    expires,
                };
                state.group(group).writers.insert(key.to_owned(), writers);
            }
        }
        Ticket {
            token: token.to_owned(),
            gen: gen.to_string(),
        }
    }

    pub(crate) fn end_write(
        &self,
        group: &str,
        key: &EntryKey,
        ticket: &Ticket,
        end: WriteEnd,
    ) -> bool {
        let now = Instant::now();
        let key = key.as_str();
        let mut state = self.state(now);
        let gen = state.gen_of(group);
        let gen_unchanged = gen.is_some_and(|gen| gen.to_string() == ticket.gen);
        let sole = match state.live_writers(group, key, now) {
            Some(w) => {
                let sole = w.last == ticket.token && !w.overlapped && gen_unchanged;
                w.in_flight = w.in_flight.saturating_sub(1);
                if w.in_flight == 0 {
                    if let Some(g) = state.groups.get_mut(group) {
                        g.writers.remove(key);
                    }
                }
                sole
            }
            None => false,
        };
        if !matches!(end, WriteEnd::Abort) {
            state.bump(group, key, now);
        }
        match (end, gen) {
            (WriteEnd::Abort, _) => false,
            (WriteEnd::Store(bytes, ttl), Some(gen)) if sole => {
                let entry = Entry {
                    value: Some((Kept::new(bytes), gen)),
                    lease: None,
                    expires: now + ttl,
                };
                state.put_entry(group, key, entry);
                true
            }
            _ => {
                state.remove_entry(group, key);
                false
            }
        }
    }

    pub(crate) fn invalidate(&self, group: &str, key: &EntryKey) -> bool {
        let now = Instant::now();
        self.state(now).invalidate(group, key.as_str(), now)
    }

    pub(crate) fn store(&self, group: &str, key: &EntryKey, bytes: Vec<u8>, ttl: Duration) {
        let now = Instant::now();
        let key = key.as_str();
        let mut state = self.state(now);
        state.invalidate(group, key, now);
        let gen = state.gen(group);
        let entry = Entry {
            value: Some((Kept::new(bytes), gen)),
            lease: None,
            expires: now + ttl,
        };
        state.put_entry(group, key, entry);
    }

    pub(crate) fn evict_group(&self, group: &str) {
        let now = Instant::now();
        let now_us = clock_us();
        let mut state = self.state(now);
        let g = state.group(group);
        g.gen = Some(fastrand::u64(..));
        g.evicted_us = Some(now_us);
        g.written_us = now_us;
        Version::bump(g.version.as_mut(), now, now_us);
    }

    pub(crate) fn pin(&self, group: &str, records: &[Record], ttl: Duration) -> Pinned {
        let now = Instant::now();
        let now_us = clock_us();
        let expires = now + ttl;
        let mut state = self.state(now);
        let gen = state.gen(group);
        let g = state.group(group);
        let evicted_us = g.evicted_us.unwrap_or(0);
        // A record that does not exist was last written no later than the
        // last write in its group.
        let written_us = g.written_us;
        let tokens = records
            .iter()
            .map(|record| {
                let slot = match record {
                    Record::Key(key) => g
                        .versions
                        .entry(key.as_str().to_owned())
                        .or_insert_with(|| Version::made(written_us, expires)),
                    Record::Group => g
                        .version
                        .get_or_insert_with(|| Version::made(written_us, expires)),
                };
                if slot.expires <= now {
                    *slot = Version::made(written_us, expires);
                }
                slot.expires = slot.expires.max(expires);
                slot.token.clone()
            })
            .collect();
        Pinned {
            now_us,
            gen: gen.to_string(),
            evicted_us,
            records: tokens,
        }
    }

    pub(crate) fn check(
        &self,
        group: &str,
        records: &[Record],
    ) -> (Option<String>, Vec<Option<String>>) {
        let now = Instant::now();
        let state = self.state(now);
        let Some(g) = state.groups.get(group) else {
            return (None, vec![None; records.len()]);
        };
        let tokens = records
            .iter()
            .map(|record| {
                let version = match record {
                    Record::Key(key) => g.versions.get(key.as_str()),
                    Record::Group => g.version.as_ref(),
                };
                version.and_then(|v| v.live(now)).map(str::to_owned)
            })
            .collect();
        (g.gen.map(|gen| gen.to_string()), tokens)
    }
}
