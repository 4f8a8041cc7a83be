//! Batched peeks: the plain reads behind a hit, sent together under load.
//!
//! A peek that finds fewer than [`MAX_ON_WIRE`] of its cache's reads on the
//! wire goes out at once, alone: a lone caller pays nothing for batching.
//! Peeks that arrive while the wire is full wait, and go out together, one
//! pipeline per group, as soon as a read before them returns. In a batch, peeks of one key
//! share one read and peeks of one group one read of its generation, so a hot
//! key costs one read per round trip, whatever the number of callers.
//!
//! The consistency rule: a caller only shares a read **sent after it
//! arrived**. Joining a read already on the wire could hand it a value from
//! before a write that returned before it began. A batch is sent only after
//! every caller in it arrived, so no caller joins a read on the wire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::{FromRedisValue, Value};
use tokio::sync::oneshot;

use super::connection::Connection;
use super::Lookup;
use crate::key::Names;
use crate::Error;

/// How many reads may be on the wire at once before peeks queue. One gives
/// the largest batches (best for hot keys); two keeps the connection busy
/// while a batch's callers decode (better for many keys at moderate load).
const MAX_ON_WIRE: usize = 2;

/// The most peeks in one batch; more wait for the next.
const MAX_BATCH: usize = 1024;

/// An entry's fields as a peek reads them: the value and its generation.
/// (A peek does not read the lease: a miss is told from a held miss by the
/// lookup script that follows it.)
type Fields = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Sends a backend's peeks, batching those that arrive under load.
pub(crate) struct Batcher {
    conn: Connection,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// How many reads (lone peeks or batches) are on the wire; at
    /// [`MAX_ON_WIRE`], a peek arriving waits for the next batch. The queue
    /// is empty unless this is at its maximum.
    on_wire: usize,
    queue: Vec<Queued>,
}

struct Queued {
    names: Names,
    answer: oneshot::Sender<Result<Lookup, Error>>,
}

impl Batcher {
    pub(crate) fn new(conn: Connection) -> Self {
        Batcher {
            conn,
            state: Arc::default(),
        }
    }

    /// Reads an entry and its group's generation, taking no lease.
    pub(crate) async fn peek(&self, names: &Names) -> Result<Lookup, Error> {
        let waiting = {
            let mut state = lock(&self.state);
            if state.on_wire == MAX_ON_WIRE {
                let (answer, answered) = oneshot::channel();
                state.queue.push(Queued {
                    names: names.clone(),
                    answer,
                });
                Some(answered)
            } else {
                state.on_wire += 1;
                None
            }
        };
        match waiting {
            // Dropped unanswered: the batch's task ended early (a runtime
            // shutting down).
            Some(answered) => answered.await.unwrap_or(Err(Error::Unavailable)),
            None => {
                // Ending this turn, done or dropped, sends what queued meanwhile.
                let _turn = Turn(self);
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(&names.gen);
                read_entry(&mut pipe, &names.entry);
                let replies = pipe.query_async(&mut self.conn.clone()).await?;
                let (gen, entries) = parse(replies)?;
                match entries.first() {
                    Some(fields) => Ok(verdict(gen.as_deref(), fields)),
                    None => Err(short_reply()),
                }
            }
        }
    }

    /// A read left the wire: sends what queued, from a task of its own (so
    /// that no caller's cancellation strands the others), in its place.
    fn next_batch(&self) {
        let batch: Vec<Queued> = {
            let mut state = lock(&self.state);
            if state.queue.is_empty() {
                state.on_wire -= 1;
                return;
            }
            let take = state.queue.len().min(MAX_BATCH);
            state.queue.drain(..take).collect()
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Dropped outside a runtime (one shutting down): the queued
            // callers, if any are left, are answered `Unavailable`.
            drop(batch);
            lock(&self.state).on_wire -= 1;
            return;
        };
        let next = Batcher {
            conn: self.conn.clone(),
            state: self.state.clone(),
        };
        runtime.spawn(async move {
            send(&next.conn, batch).await;
            next.next_batch();
        });
    }
}

/// A lone peek's turn on the wire.
struct Turn<'a>(&'a Batcher);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.next_batch();
    }
}

/// One batch: a pipeline per group (a group is one cluster slot), sent
/// together, with one generation read per group and one read per key.
async fn send(conn: &Connection, batch: Vec<Queued>) {
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, queued) in batch.iter().enumerate() {
        groups.entry(&queued.names.gen).or_default().push(i);
    }
    let batch_ref = &batch;
    let pipelines = groups.into_iter().map(|(gen, members)| async move {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(gen);
        let mut reads: HashMap<&str, usize> = HashMap::new();
        let mut read_of = Vec::with_capacity(members.len());
        for &i in &members {
            let entry = batch_ref[i].names.entry.as_str();
            let next = reads.len();
            let read = *reads.entry(entry).or_insert_with(|| {
                read_entry(&mut pipe, entry);
                next
            });
            read_of.push(read);
        }
        let replies = pipe.query_async(&mut conn.clone()).await;
        (members, read_of, replies.and_then(parse))
    });
    let mut answers: Vec<Option<Result<Lookup, Error>>> = batch.iter().map(|_| None).collect();
    for (members, read_of, parsed) in futures_util::future::join_all(pipelines).await {
        for (i, read) in members.into_iter().zip(read_of) {
            answers[i] = Some(match &parsed {
                Ok((gen, entries)) => match entries.get(read) {
                    Some(fields) => Ok(verdict(gen.as_deref(), fields)),
                    None => Err(short_reply()),
                },
                Err(error) => Err(Error::Redis(error.clone())),
            });
        }
    }
    for (queued, answer) in batch.into_iter().zip(answers) {
        if let Some(answer) = answer {
            let _ = queued.answer.send(answer); // the caller may have gone
        }
    }
}

fn read_entry(pipe: &mut redis::Pipeline, entry: &str) {
    pipe.cmd("HMGET").arg(entry).arg("v").arg("g");
}

/// A pipeline's replies: the group's generation, then each entry's fields.
fn parse(replies: Vec<Value>) -> Result<(Option<Vec<u8>>, Vec<Fields>), redis::RedisError> {
    let mut replies = replies.into_iter();
    let gen = Option::<Vec<u8>>::from_redis_value(replies.next().unwrap_or(Value::Nil))?;
    let entries = replies
        .map(Fields::from_redis_value)
        .collect::<Result<_, _>>()?;
    Ok((gen, entries))
}

/// What an entry's fields mean under its group's generation.
fn verdict(gen: Option<&[u8]>, fields: &Fields) -> Lookup {
    let Some(gen) = gen else {
        return Lookup::Miss(None);
    };
    match fields {
        (Some(value), Some(value_gen)) if value_gen == gen => Lookup::Hit(value.clone()),
        _ => Lookup::Miss(None),
    }
}

/// A pipeline answered with fewer replies than it sent commands.
fn short_reply() -> Error {
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "a batched read got fewer replies than it sent",
    )))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
