//! The Redis backend.
//!
//! Layout, for prefix `P` and group `G` (the group in hash-tag braces, so all
//! of a group's keys share one cluster slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{G}:gen` | string | the group's current generation (no TTL), a 16-character token |
//! | `P:{G}:e:<key>` | string | the value's generation followed by its envelope |
//! | `P:{G}:l:<key>` | hash | `t`/`lg`: a read lease and its generation |
//! | `P:{G}:w:<key>` | hash | `w` last writer, `n` writers in flight, `c` set when writes overlapped |
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use once_cell::sync::Lazy;

use redis::{FromRedisValue, Script, ScriptInvocation, Value};

use super::batch::Batcher;
use super::connection::Connection;
use super::{token, Lease, Lookup, Ticket, Want, WriteEnd};
use crate::backend::deadline::Deadline;
use crate::backend::names::{group_gen, Names};
use crate::entry::shared::Kept;
use crate::entry::EntryKey;
use crate::entry::Invalidation;
use crate::error::unexpected_reply;
use crate::error::Error;
use crate::observe::{bump, Counters};

/// KEYS: entry, gen, lease. ARGV: mode (peek|lease|lock|refresh|force), new
/// token, lease ms, fresh gen. Returns the envelope on a hit, `{token, gen}`
/// for a lease, `{holder, gen, 'held'}` when another caller holds it, nil
/// otherwise.
static LOOKUP: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local mode = ARGV[1]
local gen = redis.call('GET', KEYS[2])
if not gen then
  if mode == 'peek' then return nil end
  gen = ARGV[4]
  redis.call('SET', KEYS[2], gen)
end
local e = redis.call('GET', KEYS[1])
local live = e and string.sub(e, 1, #gen) == gen
local l = redis.call('HMGET', KEYS[3], 't', 'lg')
local held = l[1] and l[2] == gen
if mode == 'refresh' then
  if not live or held then return nil end
  redis.call('HSET', KEYS[3], 't', ARGV[2], 'lg', gen)
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return {ARGV[2], gen}
end
if live and mode ~= 'force' then return string.sub(e, #gen + 1) end
if mode == 'peek' then
  if held then return {l[1], gen, 'held'} end
  return nil
end
if held then
  if mode == 'lock' then return {l[1], gen, 'held'} end
  return {l[1], gen}
end
redis.call('HSET', KEYS[3], 't', ARGV[2], 'lg', gen)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('DEL', KEYS[1])
return {ARGV[2], gen}
",
    )
});

/// KEYS: lease. ARGV: lease token. Drops the lease if it is still this one.
static RELEASE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// KEYS: entry, gen, lease. ARGV: lease token, lease gen, envelope, ttl ms.
static FILL: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[3], 't') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. ARGV[3], 'PX', ARGV[4])
redis.call('DEL', KEYS[3])
return 1
",
    )
});

/// KEYS: writers, gen. ARGV: writer token, lease ms, fresh gen. Returns the gen.
static BEGIN_WRITE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
if n > 0 then redis.call('HSET', KEYS[1], 'c', '1') end
redis.call('HSET', KEYS[1], 'w', ARGV[1], 'n', n + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local gen = redis.call('GET', KEYS[2])
if not gen then
  gen = ARGV[3]
  redis.call('SET', KEYS[2], gen)
end
return gen
",
    )
});

/// KEYS: entry, writers, gen, lease. ARGV: writer token, gen at begin,
/// mode (store|evict|abort), envelope, ttl ms, invalidation channel and
/// message. Returns 1 when it stored.
static END_WRITE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local w = redis.call('HMGET', KEYS[2], 'w', 'c', 'n')
local sole = w[1] == ARGV[1] and not w[2] and redis.call('GET', KEYS[3]) == ARGV[2]
local stored = 0
if ARGV[3] == 'store' and sole then
  redis.call('SET', KEYS[1], ARGV[2] .. ARGV[4], 'PX', ARGV[5])
  redis.call('DEL', KEYS[4])
  stored = 1
elseif ARGV[3] ~= 'abort' then
  redis.call('DEL', KEYS[1], KEYS[4])
