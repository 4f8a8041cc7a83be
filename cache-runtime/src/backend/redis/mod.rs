//! The Redis backend.
//!
//! Layout, for prefix `P` and group `G` (the group in hash-tag braces, so all
//! of a group's keys share one cluster slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{G}:gen` | string | the group's current generation (no TTL): the epoch of the server process that made it, a dot, and a 16-character token (see `backend/epochs.rs`) |
//! | `P:{G}:e:<key>` | string | the value's generation followed by its envelope |
//! | `P:{G}:l:<key>` | hash | `t`/`lg`: a read lease and its generation |
//! | `P:{G}:w:<key>` | hash | `w` last writer, `n` writers in flight, `c` set when writes overlapped |
//! | `P:{G}:v:<key>` | string | the entry's dependency record (`deps`): a token, made by a load that depends on it, replaced by every write of the entry |
//! | `P:{G}:gv` | string | the group's dependency record and write clock: replaced by every write in the group (and kept from then on), so it says when a record that does not exist was last written at the latest |
//! | `P:{G}:gt` | string | when the group was last evicted, server microseconds |
//!
//! A hit is one `MGET` of the generation and the entry. Every other operation
//! is one script call (one round trip) that names all the keys it touches in
//! `KEYS`, all of one group, hence one slot. Nothing ever scans.
//! A script that adds data makes a memory-growing write (`SET`, `HSET`) its
//! first write: a full Redis refuses a script's first such write, so the
//! cache never pushes it past `maxmemory`.
//!
//! Contents are not trusted: a key holding another Redis type is deleted and
//! the operation run again. When Redis is full (`maxmemory` with
//! `noeviction`) it refuses every script that may write, so operations fall
//! back to plain commands it still accepts: a lookup reads without a lease,
//! and anything that would remove a value deletes it with `DEL`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{FromRedisValue, RedisError, ScriptInvocation, Value};

mod bulk;
mod deps;
mod rights;
mod scripts;
mod writes;

use super::batch::Batcher;
use super::connection::Connection;
use super::mget;
use super::{Lease, Lookup, Want, KEEP_EXPIRY};
use crate::backend::deadline::Deadline;
use crate::backend::names::{group_gen, Names};
use crate::entry::shared::Kept;
use crate::entry::EntryKey;
use crate::error::unexpected_reply;
use crate::error::Error;
use crate::observe::{bump, Counters};
pub(crate) use rights::Rights;
use scripts::{FILL, LOOKUP, RELEASE, REPAIR};

pub(crate) struct Redis {
    conn: Connection,
    /// Sends peeks, batching them under load.
    batcher: Batcher,
    prefix: String,
    lease_ms: u64,
    counters: Arc<Counters>,
    /// The groups whose fill has answered since a script last failed: the
    /// server holds the fill script there (see [`Redis::fills_at_once`]).
    filled: Mutex<HashSet<String>>,
    /// Whether the scripts were loaded on first contact, and no script or
    /// connection has failed since: every group's fill then goes at once.
    loaded: AtomicBool,
}

impl Redis {
    /// The connection, for commands of other parts (write-behind's streams).
    pub(crate) fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// The first segment of every key.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the server answers.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

impl Redis {
    /// Whether the server refused an operation for memory (`maxmemory`
    /// with `noeviction`), which the caller then falls back from: noted as
    /// a refusal, so that health reports it though the fallback succeeds.
    fn full(&self, error: &Error) -> bool {
        matches!(error, Error::Redis(e) if e.code() == Some("OOM"))
            && crate::observe::refused(&self.counters, error)
    }
}

/// A duration in whole milliseconds, at least 1 (Redis refuses a TTL of 0).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Redis {
    pub(crate) fn new(
        conn: Connection,
        prefix: String,
        lease_ttl: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Redis {
            batcher: Batcher::new(conn.clone()),
            conn,
            prefix,
            lease_ms: millis(lease_ttl),
            counters,
            filled: Mutex::default(),
            loaded: AtomicBool::new(false),
        }
    }

