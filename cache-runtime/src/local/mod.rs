//! The local tier: an in-process copy of entries read from Redis, in front of
//! it, for hits that cost no round trip. Opt in with
//! [`CacheBuilder::local`](crate::CacheBuilder::local).
//!
//! A feed drops the copies of what changed: Redis client tracking of the
//! cache's prefix hears every writer, and the server's expiry and eviction
//! (on a cluster, on every master; `subscribe.rs`). While the feed is down,
//! or open but silent (a heartbeat on it goes unanswered for 200 ms), the
//! tier is flushed and bypassed, since invalidations may be missed (the
//! advice of Redis's client-side caching guide). A server without tracking,
//! or a user who may not turn it on, keeps the tier off: a tier that hears
//! only some writers could serve what another has replaced. A read that began before an invalidation
//! does not insert its value after it (an epoch check), and every copy
//! expires after at most `max_ttl`, the bound on what a lost push can cost.

mod subscribe;

pub(crate) use subscribe::subscribe;
use subscribe::Refused;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::backend::names::{self, Named};
use crate::entry::shared::Kept;
use crate::entry::{EntryKey, Invalidation};
use crate::observe::{bump, metrics, Counters};
use crate::Map;

struct Copy {
    kept: Arc<Kept>,
    expires: Instant,
}

#[derive(Default)]
struct Copies {
    groups: Map<String, Map<String, Copy>>,
    len: usize,
}

pub(crate) struct Local {
    capacity: usize,
    max_ttl: Duration,
    copies: Mutex<Copies>,
    /// Bumped by every invalidation: a read inserts only if it saw none.
    epoch: AtomicU64,
    /// Whether the invalidation feed is up and answering (else: bypass).
    live: AtomicBool,
    /// Why the server refuses the feed, when it does.
    refused: Mutex<Option<Refused>>,
    counters: Arc<Counters>,
}

impl Local {
    pub(crate) fn new(capacity: usize, max_ttl: Duration, counters: Arc<Counters>) -> Self {
        Local {
            capacity,
            max_ttl,
            copies: Mutex::new(Copies::default()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            refused: Mutex::new(None),
            counters,
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A live local copy of an entry, when the subscription is up.
    pub(crate) fn get(&self, group: &str, key: &EntryKey) -> Option<Arc<Kept>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let now = Instant::now();
        let copies = self.copies.lock();
        let copy = copies.groups.get(group)?.get(key.as_str())?;
        (copy.expires > now).then(|| {
            bump(&self.counters.local_hits);
            copy.kept.clone()
        })
    }

    /// Keeps a copy of an entry read from Redis, fresh for `fresh_for`, unless
    /// an invalidation came since `epoch` (the read may be older than it).
    pub(crate) fn insert(
        &self,
        group: &str,
        key: &EntryKey,
        kept: &Arc<Kept>,
        fresh_for: Duration,
        epoch: u64,
    ) {
        if fresh_for.is_zero() || !self.live.load(Ordering::Acquire) {
            return;
        }
        let expires = Instant::now() + fresh_for.min(self.max_ttl);
        let mut copies = self.copies.lock();
        if self.epoch() != epoch {
            return;
        }
        if copies.len >= self.capacity
            && !copies
                .groups
                .get(group)
                .is_some_and(|g| g.contains_key(key.as_str()))
        {
            make_room(&mut copies);
        }
        let copy = Copy {
            kept: kept.clone(),
            expires,
        };
        let replaced = copies
            .groups
            .entry(group.to_owned())
            .or_default()
            .insert(key.as_str().to_owned(), copy);
        if replaced.is_none() {
            copies.len += 1;
        }
    }

    /// Drops what an invalidation names (this process's own writes).
    pub(crate) fn invalidate(&self, invalidation: &Invalidation<'_>) {
        match invalidation {
            Invalidation::Key(group, key) => self.drop_copies(group, Some(key.as_str())),
            Invalidation::Group(group) => self.drop_copies(group, None),
        }
    }

    /// What `health()` says of the tier when it works less than fully.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.live.load(Ordering::Acquire) {
            return None;
        }
        let refused = *self.refused.lock();
        Some(refused.map_or(
            "the local tier is bypassed: its invalidation feed is down or silent",
            Refused::problem,
        ))
    }

    /// Drops the copies of what a client tracking push names: an entry, or
    /// a whole group when its generation changed; every copy for a null (a
    /// flushed database). Other keys of the layout (leases, writer and
    /// dependency records) copy nothing.
    fn invalidate_keys(&self, data: &[redis::Value], prefix: &str) {
        metrics::local_invalidated(&self.counters);
        let keys = match data.first() {
            Some(redis::Value::Array(keys)) => keys,
            _ => return self.flush(),
        };
        for key in keys {
            let redis::Value::BulkString(name) = key else {
                return self.flush();
            };
            let Ok(name) = std::str::from_utf8(name) else {
                continue; // not a name this library makes
            };
            match names::parse(prefix, name) {
                Some(Named::Entry(group, key)) => self.drop_copies(group, Some(key)),
                Some(Named::Gen(group)) => self.drop_copies(group, None),
                Some(Named::Other) | None => {}
            }
        }
    }

