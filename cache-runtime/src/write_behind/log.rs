//! The log of pending writes a write-behind's consumers work through: a
//! Redis Stream with its consumer group, or its in-process twin. Both keep,
//! per key, the newest pending value and a claim, and answer the same
//! operations, so one consumer loop serves both.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::entry::EntryKey;
use crate::{Cache, Error};

use super::{memory, redis};

/// The id of a log entry: a Redis Stream id (`ms-seq`), ordered as Redis
/// orders them; in memory, `0-n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Id {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl Id {
    pub(crate) fn parse(text: &str) -> Option<Id> {
        let (ms, seq) = text.split_once('-')?;
        Some(Id {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A log entry: "this key has a pending write".
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) id: Id,
    /// The key's entry text ([`EntryKey::as_str`]).
    pub(crate) key: String,
}

/// The newest pending write of a key, read under its claim.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    /// The id of the write it came from.
    pub(crate) id: Id,
    /// The key, as JSON, for the handler.
    pub(crate) key: Vec<u8>,
    /// The value's envelope, as stored in the cache.
    pub(crate) value: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Another consumer holds the key's claim.
    Busy,
    /// Nothing is pending: a value at least as new was already written.
    Settled,
    /// The newest pending write, now claimed by the caller.
    Pending(Pending),
}

/// What a failed attempt led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Retry; the value has failed this many times.
    Retry(u32),
    /// Moved to the dead-letter stream.
    Dead,
}

/// A dead letter as stored: the key's JSON, the value's envelope, the error.
pub(crate) type Dead = (Vec<u8>, Vec<u8>, String);

/// The log of one group.
#[derive(Clone)]
pub(crate) enum Log {
    Memory(Arc<memory::Log>),
    Redis(redis::Log),
}

impl Log {
    pub(crate) fn of(cache: &Cache, group: &str) -> Log {
        match cache.backend() {
            Backend::Redis(backend) => Log::Redis(redis::Log::new(backend, group)),
            Backend::Memory(_) | Backend::Disabled => {
                Log::Memory(cache.extension::<memory::Logs>().of(group))
            }
        }
    }

    /// Stores `value` in the cache and appends the write to the log, at once.
    pub(crate) async fn append(
        &self,
        cache: &Cache,
        group: &str,
        key: &EntryKey,
        key_json: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Id, Error> {
        match self {
            Log::Memory(log) => Ok(log.append(key, key_json.into_bytes(), value.clone(), || {
                if let Backend::Memory(memory) = cache.backend() {
                    memory.store(group, key, value, ttl);
                }
            })),
            Log::Redis(log) => log.append(cache, group, key, key_json, value, ttl).await,
        }
    }

    /// Makes sure the consumer group exists.
    pub(crate) async fn prepare(&self) -> Result<(), Error> {
        match self {
            Log::Memory(_) => Ok(()),
            Log::Redis(log) => log.prepare().await,
        }
    }

    /// Up to `count` entries no consumer has been given yet, now given to
    /// `consumer`.
    pub(crate) async fn read(&self, consumer: &str, count: usize) -> Result<Vec<Entry>, Error> {
        match self {
            Log::Memory(log) => Ok(log.read(count)),
            Log::Redis(log) => log.read(consumer, count).await,
        }
    }

    /// Up to `count` entries given to consumers that have not settled them
    /// for `idle`, now given to `consumer`.
    pub(crate) async fn take_over(
        &self,
        consumer: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, Error> {
        match self {
            Log::Memory(log) => Ok(log.take_over(idle, count)),
            Log::Redis(log) => log.take_over(consumer, idle, count).await,
        }
    }

    /// Claims `key` for `hold`, unless another consumer holds it, and reads
    /// its newest pending write.
    pub(crate) async fn claim(
        &self,
        key: &str,
        consumer: &str,
        hold: Duration,
    ) -> Result<Claim, Error> {
        match self {
            Log::Memory(log) => Ok(log.claim(key, consumer, hold)),
            Log::Redis(log) => log.claim(key, consumer, hold).await,
        }
    }

    /// Extends the claims `consumer` still holds on `keys`.
    pub(crate) async fn renew(
        &self,
        keys: &[String],
        consumer: &str,
        hold: Duration,
    ) -> Result<(), Error> {
        match self {
            Log::Memory(log) => {
                log.renew(keys, consumer, hold);
                Ok(())
            }
            Log::Redis(log) => log.renew(keys, consumer, hold).await,
        }
    }

    /// The write `written` (or, with `None`, a newer one) is in the
    /// database: drops the pending value if no newer write replaced it,
    /// releases the claim and settles `entries`.
    pub(crate) async fn written(
        &self,
        key: &str,
        consumer: &str,
        written: Option<Id>,
        entries: &[Id],
    ) -> Result<(), Error> {
        match self {
            Log::Memory(log) => {
                log.written(key, consumer, written, entries);
                Ok(())
            }
            Log::Redis(log) => log.written(key, consumer, written, entries).await,
        }
    }

    /// Writing `failed` failed with `error`: counts the attempt and
    /// releases the claim; at `max_attempts` moves the value to the
    /// dead-letter stream and settles `entries`.
    pub(crate) async fn failed(
        &self,
        key: &str,
        consumer: &str,
        failed: Id,
        error: &str,
        max_attempts: u32,
        entries: &[Id],
    ) -> Result<Failed, Error> {
        match self {
            Log::Memory(log) => Ok(log.failed(key, consumer, failed, error, max_attempts, entries)),
            Log::Redis(log) => {
                log.failed(key, consumer, failed, error, max_attempts, entries)
                    .await
            }
        }
    }

    /// Whether every entry up to `upto` is settled.
    pub(crate) async fn settled(&self, upto: Id) -> Result<bool, Error> {
        match self {
            Log::Memory(log) => Ok(log.settled(upto)),
            Log::Redis(log) => log.settled(upto).await,
        }
    }

    /// The dead-letter stream, oldest first.
    pub(crate) async fn dead(&self) -> Result<Vec<Dead>, Error> {
        match self {
            Log::Memory(log) => Ok(log.dead()),
            Log::Redis(log) => log.dead().await,
        }
    }
}
