//! The read path of `#[cached]` and `get_or_load`: look up, and on a miss
//! either hold the read lease (and load), follow this process's flight for
//! the key, or wait, bounded, for the holder in another process. Of a
//! process's callers that miss a key at once, one asks Redis for its lease
//! and the others follow its flight, so a stampede costs one lease script
//! per process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight::{self, FlightGuard, Joined};
use super::lease::LeaseGuard;
use super::ReadStart;
use crate::backend::{token, Lease, Lookup, Want};
use crate::background::Backoff;
use crate::deps::stamps;
use crate::entry::envelope::Meta;
use crate::entry::shared::{Kept, Reader};
use crate::entry::EntryKey;
use crate::observe::{metrics, ok_or_warn};
use crate::{Cache, Error};

/// How many flights a caller follows before it loads by itself: a bound on
/// how long it can wait, whatever happens to the leaders it follows.
const MAX_FOLLOWS: u32 = 2;
const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(50);

/// What a read found.
pub(crate) enum Found<'c, V> {
    /// A live value with its timing data.
    Hit(V, Meta),
    /// Run the body: store its value under `lease` when there is one. The
    /// flight ends (and this process's waiters read again) when it drops.
    Load {
        lease: Option<LeaseGuard>,
        flight: Option<FlightGuard<'c>>,
    },
}

/// A lookup's answer, its lease guarded.
enum Answer {
    Hit(Arc<Kept>),
    Miss(Option<LeaseGuard>),
    Held,
}

pub(crate) struct Read<'c> {
    pub(crate) cache: &'c Cache,
    pub(crate) group: &'c str,
    pub(crate) key: &'c EntryKey,
    /// Stampede protection: one load per key across processes.
    pub(crate) lock: bool,
    /// How long to wait for another process's load before loading anyway.
    pub(crate) lock_timeout: Duration,
    /// The local tier's epoch when this read began.
    pub(crate) epoch: u64,
}

