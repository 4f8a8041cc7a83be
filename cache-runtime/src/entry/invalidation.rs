//! What a write changed.

use super::EntryKey;

/// What a write invalidates.
#[derive(Clone, Copy)]
pub(crate) enum Invalidation<'a> {
    Key(&'a str, &'a EntryKey),
    Group(&'a str),
}
