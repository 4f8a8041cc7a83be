//! Batched peeks: the plain reads behind a hit, sent together under load.
//!
//! A peek goes out at once, alone, when no read is on the wire: a caller at
//! light load pays nothing for batching. Otherwise it goes in the next
//! batch, which its first caller sends, from its own task, once the runtime
//! has run the tasks that were ready (it yields once): callers wait a
//! scheduler pass, not a round trip, and callers under load share one
//! command per group. A caller whose key already has [`MAX_PER_KEY`] reads
//! on the wire waits for one of them to return: however many callers a hot
//! key has, it costs at most that many commands per round trip. A batch is
//! one `MGET` per group of its generation and its distinct keys.
//!
//! The consistency rule: a caller only shares a read **sent after it
//! arrived**. Joining a read already on the wire could hand it a value from
//! before a write that returned before it began. A batch is sent only after
//! every caller in it arrived, so no caller joins a read on the wire.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use redis::RedisError;
use tokio::sync::oneshot;

use super::connection::Connection;
use super::mget::{self, short_reply, verdict};
use super::Lookup;
use crate::backend::deadline::Deadline;
use crate::backend::names::Names;
use crate::background;
use crate::error::Error;
use crate::Map;

/// How many reads of one key may be on the wire before its callers wait for
/// one to return. Eight: a hot key's callers then mostly find a batch about
/// to go, rather than wait for a read to come back and then for their own,
/// which behind a network cost them about one and a half round trips; at
/// 256 tasks a hot key still costs Redis 0.02-0.03 commands a hit
/// (docs/performance.md).
const MAX_PER_KEY: u32 = 8;

/// The most peeks in one batch; more go in the next.
const MAX_BATCH: usize = 1024;

/// Sends a backend's peeks, batching those that arrive under load.
#[derive(Clone)]
pub(crate) struct Batcher {
    conn: Connection,
    state: Arc<Mutex<State>>,
}

/// What is on the wire, and who waits.
#[derive(Default)]
struct State {
    /// How many reads (lone peeks and batches) are on the wire.
    reads: usize,
    /// How many of them read each key, by [`key_hash`].
    keys: Map<u64, u32>,
    /// Callers of a key with [`MAX_PER_KEY`] reads on the wire: they go in
    /// the next batch once one of those returns.
    behind: Vec<Queued>,
    /// Callers for the next batch.
    queue: Vec<Queued>,
    /// Whether a caller or a task is about to send the queue.
    sending: bool,
}

impl State {
    /// Counts a read of these keys onto the wire.
    fn sent(&mut self, hashes: &[u64]) {
        self.reads += 1;
        for &hash in hashes {
            *self.keys.entry(hash).or_default() += 1;
        }
    }

    /// Counts a read off the wire, and moves the callers behind reads whose
    /// key now has room into the next batch; `true` when that batch needs a
    /// task to send it, which the caller starts.
    fn returned(&mut self, hashes: &[u64]) -> bool {
        self.reads -= 1;
        for hash in hashes {
            if let Some(n) = self.keys.get_mut(hash) {
                *n -= 1;
                if *n == 0 {
                    self.keys.remove(hash);
                }
            }
        }
        let State {
            keys,
            behind,
            queue,
            ..
        } = self;
        let has_room =
            |queued: &mut Queued| keys.get(&queued.hash).is_none_or(|&n| n < MAX_PER_KEY);
        queue.extend(behind.extract_if(.., has_room));
        self.needs_sender()
    }

    /// Whether the queue has no one about to send it: then the caller
    /// sends it (or starts a task that does).
    fn needs_sender(&mut self) -> bool {
        !self.queue.is_empty() && !std::mem::replace(&mut self.sending, true)
    }
}

/// Where a peek goes: alone on the wire, or to wait for a batch.
enum Slot {
    Alone(Names),
    Waits {
        answered: oneshot::Receiver<Result<Lookup, Error>>,
        /// This caller found no one about to send the queue: it sends it.
        starts: bool,
    },
}

struct Queued {
    names: Names,
    hash: u64,
    /// When this caller's operation must end.
    deadline: Deadline,
    answer: oneshot::Sender<Result<Lookup, Error>>,
}

impl Batcher {
    pub(crate) fn new(conn: Connection) -> Self {
        Batcher {
            conn,
            state: Arc::default(),
        }
    }

