//! A bulk call's reads: one plain read, then leases and fills, for many
//! keys of one group at once.

use std::time::Duration;

use redis::{FromRedisValue, Value};

use super::scripts::{FILL_MANY, LOCK_MANY};
use super::{millis, Redis};
use crate::backend::names::{group_gen, group_key, group_typed};
use crate::backend::{Lease, Lookup, Want};
use crate::entry::shared::Kept;
use crate::entry::EntryKey;
use crate::error::unexpected_reply;
use crate::error::Error;

impl Redis {
    /// A bulk call's plain read of many keys of one group: one `MGET` of
    /// the generation and their entries.
    pub(crate) async fn peek_many(
        &self,
        group: &str,
        keys: &[EntryKey],
    ) -> Result<Vec<Lookup>, Error> {
        let names = keys
            .iter()
            .map(|key| self.names(group, key).entry().to_owned());
        let (gen, found) = self.with_gen::<Vec<u8>>(group, names).await?;
        let Some(gen) = gen else {
            return Ok(keys.iter().map(|_| Lookup::Miss(None)).collect());
        };
        Ok(found
            .into_iter()
            .map(|entry| match entry {
                Some(bytes) if bytes.starts_with(&gen) => {
                    Lookup::Hit(Kept::after(bytes, gen.len()))
                }
                _ => Lookup::Miss(None),
            })
            .collect())
    }

    /// A bulk call's leases, one script for the keys of one group: per key
    /// (with the token its lease is to carry, and whether to take it past a
    /// value that may not be served), a hit, a lease taken, or `Held`.
    pub(crate) async fn lock_many(
        &self,
        group: &str,
        keys: &[(&EntryKey, &str, Want)],
    ) -> Result<Vec<Lookup>, Error> {
        let mut script = LOCK_MANY.key(group_gen(&self.prefix, group));
        script.arg(self.lease_ms).arg(self.fresh_gen());
        for (key, token, want) in keys {
            let names = self.names(group, key);
            script.key(names.entry()).key(names.lease());
            script.arg(*token).arg(match want {
                Want::ForceLock => "forcelock",
                Want::Beside => "keep",
                _ => "lock",
            });
        }
        let typed = || self.typed_many(group, keys.iter().map(|(key, ..)| *key));
        let reply: Vec<Value> = self.run(typed, &script).await?;
        if reply.len() != keys.len() {
            return Err(unexpected_reply("unexpected reply from the bulk lease script").into());
        }
        reply
            .into_iter()
            .map(|one| match one {
                Value::BulkString(bytes) => Ok(Lookup::Hit(Kept::new(bytes))),
                Value::Array(parts) => {
                    let parts: Vec<String> = FromRedisValue::from_redis_value(Value::Array(parts))
                        .map_err(redis::RedisError::from)?;
                    match parts.as_slice() {
                        [token, gen] => Ok(Lookup::Miss(Some(Lease {
                            token: token.clone(),
                            gen: gen.clone(),
                        }))),
                        [_, _, _] => Ok(Lookup::Held),
                        _ => Err(
                            unexpected_reply("unexpected reply from the bulk lease script").into(),
                        ),
                    }
                }
                _ => Err(unexpected_reply("unexpected reply from the bulk lease script").into()),
            })
            .collect()
    }

    /// A bulk call's fills, one script for the keys of one group: each
    /// stored only under its lease; returns how many were.
    pub(crate) async fn fill_many(
        &self,
        group: &str,
        fills: Vec<(&EntryKey, &Lease, Vec<u8>, Duration)>,
    ) -> Result<usize, Error> {
        let mut script = FILL_MANY.key(group_gen(&self.prefix, group));
        let keys: Vec<&EntryKey> = fills.iter().map(|(key, ..)| *key).collect();
        for (key, lease, bytes, ttl) in fills {
            let names = self.names(group, key);
            script.key(names.entry()).key(names.lease());
            script
                .arg(&lease.token)
                .arg(&lease.gen)
                .arg(bytes)
                .arg(millis(ttl));
        }
        let typed = || self.typed_many(group, keys.into_iter());
        let stored: usize = self.run(typed, &script).await?;
        let mut filled = self.filled.lock();
        if !filled.contains(group) {
            filled.insert(group.to_owned());
        }
        Ok(stored)
    }

    /// The keys of a group, and of some of its entries, with the Redis type
    /// each holds: what an operation on many keys of the group may touch.
    pub(super) fn typed_many<'k>(
        &self,
        group: &str,
        keys: impl Iterator<Item = &'k EntryKey>,
    ) -> Vec<(String, &'static str)> {
        let mut typed = group_typed(&group_key(&self.prefix, group, ""));
        for key in keys {
            typed.extend(self.names(group, key).own_typed());
        }
        typed
    }
}
