//! Durable write-behind: [`Cache::write_behind`].
//!
//! A write stores the value in the cache and appends it to a log in the same
//! step: on Redis, one script stores the entry and `XADD`s to a stream in the
//! group's slot; in memory, one lock. Consumers (one per [`WriteBehind`], in
//! every process that runs one for the group) share the log through one
//! consumer group, and write to the database through the handler.
//!
//! **Per-key order.** Each key has one pending record, its newest write.
//! Before calling the handler, a consumer claims the key (a record with a
//! TTL, renewed while the handler runs) and reads the newest value under the
//! claim; only one consumer holds a key's claim, so calls for one key never
//! overlap, and each writes a value at least as new as the one before. A
//! log entry is settled only once a value at least as new as its own is in
//! the database, so several writes of a key cost one call: they coalesce.
//! The guarantee ends where the claim does: a handler that runs on after its
//! process lost touch with Redis for longer than the idle timeout may
//! overlap the next consumer's call.
//!
//! **Failures.** A failed call is retried with a doubling backoff; the
//! attempts are counted in the pending record, so they survive a crash.
//! After `max_attempts`, the value moves to the dead-letter stream and its
//! entries are settled: a poison value blocks nothing behind it. Entries a
//! consumer was given but did not settle for `idle_timeout` (its process
//! died, or dropped its writer) are taken over by another consumer
//! (`XAUTOCLAIM`).

mod consumer;
mod log;
pub(crate) mod memory;
mod redis;

use std::borrow::Borrow;
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::entry::envelope;
use crate::entry::Invalidation;
use crate::entry::{check_group, key_json, EntryKey};
use crate::observe::bump;
use crate::observe::metrics;
use crate::{Cache, Error};

use self::log::{Id, Log};

/// How long a flush waits for news from this process's consumer before it
/// asks the log again (another process may have settled the entries).
const FLUSH_POLL: Duration = Duration::from_millis(20);

impl Cache {
    /// Starts configuring a durable write-behind for `group`: values written
    /// through it are in the cache at once and reach the database later, in
    /// batches, through `handler`. See the [module](crate::WriteBehind) for
    /// the guarantees.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::in_memory();
    /// let views = cache
    ///     .write_behind("views", |id: u64, count: u64| async move {
    ///         // UPDATE pages SET views = $2 WHERE id = $1
    ///         Ok::<(), std::io::Error>(())
    ///     })
    ///     .delay(Duration::from_millis(50))
    ///     .start();
    /// views.write(&7, &42).await?;
    /// assert_eq!(cache.get::<u64>("views", &7u64).await?, Some(42)); // readers see it now
    /// views.flush().await?; // and now it is in the database
    /// # Ok(()) }
    /// ```
    pub fn write_behind<K, V, F, Fut, E>(
        &self,
        group: &str,
        handler: F,
    ) -> WriteBehindBuilder<K, V, F>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(K, V) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + 'static,
    {
        WriteBehindBuilder {
            cache: self.clone(),
            group: group.to_owned(),
            handler,
            options: Options::default(),
            _types: PhantomData,
        }
    }
}

/// The settings of a write-behind.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) delay: Duration,
    pub(crate) batch: usize,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) ttl: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delay: Duration::from_millis(100),
            batch: 100,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(30),
            ttl: None,
        }
    }
}

/// Configures a write-behind; made by [`Cache::write_behind`].
///
/// | setting | default |
/// | --- | --- |
/// | [`delay`](Self::delay) | 100 ms |
/// | [`batch`](Self::batch) | 100 |
/// | [`max_attempts`](Self::max_attempts) | 5 |
/// | [`backoff`](Self::backoff) | 100 ms |
/// | [`idle_timeout`](Self::idle_timeout) | 30 s |
/// | [`ttl`](Self::ttl) | the cache's default TTL |
#[must_use = "a write-behind does nothing until `start`ed"]
pub struct WriteBehindBuilder<K, V, F> {
    cache: Cache,
    group: String,
    handler: F,
    options: Options,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, F> std::fmt::Debug for WriteBehindBuilder<K, V, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehindBuilder")
            .field("group", &self.group)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<K, V, F, Fut, E> WriteBehindBuilder<K, V, F>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(K, V) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + 'static,
{
    /// How long a write may wait in the log so that others join its batch:
    /// the consumer reads the log this often (and at once when a batch is
    /// full, while the log holds a backlog, or on
    /// [`flush`](WriteBehind::flush)).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = delay;
        self
    }

