//! What is stored, and under what name: a key value encoded as an
//! [`EntryKey`], a value sealed in a versioned [envelope](envelope) by the
//! cache's [codec], and an envelope shared by every reader of one hit
//! ([`shared`]). [`Invalidation`] names what a write changed, [`Record`]
//! a dependency record.
//!
//! Nothing here does I/O: the backends store what this module makes.

pub mod codec;
pub(crate) mod envelope;
pub(crate) mod invalidation;
pub(crate) mod key;
mod record;
pub(crate) mod shared;

pub(crate) use invalidation::Invalidation;
pub(crate) use key::{check_group, key_json};
pub use key::{EntryKey, MAX_READABLE_KEY};
pub(crate) use record::Record;
