//! The name of a dependency record (`deps`), which backends store beside
//! the entries.

use super::EntryKey;

/// What a dependency names in storage: one entry's record, or its group's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Record {
    Key(EntryKey),
    Group,
}