    /// Whether a fill of `group` reaches the connection whole on its first
    /// poll, ahead of any read sent after it. It does once the server has
    /// answered a fill of the group: elsewhere (a new server, one restarted,
    /// another cluster node) `EVALSHA` may meet `NOSCRIPT` and go again after
    /// loading the script, behind reads sent meanwhile.
    pub(crate) fn fills_at_once(&self, group: &str) -> bool {
        self.loaded.load(Ordering::Acquire) || self.filled.lock().contains(group)
    }

    /// The server may have lost its scripts (a script failed, or the
    /// connection did: what answers next may be a restarted server or a
    /// new master): the next fill of each group is awaited again.
    pub(crate) fn forget_fills(&self) {
        self.loaded.store(false, Ordering::Release);
        self.filled.lock().clear();
    }

    /// Loads the read and write scripts on every master, at first contact:
    /// the first lookup, lease and fill of each group then meet no
    /// `NOSCRIPT` (which costs two round trips, and makes a first fill wait
    /// for its answer); learns the server's epoch. Best effort: a script
    /// not loaded is loaded on use, an epoch not learned asked on use.
    pub(crate) async fn load_scripts(&self) {
        let loads = scripts::PRELOADED.iter().map(|script| {
            let mut conn = self.conn.clone();
            async move { script.load_async(&mut conn).await }
        });
        let loaded = futures_util::future::join_all(loads).await;
        match loaded.into_iter().find_map(Result::err) {
            None => self.loaded.store(true, Ordering::Release),
            Some(error) => tracing::debug!(%error, "cache scripts not loaded ahead; loaded on use"),
        }
        // And the server's epoch: the first hits then need not ask it.
        self.conn.epochs().learn(&self.conn, &self.prefix).await;
    }