    /// The most entries a consumer takes in one round (at least 1).
    pub fn batch(mut self, batch: usize) -> Self {
        self.options.batch = batch.max(1);
        self
    }

    /// How many times the handler may fail for one value before it moves to
    /// the dead-letter stream (at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.options.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait before the first retry of a failed value; it doubles with
    /// each attempt, up to a minute.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.options.backoff = backoff;
        self
    }

    /// How long an entry given to a consumer may stay unsettled before
    /// another consumer takes it over (its process died), and how long a
    /// key's claim lasts unless renewed.
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.options.idle_timeout = idle_timeout.max(Duration::from_millis(10));
        self
    }

    /// How long written values live in the cache.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = Some(ttl);
        self
    }

    /// Starts this process's consumer (on the current Tokio runtime, or on
    /// the first `write` or `flush` when called outside one) and returns the
    /// writer.
    pub fn start(self) -> WriteBehind<K, V> {
        let shared = Arc::new(Shared {
            log: Log::of(&self.cache, &self.group),
            cache: self.cache,
            group: self.group,
            options: self.options,
            consumer: format!("{}-{}", std::process::id(), crate::backend::token()),
            wake: Notify::new(),
            progress: Notify::new(),
            unread: AtomicUsize::new(0),
            last: Mutex::new(None),
        });
        let handler = self.handler;
        let consumer = Arc::clone(&shared);
        let starter: Starter =
            Box::new(move || tokio::spawn(consumer::Consumer::new(consumer, handler).run()));
        let writer = WriteBehind {
            inner: Arc::new(Handle {
                shared,
                task: Mutex::new(Task::Waiting(Some(starter))),
            }),
            _types: PhantomData,
        };
        writer.ensure_started();
        writer
    }
}

/// What a writer's methods and its consumer share.
pub(crate) struct Shared {
    cache: Cache,
    group: String,
    log: Log,
    options: Options,
    /// This consumer's name in the consumer group: process id and a token.
    consumer: String,
    /// Wakes the consumer before its delay ends.
    wake: Notify,
    /// Told after each round of the consumer.
    progress: Notify,
    /// Writes since the consumer last read the log.
    unread: AtomicUsize,
    /// The newest entry this writer appended.
    last: Mutex<Option<Id>>,
}

type Starter = Box<dyn FnOnce() -> JoinHandle<()> + Send>;

enum Task {
    Waiting(Option<Starter>),
    Running(JoinHandle<()>),
}

struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Task>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Stops the consumer: what it was given and did not settle stays in
        // the log, for another consumer after the idle timeout.
        if let Task::Running(task) = &*self.task.lock() {
            task.abort();
        }
    }
}

