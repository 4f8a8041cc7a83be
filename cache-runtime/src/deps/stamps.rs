//! Stamps at the tail of an envelope. An envelope with stamps says so in
//! its format byte ([`envelope::stamped`]); what follows its payload is, per
//! stamp:
//!
//! ```text
//! u8   kind: 0 a key, 1 a group
//! u16  group length, then the group
//! u32  key length, then the key text (0 for a group)
//! u8   token length, then the token
//! ```
//!
//! (lengths little endian). Envelopes without stamps are unchanged, so a
//! hit tells the two apart by one byte.

use super::{Record, Stamp};
use crate::entry::envelope;
use crate::entry::EntryKey;

pub(crate) use envelope::stamped;

/// Appends `stamps` to an envelope made by `envelope::seal`.
pub(crate) fn attach(bytes: &mut Vec<u8>, stamps: &[Stamp]) {
    if stamps.is_empty() {
        return;
    }
    envelope::mark_stamped(bytes);
    for stamp in stamps {
        let (kind, key) = match &stamp.record {
            Record::Key(key) => (0u8, key.as_str()),
            Record::Group => (1u8, ""),
        };
        bytes.push(kind);
        put(bytes, stamp.group.as_bytes(), 2);
        put(bytes, key.as_bytes(), 4);
        put(bytes, stamp.token.as_bytes(), 1);
    }
}

/// Writes `text` after its length in `width` bytes (texts are bounded well
/// below: groups by their check, keys by hashing, tokens by their makers).
fn put(bytes: &mut Vec<u8>, text: &[u8], width: usize) {
    let len = text.len().to_le_bytes();
    bytes.extend_from_slice(&len[..width]);
    bytes.extend_from_slice(text);
}

/// The stamps of an envelope; `None` when they do not parse (the entry is
/// then a miss).
pub(crate) fn read(bytes: &[u8]) -> Option<Vec<Stamp>> {
    let mut rest = envelope::tail(bytes)?;
    let mut stamps = Vec::new();
    while let Some((&kind, after)) = rest.split_first() {
        rest = after;
        let group = take(&mut rest, 2)?;
        let key = take(&mut rest, 4)?;
        let token = take(&mut rest, 1)?;
        let record = match kind {
            0 => Record::Key(EntryKey::of_text(key)),
            1 => Record::Group,
            _ => return None,
        };
        stamps.push(Stamp {
            group: group.to_owned(),
            record,
            token: token.to_owned(),
        });
    }
    Some(stamps)
}

/// Takes a text written by [`put`] off the front of `rest`.
fn take<'b>(rest: &mut &'b [u8], width: usize) -> Option<&'b str> {
    let mut len = [0u8; 8];
    len[..width].copy_from_slice(rest.get(..width)?);
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    let text = rest.get(width..width + len)?;
    *rest = &rest[width + len..];
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::codec::ValueCodec::Json;
    use std::time::Duration;

    #[test]
    fn stamps_ride_behind_the_value() {
        let mut bytes = envelope::seal(&Json, &5u32, Duration::ZERO, Duration::ZERO).unwrap();
        assert!(!stamped(&bytes));
        let stamps = vec![
            Stamp {
                group: "products".into(),
                record: Record::Key(EntryKey::new(&7u64).unwrap()),
                token: "g/t".into(),
            },
            Stamp {
                group: "lists".into(),
                record: Record::Group,
                token: "u".into(),
            },
        ];
        attach(&mut bytes, &stamps);
        assert!(stamped(&bytes));
        assert_eq!(read(&bytes), Some(stamps));
        assert_eq!(envelope::open::<u32>(&Json, &bytes).unwrap().0, 5);
        let cut = &bytes[..bytes.len() - 1];
        assert_eq!(read(cut), None);
    }
}
