//! Derived entries: an entry that embeds others (a list of products, a
//! count, an HTTP page) *depends* on them, and a write to any of them makes
//! it a miss on its next read, in every process, while every entry that does
//! not depend on it stays a hit.
//!
//! - **Records.** Every dependency is a *record* beside the data it names:
//!   `P:{G}:v:<key>` for one entry, `P:{G}:gv` for a whole group. A record
//!   holds a version token, made when a load first depends on it. Every
//!   write of the entry (eviction, put, `set`, `delete`, write-behind) gives
//!   the key's record a new token if it exists, and its group's record a new
//!   one always; a group eviction gives the group's one, and the group a new
//!   generation. The group's record is thus the group's write clock: a
//!   record that does not exist yet was last written no later than it, so
//!   a first load that names it is stored unless the group was written
//!   during the load.
//! - **Stamps.** While a body loads an entry ([`capture`]), each read it
//!   makes through the cache first *pins* the read key's record (making it
//!   if absent) and notes its token, with the group's generation: a
//!   [`Stamp`]. The read comes after the pin, so a write that the value
//!   missed changed the token after it was noted. Explicit dependencies
//!   ([`depend`], `depends_on`) are pinned once the body is done, and only
//!   count if their records were last written before the load began
//!   ([`check`]). The stamps travel at the tail of the entry's envelope
//!   ([`stamps`]).
//! - **Checks.** A hit of an entry with stamps reads their records (one
//!   `MGET` per group, hence per cluster slot) and is a hit only when every
//!   token is still the one stamped. A record that is gone (expired, evicted
//!   by `allkeys-lru`, lost in a restart) fails the check: a dependent is
//!   never served on a missing record. An entry without stamps is checked
//!   for nothing: its hit costs what it did before.
//! - **Transitivity.** A read of an entry with stamps adds its stamps to the
//!   load that read it, so a page that shows a list that shows a product is
//!   stamped with the product.
//!
//! `docs/design.md` gives the argument for why a write is visible through
//! its dependents on the next read.

pub(crate) mod capture;
pub(crate) mod check;
pub(crate) mod stamps;

use serde::Serialize;

use crate::entry::{check_group, EntryKey};

pub(crate) use crate::entry::Record;

/// A dependency as a load noted it: the record, and the token it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) group: String,
    pub(crate) record: Record,
    /// For a key, the group's generation, `/`, and the record's token; for a
    /// group, the record's token.
    pub(crate) token: String,
}

/// An entry, or a group of entries, that a value depends on: a write to it
/// makes every value that depends on it a miss on its next read.
///
/// Reads through the cache are dependencies by themselves; name the data a
/// body reads some other way with [`depend`] or the attributes'
/// `depends_on`.
///
/// ```
/// use cache_runtime::{cached, Dep};
///
/// #[cached(group = "counts")]
/// async fn product_count() -> u64 {
///     cache_runtime::depend(Dep::group("products")); // any write to the group
///     3 // a `SELECT count(*)`
/// }
///
/// #[cached(group = "search", depends_on = |ids: &Vec<u64>| ids.iter().map(|id| Dep::key("products", id)).collect::<Vec<_>>())]
/// async fn search(query: String) -> Vec<u64> {
///     vec![7, 9] // a full-text search that returns product ids
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(product_count().await, 3);
/// assert_eq!(search("teapot".into()).await, vec![7, 9]);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Dep {
    group: String,
    /// The record, or why it could not be named (a key that does not encode).
    record: Result<Record, String>,
}

impl Dep {
    /// The entry `(group, key)`, addressed as the attributes address it:
    /// `Dep::key("products", &7u64)` is what `get_product(7)` caches under
    /// `#[cached(group = "products")]`.
    pub fn key(group: &str, key: &(impl Serialize + ?Sized)) -> Dep {
        let record = match check_group(group) {
            Ok(()) => EntryKey::new(key)
                .map(Record::Key)
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        Dep {
            group: group.to_owned(),
            record,
        }
    }

    /// Every entry of `group`: any write to one of them, or the group's
    /// eviction.
    pub fn group(group: &str) -> Dep {
        let record = check_group(group)
            .map(|()| Record::Group)
            .map_err(|e| e.to_string());
        Dep {
            group: group.to_owned(),
            record,
        }
    }
}

/// Makes the value being loaded depend on `dep`: called inside a
/// `#[cached]` body, a `get_or_load` loader or an HTTP layer's handler, for
/// data read without the cache. Elsewhere it does nothing.
///
/// The dependency counts only if `dep` was last written before the load
/// began; when it was written during the load, the value is returned but
/// not stored, since it may predate the write.
pub fn depend(dep: Dep) {
    capture::explicit(dep);
}
