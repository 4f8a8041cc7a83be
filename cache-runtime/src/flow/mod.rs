//! What an annotated call does: the orchestration of each attribute, on
//! top of the consistency core (`consistency`), which keeps it correct.
//!
//! The life of a `#[cached]` call ([`read`]): its [`Policy`](policy) says
//! what to store and for how long; the core's lookup returns a hit (from
//! the local tier, a batched read, or the backend), or a miss with the read
//! lease that makes this caller the one that loads. The body runs, its
//! return value is judged by its [kind](returns) (`Result`, `Option`, or
//! plain), and the value is filled under the lease, which a write in
//! between has taken away: a value loaded before a write is never stored
//! after it.
//!
//! Writes: [`put`] registers a writer record before its body and stores
//! only if no other write overlapped; [`evict`] removes the entry (or
//! replaces the group's generation) after its body succeeded. Both end
//! through the core, which retries a write that failed and reads past it
//! in this process until it succeeds.
//!
//! A bulk call cached per element ([`each`]) looks up every key at once and
//! runs its body once for the keys that missed, each filled under its own
//! lease.

pub(crate) mod each;
pub(crate) mod evict;
pub(crate) mod fail_safe;
pub(crate) mod policy;
pub(crate) mod put;
pub(crate) mod read;
pub(crate) mod returns;
