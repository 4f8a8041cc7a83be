//! Restarts and failovers: whether a group's generation was written by the
//! server process that holds it now.
//!
//! A server that restarts from a snapshot, or a replica promoted before it
//! received the last writes, holds entries that later writes had evicted:
//! their generations are the ones those writes replaced, or the entries the
//! evictions deleted are back. Every generation therefore starts with the
//! *epoch* of the server process that made it, the head of its `run_id`,
//! which changes with every start and differs between a master and its
//! replicas. A generation of another epoch counts as absent: the group's
//! entries are misses, and the next script that needs the generation makes
//! a new one. The price is a cold cache after a restart or a failover.
//!
//! The scripts check the epoch on the server (`INFO server`), so a lease,
//! a fill or a write never trusts an old generation. A hit is a plain
//! `MGET`; [`Epochs::judge`] checks the generation it read against the
//! epoch learned on the same connection. One server, or the master that
//! Sentinel names, is reached through one connection at a time, numbered
//! (`backend/link.rs`): a reply on a connection made after the server came
//! back is judged by an epoch learned on that connection, so none is
//! admitted by a stale one. A cluster's node connections are made inside
//! redis-rs: there, an epoch is trusted for [`CLUSTER_TRUST`] after the
//! node last confirmed it, and until any connection error.
//!
//! `CacheBuilder::check_restarts(false)` turns the check off, for a server
//! whose persistence and failovers lose no acknowledged write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::RedisError;

use super::connection::Connection;

/// How long a cluster node's epoch is trusted after the node last
/// confirmed it: the longest a node restarted without an error reaching
/// this process may serve entries from before its restart.
pub(crate) const CLUSTER_TRUST: Duration = Duration::from_secs(1);

/// The bytes of an epoch (hex digits); a dot follows them in a generation.
const EPOCH: usize = 8;

/// No epoch learned: [`Epochs::last`] when empty.
const NONE: u64 = u64::MAX;

/// What [`Epochs::judge`] says of a generation.
pub(crate) enum Judged {
    Admitted,
    Refused,
    /// Not known: ask the server (on connection number `.0`).
    Ask(u64),
}

/// The epochs this process has learned, and whether it checks them.
pub(crate) struct Epochs {
    check: bool,
    /// How long a learned epoch is trusted (a cluster's), or `None` for as
    /// long as the connection it was learned on.
    trust: Option<Duration>,
    /// One server's epoch (its digits' bytes, as a word), and the number
    /// of the connection it was learned on ([`NONE`] while it changes): a
    /// hit's check is three loads.
    last: AtomicU64,
    last_on: AtomicU64,
    /// A cluster's: each node's epoch, the number it was confirmed on,
    /// and when.
    live: Mutex<Vec<(u64, u64, Instant)>>,
    /// The user may not run `INFO`: the scripts make generations without
    /// an epoch, and none is checked.
    unavailable: AtomicBool,
}

impl Epochs {
    pub(crate) fn new(check: bool, trust: Option<Duration>) -> Self {
        Epochs {
            check,
            trust,
            last: AtomicU64::new(NONE),
            last_on: AtomicU64::new(NONE),
            live: Mutex::default(),
            unavailable: AtomicBool::new(false),
        }
    }

    /// A fresh generation token for a script: marked (`*`) to start with
    /// the server's epoch when the check is on.
    pub(crate) fn fresh_gen(&self) -> String {
        match self.check {
            true => format!("*{}", super::token()),
            false => super::token(),
        }
    }

    /// Whether `gen`, a generation that a plain command read on connection
    /// number `read_on` (its number when sent, and still when answered),
    /// was made by the server process that answered, as far as this
    /// process knows: on any doubt, refused (the read is then a miss, and
    /// the script that follows it decides on the server), or
    /// [`Judged::Ask`] when this connection has not learned the epoch.
    pub(crate) fn judge(&self, conn: &Connection, gen: &[u8], read_on: Option<u64>) -> Judged {
        if !self.check || self.unavailable.load(Ordering::Relaxed) {
            return Judged::Admitted;
        }
        let Some(on) = read_on.filter(|&on| conn.number() == Some(on)) else {
            return Judged::Refused;
        };
        let Some(epoch) = epoch_of(gen) else {
            return Judged::Refused; // made before the check was on
        };
        let trusted =
            match self.trust {
                // The epoch is read between two reads of its number: a learn
                // in between (which clears the number first) is seen.
                None => {
                    self.last_on.load(Ordering::Acquire) == on
                        && self.last.load(Ordering::Acquire) == epoch
                        && self.last_on.load(Ordering::Acquire) == on
                }
                Some(trust) => self.live.lock().iter().any(|&(live, number, at)| {
                    live == epoch && number == on && at.elapsed() < trust
                }),
            };
        match trusted {
            true => Judged::Admitted,
            false => Judged::Ask(on),
        }
    }

    /// [`Judged::Ask`]: asks the server holding `gen_key` its epoch, and
    /// admits `gen` when it is of that epoch and the connection is still
    /// number `on`.
    pub(crate) async fn confirm(
        &self,
        conn: &Connection,
        gen_key: &str,
        gen: &[u8],
        on: u64,
    ) -> bool {
        match self.learn(conn, gen_key).await {
            Some((live, number)) => number == on && epoch_of(gen) == Some(live),
            None => self.unavailable.load(Ordering::Relaxed),
        }
    }

    /// Asks the server holding `key` its epoch, and keeps it as live on
    /// the connection that asked. `None` when the answer is in doubt.
    pub(crate) async fn learn(&self, conn: &Connection, key: &str) -> Option<(u64, u64)> {
        if !self.check {
            return None;
        }
        match self.ask(conn, key).await {
            Ok((live, Some(number))) => {
                match self.trust {
                    None => {
                        self.last_on.store(NONE, Ordering::Release);
                        self.last.store(live, Ordering::Release);
                        self.last_on.store(number, Ordering::Release);
                    }
                    Some(trust) => {
                        let mut cluster = self.live.lock();
                        cluster.retain(|&(_, on, at)| on == number && at.elapsed() < trust);
                        cluster.push((live, number, Instant::now()));
                    }
                }
                Some((live, number))
            }
            Ok((_, None)) => None,
            Err(error) if error.code() == Some("NOPERM") => {
                if !self.unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "cache: this user may not run INFO, so restarts and failovers are not \
                         detected (give it +info, or turn the check off with check_restarts(false))"
                    );
                }
                None
            }
            Err(error) => {
                tracing::debug!(%error, "cache: could not ask the server its epoch");
                None
            }
        }
    }

    /// The epoch of the server holding `gen_key`, and the number of the
    /// connection that asked (`None` when it changed meanwhile).
    async fn ask(
        &self,
        conn: &Connection,
        gen_key: &str,
    ) -> Result<(u64, Option<u64>), RedisError> {
        let before = conn.number();
        let run_id: String = super::redis::epoch_script(gen_key)
            .invoke_async(&mut conn.clone())
            .await?;
        let number = before.filter(|&before| conn.number() == Some(before));
        match run_id.as_bytes().get(..EPOCH).and_then(word) {
            Some(epoch) => Ok((epoch, number)),
            None => Err(crate::error::unexpected_reply(
                "the server's run_id does not start with an epoch",
            )),
        }
    }
}

/// The epoch a generation starts with, if it has one.
fn epoch_of(gen: &[u8]) -> Option<u64> {
    match gen.get(EPOCH) {
        Some(b'.') => word(gen.get(..EPOCH)?),
        _ => None,
    }
}

/// An epoch's digits as a word, to compare in one instruction.
fn word(digits: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(digits.try_into().ok()?))
}
