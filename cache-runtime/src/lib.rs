//! Declarative caching for async Rust, on Redis or in memory.
//!
//! Annotate async functions; the attributes rewrite their bodies to call this
//! runtime:
//!
//! - [`#[cached]`](cached): cache-aside reads;
//! - [`#[cache_evict]`](cache_evict): invalidate after the body succeeded;
//! - [`#[cache_put]`](cache_put): write-through.
//!
//! ```
//! use cache_runtime::{cache_evict, cache_put, cached};
//!
//! #[cached(ttl = 300, group = "products")]
//! async fn get_product(id: u64) -> Result<String, std::io::Error> {
//!     Ok(format!("product {id}")) // a slow database read
//! }
//!
//! #[cache_put(group = "products", key = id)]
//! async fn rename_product(id: u64, name: String) -> Result<String, std::io::Error> {
//!     Ok(name) // the database write
//! }
//!
//! #[cache_evict(group = "products")]
//! async fn delete_product(id: u64) -> Result<(), std::io::Error> {
//!     Ok(()) // the database delete
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! assert_eq!(get_product(7).await?, "product 7"); // miss: runs the body
//! rename_product(7, "teapot".into()).await?;      // stores the new value
//! assert_eq!(get_product(7).await?, "teapot");    // hit
//! delete_product(7).await?;                       // evicts key 7
//! assert_eq!(get_product(7).await?, "product 7"); // miss again
//! # Ok(()) }
//! ```
//!
//! Methods work alike, in impls and traits (`#[async_trait]` too); without
//! `group`, a method's group is its path, self type and trait included. On a
//! `Result` (or an alias of one), `cache_err` also stores the errors it
//! selects, so that an unknown id does not reach the database every time:
//!
//! ```
//! use cache_runtime::cached;
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! enum DbError {
//!     NotFound,
//!     Unavailable,
//! }
//!
//! struct Db;
//!
//! impl Db {
//!     #[cached(ttl = 300, cache_err = |e| *e == DbError::NotFound, err_ttl = 30)]
//!     async fn load(&self, id: u64) -> Result<String, DbError> {
//!         match id {
//!             0 => Err(DbError::NotFound),
//!             _ => Ok(format!("row {id}")),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! assert_eq!(Db.load(0).await, Err(DbError::NotFound)); // stored for 30 s
//! assert_eq!(Db.load(7).await.as_deref(), Ok("row 7")); // stored for 300 s
//! # }
//! ```
//!
//! With nothing installed the attributes use a process-wide in-memory cache;
//! [`Cache::install`] sets the default, [`Cache::scope`] overrides it for one
//! task. See the repository README for keys, options and the Redis layout.
//!
//! # How the crate is laid out
//!
//! From the top down; each module's own doc is the guide to it, and no
//! module imports one above it in this list save through [`Cache`], the
//! handle everything runs on.
//!
//! - `__private`: the door the attributes' expansions call, re-exports and
//!   key helpers only.
//! - `api`: the programmatic API, [`Cache`]'s public methods.
//! - `http`: the tower layer that caches whole responses (feature `http`).
//! - `write_behind`: durable writes, acknowledged before the database has
//!   them ([`WriteBehind`]).
//! - `flow`: what each attribute does (the read, bulk, put and evict
//!   flows), on top of the consistency core.
//! - `cache`: [`Cache`], the handle, with its [builder](CacheBuilder), the
//!   gate every backend operation passes (first contact, circuit breaker, op
//!   timeout), and [`Health`].
//! - `consistency`: the core every path reads and writes through
//!   (`Cache::begin_read`, `Cache::end_write`), and the protocol below
//!   them: lookups, leases, fills, writer records, loads in flight per key,
//!   evictions pending retry.
//! - `deps`: derived entries: what a load depends on ([`Dep`],
//!   [`depend`]), the stamps it stores them with, and the check of a
//!   stamped hit.
//! - `local`: the optional in-process tier in front of Redis, and its
//!   invalidation subscription.
//! - `backend`: in memory, Redis (one server, Sentinel, Cluster, TLS), and
//!   the protocol both keep: group generations, read leases, writer records,
//!   and the Redis key names.
//! - `entry`: what is stored and under what name: keys ([`EntryKey`]), the
//!   versioned envelope, the [`codec`], shared envelopes, invalidations.
//! - `observe`: [`Stats`], the `metrics` facade, rate-limited warnings.
//! - `background`: where background work runs, and how retry loops wait.
//! - [`Error`].
#![warn(missing_docs)]

#[doc(hidden)]
pub mod __private;
mod api;
#[cfg(feature = "http")]
pub mod http;
mod write_behind;

mod flow;

mod cache;
mod consistency;
mod deps;
mod local;

mod backend;
mod background;
mod entry;
mod error;
mod observe;

/// A map of in-process state keyed by group or key text (the in-memory
/// backend, the local tier), hashed with foldhash: seeded per process and
/// per map, and several times cheaper than SipHash on the short texts every
/// in-process hit hashes.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use api::LoadOptions;
#[cfg(feature = "tls")]
pub use backend::tls::Tls;
pub use cache::builder::CacheBuilder;
pub use cache::health::Health;
pub use cache::Cache;
pub use deps::{depend, Dep};
pub use entry::{codec, EntryKey, MAX_READABLE_KEY};
pub use error::{Error, ErrorKind};
pub use observe::Stats;
pub use write_behind::{DeadLetter, WriteBehind, WriteBehindBuilder};

pub use cache_macros::{cache_evict, cache_put, cached};
