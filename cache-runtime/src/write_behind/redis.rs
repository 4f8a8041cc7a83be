//! The Redis log: a stream with one consumer group, in the group's slot.
//!
//! For prefix `P` and group `G`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{G}:wb` | stream | an entry `k` (the key's entry text) per write; consumer group `wb` |
//! | `P:{G}:wb:p:<key>` | hash | the newest pending write: `k` key JSON, `v` envelope, `id` its entry, `a` failed attempts |
//! | `P:{G}:wb:c:<key>` | string | the consumer that claimed the key, with a TTL |
//! | `P:{G}:wb:dead` | stream | dead letters: `k`, `v`, `id`, `error` |
//!
//! Settled entries are acknowledged and deleted from the stream in one
//! script, so the stream holds only what is still to be written.

use std::time::Duration;

use once_cell::sync::Lazy;
use redis::{Script, Value};

use crate::backend::connection::Connection;
use crate::backend::names::group_key;
use crate::backend::redis::{millis, Redis};
use crate::entry::EntryKey;
use crate::error::unexpected_reply;
use crate::{Cache, Error};

use super::log::{Claim, Dead, Entry, Failed, Id, Pending};

/// The consumer group's name.
const GROUP: &str = "wb";

/// KEYS: claim, pending. ARGV: consumer, hold ms. Returns 0 when another
/// consumer holds the claim, 1 when nothing is pending, else the pending
/// write's `{id, k, v}`, claimed.
static CLAIM: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
local p = redis.call('HMGET', KEYS[2], 'id', 'k', 'v')
if not p[1] then
  if holder then redis.call('DEL', KEYS[1]) end
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return p
",
    )
});

/// KEYS: claims. ARGV: consumer, hold ms. Extends the claims still held.
static RENEW: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
return 1
",
    )
});

/// Lua shared by the scripts that end an attempt: KEYS[1] claim, KEYS[3]
/// stream; ARGV[1] consumer; entries to settle from ARGV[`first`].
const RELEASE_AND_SETTLE: &str = r"
local function release()
  if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
end
local function settle(first)
  if #ARGV >= first then
    redis.call('XACK', KEYS[3], 'wb', unpack(ARGV, first))
    redis.call('XDEL', KEYS[3], unpack(ARGV, first))
  end
end
";

/// KEYS: claim, pending, stream. ARGV: consumer, the written entry id (or
/// ''), entries to settle.
static WRITTEN: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{RELEASE_AND_SETTLE}
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'id') == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
release()
settle(3)
return 1
"
    ))
});

/// KEYS: claim, pending, stream, dead. ARGV: consumer, the failed entry id,
/// error, max attempts, entries to settle. Returns the attempts so far, or
/// -1 when the value moved to the dead-letter stream.
static FAILED: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{RELEASE_AND_SETTLE}
release()
if redis.call('HGET', KEYS[2], 'id') ~= ARGV[2] then return 0 end
local attempts = redis.call('HINCRBY', KEYS[2], 'a', 1)
if attempts < tonumber(ARGV[4]) then return attempts end
local p = redis.call('HMGET', KEYS[2], 'k', 'v')
redis.call('XADD', KEYS[4], '*', 'k', p[1], 'v', p[2], 'id', ARGV[2], 'error', ARGV[3])
redis.call('DEL', KEYS[2])
settle(5)
return -1
"
    ))
});

/// KEYS: stream. ARGV: an entry id. Returns 1 when every entry up to it was
/// given to a consumer and settled (or the stream is gone: nothing waits).
static SETTLED: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local function before(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local delivered
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
  if fields['name'] == 'wb' then delivered = fields['last-delivered-id'] end
end
if not delivered or before(delivered, ARGV[1]) then return 0 end
local pending = redis.call('XPENDING', KEYS[1], 'wb')
if pending[1] > 0 and not before(ARGV[1], pending[2]) then return 0 end
return 1
",
    )
});

