//! Key encoding: how a `(group, key value)` pair becomes an entry address.
//!
//! A key value is serialized to JSON. JSON is deterministic for the types
//! people use as keys (numbers, strings, tuples, structs, `Option`s, `BTreeMap`s)
//! and injective: two different values never produce the same text, whatever
//! characters they hold, because strings are quoted and escaped, and the
//! non-finite floats that serde_json would write as `null` are written
//! `NaN`, `Infinity` and `-Infinity` ([`floats`]). Key texts of
//! at most [`MAX_READABLE_KEY`] bytes are kept as they are, so `redis-cli` shows
//! `cache:{products}:e:7`; longer ones become `#` followed by the hex SHA-256 of
//! the JSON. No JSON text starts with `#`, so the two forms never meet.
//!
//! Values that serialize alike address the same entry: `7u64`, `7i32` and a
//! single argument `id: u64 = 7` are one key, and so are `"a"` and
//! `String::from("a")`. That is what lets `#[cached]` and `#[cache_evict]` on
//! different functions meet without a key written by hand.

mod floats;

use std::cell::Cell;
use std::io;

use compact_str::CompactString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Error;
use floats::NullFormatter;

/// Key texts longer than this many bytes are replaced by their hash.
pub const MAX_READABLE_KEY: usize = 128;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An encoded key value: the part of an entry's address that follows the group.
///
/// A short text (up to 24 bytes on 64-bit targets: most numbers, ids, short
/// strings) is held inline, so encoding and dropping it allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey(CompactString);

impl EntryKey {
    /// Encodes a key value. Fails only when the value's `Serialize`
    /// implementation fails (a map with non-string keys, say).
    pub fn new<K: Serialize + ?Sized>(key: &K) -> Result<Self, Error> {
        let mut json = KeyWriter::default();
        write_key(&mut json, key)?;
        let json = std::str::from_utf8(json.bytes()).map_err(encode_error)?;
        Ok(Self::of_json(json))
    }

    /// The entry key of a string, the one [`new`](Self::new) gives it,
    /// written without serde when JSON needs no escape in it (an HTTP
    /// path, most ids): quotes around the text.
    #[cfg(feature = "http")]
    pub(crate) fn of_str(text: &str) -> Result<Self, Error> {
        let plain = text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if !plain {
            return Self::new(text);
        }
        let mut json = CompactString::with_capacity(text.len() + 2);
        json.push('"');
        json.push_str(text);
        json.push('"');
        if json.len() <= MAX_READABLE_KEY {
            return Ok(EntryKey(json));
        }
        Ok(Self::of_json(&json))
    }

