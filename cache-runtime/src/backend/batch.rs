//! Batched peeks: the plain reads behind a hit, sent together under load.
//!
//! A peek goes out at once, alone, unless a read of the same key is on the
//! wire, or [`MAX_ON_WIRE`] reads are: callers of different keys at moderate
//! load pay nothing for batching (no waiting for a round trip). The others
//! wait, and go out together as soon as a read returns: one `MGET` per group
//! of its generation and its distinct keys. A hot key costs one command per
//! round trip, whatever the number of callers, and under heavy load reads of
//! many keys of a group share one command.
//!
//! The consistency rule: a caller only shares a read **sent after it
//! arrived**. Joining a read already on the wire could hand it a value from
//! before a write that returned before it began. A batch is sent only after
//! every caller in it arrived, so no caller joins a read on the wire.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::{FromRedisValue, Value};
use tokio::sync::oneshot;

use super::connection::Connection;
use super::Lookup;
use crate::key::Names;
use crate::Error;

/// How many reads (lone peeks and batches) may be on the wire before peeks
/// of other keys queue too.
const MAX_ON_WIRE: usize = 16;

/// The most peeks in one batch; more wait for the next.
const MAX_BATCH: usize = 1024;

/// An entry as a peek reads it: its generation followed by its envelope.
/// (A peek does not read the lease: a miss is told from a held miss by the
/// lookup script that follows it.)
type Stored = Option<Vec<u8>>;

/// Sends a backend's peeks, batching those that arrive under load.
pub(crate) struct Batcher {
    conn: Connection,
    state: Arc<Mutex<State>>,
}

/// What is on the wire, and who waits. Peeks queue only while something is
/// on the wire, whose return sends them.
#[derive(Default)]
struct State {
    /// The keys of the lone peeks on the wire, as [`key_hash`]es.
    alone: Vec<u64>,
    /// How many batches are on the wire.
    batches: usize,
    queue: Vec<Queued>,
}

/// Where a peek goes: alone on the wire, or into the queue.
enum Slot {
    Alone(Names),
    Queued(oneshot::Receiver<Result<Lookup, Error>>),
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
    pub(crate) async fn peek(&self, names: Names) -> Result<Lookup, Error> {
        let hash = key_hash(&names.entry);
        let slot = {
            let mut state = lock(&self.state);
            let full = state.alone.len() + state.batches >= MAX_ON_WIRE;
            if full || state.alone.contains(&hash) {
                let (answer, answered) = oneshot::channel();
                state.queue.push(Queued { names, answer });
                Slot::Queued(answered)
            } else {
                state.alone.push(hash);
                Slot::Alone(names)
            }
        };
        let names = match slot {
            Slot::Alone(names) => names,
            // Dropped unanswered: the batch's task ended early (a runtime
            // shutting down).
            Slot::Queued(answered) => return answered.await.unwrap_or(Err(Error::Unavailable)),
        };
        // Ending this turn, done or dropped, sends what queued meanwhile.
        let _turn = Turn(self, hash);
        let (gen, mut entries) = read(&self.conn, &names.gen, &[&names.entry]).await?;
        match entries.first_mut() {
            Some(stored) => Ok(verdict(gen.as_deref(), stored, true)),
            None => Err(short_reply()),
        }
    }

    /// A read left the wire: sends what queued, as a batch, from a task of
    /// its own (so that no caller's cancellation strands the others).
    fn send_queued(&self) {
        let batch: Vec<Queued> = {
            let mut state = lock(&self.state);
            if state.queue.is_empty() {
                return;
            }
            let take = state.queue.len().min(MAX_BATCH);
            state.batches += 1;
            state.queue.drain(..take).collect()
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Dropped outside a runtime (one shutting down): the queued
            // callers, if any are left, are answered `Unavailable`.
            drop(batch);
            lock(&self.state).batches -= 1;
            return;
        };
        let next = Batcher {
            conn: self.conn.clone(),
            state: self.state.clone(),
        };
        runtime.spawn(async move {
            send(&next.conn, batch).await;
            lock(&next.state).batches -= 1;
            next.send_queued();
        });
    }
}