/// KEYS: stream. ARGV: idle ms, this consumer. Removes the consumers that
/// hold nothing and have been idle that long (dead processes; one still
/// alive is made again by its next read), so restarts do not pile them up.
static FORGET_IDLE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], 'wb')) do
  local f = {}
  for i = 1, #consumer, 2 do f[consumer[i]] = consumer[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[1]) and f['name'] ~= ARGV[2] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'wb', f['name'])
    removed = removed + 1
  end
end
return removed
",
    )
});

/// A group's log on a Redis backend.
#[derive(Clone)]
pub(crate) struct Log {
    conn: Connection,
    /// `P:{G}:wb`: the stream, and the start of the other keys' names.
    stream: String,
    dead: String,
}

impl Log {
    pub(crate) fn new(backend: &Redis, group: &str) -> Self {
        let stream = group_key(backend.prefix(), group, "wb");
        Log {
            conn: backend.connection(),
            dead: format!("{stream}:dead"),
            stream,
        }
    }

    fn pending(&self, key: &str) -> String {
        format!("{}:p:{key}", self.stream)
    }

    fn claim_key(&self, key: &str) -> String {
        format!("{}:c:{key}", self.stream)
    }

    pub(crate) async fn append(
        &self,
        cache: &Cache,
        group: &str,
        key: &EntryKey,
        key_json: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Id, Error> {
        let crate::backend::Backend::Redis(backend) = cache.backend() else {
            return Err(Error::Unavailable);
        };
        let names = backend.names(group, key);
        let mut script = backend.storing(&names, value, ttl);
        let pending = self.pending(key.as_str());
        script
            .key(&pending)
            .key(&self.stream)
            .arg(key_json)
            .arg(key.as_str());
        let typed = || {
            let mut typed = names.typed();
            typed.extend([(pending.clone(), "hash"), (self.stream.clone(), "stream")]);
            typed
        };
        let id: String = backend.run(typed, &script).await?;
        parse_id(&id)
    }

    pub(crate) async fn prepare(&self) -> Result<(), Error> {
        let created: Result<Value, redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(error.into()),
            _ => Ok(()),
        }
    }

