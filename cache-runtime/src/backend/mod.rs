//! Storage backends and the protocol they share.
//!
//! Both backends keep the same state per entry and implement the same
//! operations, so the attributes behave identically on either:
//!
//! - a **group generation**, an opaque random token per group. Evicting a group
//!   replaces it (one write, whatever the group's size); an entry counts only
//!   while it carries its group's current generation. On Redis it starts with
//!   the epoch of the server process that made it (`epochs.rs`), so that a
//!   restart or failover leaves no entry from before it.
//! - an **entry**: a stored value with its generation, or a pending **read
//!   lease** (token and generation) taken by the miss that is loading it. A fill
//!   stores only while its lease is still in place, and eviction removes the
//!   lease with the entry, so a load that began before an eviction can never
//!   store its (possibly stale) value afterwards. The same lease is the
//!   stampede lock: in `Lock` mode a second miss is told the lease is held and
//!   waits instead of loading. A lease may also sit beside a live value while
//!   one caller refreshes it early.
//! - a **writer record** for the `#[cache_put]`s in flight on the key: the last
//!   writer's token, how many are in flight, and whether any two overlapped. A
//!   put stores its value only when no other write overlapped it; otherwise it
//!   deletes the entry. Concurrent puts leave the last write or nothing.
//! - **dependency records** (`deps`) per key and per group: a token that a
//!   load depending on it pins, and every write of what it names replaces.

pub(crate) mod batch;
pub(crate) mod connection;
pub(crate) mod deadline;
pub(crate) mod epochs;
pub(crate) mod link;
pub(crate) mod memory;
pub(crate) mod mget;
pub(crate) mod names;
pub(crate) mod redis;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
pub(crate) mod server;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use std::sync::Arc;
use std::time::Duration;

use crate::entry::shared::Kept;
use crate::entry::EntryKey;
use crate::entry::Record;
use crate::error::Error;

/// A fill's TTL that keeps the entry's own expiry: a value that stands in
/// for a failed load is served again, but never past when its entry ends.
/// Nothing is stored once the entry is gone.
pub(crate) const KEEP_EXPIRY: Duration = Duration::ZERO;

/// What a lookup asks for besides the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Only read, in plain commands (no script): a hit or a miss; takes no
    /// lease. It may tell a held miss ([`Lookup::Held`]) from a miss (memory
    /// does; Redis's batched peek reads no lease, and the lookup that follows
    /// a miss tells).
    Peek,
    /// Read, and on a miss take or share the read lease (no stampede lock).
    Lease,
    /// Read, and on a miss take the read lease unless another caller holds
    /// it: then answer [`Lookup::Held`].
    Lock,
    /// The value is live and due for refresh: take the lease beside it
    /// unless someone already refreshes it (then `Miss(None)`).
    Refresh,
    /// The stored value is kept past its TTL by fail-safe: take the lease
    /// beside it, leaving it in place to stand in for a failure, unless
    /// another caller holds it: then answer [`Lookup::Held`]. Without a
    /// value, as [`Want::Lock`].
    Beside,
    /// Ignore the stored value (it did not decode) and take or share the lease.
    ForceLease,
    /// Ignore the stored value (what it depends on changed) and take the
    /// lease unless another caller holds it: then answer [`Lookup::Held`].
    ForceLock,
}

/// A read lease: the right to fill an entry, valid until the entry is evicted,
/// written, or its group evicted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) token: String,
    pub(crate) gen: String,
}

/// The answer to a lookup.
#[derive(Debug)]
pub(crate) enum Lookup {
    Hit(Arc<Kept>),
    Miss(Option<Lease>),
    /// A miss whose lease another caller holds.
    Held,
}

/// A registered write in flight, returned by `begin_write`.
#[derive(Clone, Debug)]
pub(crate) struct Ticket {
    pub(crate) token: String,
    pub(crate) gen: String,
}

/// How a write ends.
#[derive(Debug)]
pub(crate) enum WriteEnd {
    /// The body succeeded with a value to store for this long.
    Store(Vec<u8>, Duration),
    /// The body succeeded but its value is not to be stored: drop the entry.
    Evict,
    /// The body failed: leave the entry as it is.
    Abort,
}

/// What pinning a group's dependency records found, on the backend's clock
/// (the server's, for Redis): a token starts with the microsecond it was
/// made or last replaced at.
#[derive(Debug)]
pub(crate) struct Pinned {
    /// The clock now, microseconds.
    pub(crate) now_us: u64,
    /// The group's generation.
    pub(crate) gen: String,
    /// When the group was last evicted (or when this was first asked).
    pub(crate) evicted_us: u64,
    /// The records' tokens, in the order asked.
    pub(crate) records: Vec<String>,
}

/// One of the storage backends.
pub(crate) enum Backend {
    Memory(memory::Memory),
    Redis(redis::Redis),
    /// Stores nothing: every lookup misses (without a lease), every write
    /// succeeds at once ([`Cache::disabled`](crate::Cache::disabled)).
    Disabled,
}

impl Backend {
    /// The lookup of an in-process backend, answered at once (a hit there
    /// builds and moves no future for the Redis path), or the Redis backend
    /// to ask. A lease it creates carries `token`, which the caller chose
    /// (and guarded) before sending the request.
    pub(crate) fn lookup_in_process(
        &self,
        group: &str,
        key: &EntryKey,
        want: Want,
        token: &str,
    ) -> Result<Lookup, &redis::Redis> {
        match self {
            Backend::Memory(m) => Ok(m.lookup(group, key, want, token)),
            Backend::Disabled => Ok(Lookup::Miss(None)),
            Backend::Redis(r) => Err(r),
        }
    }