end
local n = (tonumber(w[3]) or 1) - 1
if n <= 0 then redis.call('DEL', KEYS[2]) else redis.call('HSET', KEYS[2], 'n', n) end
if ARGV[3] ~= 'abort' then redis.pcall('PUBLISH', ARGV[6], ARGV[7]) end
return stored
",
    )
});

/// KEYS: entry, writers, gen, lease; and for a write-behind, its pending
/// record and stream. ARGV: invalidation channel and message; then envelope,
/// ttl ms and fresh gen to store, or nothing to only invalidate; and for a
/// write-behind, the key's JSON and entry text. Returns 1 when a live value was there, or
/// for a write-behind the id of its stream entry. A write-behind's `XADD`
/// goes first: refused (no stream rights, Redis full), it leaves all as it was.
static REPLACE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local logged
if KEYS[6] then logged = redis.call('XADD', KEYS[6], '*', 'k', ARGV[7]) end
local gen = redis.call('GET', KEYS[3])
local e = redis.call('GET', KEYS[1])
local existed = gen and e and string.sub(e, 1, #gen) == gen
if ARGV[3] then
  if not gen then
    gen = ARGV[5]
    redis.call('SET', KEYS[3], gen)
  end
  redis.call('SET', KEYS[1], gen .. ARGV[3], 'PX', ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'c', '1') end
if logged then
  redis.call('HSET', KEYS[5], 'k', ARGV[6], 'v', ARGV[3], 'id', logged, 'a', 0)
end
redis.pcall('PUBLISH', ARGV[1], ARGV[2])
if logged then return logged end
if existed then return 1 end
return 0
",
    )
});

/// KEYS: gen. ARGV: a new generation, invalidation channel and message.
/// Evicts the group in one write, whatever its size.
static EVICT_GROUP: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1])
redis.pcall('PUBLISH', ARGV[2], ARGV[3])
return 1
",
    )
});

/// KEYS: entry, writers, gen, lease. Deletes those holding an unexpected type.
static REPAIR: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local repaired = 0
local expected = {'string', 'hash', 'string', 'hash'}
for i = 1, 4 do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= expected[i] and found ~= 'none' then
    redis.call('DEL', KEYS[i])
    repaired = repaired + 1
  end
end
return repaired
",
    )
});

pub(crate) struct Redis {
    conn: Connection,
    /// Sends peeks, batching them under load.
    batcher: Batcher,
    prefix: String,
    /// Where every write announces itself, for local tiers to drop copies.
    channel: String,
    lease_ms: u64,
    counters: Arc<Counters>,
    /// The groups whose fill has answered since a script last failed: the
    /// server holds the fill script there (see [`Redis::fills_at_once`]).
    filled: Mutex<HashSet<String>>,
}

/// What a server lets the cache do, found on first contact.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rights {
    /// A read-only replica: the cache could not write, so it must not read.
    pub(crate) replica: bool,
    /// Whether the user may run scripts (`EVALSHA`): every write is one.
    pub(crate) scripts: bool,
    /// Whether it may publish invalidations, by `ACL DRYRUN` where the
    /// server and the user allow asking; `None` when unknown.
    pub(crate) publish: Option<bool>,
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

    /// The channel this backend announces writes on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether the server answers.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Asks the server what it lets this user do. In a cluster, every
    /// command that names a key goes to a master, so only the rights are
    /// asked (of the node that serves the probe's key, or any node).
    pub(crate) async fn rights(&self) -> Result<Rights, Error> {
        let mut conn = self.conn.clone();
        let replica = match &self.conn {
            Connection::Cluster(_) => false,
            _ => {
                let role: Result<Vec<Value>, redis::RedisError> =
                    redis::cmd("ROLE").query_async(&mut conn).await;
                match role {
                    Ok(role) => role
                        .first()
                        .and_then(|first| String::from_redis_value(first.clone()).ok())
                        .is_some_and(|role| role == "slave" || role == "replica"),
                    Err(error) if error.code() == Some("NOPERM") => false,
                    Err(error) => return Err(error.into()),
                }
            }
        };
        // A script that does not exist: NOSCRIPT when scripts are allowed.
        let probe: Result<Value, redis::RedisError> = redis::cmd("EVALSHA")
            .arg("ffffffffffffffffffffffffffffffffffffffff")
            .arg(1)
            .arg(&self.prefix)
            .query_async(&mut conn)
            .await;
        let scripts = !matches!(&probe, Err(error) if error.code() == Some("NOPERM"));
        let user: Result<String, redis::RedisError> =
            redis::cmd("ACL").arg("WHOAMI").query_async(&mut conn).await;
        let publish = match user {
            Ok(user) => {
                let dry: Result<String, redis::RedisError> = redis::cmd("ACL")
                    .arg("DRYRUN")
                    .arg(user)
                    .arg("PUBLISH")
                    .arg(&self.channel)
                    .arg("x")
                    .query_async(&mut conn)
                    .await;
                dry.ok().map(|answer| answer == "OK")
            }
            Err(_) => None,
        };
        Ok(Rights {
            replica,
            scripts,
            publish,
        })
    }
}