    pub(crate) async fn read(&self, consumer: &str, count: usize) -> Result<Vec<Entry>, Error> {
        let reply: Result<Value, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.conn.clone())
            .await;
        let reply = match reply {
            // The stream or its group is gone (a flushed or restarted
            // server): make them again; what was in them is gone too.
            Err(error) if error.code() == Some("NOGROUP") => {
                self.prepare().await?;
                return Ok(Vec::new());
            }
            other => other?,
        };
        // [[stream, [[id, [field, value, ...]], ...]]], or nil.
        let streams = match reply {
            Value::Array(streams) => streams,
            Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
            _ => return Ok(Vec::new()),
        };
        let mut entries = Vec::new();
        for stream in streams {
            let list = match stream {
                Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
                other => Some(other),
            };
            if let Some(Value::Array(list)) = list {
                entries.extend(list.into_iter().filter_map(entry));
            }
        }
        Ok(entries)
    }

    pub(crate) async fn take_over(
        &self,
        consumer: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, Error> {
        let mut taken = Vec::new();
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(millis(idle))
                .arg(&cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.conn.clone())
                .await
                .or_else(|error| match error.code() {
                    Some("NOGROUP") => Ok(Value::Nil),
                    _ => Err(error),
                })?;
            // [next cursor, [[id, fields], ...], [deleted ids]]
            let Value::Array(parts) = reply else {
                return Ok(taken); // no group yet
            };
            let mut parts = parts.into_iter();
            let next = parts
                .next()
                .and_then(|v| redis::from_redis_value::<String>(v).ok());
            if let Some(Value::Array(list)) = parts.next() {
                taken.extend(list.into_iter().filter_map(entry));
            }
            match next {
                Some(next) if next != "0-0" && taken.len() < count => cursor = next,
                _ => break,
            }
        }
        let _: i64 = FORGET_IDLE
            .key(&self.stream)
            .arg(millis(idle))
            .arg(consumer)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(taken)
    }

    pub(crate) async fn claim(
        &self,
        key: &str,
        consumer: &str,
        hold: Duration,
    ) -> Result<Claim, Error> {
        let reply: Value = CLAIM
            .key(self.claim_key(key))
            .key(self.pending(key))
            .arg(consumer)
            .arg(millis(hold))
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply {
            Value::Int(0) => Ok(Claim::Busy),
            Value::Int(_) => Ok(Claim::Settled),
            reply => {
                let (id, key, value): (String, Vec<u8>, Vec<u8>) =
                    redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
                Ok(Claim::Pending(Pending {
                    id: parse_id(&id)?,
                    key,
                    value,
                }))
            }
        }
    }

    pub(crate) async fn renew(
        &self,
        keys: &[String],
        consumer: &str,
        hold: Duration,
    ) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut script = RENEW.prepare_invoke();
        for key in keys {
            script.key(self.claim_key(key));
        }
        script.arg(consumer).arg(millis(hold));
        let _: i64 = script.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub(crate) async fn written(
        &self,
        key: &str,
        consumer: &str,
        written: Option<Id>,
        entries: &[Id],
    ) -> Result<(), Error> {
        let mut script = WRITTEN.key(self.claim_key(key));
        script
            .key(self.pending(key))
            .key(&self.stream)
            .arg(consumer)
            .arg(written.map(|id| id.to_string()).unwrap_or_default());
        for id in entries {
            script.arg(id.to_string());
        }
        let _: i64 = script.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub(crate) async fn failed(
        &self,
        key: &str,
        consumer: &str,
        failed: Id,
        error: &str,
        max_attempts: u32,
        entries: &[Id],
    ) -> Result<Failed, Error> {
        let mut script = FAILED.key(self.claim_key(key));
        script
            .key(self.pending(key))
            .key(&self.stream)
            .key(&self.dead)
            .arg(consumer)
            .arg(failed.to_string())
            .arg(error)
            .arg(max_attempts);
        for id in entries {
            script.arg(id.to_string());
        }
        let attempts: i64 = script.invoke_async(&mut self.conn.clone()).await?;
        Ok(match u32::try_from(attempts) {
            Ok(attempts) => Failed::Retry(attempts),
            Err(_) => Failed::Dead,
        })
    }

    pub(crate) async fn settled(&self, upto: Id) -> Result<bool, Error> {
        let settled: i64 = SETTLED
            .key(&self.stream)
            .arg(upto.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(settled == 1)
    }

    pub(crate) async fn dead(&self) -> Result<Vec<Dead>, Error> {
        let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
            .arg(&self.dead)
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(entries
            .into_iter()
            .map(|(_, fields)| {
                let mut dead: Dead = Default::default();
                for (field, value) in fields {
                    match field.as_str() {
                        "k" => dead.0 = value,
                        "v" => dead.1 = value,
                        "error" => dead.2 = String::from_utf8_lossy(&value).into_owned(),
                        _ => {}
                    }
                }
                dead
            })
            .collect())
    }
}

/// A stream entry as redis-rs reads it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A stream entry `[id, [k, key]]` as an [`Entry`].
fn entry(value: Value) -> Option<Entry> {
    let (id, fields): (String, Vec<(String, String)>) = redis::from_redis_value(value).ok()?;
    let key = fields.into_iter().find(|(f, _)| f == "k")?.1;
    Some(Entry {
        id: Id::parse(&id)?,
        key,
    })
}

fn parse_id(text: &str) -> Result<Id, Error> {
    Id::parse(text)
        .ok_or_else(|| unexpected_reply("a write-behind stream id that does not parse").into())
}
