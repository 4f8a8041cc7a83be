//! The Redis names of an entry's keys and of its group's: the key layout
//! every script and command of the Redis backend addresses.

use crate::entry::EntryKey;

/// The Redis names of one entry's keys: for prefix `P`, group `G` and key
/// text `K`, `P:{G}:e:K` (the entry), `P:{G}:l:K` (its read lease),
/// `P:{G}:w:K` (its writer record) and `P:{G}:gen` (the group's
/// generation). Neither `P` nor `G` holds a brace, so the hash tag of each
/// is exactly `G`: a group lives in one cluster slot.
#[derive(Clone)]
pub(crate) struct Names {
    /// `P:{G}:gen` followed by `P:{G}:e:K`: both names a hit sends, in one
    /// allocation.
    text: String,
    /// Where the entry's name starts in `text`.
    entry_start: usize,
}

/// What follows `P:{G}:` in a group's generation's name.
const GEN: &str = "gen";
/// What follows `P:{G}:` in an entry's name, before its key text.
const ENTRY: &str = "e:";
/// What follows `P:{G}:` in the group's dependency record's name.
pub(crate) const GROUP_RECORD: &str = "gv";
/// What follows `P:{G}:` in the name of the time the group was last evicted.
pub(crate) const EVICTED: &str = "gt";

impl Names {
    pub(crate) fn new(prefix: &str, group: &str, key: &EntryKey) -> Self {
        let base_len = prefix.len() + ":{".len() + group.len() + "}:".len();
        let capacity = 2 * base_len + GEN.len() + ENTRY.len() + key.as_str().len();
        let mut text = String::with_capacity(capacity);
        for kind in [GEN, ENTRY] {
            text.push_str(prefix);
            text.push_str(":{");
            text.push_str(group);
            text.push_str("}:");
            text.push_str(kind);
        }
        text.push_str(key.as_str());
        Names {
            text,
            entry_start: base_len + GEN.len(),
        }
    }

    /// The entry's name, `P:{G}:e:K`.
    pub(crate) fn entry(&self) -> &str {
        &self.text[self.entry_start..]
    }

    /// The group's generation's name, `P:{G}:gen`.
    pub(crate) fn gen(&self) -> &str {
        &self.text[..self.entry_start]
    }

    /// The writer record's name, built when an operation needs it.
    pub(crate) fn writers(&self) -> String {
        self.beside("w:")
    }

    /// The read lease's name, built when an operation needs it.
    pub(crate) fn lease(&self) -> String {
        self.beside("l:")
    }

    /// The name of the entry's dependency record, `P:{G}:v:K`.
    pub(crate) fn record(&self) -> String {
        self.beside("v:")
    }

    /// The name of the group's dependency record, `P:{G}:gv`.
    pub(crate) fn group_record(&self) -> String {
        let base = &self.gen()[..self.entry_start - GEN.len()];
        format!("{base}{GROUP_RECORD}")
    }

    /// Every key of this entry and of its group that a write may touch,
    /// with the Redis type it holds: what is repaired when one holds
    /// another type.
    pub(crate) fn typed(&self) -> Vec<(String, &'static str)> {
        let base = &self.gen()[..self.entry_start - GEN.len()];
        let mut keys = group_typed(base);
        keys.extend(self.own_typed());
        keys
    }

