//! What an annotated call does, and what keeps it correct.
//!
//! The life of a `#[cached]` call ([`read`]): its [`Policy`](policy) says
//! what to store and for how long; a [lookup](lookup) returns a hit (from the
//! local tier, a batched read, or the backend), or a miss with the read lease
//! ([`lease`]) that makes this caller the one that loads. Other callers of
//! the key in this process follow its flight (`consistency`); those of other
//! processes wait for its lease. The body runs, its return value is judged
//! by its [kind](returns) (`Result`, `Option`, or plain), and the value is
//! [filled](fill) under the lease, which a write in between has taken away:
//! a value loaded before a write is never stored after it.
//!
//! Writes: [`put`] registers a writer record ([`write_guard`]) before its
//! body and stores only if no other write overlapped; [`evict`] removes the
//! entry (or replaces the group's generation) after its body succeeded. A
//! write that fails is [retried](retry) in the background, and read past in
//! this process until it succeeds.
//!
//! A bulk call cached per element ([`each`]) looks up every key at once and
//! runs its body once for the keys that missed, each filled under its own
//! lease.
//!
//! The protocol the backends keep for all of this is in `backend`.

pub(crate) mod each;
pub(crate) mod evict;
pub(crate) mod fill;
pub(crate) mod lookup;
pub(crate) mod policy;
pub(crate) mod put;
pub(crate) mod read;
pub(crate) mod returns;