/// A running write-behind: writes go to the cache and the log now, and to
/// the database through the handler later. Made by
/// [`WriteBehindBuilder::start`]; a cheap [`Clone`]. Dropping the last clone
/// stops this process's consumer.
///
/// - **Durable**: [`write`](Self::write) returns once the value is in the
///   cache and its write in the log (a Redis Stream in the group's slot); a
///   process that dies leaves its unsettled writes to another process's
///   consumer. At least once: a database write may repeat after a crash.
/// - **Ordered and coalesced per key**: the database never sees a key's
///   older value after a newer one, and several waiting writes of a key
///   cost one handler call, with the newest value.
/// - **Failures**: a failing handler is retried with backoff; after
///   `max_attempts` the value moves to the dead-letter stream
///   (`{prefix}:{group}:wb:dead`), logged and counted, and blocks nothing.
///   `write` returns `Err` when the write could not be made durable.
///
/// On the in-memory backend the log lives in the process.
pub struct WriteBehind<K, V> {
    inner: Arc<Handle>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for WriteBehind<K, V> {
    fn clone(&self) -> Self {
        WriteBehind {
            inner: Arc::clone(&self.inner),
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for WriteBehind<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("WriteBehind")
            .field("group", &shared.group)
            .field("consumer", &shared.consumer)
            .finish_non_exhaustive()
    }
}

/// A value the handler kept failing for, from the dead-letter stream.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter<K, V> {
    /// The key.
    pub key: K,
    /// The value that could not be written.
    pub value: V,
    /// The handler's last error.
    pub error: String,
}

impl<K, V> WriteBehind<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Stores `value` in the cache (readers see it when this returns) and
    /// appends the write to the log, in one step. `Err` means the write may
    /// not be durable: Redis was down, or the key or value did not encode.
    pub async fn write<Q>(&self, key: &Q, value: &V) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.ensure_started();
        let shared = &self.inner.shared;
        let (cache, group) = (&shared.cache, shared.group.as_str());
        check_group(group)?;
        let json = key_json(key)?;
        let entry = EntryKey::of_json(&json);
        let ttl = shared.options.ttl.unwrap_or(cache.settings().default_ttl);
        let bytes = envelope::seal(cache.codec(), value, Duration::ZERO, ttl)?;
        let appended = cache
            .op(shared.log.append(cache, group, &entry, json, bytes, ttl))
            .await;
        // Not evicted when the append fails: the entry and the log change
        // together or not at all, and until the database has a write the
        // entry is what holds it.
        cache.end_write(Invalidation::Key(group, &entry), None);
        let id = appended?;
        metrics::stored(cache.counters(), group);
        bump(&cache.counters().behind_writes);
        {
            let mut last = shared.last.lock();
            *last = (*last).max(Some(id));
        }
        if shared.unread.fetch_add(1, Ordering::Relaxed) + 1 >= shared.options.batch {
            shared.wake.notify_one(); // a full batch waits: no need to delay
        }
        Ok(())
    }

    /// Waits until every write made through this writer so far is in the
    /// database (or, after `max_attempts`, in the dead-letter stream),
    /// whichever process's consumer wrote it. `Err` when the log could not
    /// be read (Redis down).
    pub async fn flush(&self) -> Result<(), Error> {
        self.ensure_started();
        let shared = &self.inner.shared;
        let Some(upto) = *shared.last.lock() else {
            return Ok(());
        };
        loop {
            let progress = shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            shared.wake.notify_one();
            if shared.cache.op(shared.log.settled(upto)).await? {
                return Ok(());
            }
            let _ = tokio::time::timeout(FLUSH_POLL, progress).await;
        }
    }

    /// The dead-letter stream of this group, oldest first (entries that do
    /// not decode as `K` and `V` are left out).
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter<K, V>>, Error> {
        let shared = &self.inner.shared;
        let dead = shared.cache.op(shared.log.dead()).await?;
        Ok(dead
            .into_iter()
            .filter_map(|(key, value, error)| {
                Some(DeadLetter {
                    key: serde_json::from_slice(&key).ok()?,
                    value: envelope::open(shared.cache.codec(), &value).ok()?.0,
                    error,
                })
            })
            .collect())
    }

    /// Spawns the consumer, once, when a runtime is at hand.
    fn ensure_started(&self) {
        let mut task = self.inner.task.lock();
        if let Task::Waiting(starter) = &mut *task {
            if tokio::runtime::Handle::try_current().is_ok() {
                if let Some(start) = starter.take() {
                    *task = Task::Running(start());
                }
            }
        }
    }
}
