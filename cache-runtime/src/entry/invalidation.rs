//! What a write changed, and the message that announces it to every local
//! tier.

use super::EntryKey;

/// The channel a cache with this prefix on this database announces its
/// writes on.
pub(crate) fn invalidation_channel(prefix: &str, db: i64) -> String {
    format!("{prefix}:{db}:invalidations")
}

/// What a write invalidates.
#[derive(Clone, Copy)]
pub(crate) enum Invalidation<'a> {
    Key(&'a str, &'a EntryKey),
    Group(&'a str),
}

impl Invalidation<'_> {
    /// The message announcing it: `["k", group, key]` or `["g", group]`.
    pub(crate) fn message(&self) -> String {
        let message = match self {
            Invalidation::Key(group, key) => serde_json::to_string(&("k", group, key.as_str())),
            Invalidation::Group(group) => serde_json::to_string(&("g", group)),
        };
        message.unwrap_or_default()
    }
}