    /// Reads an entry and its group's generation, taking no lease, by the
    /// deadline: a lone read keeps its own, a batch its earliest caller's
    /// (every caller in it arrived later), so that its callers need no
    /// timer of their own.
    pub(crate) async fn peek(&self, names: Names, deadline: Deadline) -> Result<Lookup, Error> {
        let hash = key_hash(names.entry());
        let slot = {
            let mut state = self.state.lock();
            // With a read on the wire, this one goes in the next batch: 16
            // tasks on spread keys are faster batched than each reading
            // alone (docs/performance.md).
            if state.reads > 0 {
                let (answer, answered) = oneshot::channel();
                let queued = Queued {
                    names,
                    hash,
                    deadline,
                    answer,
                };
                let of_key = state.keys.get(&hash).copied().unwrap_or(0);
                let starts = if of_key >= MAX_PER_KEY {
                    state.behind.push(queued);
                    false
                } else {
                    state.queue.push(queued);
                    state.needs_sender()
                };
                Slot::Waits { answered, starts }
            } else {
                state.sent(&[hash]);
                Slot::Alone(names)
            }
        };
        let names = match slot {
            Slot::Alone(names) => names,
            Slot::Waits { answered, starts } => {
                if starts {
                    self.send_queue().await;
                }
                // Dropped unanswered: the batch's send ended early (a
                // runtime shutting down).
                return answered.await.unwrap_or(Err(Error::Unavailable));
            }
        };
        // Ending this read, done or dropped, counts it off the wire.
        let _on_wire = OnWire {
            batcher: self,
            hashes: [hash],
        };
        let lone = async {
            let (gen, mut entries) = mget::read(&self.conn, names.gen(), &[names.entry()]).await?;
            let stored = entries.next().ok_or_else(short_reply)??;
            Ok(verdict(gen.as_deref(), stored))
        };
        deadline.bound(lone).await
    }

    /// Sends the queue from this caller's task, once the runtime has run the
    /// other tasks that were ready (it yields once): those that queue
    /// meanwhile go in the same batch. Its cancellation strands no one:
    /// dropped before it took the queue, it leaves the queue to a task;
    /// dropped with the batch on the wire, the send goes on in a task.
    async fn send_queue(&self) {
        let sender = Sender {
            batcher: self,
            in_task: false,
            armed: true,
        };
        tokio::task::yield_now().await;
        let batch = sender.take();
        Detached(Some(Box::pin(batch.send()))).await;
    }

    /// Sends the queue from a task of its own, once the runtime has run the
    /// other tasks that were ready: for callers that no caller of theirs
    /// sends (those behind reads that returned, and what a full batch left).
    fn send_soon(&self) {
        let sender = Sender {
            batcher: self.clone(),
            in_task: true,
            armed: true,
        };
        // Outside a runtime `sender` is dropped, and answers `Unavailable`.
        background::spawn(async move {
            tokio::task::yield_now().await;
            sender.take().send().await;
        });
    }

    /// Takes the next batch off the queue and counts it onto the wire; what
    /// a full batch leaves goes out at once, from a task.
    fn take(&self) -> Batch {
        let (queued, hashes, more) = {
            let mut state = self.state.lock();
            let take = state.queue.len().min(MAX_BATCH);
            let queued: Vec<Queued> = state.queue.drain(..take).collect();
            let mut hashes: Vec<u64> = queued.iter().map(|queued| queued.hash).collect();
            hashes.sort_unstable();
            hashes.dedup();
            state.sent(&hashes);
            state.sending = !state.queue.is_empty();
            (queued, hashes, state.sending)
        };
        if more {
            self.send_soon();
        }
        Batch {
            on_wire: OnWire {
                batcher: self.clone(),
                hashes,
            },
            queued,
        }
    }
}

/// Whoever is about to send the queue: the caller that queued first, or a
/// task. Dropped before it took the queue, a caller leaves the queue to a
/// task; a task (its runtime shutting down) answers the queued callers
/// `Unavailable`, so that a cache used from a later runtime does not wait
/// for it.
struct Sender<B: Borrow<Batcher>> {
    batcher: B,
    in_task: bool,
    armed: bool,
}

impl<B: Borrow<Batcher>> Sender<B> {
    /// The next batch: from now on a drop strands no one.
    fn take(mut self) -> Batch {
        self.armed = false;
        self.batcher.borrow().take()
    }
}

