//! The versioned envelope around every stored value.
//!
//! ```text
//! byte 0       format: 1 a value, 3 an error cached by `cache_err`; one
//!              more (2, 4) when dependency stamps follow (`deps::stamps`)
//! bytes 1..9   fingerprint of the value's type ([`fingerprint`]; FNV-1a,
//!              little endian); for an error cached by `cache_err`, of
//!              `Failure<E>`
//! bytes 9..17  when the value was stored, Unix milliseconds
//! bytes 17..21 how long the body took to compute it, milliseconds
//! bytes 21..29 how long the value is fresh from when it was stored, milliseconds
//! bytes 29..37 the length of what follows
//! bytes 37..   the value, encoded by the cache's codec
//! ```
//!
//! Opening an envelope of another version, another type, of the wrong length
//! (truncated: a cut JSON number can still parse) or with a payload the codec
//! rejects is an [`OpenError`], which callers treat as a miss. The timing
//! fields drive early refresh and stale-while-revalidate ([`Meta`]).

mod fingerprint;

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entry::codec::{CodecError, ValueCodec};
use crate::error::Error;

const FORMAT: u8 = 1;
/// The format of an envelope whose value is followed by dependency stamps.
const STAMPED: u8 = 2;
/// The format of an error stored by `cache_err`, which a reader without an
/// error type (an `Option` function, a bulk call's element) reads as absent.
const FAILURE: u8 = 3;
const FAILURE_STAMPED: u8 = 4;
const HEADER: usize = 37;

/// Whether an envelope carries dependency stamps after its value.
#[inline]
pub(crate) fn stamped(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&(STAMPED | FAILURE_STAMPED)))
}

/// Marks an envelope as followed by dependency stamps.
pub(crate) fn mark_stamped(bytes: &mut [u8]) {
    if let Some(format) = bytes.first_mut() {
        *format = match *format {
            FAILURE | FAILURE_STAMPED => FAILURE_STAMPED,
            _ => STAMPED,
        };
    }
}

/// Whether an envelope holds an error stored by `cache_err`.
fn failure(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&(FAILURE | FAILURE_STAMPED)))
}

/// The timing data of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// When it was stored, Unix milliseconds.
    pub(crate) stored_at_ms: u64,
    /// How long the body took to compute it.
    pub(crate) load_ms: u32,
    /// How long it is fresh after `stored_at_ms`.
    pub(crate) fresh_ms: u64,
}

impl Meta {
    /// Milliseconds since the value was stored.
    pub(crate) fn age_ms(&self) -> u128 {
        u128::from(now_ms().saturating_sub(self.stored_at_ms))
    }

