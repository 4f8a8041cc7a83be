//! A write-behind's consumer: one task per writer, reading the log in
//! rounds and writing each key's newest value through the handler.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::background::Backoff;
use crate::entry::envelope;
use crate::observe::metrics;
use crate::observe::{bump, Warning};

use super::log::{Claim, Failed, Id, Pending};
use super::Shared;

/// The longest wait between two attempts of a failing value.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The entries of one key this consumer holds, and when to try them.
struct Held {
    ids: BTreeSet<Id>,
    due: Instant,
}

/// How trying a key ended.
enum Outcome {
    /// Its entries are settled.
    Settled,
    /// Try again after this long.
    Retry(Duration),
}

/// A writer's consumer: what it shares with the writer, and the handler.
pub(super) struct Consumer<K, V, F> {
    shared: Arc<Shared>,
    handler: F,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, F, Fut, E> Consumer<K, V, F>
where
    K: DeserializeOwned,
    V: DeserializeOwned,
    F: Fn(K, V) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    pub(super) fn new(shared: Arc<Shared>, handler: F) -> Self {
        Consumer {
            shared,
            handler,
            _types: PhantomData,
        }
    }

    /// Runs the consumer until its writer is dropped (which aborts it).
    pub(super) async fn run(self) {
        let shared = &self.shared;
        if crate::entry::check_group(&shared.group).is_err() {
            return; // every write fails with the reason; nothing to consume
        }
        let options = &shared.options;
        let mut backoff = Backoff::new(options.backoff, MAX_BACKOFF);
        while let Err(error) = shared.cache.op(shared.log.prepare()).await {
            warn(
                shared,
                &error,
                "could not create the write-behind consumer group",
            );
            tokio::time::sleep(backoff.pause()).await;
        }
        let mut held: BTreeMap<String, Held> = BTreeMap::new();
        // Take over at once: a restarted process finds what its last run left.
        let mut take_over_at = Instant::now();
        // Whether the log held more than the last round took: a backlog is
        // worked through without waiting for the delay.
        let mut backlog = false;
        loop {
            let mut wake_at = (Instant::now() + options.delay).min(take_over_at);
            if let Some(due) = held.values().map(|h| h.due).min() {
                wake_at = wake_at.min(due);
            }
            if backlog {
                wake_at = Instant::now();
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = shared.wake.notified() => {}
            }
            let now = Instant::now();
            shared.unread.store(0, Ordering::Relaxed);
            backlog = false;
            // Read while fewer keys are held than a round takes: keys that
            // wait a retry (a database down) hold the reading back.
            while held.len() < options.batch {
                match shared
                    .cache
                    .op(shared.log.read(&shared.consumer, options.batch))
                    .await
                {
                    Ok(entries) => {
                        backlog = entries.len() == options.batch;
                        hold(&mut held, entries, now);
                        if !backlog {
                            break;
                        }
                    }
                    Err(error) => {
                        warn(shared, &error, "could not read the write-behind log");
                        break;
                    }
                }
            }
            if now >= take_over_at {
                let taken = shared.cache.op(shared.log.take_over(
                    &shared.consumer,
                    options.idle_timeout,
                    options.batch,
                ));
                match taken.await {
                    Ok(entries) => hold(&mut held, entries, now),
                    Err(error) => warn(
                        shared,
                        &error,
                        "could not take over idle write-behind entries",
                    ),
                }
                take_over_at = now + options.idle_timeout / 2;
            }
            let due: Vec<String> = held
                .iter()
                .filter(|(_, h)| h.due <= now)
                .map(|(key, _)| key.clone())
                .take(options.batch)
                .collect();
            if !due.is_empty() {
                let mut work = Vec::with_capacity(due.len());
                for key in due {
                    if let Some(entry) = held.remove(&key) {
                        work.push((key, entry.ids.into_iter().collect::<Vec<_>>()));
                    }
                }
                let outcomes = self.settle_all(&work).await;
                let mut settled = false;
                for ((key, ids), outcome) in work.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Settled => settled = true,
                        Outcome::Retry(after) => {
                            let entry = held.entry(key).or_insert_with(|| Held {
                                ids: BTreeSet::new(),
                                due: now + after,
                            });
                            entry.ids.extend(ids);
                            entry.due = entry.due.max(Instant::now() + after);
                        }
                    }
                }
                if settled {
                    bump(&shared.cache.counters().behind_batches);
                }
            }
            shared.progress.notify_waiters();
        }
    }

    /// Tries every key of a round at once, renewing their claims while the
    /// handler runs.
    async fn settle_all(&self, work: &[(String, Vec<Id>)]) -> Vec<Outcome> {
        let shared = &*self.shared;
        let all =
            futures_util::future::join_all(work.iter().map(|(key, ids)| self.settle(key, ids)));
        tokio::pin!(all);
        let hold = shared.options.idle_timeout;
        let mut renew = tokio::time::interval_at(Instant::now() + hold / 3, hold / 3);
        let keys: Vec<String> = work.iter().map(|(key, _)| key.clone()).collect();
        loop {
            tokio::select! {
                outcomes = &mut all => return outcomes,
                _ = renew.tick() => {
                    let renewed = shared.log.renew(&keys, &shared.consumer, hold);
                    if let Err(error) = shared.cache.op(renewed).await {
                        warn(shared, &error, "could not renew write-behind claims");
                    }
                }
            }
        }
    }

    /// Claims a key, writes its newest value, and settles its entries.
    async fn settle(&self, key: &str, ids: &[Id]) -> Outcome {
        let shared = &*self.shared;
        let (cache, log, consumer) = (&shared.cache, &shared.log, shared.consumer.as_str());
        let options = &shared.options;
        let claimed = cache
            .op(log.claim(key, consumer, options.idle_timeout))
            .await;
        let pending = match claimed {
            Ok(Claim::Pending(pending)) => pending,
            // Another consumer writes this key now; its newest value may be
            // newer than ours was, or not: look again soon.
            Ok(Claim::Busy) => return Outcome::Retry(options.delay.min(options.backoff)),
            // A value at least as new is in the database already.
            Ok(Claim::Settled) => return self.written(key, ids, None).await,
            Err(error) => return unreachable(shared, &error),
        };
        let (error, max_attempts) = match decode::<K, V>(shared, &pending) {
            Err(error) => (error, 0), // cannot succeed: dead-letter at once
            Ok((k, v)) => match self.call(k, v).await {
                Ok(()) => {
                    bump(&cache.counters().behind_stored);
                    return self.written(key, ids, Some(pending.id)).await;
                }
                Err(error) => (error, options.max_attempts),
            },
        };
        let counters = cache.counters();
        bump(&counters.behind_failures);
        metrics::error("write_behind_failed");
        let failed = log.failed(key, consumer, pending.id, &error, max_attempts, ids);
        match cache.op(failed).await {
            Ok(Failed::Dead) => {
                bump(&counters.behind_dead);
                metrics::error("write_behind_dead");
                tracing::error!(
                    group = shared.group,
                    key,
                    error,
                    "write-behind gave up on a value; it is in the dead-letter stream"
                );
                settled(shared, ids)
            }
            Ok(Failed::Retry(attempts)) => {
                counters.warn_limited(Warning::Failure, |count| {
                    tracing::warn!(
                        group = shared.group,
                        key,
                        error,
                        attempts,
                        count,
                        "write-behind handler failed; retrying"
                    );
                });
                Outcome::Retry(backoff(options.backoff, attempts))
            }
            Err(error) => unreachable(shared, &error),
        }
    }

    /// A value at least as new as `written` (or, with `None`, as every
    /// entry in `ids`) is in the database: settles the key's entries. If
    /// that fails, the value will be written again.
    async fn written(&self, key: &str, ids: &[Id], written: Option<Id>) -> Outcome {
        let shared = &*self.shared;
        let settling = shared.log.written(key, &shared.consumer, written, ids);
        match shared.cache.op(settling).await {
            Ok(()) => settled(shared, ids),
            Err(error) => unreachable(shared, &error),
        }
    }

    /// Calls the handler; its error, or its panic, as text.
    async fn call(&self, key: K, value: V) -> Result<(), String> {
        match AssertUnwindSafe((self.handler)(key, value))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the handler panicked".to_owned()),
        }
    }
}