fn is_oom(error: &Error) -> bool {
    matches!(error, Error::Redis(e) if e.code() == Some("OOM"))
}

/// A duration in whole milliseconds, at least 1 (Redis refuses a TTL of 0).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Redis {
    pub(crate) fn new(
        conn: Connection,
        prefix: String,
        channel: String,
        lease_ttl: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Redis {
            channel,
            batcher: Batcher::new(conn.clone()),
            conn,
            prefix,
            lease_ms: millis(lease_ttl),
            counters,
            filled: Mutex::default(),
        }
    }

    /// Whether a fill of `group` reaches the connection whole on its first
    /// poll, ahead of any read sent after it. It does once the server has
    /// answered a fill of the group: elsewhere (a new server, one restarted,
    /// another cluster node) `EVALSHA` may meet `NOSCRIPT` and go again after
    /// loading the script, behind reads sent meanwhile.
    pub(crate) fn fills_at_once(&self, group: &str) -> bool {
        self.filled().contains(group)
    }

    /// The server may have lost its scripts (a script failed, or the
    /// connection did: what answers next may be a restarted server or a
    /// new master): the next fill of each group is awaited again.
    pub(crate) fn forget_fills(&self) {
        self.filled().clear();
    }

    fn filled(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.filled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a script; when a key it touches holds another type, deletes the
    /// keys of the wrong type and runs it once more.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        names: &Names,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        match script.invoke_async(&mut self.conn.clone()).await {
            Err(error) if error.code() == Some("WRONGTYPE") => {
                let repaired: i64 = REPAIR
                    .key(names.entry())
                    .key(names.writers())
                    .key(names.gen())
                    .key(names.lease())
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                if repaired > 0 {
                    bump(&self.counters.repaired);
                    tracing::warn!(
                        entry = names.entry(),
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

    /// Deletes an entry and its read lease, with a plain `DEL` (accepted when
    /// Redis is full); says whether the entry was there.
    async fn delete_entry(&self, names: &Names) -> Result<bool, Error> {
        let deleted: (i64, i64) = redis::pipe()
            .cmd("DEL")
            .arg(names.entry())
            .cmd("DEL")
            .arg(names.lease())
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
        };
        let mut script = LOOKUP.key(names.entry());
        script
            .key(names.gen())
            .key(names.lease())
            .arg(mode)
            .arg(token)
            .arg(self.lease_ms)
            .arg(super::token());
        let reply: Value = match self.run(&names, &script).await {
            // Redis is full: plain reads, which it still accepts.
            Err(error) if is_oom(&error) => return self.batcher.peek(names, deadline).await,
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
        let _: i64 = self.run(&names, &script).await?;
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
            .arg(millis(ttl));
        let stored: i64 = self.run(&names, &script).await?;
        let mut filled = self.filled();
        if !filled.contains(group) {
            filled.insert(group.to_owned());
        }
        Ok(stored == 1)
    }

    pub(crate) async fn begin_write(
        &self,
        group: &str,
        key: &EntryKey,
        token: &str,
    ) -> Result<Ticket, Error> {
        let names = self.names(group, key);
        let mut script = BEGIN_WRITE.key(names.writers());
        script
            .key(names.gen())
            .arg(token)
            .arg(self.lease_ms)
            .arg(super::token());
        let gen: String = self.run(&names, &script).await?;
        Ok(Ticket {
            token: token.to_owned(),
            gen,
        })
    }

    pub(crate) async fn end_write(
        &self,
        group: &str,
        key: &EntryKey,
        ticket: &Ticket,
        end: WriteEnd,
    ) -> Result<bool, Error> {
        let names = self.names(group, key);
        let (mode, bytes, ttl) = match end {
            WriteEnd::Store(bytes, ttl) => ("store", bytes, millis(ttl)),
            WriteEnd::Evict => ("evict", Vec::new(), 0),
            WriteEnd::Abort => ("abort", Vec::new(), 0),
        };
        let mut script = END_WRITE.key(names.entry());
        script
            .key(names.writers())
            .key(names.gen())
            .key(names.lease())
            .arg(&ticket.token)
            .arg(&ticket.gen)
            .arg(mode)
            .arg(bytes)
            .arg(ttl)
            .arg(&self.channel)
            .arg(Invalidation::Key(group, key).message());
        match self.run::<i64>(&names, &script).await {
            // The writer record stays until its TTL: later puts evict.
            Err(error) if is_oom(&error) && mode != "abort" => {
                self.delete_entry(&names).await.map(|_| false)
            }
            other => Ok(other? == 1),
        }
    }

    pub(crate) async fn invalidate(&self, group: &str, key: &EntryKey) -> Result<bool, Error> {
        let names = self.names(group, key);
        let mut script = REPLACE.key(names.entry());
        script
            .key(names.writers())
            .key(names.gen())
            .key(names.lease())
            .arg(&self.channel)
            .arg(Invalidation::Key(group, key).message());
        match self.run::<i64>(&names, &script).await {
            Err(error) if is_oom(&error) => self.delete_entry(&names).await,
            other => Ok(other? == 1),
        }
    }

    /// The script that stores a value as `set` does; a write-behind adds its
    /// keys and arguments to it.
    pub(crate) fn storing(
        &self,
        group: &str,
        key: &EntryKey,
        names: &Names,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> ScriptInvocation<'static> {
        let mut script = REPLACE.key(names.entry());
        script
            .key(names.writers())
            .key(names.gen())
            .key(names.lease())
            .arg(&self.channel)
            .arg(Invalidation::Key(group, key).message())
            .arg(bytes)
            .arg(millis(ttl))
            .arg(token());
        script
    }

    pub(crate) async fn store(
        &self,
        group: &str,
        key: &EntryKey,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let names = self.names(group, key);
        let script = self.storing(group, key, &names, bytes, ttl);
        match self.run::<i64>(&names, &script).await {
            Err(error) if is_oom(&error) => {
                // The new value cannot be stored; the old one must not stay.
                self.delete_entry(&names).await?;
                Err(error)
            }
            other => other.map(drop),
        }
    }

    pub(crate) async fn evict_group(&self, group: &str) -> Result<(), Error> {
        let gen = group_gen(&self.prefix, group);
        let message = Invalidation::Group(group).message();
        let mut script = EVICT_GROUP.key(&gen);
        script.arg(token()).arg(&self.channel).arg(&message);
        let set: Result<i64, redis::RedisError> = script.invoke_async(&mut self.conn.clone()).await;
        match set.map_err(Error::from) {
            // Without its generation key every entry of the group is a miss;
            // the next write starts a new generation.
            Err(error) if is_oom(&error) => {
                self.delete(&gen).await?;
                // The eviction has happened; its announcement is best effort
                // (a user without channel rights may not publish).
                let announced: Result<i64, redis::RedisError> = redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(&message)
                    .query_async(&mut self.conn.clone())
                    .await;
                if let Err(error) = announced {
                    tracing::debug!(%error, "could not announce a group eviction");
                }
                Ok(())
            }
            other => other.map(drop),
        }
    }
}