impl<B: Borrow<Batcher>> Drop for Sender<B> {
    fn drop(&mut self) {
        let batcher = self.batcher.borrow();
        if !self.armed {
            return;
        }
        if !self.in_task {
            batcher.send_soon();
            return;
        }
        let mut state = batcher.state.lock();
        state.queue.clear();
        state.sending = false;
    }
}

/// A batch taken off the queue, counted on the wire until it is dropped.
struct Batch {
    on_wire: OnWire<Batcher, Vec<u64>>,
    queued: Vec<Queued>,
}

impl Batch {
    async fn send(self) {
        let Batch { on_wire, queued } = self;
        send(&on_wire.batcher.conn, queued).await;
    }
}

/// A batch's send, which goes on in a task of its own if the caller that
/// sends it is dropped first (outside a runtime it is dropped: its callers
/// are answered `Unavailable`).
struct Detached(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for Detached {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(send) = &mut self.0 {
            std::task::ready!(send.as_mut().poll(cx));
            self.0 = None;
        }
        Poll::Ready(())
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(send) = self.0.take() {
            background::spawn(send);
        }
    }
}

/// A read on the wire (a lone peek or a batch) and its keys' hashes, counted
/// until it returns or is dropped; then the callers behind reads go.
struct OnWire<B: Borrow<Batcher>, H: AsRef<[u64]>> {
    batcher: B,
    hashes: H,
}

impl<B: Borrow<Batcher>, H: AsRef<[u64]>> Drop for OnWire<B, H> {
    fn drop(&mut self) {
        let batcher = self.batcher.borrow();
        let starts = batcher.state.lock().returned(self.hashes.as_ref());
        if starts {
            batcher.send_soon();
        }
    }
}

/// One batch: an `MGET` per group (a group is one cluster slot), sent
/// together, of the group's generation and each distinct key, by the
/// earliest caller's deadline. The callers are sorted by group and key, so
/// that each group, and each key in it, is a run; the callers of one key
/// share its envelope.
async fn send(conn: &Connection, batch: Vec<Queued>) {
    let Some(deadline) = batch
        .iter()
        .map(|queued| queued.deadline)
        .reduce(Deadline::earlier)
    else {
        return;
    };
    let names = |i: usize| (batch[i].names.gen(), batch[i].names.entry());
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_unstable_by(|&a, &b| names(a).cmp(&names(b)));
    let groups = order.chunk_by(|&a, &b| names(a).0 == names(b).0);
    let by_group = groups.map(|members| async move {
        // The distinct keys, and for each member the read it shares.
        let mut entries: Vec<&str> = Vec::with_capacity(members.len());
        let mut reads = Vec::with_capacity(members.len());
        for &i in members {
            let entry = names(i).1;
            if entries.last() != Some(&entry) {
                entries.push(entry);
            }
            reads.push((i, entries.len() - 1));
        }
        let verdicts = mget::read(conn, names(members[0]).0, &entries)
            .await
            .and_then(|(gen, entries)| {
                entries
                    .map(|stored| Ok(verdict(gen.as_deref(), stored?)))
                    .collect::<Result<Vec<Lookup>, RedisError>>()
            });
        (reads, verdicts)
    });
    let all = async { Ok(futures_util::future::join_all(by_group).await) };
    let replies = match deadline.bound(all).await {
        Ok(replies) => replies,
        // Not answered in time: every caller is told so.
        Err(_) => {
            for queued in batch {
                let _ = queued.answer.send(Err(deadline.elapsed()));
            }
            return;
        }
    };
    let mut answers: Vec<Option<Result<Lookup, Error>>> = batch.iter().map(|_| None).collect();
    for (reads, verdicts) in replies {
        for (i, shared) in reads {
            answers[i] = Some(match &verdicts {
                Ok(verdicts) => verdicts
                    .get(shared)
                    .map(share)
                    .ok_or_else(|| short_reply().into()),
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

/// Another reader's copy of a read's verdict: a hit shares the envelope.
fn share(verdict: &Lookup) -> Lookup {
    match verdict {
        Lookup::Hit(kept) => Lookup::Hit(kept.clone()),
        _ => Lookup::Miss(None),
    }
}

/// A cheap hash of an entry's name (foldhash, fixed seed): equal names,
/// equal hashes; a collision only makes a peek wait for a batch.
fn key_hash(entry: &str) -> u64 {
    std::hash::BuildHasher::hash_one(&foldhash::fast::FixedState::default(), entry)
}