    /// The entry key of a key's JSON text.
    pub(crate) fn of_json(json: &str) -> Self {
        if json.len() <= MAX_READABLE_KEY {
            return EntryKey(CompactString::new(json));
        }
        let digest = Sha256::digest(json.as_bytes());
        let mut text = String::with_capacity(1 + 2 * digest.len());
        text.push('#');
        for byte in digest {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        EntryKey(text.into())
    }

    /// The entry key of an encoded text, as [`as_str`](Self::as_str) gave it.
    pub(crate) fn of_text(text: &str) -> Self {
        EntryKey(CompactString::new(text))
    }

    /// The encoded text, as it appears in Redis after `:e:`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key value as JSON, the text its entry key is made of.
pub(crate) fn key_json<K: Serialize + ?Sized>(key: &K) -> Result<String, Error> {
    let mut json = KeyWriter::default();
    write_key(&mut json, key)?;
    let json = std::str::from_utf8(json.bytes()).map_err(encode_error)?;
    Ok(json.to_owned())
}

/// Writes a key value's JSON, with `NaN`, `Infinity` and `-Infinity` where
/// serde_json would write `null` for a non-finite float ([`floats`]).
fn write_key<K: Serialize + ?Sized>(writer: &mut KeyWriter, key: &K) -> Result<(), Error> {
    let wrote_null = Cell::new(false);
    let formatter = NullFormatter {
        wrote_null: &wrote_null,
    };
    let mut json = serde_json::Serializer::with_formatter(&mut *writer, formatter);
    key.serialize(&mut json).map_err(encode_error)?;
    if wrote_null.get() {
        // Which of them stood for a float is said only on a second pass.
        writer.rewind();
        floats::write_named(&mut *writer, key).map_err(encode_error)?;
    }
    Ok(())
}

fn encode_error(error: impl std::fmt::Display) -> Error {
    Error::Encode {
        what: "key",
        message: error.to_string(),
    }
}

/// Where serde_json writes a key: on the stack while the text fits inline in
/// an [`EntryKey`], in a `Vec` once it does not.
struct KeyWriter {
    inline: [u8; std::mem::size_of::<CompactString>()],
    len: usize,
    spilled: Vec<u8>,
}

impl Default for KeyWriter {
    fn default() -> Self {
        KeyWriter {
            inline: [0; std::mem::size_of::<CompactString>()],
            len: 0,
            spilled: Vec::new(),
        }
    }
}

impl KeyWriter {
    /// Empties it, for a second pass.
    fn rewind(&mut self) {
        self.len = 0;
        self.spilled.clear();
    }

    fn bytes(&self) -> &[u8] {
        match self.spilled.is_empty() {
            true => self.inline.get(..self.len).unwrap_or_default(),
            false => &self.spilled,
        }
    }
}

impl io::Write for KeyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.len + buf.len();
        match self.inline.get_mut(self.len..end) {
            Some(room) if self.spilled.is_empty() => {
                room.copy_from_slice(buf);
                self.len = end;
            }
            _ => {
                if self.spilled.is_empty() {
                    let written = self.inline.get(..self.len).unwrap_or_default();
                    self.spilled.extend_from_slice(written);
                }
                self.spilled.extend_from_slice(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
    use proptest::prelude::*;
    use serde::Serialize;

    #[derive(Debug, Clone, PartialEq, Serialize)]
    struct Nested {
        name: String,
        tags: Vec<String>,
        inner: Option<(u8, bool)>,
    }

    fn nested() -> impl Strategy<Value = Nested> {
        (
            any::<String>(),
            proptest::collection::vec(any::<String>(), 0..3),
            any::<Option<(u8, bool)>>(),
        )
            .prop_map(|(name, tags, inner)| Nested { name, tags, inner })
    }

    #[test]
    fn keys_around_the_inline_size_are_their_json() {
        for len in [0, 1, 21, 22, 23, 24, 25, 126] {
            let key = "k".repeat(len);
            assert_eq!(EntryKey::new(&key).unwrap().as_str(), format!("\"{key}\""));
        }
        let long = "k".repeat(127); // 129 bytes of JSON
        assert!(EntryKey::new(&long).unwrap().as_str().starts_with('#'));
    }

    fn group() -> impl Strategy<Value = String> {
        "[^{}]{1,24}"
    }

    fn distinct_keys<T: Serialize + PartialEq + std::fmt::Debug>(
        a: &T,
        b: &T,
    ) -> Result<(), TestCaseError> {
        if a != b {
            prop_assert_ne!(
                EntryKey::new(a).unwrap(),
                EntryKey::new(b).unwrap(),
                "{:?} and {:?} share a key",
                a,
                b
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn strings_never_share_a_key(a in any::<String>(), b in any::<String>()) {
            distinct_keys(&a, &b)?;
        }

        #[test]
        #[cfg(feature = "http")]
        fn a_string_s_key_is_the_same_without_serde(
            a in any::<String>(),
            path in "[ -~]{0,200}",
        ) {
            // Any text (quotes, backslashes, controls: serde's path), and
            // printable ASCII like an HTTP path, short and past 128 bytes.
            for text in [a.as_str(), path.as_str()] {
                prop_assert_eq!(EntryKey::of_str(text).unwrap(), EntryKey::new(text).unwrap());
            }
        }

        #[test]
        fn a_key_is_its_json_however_serde_json_writes_it(a in any::<(String, Option<u32>, Vec<u8>)>()) {
            // Short texts stay on the stack, longer ones spill, past 128 bytes they are hashed.
            let (json, key) = (serde_json::to_string(&a).unwrap(), EntryKey::new(&a).unwrap());
            prop_assert_eq!(&key, &EntryKey::of_json(&json));
            if json.len() <= MAX_READABLE_KEY {
                prop_assert_eq!(key.as_str(), json.as_str());
            }
        }

        #[test]
        fn numbers_never_share_a_key(a in any::<i64>(), b in any::<i64>()) {
            distinct_keys(&a, &b)?;
        }

        #[test]
        fn tuples_and_options_never_share_a_key(
            a in any::<(String, Option<u32>, Vec<u8>)>(),
            b in any::<(String, Option<u32>, Vec<u8>)>(),
        ) {
            distinct_keys(&a, &b)?;
        }

        #[test]
        fn nested_structs_never_share_a_key(a in nested(), b in nested()) {
            distinct_keys(&a, &b)?;
        }

        #[test]
        fn near_misses_never_share_a_key(s in "[a-z:{}*, ]{0,200}", i in 0usize..200) {
            // the same text split differently, and one character changed
            let cut = i.min(s.len());
            let (head, tail) = s.split_at(cut);
            distinct_keys(&(head.to_owned(), tail.to_owned()), &(s.clone(), String::new()))?;
            let mut changed = s.clone().into_bytes();
            if let Some(byte) = changed.get_mut(cut) {
                *byte = if *byte == b'a' { b'b' } else { b'a' };
            }
            distinct_keys(&s, &String::from_utf8(changed).unwrap())?;
        }

        #[test]
        fn evicting_a_group_never_touches_another(g1 in group(), g2 in group(), key in any::<u32>()) {
            prop_assume!(g1 != g2);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            runtime.block_on(async {
                let cache = crate::Cache::in_memory();
                cache.set(&g1, &key, &1u8, None).await.unwrap();
                cache.set(&g2, &key, &2u8, None).await.unwrap();
                cache.evict_group(&g1).await.unwrap();
                assert_eq!(cache.get::<u8>(&g1, &key).await.unwrap(), None);
                assert_eq!(cache.get::<u8>(&g2, &key).await.unwrap(), Some(2), "{g2:?} lost its entry when {g1:?} was evicted");
            });
        }
    }

    #[test]
    fn non_finite_floats_are_neither_null_nor_each_other() {
        let key = |value: &dyn erased_serde::Serialize| EntryKey::new(value).unwrap();
        let keys = [
            key(&f64::NAN),
            key(&f64::INFINITY),
            key(&f64::NEG_INFINITY),
            key(&f32::NAN),
            key(&None::<u8>),
            key(&()),
            key(&1.5f64),
        ];
        let texts: Vec<&str> = keys.iter().map(EntryKey::as_str).collect();
        assert_eq!(
            texts,
            ["NaN", "Infinity", "-Infinity", "NaN", "null", "null", "1.5"]
        );
        let nested = (Some(f64::NAN), None::<u8>, vec![f64::INFINITY, 2.0]);
        assert_eq!(key(&nested).as_str(), "[NaN,null,[Infinity,2.0]]");
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("low", f64::NEG_INFINITY);
        fields.insert("none", f64::NAN);
        assert_eq!(key(&fields).as_str(), r#"{"low":-Infinity,"none":NaN}"#);
        assert_eq!(key_json(&(f64::NAN, ())).unwrap(), "[NaN,null]");
        // A float serde_json refuses (a map key) leaves no token behind.
        let mut refused = std::collections::HashMap::new();
        refused.insert(ordered(f64::NAN), 1);
        assert!(EntryKey::new(&refused).is_err());
        assert_eq!(key(&None::<u8>).as_str(), "null");
    }

    #[test]
    fn negative_zero_is_zero() {
        let key = |value: &dyn erased_serde::Serialize| EntryKey::new(value).unwrap();
        assert_eq!(key(&-0.0f64), key(&0.0f64));
        assert_eq!(key(&(-0.0f32, "a")), key(&(0.0f32, "a")));
        assert_eq!(key(&Some(-0.0f64)).as_str(), "0.0");
        let map = |zero: f64| std::collections::HashMap::from([(ordered(zero), zero)]);
        assert_eq!(key(&map(-0.0)), key(&map(0.0)));
        assert_ne!(key(&-1.0f64), key(&1.0f64));
        assert_eq!(key(&(-0.0f64, f64::NAN)), key(&(0.0f64, f64::NAN)));
    }

    /// A float as a map key.
    #[derive(PartialEq, Eq, Hash, Serialize)]
    struct Ordered(#[serde(serialize_with = "as_f64")] u64);

    fn ordered(value: f64) -> Ordered {
        Ordered(value.to_bits())
    }

    fn as_f64<S: serde::Serializer>(bits: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(f64::from_bits(*bits))
    }

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