/// A lone peek's turn on the wire, by its key's hash.
struct Turn<'a>(&'a Batcher, u64);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.0.state);
            if let Some(at) = state.alone.iter().position(|&hash| hash == self.1) {
                state.alone.swap_remove(at);
            }
        }
        self.0.send_queued();
    }
}

/// One batch: an `MGET` per group (a group is one cluster slot), sent
/// together, of the group's generation and each distinct key. The callers
/// are sorted by group and key, so that each group, and each key in it, is
/// a run.
async fn send(conn: &Connection, batch: Vec<Queued>) {
    let names = |i: usize| (batch[i].names.gen.as_str(), batch[i].names.entry.as_str());
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_unstable_by(|&a, &b| names(a).cmp(&names(b)));
    let groups = order.chunk_by(|&a, &b| names(a).0 == names(b).0);
    let by_group = groups.map(|members| async move {
        // The distinct keys, and for each member the read it shares and
        // whether it is that read's last.
        let mut entries: Vec<&str> = Vec::with_capacity(members.len());
        let mut reads = Vec::with_capacity(members.len());
        for (n, &i) in members.iter().enumerate() {
            let entry = names(i).1;
            if entries.last() != Some(&entry) {
                entries.push(entry);
            }
            let last = members
                .get(n + 1)
                .is_none_or(|&next| names(next).1 != entry);
            reads.push((i, entries.len() - 1, last));
        }
        (reads, read(conn, names(members[0]).0, &entries).await)
    });
    let mut answers: Vec<Option<Result<Lookup, Error>>> = batch.iter().map(|_| None).collect();
    for (reads, mut parsed) in futures_util::future::join_all(by_group).await {
        for (i, shared, last) in reads {
            answers[i] = Some(match &mut parsed {
                Ok((gen, entries)) => match entries.get_mut(shared) {
                    Some(stored) => Ok(verdict(gen.as_deref(), stored, last)),
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

/// Reads a group's generation and some of its entries, in one `MGET` (a key
/// of another type reads as nil: a miss, which the lookup script repairs).
async fn read(
    conn: &Connection,
    gen: &str,
    entries: &[&str],
) -> Result<(Stored, Vec<Stored>), redis::RedisError> {
    let mut mget = redis::cmd("MGET");
    mget.arg(gen);
    for entry in entries {
        mget.arg(*entry);
    }
    let replies: Vec<Value> = mget.query_async(&mut conn.clone()).await?;
    let mut replies = replies.into_iter();
    let gen = Stored::from_redis_value(replies.next().unwrap_or(Value::Nil))?;
    let entries = replies
        .map(Stored::from_redis_value)
        .collect::<Result<_, _>>()?;
    Ok((gen, entries))
}

/// What an entry means under its group's generation: a hit when it starts
/// with it. The envelope is moved out for its `last` reader, copied for
/// the others.
fn verdict(gen: Option<&[u8]>, stored: &mut Stored, last: bool) -> Lookup {
    match (gen, stored) {
        (Some(gen), Some(stored)) if stored.starts_with(gen) => match last {
            true => {
                stored.drain(..gen.len());
                Lookup::Hit(std::mem::take(stored))
            }
            false => Lookup::Hit(stored[gen.len()..].to_vec()),
        },
        _ => Lookup::Miss(None),
    }
}

/// A cheap hash of an entry's name (FNV-1a): equal names, equal hashes; a
/// collision only makes a peek wait for a batch.
fn key_hash(entry: &str) -> u64 {
    entry.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A read answered with fewer values than it asked for.
fn short_reply() -> Error {
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "a batched read got fewer values than it asked for",
    )))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
