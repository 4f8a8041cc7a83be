//! Key encoding: how a `(group, key value)` pair becomes an entry address.
//!
//! A key value is serialized to JSON. JSON is deterministic for the types
//! people use as keys (numbers, strings, tuples, structs, `Option`s, `BTreeMap`s)
//! and injective: two different values never produce the same text, whatever
//! characters they hold, because strings are quoted and escaped. Key texts of
//! at most [`MAX_READABLE_KEY`] bytes are kept as they are, so `redis-cli` shows
//! `cache:{products}:e:7`; longer ones become `#` followed by the hex SHA-256 of
//! the JSON. No JSON text starts with `#`, so the two forms never meet.
//!
//! Values that serialize alike address the same entry: `7u64`, `7i32` and a
//! single argument `id: u64 = 7` are one key, and so are `"a"` and
//! `String::from("a")`. That is what lets `#[cached]` and `#[cache_evict]` on
//! different functions meet without a key written by hand.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Error;

/// Key texts longer than this many bytes are replaced by their hash.
pub const MAX_READABLE_KEY: usize = 128;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An encoded key value: the part of an entry's address that follows the group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey(String);

impl EntryKey {
    /// Encodes a key value. Fails only when the value's `Serialize`
    /// implementation fails (a map with non-string keys, say).
    pub fn new<K: Serialize + ?Sized>(key: &K) -> Result<Self, Error> {
        let json = serde_json::to_string(key).map_err(|e| Error::Encode {
            what: "key",
            message: e.to_string(),
        })?;
        if json.len() <= MAX_READABLE_KEY {
            return Ok(EntryKey(json));
        }
        let digest = Sha256::digest(json.as_bytes());
        let mut text = String::with_capacity(1 + 2 * digest.len());
        text.push('#');
        for byte in digest {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Ok(EntryKey(text))
    }

    /// The encoded text, as it appears in Redis after `:e:`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that a group name can sit inside a Redis hash tag: no braces, and
/// not empty (Redis Cluster ignores an empty `{}` tag and would spread the
/// group's keys over several slots).
pub(crate) fn check_group(group: &str) -> Result<(), Error> {
    if group.is_empty() || group.contains(['{', '}']) {
        return Err(Error::InvalidGroup(group.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_stay_readable() {
        assert_eq!(EntryKey::new(&7u64).unwrap().as_str(), "7");
        assert_eq!(EntryKey::new("a:b").unwrap().as_str(), "\"a:b\"");
        assert_eq!(EntryKey::new(&(1, "x")).unwrap().as_str(), "[1,\"x\"]");
    }

    #[test]
    fn equal_values_of_different_types_meet() {
        assert_eq!(EntryKey::new(&7u64).unwrap(), EntryKey::new(&7i32).unwrap());
        assert_eq!(
            EntryKey::new("k").unwrap(),
            EntryKey::new(&String::from("k")).unwrap()
        );
    }

    #[test]
    fn long_keys_are_hashed_to_a_bounded_length() {
        let long = "x".repeat(1000);
        let key = EntryKey::new(&long).unwrap();
        assert_eq!(key.as_str().len(), 65);
        assert!(key.as_str().starts_with('#'));
        assert_ne!(key, EntryKey::new(&"y".repeat(1000)).unwrap());
    }

    #[test]
    fn groups_with_braces_are_rejected() {
        assert!(check_group("a{b").is_err());
        assert!(check_group("a}").is_err());
        assert!(check_group("").is_err());
        assert!(check_group("products:v2").is_ok());
    }
}