impl<'c> Read<'c> {
    /// Resolves the read; `reader` opens what it finds.
    pub(crate) async fn resolve<V>(&self, reader: &Reader<V>) -> Found<'c, V> {
        let start = self
            .cache
            .begin_read(self.group, std::slice::from_ref(self.key))
            .await;
        if start.passes(self.cache, self.group, self.key) {
            // An eviction of this key failed and is being retried: the
            // cached value may be stale, so read past it.
            return load_without_cache();
        }
        if let Some(kept) = start
            .local(self.cache)
            .and_then(|local| local.get(self.group, self.key))
        {
            if let Some((value, meta)) = self.cache.open(self.group, self.key, &kept, reader) {
                return Found::Hit(value, meta);
            }
        }
        // Hits, the common case, are plain reads; only a miss takes a lease.
        let mut answer = self.lookup(Want::Peek).await;
        let mut peeked = true;
        let mut follows = 0;
        // This process's flight for the key, when this caller leads it.
        let mut leading = None;
        loop {
            let Some(found) = answer else {
                return load_without_cache();
            };
            match found {
                Answer::Hit(kept) if stamps::stamped(kept.bytes()) => {
                    return Box::pin(self.stamped(kept, reader, &start, leading.take())).await;
                }
                Answer::Hit(kept) => match self.open(&kept, reader) {
                    Some(hit) => return hit,
                    None => return self.reload(None).await,
                },
                Answer::Miss(Some(lease)) => return self.load(Some(lease), leading.take()),
                Answer::Miss(None) if peeked => {
                    // One caller of this process asks Redis for the lease;
                    // the others follow its flight rather than be refused.
                    if self.lock && leading.is_none() && follows < MAX_FOLLOWS {
                        match self.cache.flights().join(self.group, self.key) {
                            Joined::Follower(done) => {
                                follows += 1;
                                flight::wait(done).await;
                                answer = self.lookup(Want::Peek).await;
                                continue;
                            }
                            Joined::Leader(flight) => leading = Some(flight),
                        }
                    }
                    let want = if self.lock { Want::Lock } else { Want::Lease };
                    answer = self.lookup(want).await;
                    peeked = false;
                }
                Answer::Miss(None) => return load_without_cache(),
                // With the lock off, a held lease is shared.
                Answer::Held if !self.lock => {
                    answer = self.lookup(Want::Lease).await;
                    peeked = false;
                }
                // Another process loads it: wait for that, leading here.
                Answer::Held if leading.is_some() => {
                    return match leading.take() {
                        Some(flight) => self.wait_for(flight, reader, &start).await,
                        None => load_without_cache(),
                    };
                }
                Answer::Held => {
                    if follows == MAX_FOLLOWS {
                        return load_without_cache();
                    }
                    follows += 1;
                    match self.cache.flights().join(self.group, self.key) {
                        Joined::Follower(done) => flight::wait(done).await,
                        Joined::Leader(flight) => {
                            return self.wait_for(flight, reader, &start).await
                        }
                    }
                    answer = self.lookup(Want::Peek).await;
                    peeked = true;
                }
            }
        }
    }

    /// Another process holds the lease: poll, with backoff, until its value
    /// is there or its lease gone. Past `lock_timeout`, load without the
    /// lease and store nothing: the holder keeps its lease and stores its own
    /// value, so a slow load is not raced into never being stored.
    ///
    /// A stamped value whose stamps no longer hold is what the holder is
    /// replacing: polling goes on, within the same bound (this calls nothing
    /// that waits again, so the bound is one `lock_timeout`, and the wait
    /// nests no futures).
    async fn wait_for<V>(
        &self,
        flight: FlightGuard<'c>,
        reader: &Reader<V>,
        start: &ReadStart,
    ) -> Found<'c, V> {
        let deadline = Instant::now() + self.lock_timeout;
        let mut backoff = Backoff::new(FIRST_POLL, MAX_POLL);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                metrics::lock_timed_out(self.cache.counters(), self.group, 1);
                return Found::Load {
                    lease: None,
                    flight: Some(flight),
                };
            }
            tokio::time::sleep(backoff.pause().min(left)).await;
            // Polls are plain reads; only once the lease is gone, take it.
            let answer = match self.lookup(Want::Peek).await {
                Some(Answer::Miss(None)) => self.lookup(Want::Lock).await,
                other => other,
            };
            let answer = match answer {
                Some(Answer::Hit(kept)) if !start.holds(self.cache, &kept).await => {
                    // Stale through what it depends on: take its lease.
                    match self.lookup(Want::ForceLock).await {
                        Some(Answer::Hit(_)) => None,
                        other => other,
                    }
                }
                other => other,
            };
            match answer {
                Some(Answer::Hit(kept)) => match self.open(&kept, reader) {
                    Some(hit) => return hit,
                    None => return self.reload(Some(flight)).await,
                },
                Some(Answer::Miss(lease)) => return self.load(lease, Some(flight)),
                Some(Answer::Held) => {}
                None => {
                    return Found::Load {
                        lease: None,
                        flight: Some(flight),
                    }
                }
            }
        }
    }

    /// A lease beside a live value, for refreshing it early; `None` when
    /// someone else refreshes it.
    pub(crate) async fn refresh_lease(&self) -> Option<LeaseGuard> {
        match self.lookup(Want::Refresh).await? {
            Answer::Miss(lease) => lease,
            Answer::Hit(_) | Answer::Held => None,
        }
    }

    /// What the key holds now, read plainly (no lease, no rule applied):
    /// for comparing with what an earlier read found.
    pub(crate) async fn stored(&self) -> Option<Arc<Kept>> {
        match self.lookup(Want::Peek).await? {
            Answer::Hit(kept) => Some(kept),
            Answer::Miss(_) | Answer::Held => None,
        }
    }

    /// A hit of an entry with dependency stamps: a hit while they hold (its
    /// stamps then noted in the load in progress). Else what it embeds
    /// changed: it is loaded again, with the lock, so the callers that find
    /// it so wait for one load rather than each run one.
    async fn stamped<V>(
        &self,
        kept: Arc<Kept>,
        reader: &Reader<V>,
        start: &ReadStart,
        flight: Option<FlightGuard<'c>>,
    ) -> Found<'c, V> {
        if start.holds(self.cache, &kept).await {
            return match self.open(&kept, reader) {
                Some(hit) => hit,
                None => self.reload(flight).await,
            };
        }
        if !self.lock {
            return self.reload(flight).await;
        }
        match self.lookup(Want::ForceLock).await {
            Some(Answer::Miss(lease)) => self.load(lease, flight),
            Some(Answer::Held) => {
                let flight =
                    flight.unwrap_or_else(|| self.cache.flights().lead(self.group, self.key));
                Box::pin(self.wait_for(flight, reader, start)).await
            }
            Some(Answer::Hit(_)) | None => Found::Load {
                lease: None,
                flight,
            },
        }
    }

    /// A hit, kept in the local tier; `None` when the entry does not decode.
    /// Not async: a hit builds no future for the reload it does not need.
    fn open<V>(&self, kept: &Arc<Kept>, reader: &Reader<V>) -> Option<Found<'c, V>> {
        let (value, meta) = self.cache.open(self.group, self.key, kept, reader)?;
        // An entry with dependency stamps is checked on every read, so it
        // is never copied to the local tier.
        if let Some(local) = self
            .cache
            .local()
            .filter(|_| !stamps::stamped(kept.bytes()))
        {
            let fresh_for = Duration::from_millis(u64::try_from(meta.fresh_for_ms()).unwrap_or(0));
            local.insert(self.group, self.key, kept, fresh_for, self.epoch);
        }
        Some(Found::Hit(value, meta))
    }

    /// The entry does not decode: load, and overwrite it.
    async fn reload<V>(&self, flight: Option<FlightGuard<'c>>) -> Found<'c, V> {
        match self.lookup(Want::ForceLease).await {
            Some(Answer::Miss(lease)) => self.load(lease, flight),
            _ => Found::Load {
                lease: None,
                flight,
            },
        }
    }

    fn load<V>(&self, lease: Option<LeaseGuard>, flight: Option<FlightGuard<'c>>) -> Found<'c, V> {
        let flight = match (flight, &lease) {
            (Some(flight), _) => Some(flight),
            (None, Some(_)) if self.lock => Some(self.cache.flights().lead(self.group, self.key)),
            (None, _) => None,
        };
        Found::Load { lease, flight }
    }

    /// Looks up. A lease the request may create carries a token chosen here
    /// and guarded before the request is sent: if this caller is dropped while
    /// the request is in flight (or it times out and runs later), the lease is
    /// given back instead of blocking the key until it expires.
    async fn lookup(&self, want: Want) -> Option<Answer> {
        let token = if want == Want::Peek {
            String::new()
        } else {
            token()
        };
        let mut pending = (want != Want::Peek).then(|| {
            let lease = Lease {
                token: token.clone(),
                gen: String::new(),
            };
            LeaseGuard::new(self.cache, self.group, self.key, lease, true)
        });
        let found = self.cache.lookup(self.group, self.key, want, &token).await;
        if let (Some(pending), Ok(_) | Err(Error::Unavailable)) = (pending.as_mut(), &found) {
            pending.disarm(); // answered, or never sent
        }
        Some(
            match ok_or_warn(self.cache.counters(), "lookup", self.group, found)? {
                Lookup::Hit(kept) => Answer::Hit(kept),
                Lookup::Held => Answer::Held,
                Lookup::Miss(None) => Answer::Miss(None),
                Lookup::Miss(Some(lease)) => {
                    let owned = lease.token == token;
                    Answer::Miss(Some(LeaseGuard::new(
                        self.cache, self.group, self.key, lease, owned,
                    )))
                }
            },
        )
    }
}

fn load_without_cache<'c, V>() -> Found<'c, V> {
    Found::Load {
        lease: None,
        flight: None,
    }
}