    pub(crate) async fn fill(
        &self,
        group: &str,
        key: &EntryKey,
        lease: &Lease,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => Ok(m.fill(group, key, lease, bytes, ttl)),
            Backend::Redis(r) => r.fill(group, key, lease, bytes, ttl).await,
            Backend::Disabled => Ok(false),
        }
    }

    /// Registers a write carrying `token`, chosen (and guarded) by the caller.
    pub(crate) async fn begin_write(
        &self,
        group: &str,
        key: &EntryKey,
        token: &str,
    ) -> Result<Ticket, Error> {
        match self {
            Backend::Memory(m) => Ok(m.begin_write(group, key, token)),
            Backend::Redis(r) => r.begin_write(group, key, token).await,
            Backend::Disabled => Ok(Ticket {
                token: token.to_owned(),
                gen: String::new(),
            }),
        }
    }

    pub(crate) async fn end_write(
        &self,
        group: &str,
        key: &EntryKey,
        ticket: &Ticket,
        end: WriteEnd,
    ) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => Ok(m.end_write(group, key, ticket, end)),
            Backend::Redis(r) => r.end_write(group, key, ticket, end).await,
            Backend::Disabled => Ok(false),
        }
    }

    /// Gives a read lease back (its holder stopped without filling), so that
    /// waiters need not wait for it to expire.
    pub(crate) async fn release(
        &self,
        group: &str,
        key: &EntryKey,
        lease: &Lease,
    ) -> Result<(), Error> {
        match self {
            Backend::Memory(m) => {
                m.release(group, key, lease);
                Ok(())
            }
            Backend::Redis(r) => r.release(group, key, lease).await,
            Backend::Disabled => Ok(()),
        }
    }

    /// Removes the entry (and any read lease on it), marks writes in flight on
    /// it as overlapped, and says whether a live value was there.
    pub(crate) async fn invalidate(&self, group: &str, key: &EntryKey) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => Ok(m.invalidate(group, key)),
            Backend::Redis(r) => r.invalidate(group, key).await,
            Backend::Disabled => Ok(false),
        }
    }

    /// A bulk call's plain read of keys of one group.
    pub(crate) async fn peek_many(
        &self,
        group: &str,
        keys: &[EntryKey],
    ) -> Result<Vec<Lookup>, Error> {
        match self {
            Backend::Memory(m) => Ok(keys
                .iter()
                .map(|key| m.lookup(group, key, Want::Peek, NO_LEASE))
                .collect()),
            Backend::Redis(r) => r.peek_many(group, keys).await,
            Backend::Disabled => Ok(keys.iter().map(|_| Lookup::Miss(None)).collect()),
        }
    }

    /// A bulk call's leases of keys of one group, each under its token
    /// (`true`: past its value).
    pub(crate) async fn lock_many(
        &self,
        group: &str,
        keys: &[(&EntryKey, &str, Want)],
    ) -> Result<Vec<Lookup>, Error> {
        match self {
            Backend::Memory(m) => Ok(keys
                .iter()
                .map(|(key, token, want)| m.lookup(group, key, *want, token))
                .collect()),
            Backend::Redis(r) => r.lock_many(group, keys).await,
            Backend::Disabled => Ok(keys.iter().map(|_| Lookup::Miss(None)).collect()),
        }
    }

    /// A bulk call's fills of keys of one group; how many were stored.
    pub(crate) async fn fill_many(
        &self,
        group: &str,
        fills: Vec<(&EntryKey, &Lease, Vec<u8>, Duration)>,
    ) -> Result<usize, Error> {
        match self {
            Backend::Memory(m) => Ok(fills
                .into_iter()
                .map(|(key, lease, bytes, ttl)| m.fill(group, key, lease, bytes, ttl))
                .filter(|stored| *stored)
                .count()),
            Backend::Redis(r) => r.fill_many(group, fills).await,
            Backend::Disabled => Ok(0),
        }
    }

    /// Pins dependency records of `group`: makes those absent, keeps each
    /// for at least `ttl`, and returns their tokens.
    pub(crate) async fn pin(
        &self,
        group: &str,
        records: &[Record],
        ttl: Duration,
    ) -> Result<Pinned, Error> {
        match self {
            Backend::Memory(m) => Ok(m.pin(group, records, ttl)),
            Backend::Redis(r) => r.pin(group, records, ttl).await,
            Backend::Disabled => Err(Error::Unavailable),
        }
    }

    /// The group's generation and the tokens of dependency records of it
    /// (`None` for one that is gone).
    pub(crate) async fn check(
        &self,
        group: &str,
        records: &[Record],
    ) -> Result<(Option<String>, Vec<Option<String>>), Error> {
        match self {
            Backend::Memory(m) => Ok(m.check(group, records)),
            Backend::Redis(r) => r.check(group, records).await,
            Backend::Disabled => Err(Error::Unavailable),
        }
    }

    pub(crate) async fn evict_group(&self, group: &str) -> Result<(), Error> {
        match self {
            Backend::Memory(m) => {
                m.evict_group(group);
                Ok(())
            }
            Backend::Redis(r) => r.evict_group(group).await,
            Backend::Disabled => Ok(()),
        }
    }
}

/// The token of a lookup that takes no lease ([`Want::Peek`]).
pub(crate) const NO_LEASE: &str = "";

/// A fresh random token for leases, writers and group generations.
pub(crate) fn token() -> String {
    format!("{:016x}", fastrand::u64(..))
}