    /// Milliseconds from now until the value stops being fresh (negative once
    /// it is stale).
    pub(crate) fn fresh_for_ms(&self) -> i128 {
        i128::from(self.stored_at_ms) + i128::from(self.fresh_ms) - i128::from(now_ms())
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a stored entry could not be read back.
#[derive(Debug)]
pub(crate) enum OpenError {
    TooLarge(usize),
    Truncated(usize),
    Version(u8),
    /// Stored for another type than the one named, which read it.
    Type(&'static str),
    Codec(CodecError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::TooLarge(len) => write!(
                f,
                "entry of {len} bytes is larger than the maximum value size"
            ),
            OpenError::Truncated(len) => {
                write!(f, "entry of {len} bytes is shorter than its header")
            }
            OpenError::Version(v) => {
                write!(
                    f,
                    "entry has format {v}, expected {FORMAT} to {FAILURE_STAMPED}"
                )
            }
            OpenError::Type(reader) => {
                write!(f, "entry was stored for another type than `{reader}`")
            }
            OpenError::Codec(e) => write!(f, "entry does not decode: {e}"),
        }
    }
}

/// How a reader opens an envelope: [`open`] for a type, or [`open_result`].
///
/// It gets the envelope as shared [`Bytes`](bytes::Bytes), so that it can
/// hand out part of it without a copy.
pub(crate) type Opener<V> = fn(&ValueCodec, &bytes::Bytes) -> Result<(V, Meta), OpenError>;

/// How a writer seals a value: [`seal`], or [`seal_error`] for an error.
pub(crate) type Sealer<V> = fn(&ValueCodec, &V, Duration, Duration) -> Result<Vec<u8>, Error>;

/// Encodes `value` in an envelope.
pub(crate) fn seal<T: Serialize>(
    codec: &ValueCodec,
    value: &T,
    load: Duration,
    fresh: Duration,
) -> Result<Vec<u8>, Error> {
    seal_as(fingerprint::sealed::<T>(), codec, value, load, fresh)
}

/// Marks an error stored by `cache_err` apart from a value of the same type.
struct Failure<E>(PhantomData<E>);

/// Encodes an error selected by `cache_err` in an envelope: its own
/// fingerprint keeps it apart from values, so a reader that does not cache
/// errors takes it for another type (a miss).
pub(crate) fn seal_error<E: Serialize>(
    codec: &ValueCodec,
    error: &E,
    load: Duration,
    fresh: Duration,
) -> Result<Vec<u8>, Error> {
    let mut bytes = seal_as(
        fingerprint::sealed::<Failure<E>>(),
        codec,
        error,
        load,
        fresh,
    )?;
    bytes[0] = FAILURE;
    Ok(bytes)
}

fn seal_as<T: Serialize>(
    fingerprint: u64,
    codec: &ValueCodec,
    value: &T,
    load: Duration,
    fresh: Duration,
) -> Result<Vec<u8>, Error> {
    let payload = codec.encode(value).map_err(|e| Error::Encode {
        what: "value",
        message: e.to_string(),
    })?;
    Ok(frame(fingerprint, &payload, load, fresh))
}

/// Frames a payload its writer encoded itself, for a `T` (the HTTP layer's
/// responses, whose bodies are stored as they were sent).
#[cfg(feature = "http")]
pub(crate) fn seal_framed<T: ?Sized>(payload: &[u8], load: Duration, fresh: Duration) -> Vec<u8> {
    frame(fingerprint::sealed::<T>(), payload, load, fresh)
}

/// The payload of an envelope made by [`seal_framed`] for `T`.
#[cfg(feature = "http")]
pub(crate) fn open_framed<T: ?Sized>(bytes: &[u8]) -> Result<(&[u8], Meta), OpenError> {
    let (found, meta, payload) = header(bytes)?;
    if !fingerprint::holds::<T>(found) {
        return Err(OpenError::Type(type_name::<T>()));
    }
    Ok((payload, meta))
}

fn frame(fingerprint: u64, payload: &[u8], load: Duration, fresh: Duration) -> Vec<u8> {
    let stored_at = now_ms();
    let fresh_ms = u64::try_from(fresh.as_millis()).unwrap_or(u64::MAX);
    let load_ms = u32::try_from(load.as_millis()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.push(FORMAT);
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    bytes.extend_from_slice(&stored_at.to_le_bytes());
    bytes.extend_from_slice(&load_ms.to_le_bytes());
    bytes.extend_from_slice(&fresh_ms.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Decodes a value and its timing data from an envelope made by [`seal`] for
/// the same type.
pub(crate) fn open<T: DeserializeOwned>(
    codec: &ValueCodec,
    bytes: &[u8],
) -> Result<(T, Meta), OpenError> {
    let (found, meta, payload) = header(bytes)?;
    if !fingerprint::holds::<T>(found) {
        return Err(OpenError::Type(type_name::<T>()));
    }
    let value = codec.decode(payload).map_err(OpenError::Codec)?;
    Ok((value, meta))
}

/// Decodes an envelope made by [`seal`] for `T` as `Ok`, or one made by
/// [`seal_error`] for `E` as `Err`.
pub(crate) fn open_result<T: DeserializeOwned, E: DeserializeOwned>(
    codec: &ValueCodec,
    bytes: &[u8],
) -> Result<(Result<T, E>, Meta), OpenError> {
    let (found, meta, payload) = header(bytes)?;
    let value = if fingerprint::holds::<T>(found) {
        Ok(codec.decode(payload).map_err(OpenError::Codec)?)
    } else if fingerprint::holds::<Failure<E>>(found) {
        Err(codec.decode(payload).map_err(OpenError::Codec)?)
    } else {
        return Err(OpenError::Type(type_name::<Result<T, E>>()));
    };
    Ok((value, meta))
}

/// Encodes an `Option<T>`: `Some` as the `T` it holds, so that readers of
/// `T` (a function returning `T`, a bulk call's element) share it; `None` as
/// an absent `Option<T>`.
pub(crate) fn seal_option<T: Serialize>(
    codec: &ValueCodec,
    value: &Option<T>,
    load: Duration,
    fresh: Duration,
) -> Result<Vec<u8>, Error> {
    match value {
        Some(present) => seal(codec, present, load, fresh),
        None => seal(codec, value, load, fresh),
    }
}

/// Decodes an envelope made by [`seal_option`], or by [`seal`] for `T` or
/// for `Option<T>`; an error stored by `cache_err` (a function of the same
/// group that returns a `Result`: its not-found, say) is absent.
pub(crate) fn open_option<T: DeserializeOwned>(
    codec: &ValueCodec,
    bytes: &[u8],
) -> Result<(Option<T>, Meta), OpenError> {
    let (found, meta, payload) = header(bytes)?;
    let value = if fingerprint::holds::<T>(found) {
        Some(codec.decode(payload).map_err(OpenError::Codec)?)
    } else if fingerprint::holds::<Option<T>>(found) {
        codec.decode(payload).map_err(OpenError::Codec)?
    } else if failure(bytes) {
        None
    } else {
        return Err(OpenError::Type(type_name::<Option<T>>()));
    };
    Ok((value, meta))
}

/// What follows the value of a stamped envelope; `None` for another.
pub(crate) fn tail(bytes: &[u8]) -> Option<&[u8]> {
    let (_, _, payload) = header(bytes).ok()?;
    stamped(bytes).then(|| &bytes[HEADER + payload.len()..])
}

/// Checks an envelope's version and length; its fingerprint, timing data
/// and payload.
/// The timing of the envelope `bytes`, if it has a header.
pub(crate) fn timing(bytes: &[u8]) -> Option<Meta> {
    header(bytes).ok().map(|(_, meta, _)| meta)
}

/// A copy of the envelope `bytes`, if its timing is `was`, made fresh for
/// `fresh` from now: the same value, type and dependency stamps.
pub(crate) fn refreshed(bytes: &[u8], was: &Meta, fresh: Duration) -> Option<Vec<u8>> {
    if timing(bytes)? != *was {
        return None;
    }
    let mut copy = bytes.to_vec();
    copy[9..17].copy_from_slice(&now_ms().to_le_bytes());
    let fresh_ms = u64::try_from(fresh.as_millis()).unwrap_or(u64::MAX);
    copy[21..29].copy_from_slice(&fresh_ms.to_le_bytes());
    Some(copy)
}

fn header(bytes: &[u8]) -> Result<(u64, Meta, &[u8]), OpenError> {
    if bytes.len() < HEADER {
        return Err(OpenError::Truncated(bytes.len()));
    }
    if !(FORMAT..=FAILURE_STAMPED).contains(&bytes[0]) {
        return Err(OpenError::Version(bytes[0]));
    }
    let field = |range: std::ops::Range<usize>| {
        let mut le = [0u8; 8];
        le[..range.len()].copy_from_slice(&bytes[range]);
        u64::from_le_bytes(le)
    };
    let len = usize::try_from(field(29..37)).unwrap_or(usize::MAX);
    let whole = if stamped(bytes) {
        len <= bytes.len() - HEADER
    } else {
        len == bytes.len() - HEADER
    };
    if !whole {
        return Err(OpenError::Truncated(bytes.len()));
    }
    let meta = Meta {
        stored_at_ms: field(9..17),
        load_ms: u32::try_from(field(17..21)).unwrap_or(u32::MAX),
        fresh_ms: field(21..29),
    };
    Ok((field(1..9), meta, &bytes[HEADER..HEADER + len]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::codec::ValueCodec::Json;

    #[test]
    fn round_trip() {
        let bytes = seal(
            &Json,
            &vec![1u32, 2],
            Duration::from_millis(5),
            Duration::from_secs(60),
        )
        .unwrap();
        let (value, meta) = open::<Vec<u32>>(&Json, &bytes).unwrap();
        assert_eq!(value, vec![1, 2]);
        assert_eq!((meta.load_ms, meta.fresh_ms), (5, 60_000));
        assert!((59_000..=60_000).contains(&meta.fresh_for_ms()));
    }

    #[test]
    fn another_type_truncation_and_garbage_are_errors() {
        let bytes = seal(&Json, &1u32, Duration::ZERO, Duration::ZERO).unwrap();
        assert!(matches!(
            open::<String>(&Json, &bytes),
            Err(OpenError::Type(_))
        ));
        assert!(matches!(
            open::<u32>(&Json, &bytes[..10]),
            Err(OpenError::Truncated(10))
        ));
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            open::<u32>(&Json, &other),
            Err(OpenError::Version(9))
        ));
        let ten = seal(&Json, &10u32, Duration::ZERO, Duration::ZERO).unwrap();
        let cut = &ten[..ten.len() - 1]; // "1": still a number
        assert!(matches!(
            open::<u32>(&Json, cut),
            Err(OpenError::Truncated(_))
        ));
        let mut garbage = bytes[..HEADER].to_vec();
        garbage.extend_from_slice(b"{not json");
        garbage[29..37].copy_from_slice(&9u64.to_le_bytes());
        assert!(matches!(
            open::<u32>(&Json, &garbage),
            Err(OpenError::Codec(_))
        ));
    }

    #[test]
    fn a_present_option_is_stored_as_its_value_and_an_absent_one_apart() {
        let some = seal_option(&Json, &Some(7u32), Duration::ZERO, Duration::ZERO).unwrap();
        let none = seal_option(&Json, &None::<u32>, Duration::ZERO, Duration::ZERO).unwrap();
        assert_eq!(open::<u32>(&Json, &some).unwrap().0, 7);
        assert!(matches!(open::<u32>(&Json, &none), Err(OpenError::Type(_))));
        let opened = |bytes| open_option::<u32>(&Json, bytes).map(|(v, _)| v);
        assert_eq!(opened(&some).unwrap(), Some(7));
        assert_eq!(opened(&none).unwrap(), None);
        let plain = seal(&Json, &8u32, Duration::ZERO, Duration::ZERO).unwrap();
        let wrapped = seal(&Json, &Some(9u32), Duration::ZERO, Duration::ZERO).unwrap();
        assert_eq!(opened(&plain).unwrap(), Some(8));
        assert_eq!(opened(&wrapped).unwrap(), Some(9));
        let nested =
            seal_option(&Json, &Some(None::<u32>), Duration::ZERO, Duration::ZERO).unwrap();
        let absent = open_option::<Option<u32>>(&Json, &nested).unwrap().0;
        assert_eq!(absent, Some(None));
        let other = seal(&Json, &"x".to_owned(), Duration::ZERO, Duration::ZERO).unwrap();
        assert!(matches!(opened(&other), Err(OpenError::Type(_))));
    }

    #[test]
    fn cached_errors_are_apart_from_values_of_the_same_type() {
        let value = seal(&Json, &"ok".to_owned(), Duration::ZERO, Duration::ZERO).unwrap();
        let error = seal_error(&Json, &"gone".to_owned(), Duration::ZERO, Duration::ZERO).unwrap();
        let opened = |bytes| open_result::<String, String>(&Json, bytes).map(|(v, _)| v);
        assert_eq!(opened(&value).unwrap(), Ok("ok".to_owned()));
        assert_eq!(opened(&error).unwrap(), Err("gone".to_owned()));
        assert!(matches!(
            open::<String>(&Json, &error),
            Err(OpenError::Type(_))
        ));
        let other = seal(&Json, &1u8, Duration::ZERO, Duration::ZERO).unwrap();
        assert!(matches!(
            open_result::<String, String>(&Json, &other),
            Err(OpenError::Type(_))
        ));
    }

    #[test]
    fn a_cached_error_is_absent_to_a_reader_without_one_stamped_or_not() {
        let mut error =
            seal_error(&Json, &"gone".to_owned(), Duration::ZERO, Duration::ZERO).unwrap();
        assert!(matches!(open_option::<u32>(&Json, &error), Ok((None, _))));
        assert!(!stamped(&error));
        mark_stamped(&mut error);
        error.push(0); // a stamp's first byte
        assert!(stamped(&error));
        assert!(matches!(open_option::<u32>(&Json, &error), Ok((None, _))));
        let opened = open_result::<u32, String>(&Json, &error).unwrap().0;
        assert_eq!(opened, Err("gone".to_owned()));
        let mut value = seal(&Json, &3u32, Duration::ZERO, Duration::ZERO).unwrap();
        mark_stamped(&mut value);
        assert!(stamped(&value));
        assert_eq!(open_option::<u32>(&Json, &value).unwrap().0, Some(3));
    }
}