/// Counts a key's entries as settled.
fn settled(shared: &Shared, ids: &[Id]) -> Outcome {
    let counters = shared.cache.counters();
    counters
        .behind_settled
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    Outcome::Settled
}

/// Adds entries to those held, each key due now unless it waits a retry.
fn hold(held: &mut BTreeMap<String, Held>, entries: Vec<super::log::Entry>, now: Instant) {
    for entry in entries {
        held.entry(entry.key)
            .or_insert_with(|| Held {
                ids: BTreeSet::new(),
                due: now,
            })
            .ids
            .insert(entry.id);
    }
}

/// The key and value of a pending write, or why they do not decode.
fn decode<K: DeserializeOwned, V: DeserializeOwned>(
    shared: &Shared,
    pending: &Pending,
) -> Result<(K, V), String> {
    let key = serde_json::from_slice(&pending.key)
        .map_err(|error| format!("the key does not decode: {error}"))?;
    let (value, _) = envelope::open(shared.cache.codec(), &pending.value)
        .map_err(|error| format!("the value does not decode: {error}"))?;
    Ok((key, value))
}

/// The wait before attempt `attempts + 1`: `base`, doubling per attempt.
fn backoff(base: Duration, attempts: u32) -> Duration {
    match attempts {
        0 => Duration::ZERO, // a newer value waits: try it now
        n => base.saturating_mul(1 << (n - 1).min(16)).min(MAX_BACKOFF),
    }
}

/// The log could not be reached: try the key again after the backoff.
fn unreachable(shared: &Shared, error: &crate::Error) -> Outcome {
    warn(shared, error, "write-behind could not reach its log");
    Outcome::Retry(shared.options.backoff)
}

fn warn(shared: &Shared, error: &crate::Error, what: &'static str) {
    shared
        .cache
        .counters()
        .warn_limited(Warning::Failure, |count| {
            tracing::warn!(group = shared.group, %error, count, "{what}");
        });
}