    /// Runs a script; when a key it touches holds another type, deletes the
    /// keys of the wrong type among `typed` (every key the script may touch,
    /// with the type it must hold) and runs it once more.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        typed: impl FnOnce() -> Vec<(String, &'static str)>,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        match script.invoke_async(&mut self.conn.clone()).await {
            Err(error) if error.code() == Some("WRONGTYPE") => {
                let typed = typed();
                let mut repair = REPAIR.prepare_invoke();
                for (key, kind) in &typed {
                    repair.key(key).arg(*kind);
                }
                let repaired: i64 = repair.invoke_async(&mut self.conn.clone()).await?;
                if repaired > 0 {
                    bump(&self.counters.repaired);
                    tracing::warn!(
                        key = typed.first().map(|(key, _)| key.as_str()),
                        repaired,
                        "cache keys held another Redis type; deleted them"
                    );
                }
                Ok(script.invoke_async(&mut self.conn.clone()).await?)
            }
            Err(error) => {
                self.forget_fills();
                Err(error.into())
            }
            Ok(value) => Ok(value),
        }
    }

    /// A plain `DEL`, which Redis accepts even when it is full.
    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let deleted: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(deleted > 0)
    }

    /// Deletes an entry, its read lease and the dependency records a write
    /// of it changes, with plain `DEL`s (accepted when Redis is full); says
    /// whether the entry was there.
    async fn delete_entry(&self, names: &Names) -> Result<bool, Error> {
        let deleted: (i64, i64) = redis::pipe()
            .cmd("DEL")
            .arg(names.entry())
            .cmd("DEL")
            .arg(names.lease())
            .arg(names.record())
            .arg(names.group_record())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(deleted.0 > 0)
    }

    /// The Redis names of an entry's keys.
    pub(crate) fn names(&self, group: &str, key: &EntryKey) -> Names {
        Names::new(&self.prefix, group, key)
    }

    pub(crate) async fn lookup(
        &self,
        group: &str,
        key: &EntryKey,
        want: Want,
        token: &str,
        deadline: Deadline,
    ) -> Result<Lookup, Error> {
        if want == Want::Peek {
            // The hit path: plain reads, batched under load (a script costs
            // Redis ten times the CPU of these).
            match self.batcher.peek(self.names(group, key), deadline).await {
                // The server answered with an error (a key of another type,
                // say): the script path repairs what it can.
                Err(error) if !error.is_unreachable() => {}
                other => return other,
            }
        }
        // Boxed: the script path's future would otherwise make every peek's
        // larger, and a hit moves it several times.
        deadline
            .bound(Box::pin(
                self.lookup_by_script(group, key, want, token, deadline),
            ))
            .await
    }

    /// A lookup through the script: a lease, a lock, a refresh, or a peek
    /// the plain read could not answer.
    async fn lookup_by_script(
        &self,
        group: &str,
        key: &EntryKey,
        want: Want,
        token: &str,
        deadline: Deadline,
    ) -> Result<Lookup, Error> {
        let names = self.names(group, key);
        let mode = match want {
            Want::Peek => "peek",
            Want::Lease => "lease",
            Want::Lock => "lock",
            Want::Refresh => "refresh",
            Want::ForceLease => "force",
            Want::ForceLock => "forcelock",
            Want::Beside => "keep",
        };
        let mut script = LOOKUP.key(names.entry());
        script
            .key(names.gen())
            .key(names.lease())
            .arg(mode)
            .arg(token)
            .arg(self.lease_ms)
            .arg(self.fresh_gen());
        let reply: Value = match self.run(|| names.typed(), &script).await {
            // Redis is full: plain reads, which it still accepts.
            Err(error) if self.full(&error) => return self.batcher.peek(names, deadline).await,
            other => other?,
        };
        match reply {
            Value::BulkString(bytes) => Ok(Lookup::Hit(Kept::new(bytes))),
            Value::Array(parts) => {
                let parts: Vec<String> =
                    redis::FromRedisValue::from_redis_value(Value::Array(parts))
                        .map_err(redis::RedisError::from)?;
                let mut parts = parts.into_iter();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(token), Some(gen), None) => Ok(Lookup::Miss(Some(Lease { token, gen }))),
                    (Some(_holder), Some(_), Some(_)) => Ok(Lookup::Held),
                    _ => Err(
                        unexpected_reply("unexpected reply from the cache lookup script").into(),
                    ),
                }
            }
            _ => Ok(Lookup::Miss(None)),
        }
    }

    pub(crate) async fn release(
        &self,
        group: &str,
        key: &EntryKey,
        lease: &Lease,
    ) -> Result<(), Error> {
        let names = self.names(group, key);
        let mut script = RELEASE.key(names.lease());
        script.arg(&lease.token);
        let _: i64 = self.run(|| names.typed(), &script).await?;
        Ok(())
    }

    pub(crate) async fn fill(
        &self,
        group: &str,
        key: &EntryKey,
        lease: &Lease,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let names = self.names(group, key);
        let mut script = FILL.key(names.entry());
        script
            .key(names.gen())
            .key(names.lease())
            .arg(&lease.token)
            .arg(&lease.gen)
            .arg(bytes)
            .arg(if ttl == KEEP_EXPIRY { 0 } else { millis(ttl) });
        let stored: i64 = self.run(|| names.typed(), &script).await?;
        let mut filled = self.filled.lock();
        if !filled.contains(group) {
            filled.insert(group.to_owned());
        }
        Ok(stored == 1)
    }

    /// One `MGET` of a group's generation and of `names`, keys of the group
    /// (so of its slot): the generation, if the server that holds it made
    /// it, and what each name holds.
    async fn with_gen<T: FromRedisValue>(
        &self,
        group: &str,
        names: impl Iterator<Item = String>,
    ) -> Result<(Option<T>, Vec<Option<T>>), Error> {
        let names: Vec<String> = names.collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (gen, found) = mget::read(&self.conn, &group_gen(&self.prefix, group), &names).await?;
        let decode = |stored: Option<Vec<u8>>| {
            stored
                .map(|bytes| T::from_redis_value(Value::BulkString(bytes)))
                .transpose()
                .map_err(RedisError::from)
        };
        let found = found
            .map(|stored| decode(stored?))
            .collect::<Result<Vec<_>, RedisError>>()?;
        Ok((decode(gen)?, found))
    }

    /// A fresh generation token for a script.
    fn fresh_gen(&self) -> String {
        self.conn.epochs().fresh_gen()
    }
}

/// The script that asks the server holding `key` its `run_id`.
pub(crate) fn epoch_script(key: &str) -> ScriptInvocation<'static> {
    scripts::EPOCH.key(key)
}

/// The microseconds a record's token or an eviction time starts with.
pub(crate) fn micros(text: &str) -> u64 {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    text[..digits].parse().unwrap_or(0)
}