    /// The entry's own keys, with the Redis type each holds.
    pub(crate) fn own_typed(&self) -> [(String, &'static str); 4] {
        [
            (self.entry().to_owned(), "string"),
            (self.writers(), "hash"),
            (self.lease(), "hash"),
            (self.record(), "string"),
        ]
    }

    /// The name of another key of this entry: `P:{G}:<kind>K`.
    fn beside(&self, kind: &str) -> String {
        let base = &self.gen()[..self.entry_start - GEN.len()];
        let key = &self.entry()[base.len() + ENTRY.len()..];
        let mut name = String::with_capacity(base.len() + kind.len() + key.len());
        name.push_str(base);
        name.push_str(kind);
        name.push_str(key);
        name
    }
}

/// The keys of a group itself, named from its base `P:{G}:`, with the
/// Redis type each holds: its generation, when it was last evicted, and its
/// dependency record.
pub(crate) fn group_typed(base: &str) -> Vec<(String, &'static str)> {
    [GEN, EVICTED, GROUP_RECORD]
        .into_iter()
        .map(|name| (format!("{base}{name}"), "string"))
        .collect()
}

/// What a Redis key of the cache's layout names, as far as a local copy
/// cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Named<'a> {
    /// An entry, `P:{G}:e:K`: its group and key text.
    Entry(&'a str, &'a str),
    /// A group's generation, `P:{G}:gen`.
    Gen(&'a str),
    /// Any other key of a group (a lease, a writer or dependency record).
    Other,
}

/// Reads a key name under `prefix` (`None` when it is not of the layout).
pub(crate) fn parse<'a>(prefix: &str, name: &'a str) -> Option<Named<'a>> {
    let rest = name.strip_prefix(prefix)?.strip_prefix(":{")?;
    let (group, kind) = rest.split_once("}:")?;
    Some(match kind {
        GEN => Named::Gen(group),
        _ => match kind.strip_prefix(ENTRY) {
            Some(key) => Named::Entry(group, key),
            None => Named::Other,
        },
    })
}

/// The name of one of a group's keys, `P:{G}:<name>`: in the group's hash
/// tag, so in its cluster slot.
pub(crate) fn group_key(prefix: &str, group: &str, name: &str) -> String {
    format!("{prefix}:{{{group}}}:{name}")
}

/// The name of a group's generation, `P:{G}:gen`, for an operation on the
/// whole group.
pub(crate) fn group_gen(prefix: &str, group: &str) -> String {
    group_key(prefix, group, GEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The part of a key Redis Cluster hashes: the text between the first
    /// `{` and the first `}` after it, when that is not empty; else the key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(len) = key[open + 1..].find('}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    fn group() -> impl Strategy<Value = String> {
        "[^{}]{1,24}"
    }

    proptest! {
        #[test]
        fn the_hash_tag_of_every_key_is_its_group(prefix in "[^{}]{0,12}", group in group(), key in any::<String>()) {
            let names = Names::new(&prefix, &group, &EntryKey::new(&key).unwrap());
            for name in [names.entry(), &names.writers(), names.gen(), &names.record(), &names.group_record()] {
                prop_assert_eq!(hash_tag(name), group.as_str());
            }
            prop_assert_eq!(names.entry(), &format!("{prefix}:{{{group}}}:e:{}", EntryKey::new(&key).unwrap().as_str()));
            prop_assert_eq!(names.writers(), format!("{prefix}:{{{group}}}:w:{}", EntryKey::new(&key).unwrap().as_str()));
            prop_assert_eq!(names.gen(), group_key(&prefix, &group, "gen"));
        }

        #[test]
        fn different_groups_or_keys_never_share_a_name(
            g1 in group(), g2 in group(), k1 in any::<String>(), k2 in any::<String>(),
        ) {
            let a = Names::new("cache", &g1, &EntryKey::new(&k1).unwrap());
            let b = Names::new("cache", &g2, &EntryKey::new(&k2).unwrap());
            if (&g1, &k1) != (&g2, &k2) {
                prop_assert_ne!(a.entry(), b.entry());
                prop_assert_ne!(a.writers(), b.writers());
            }
            if g1 != g2 {
                prop_assert_ne!(a.gen(), b.gen());
            }
            for name in [b.entry(), &b.writers(), b.gen()] {
                // One generation per group: two keys of a group share it.
                prop_assert!(a.gen() != name || (g1 == g2 && name == b.gen()));
                prop_assert!(a.entry() != name || (g1 == g2 && k1 == k2));
            }
        }

    }
}

#[cfg(test)]
mod parsed {
    use super::*;

    #[test]
    fn names_read_back() {
        let key = EntryKey::new(&("7:a}:b", 3)).unwrap();
        let names = Names::new("shop", "products", &key);
        assert_eq!(
            parse("shop", names.entry()),
            Some(Named::Entry("products", key.as_str()))
        );
        assert_eq!(parse("shop", names.gen()), Some(Named::Gen("products")));
        assert_eq!(parse("shop", &names.lease()), Some(Named::Other));
        assert_eq!(parse("shop", "shopping:{x}:gen"), None);
        assert_eq!(parse("shop", "other:{x}:gen"), None);
    }
}
