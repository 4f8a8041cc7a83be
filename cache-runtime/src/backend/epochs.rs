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
//! `MGET`; [`Epochs::admits`] checks the generation it read against the
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

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::RedisError;

use super::connection::Connection;

/// How long a cluster node's epoch is trusted after the node last
/// confirmed it: the longest a node restarted without an error reaching
/// this process may serve entries from before its restart.
pub(crate) const CLUSTER_TRUST: Duration = Duration::from_secs(1);

/// The bytes of an epoch, and the separator after it.
const EPOCH: usize = 8;

/// The epochs this process has learned, and whether it checks them.
pub(crate) struct Epochs {
    check: bool,
    /// How long a learned epoch is trusted (a cluster's), or `None` for as
    /// long as the connection it was learned on.
    trust: Option<Duration>,
    learned: Mutex<Learned>,
}

#[derive(Default)]
struct Learned {
    /// Epochs confirmed live: the connection number each was confirmed on,
    /// and when.
    live: Vec<([u8; EPOCH], u64, Instant)>,
    /// The user may not run `INFO`: the scripts make generations without
    /// an epoch, and none is checked.
    unavailable: bool,
}

impl Epochs {
    pub(crate) fn new(check: bool, trust: Option<Duration>) -> Self {
        Epochs {
            check,
            trust,
            learned: Mutex::default(),
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

    /// Whether `gen`, the generation under `gen_key` that a plain command
    /// read on connection number `read_on` (its number when sent, and
    /// still when answered), was made by the server process that answered.
    /// Asks the server its epoch when this connection has not learned it;
    /// on any doubt, no: the read is then a miss, and the script that
    /// follows it decides on the server.
    pub(crate) async fn admits(
        &self,
        conn: &Connection,
        gen_key: &str,
        gen: &[u8],
        read_on: Option<u64>,
    ) -> bool {
        if !self.check {
            return true;
        }
        let Some(on) = read_on.filter(|&on| conn.number() == Some(on)) else {
            return false;
        };
        {
            let learned = self.learned();
            if learned.unavailable {
                return true;
            }
            let Some(epoch) = epoch_of(gen) else {
                return false; // made before the check was on
            };
            if learned.live.iter().any(|(live, number, at)| {
                live == epoch && *number == on && self.trust.is_none_or(|t| at.elapsed() < t)
            }) {
                return true;
            }
        }
        match self.learn(conn, gen_key).await {
            Some((live, number)) => number == on && epoch_of(gen) == Some(&live),
            None => self.learned().unavailable,
        }
    }

    /// Asks the server holding `key` its epoch, and keeps it as live on
    /// the connection that asked. `None` when the answer is in doubt.
    pub(crate) async fn learn(&self, conn: &Connection, key: &str) -> Option<([u8; EPOCH], u64)> {
        if !self.check {
            return None;
        }
        match self.ask(conn, key).await {
            Ok((live, Some(number))) => {
                let mut learned = self.learned();
                let trusted = self.trust;
                learned.live.retain(|(_, on, at)| {
                    *on == number && trusted.is_none_or(|t| at.elapsed() < t)
                });
                learned.live.push((live, number, Instant::now()));
                Some((live, number))
            }
            Ok((_, None)) => None,
            Err(error) if error.code() == Some("NOPERM") => {
                let mut learned = self.learned();
                if !learned.unavailable {
                    tracing::warn!(
                        %error,
                        "cache: this user may not run INFO, so restarts and failovers are not \
                         detected (give it +info, or turn the check off with check_restarts(false))"
                    );
                    learned.unavailable = true;
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
    ) -> Result<([u8; EPOCH], Option<u64>), RedisError> {
        let before = conn.number();
        let run_id: String = super::redis::epoch_script(gen_key)
            .invoke_async(&mut conn.clone())
            .await?;
        let number = before.filter(|&before| conn.number() == Some(before));
        let mut epoch = [0; EPOCH];
        match run_id.as_bytes().get(..EPOCH) {
            Some(head) => epoch.copy_from_slice(head),
            None => {
                return Err(crate::error::unexpected_reply(
                    "the server's run_id is shorter than an epoch",
                ))
            }
        }
        Ok((epoch, number))
    }

    fn learned(&self) -> MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The epoch a generation starts with, if it has one.
fn epoch_of(gen: &[u8]) -> Option<&[u8; EPOCH]> {
    match gen.get(EPOCH) {
        Some(b'.') => gen.get(..EPOCH)?.try_into().ok(),
        _ => None,
    }
}