    /// Drops the copy of one key, or of a whole group, and moves the epoch
    /// on so that reads already under way do not put it back.
    fn drop_copies(&self, group: &str, key: Option<&str>) {
        let mut copies = self.copies.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let removed = match key {
            Some(key) => copies
                .groups
                .get_mut(group)
                .and_then(|g| g.remove(key))
                .map_or(0, |_| 1),
            None => copies.groups.remove(group).map_or(0, |g| g.len()),
        };
        copies.len -= removed;
    }

    /// A feed was made: what was missed while down is flushed, and the
    /// tier is in use.
    fn opened(&self) {
        self.flush();
        *self.refused.lock() = None;
        self.live.store(true, Ordering::Release);
        metrics::local_tracking(true);
    }

    /// The feed dropped, or the server refused it (`refused`, which keeps
    /// the tier off): flushed and bypassed until a feed is made.
    fn closed(&self, refused: Option<Refused>) {
        self.live.store(false, Ordering::Release);
        *self.refused.lock() = refused;
        self.flush();
        metrics::local_tracking(false);
    }

    /// The invalidation feed did not answer its heartbeat: what it would
    /// say cannot be heard, so the tier is flushed and bypassed.
    fn silent(&self) {
        if self.live.swap(false, Ordering::AcqRel) {
            self.flush();
            metrics::local_tracking(false);
            tracing::warn!(
                "cache invalidation feed silent: local tier flushed and bypassed until Redis answers"
            );
        }
    }

    /// The feed answered its heartbeat: back in use if it was silent.
    fn heard(&self) {
        if !self.live.load(Ordering::Acquire) {
            self.flush(); // reads begun while silent store nothing
            self.live.store(true, Ordering::Release);
            metrics::local_tracking(true);
            tracing::info!("cache invalidation feed answers again: local tier back in use");
        }
    }

    /// Drops every copy (the subscription dropped: messages may be lost).
    fn flush(&self) {
        let mut copies = self.copies.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        *copies = Copies::default();
        bump(&self.counters.local_flushes);
    }
}

/// Makes room for one copy: drops expired copies, else an arbitrary tenth.
fn make_room(copies: &mut Copies) {
    let now = Instant::now();
    let before = copies.len;
    for group in copies.groups.values_mut() {
        group.retain(|_, copy| copy.expires > now);
    }
    let mut len: usize = copies.groups.values().map(Map::len).sum();
    if len == before {
        let mut drop = (before / 10).max(1);
        for group in copies.groups.values_mut() {
            let keys: Vec<String> = group.keys().take(drop).cloned().collect();
            for key in keys {
                group.remove(&key);
                drop -= 1;
                len -= 1;
            }
            if drop == 0 {
                break;
            }
        }
    }
    copies.groups.retain(|_, g| !g.is_empty());
    copies.len = len;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race at the fill: a read that began before an invalidation of
    /// its key keeps no copy, and a copy made before one is dropped by it.
    #[test]
    fn a_read_an_invalidation_overtook_keeps_no_copy() {
        let tier = Local::new(10, Duration::from_secs(60), Arc::default());
        tier.opened();
        let key = EntryKey::new(&7u64).unwrap();
        let pushed = |name: &str| {
            let name = redis::Value::BulkString(name.as_bytes().to_vec());
            [redis::Value::Array(vec![name])]
        };
        let entry = format!("p:{{g}}:e:{}", key.as_str());
        let kept = Kept::new(b"old".to_vec());

        let began = tier.epoch(); // the read is sent...
        tier.invalidate_keys(&pushed(&entry), "p"); // ...another client writes...
        tier.insert("g", &key, &kept, Duration::from_secs(60), began); // ...its reply lands
        assert!(
            tier.get("g", &key).is_none(),
            "the overtaken read kept a copy"
        );

        let began = tier.epoch();
        tier.insert("g", &key, &kept, Duration::from_secs(60), began);
        assert!(tier.get("g", &key).is_some());
        tier.invalidate_keys(&pushed(&entry), "p");
        assert!(tier.get("g", &key).is_none(), "the push dropped the copy");

        tier.insert("g", &key, &kept, Duration::from_secs(60), tier.epoch());
        tier.invalidate_keys(&pushed("p:{g}:gen"), "p");
        assert!(
            tier.get("g", &key).is_none(),
            "a new generation drops the group"
        );

        tier.insert("g", &key, &kept, Duration::from_secs(60), tier.epoch());
        tier.invalidate_keys(&pushed("p:{g}:l:7"), "p");
        assert!(tier.get("g", &key).is_some(), "a lease copies nothing");
        tier.invalidate_keys(&[redis::Value::Nil], "p");
        assert!(
            tier.get("g", &key).is_none(),
            "a flushed database drops all"
        );
    }
}
