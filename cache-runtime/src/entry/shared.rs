//! Envelopes as hits hand them over, shared rather than copied: the
//! in-memory backend's entries, the local tier's copies and the readers of
//! one batched read all hold one [`Kept`]. It keeps the value its first
//! reader opened it to, so that the next hit of a `Clone` value clones it instead of decoding
//! the bytes again.
//!
//! A kept value is only handed to a reader that opens envelopes the same way
//! (the same opener, which checks the same type fingerprint) and names the
//! same type, so it is exactly what decoding the bytes would give.

use std::any::Any;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::{Buf, Bytes};

use crate::entry::envelope::{Meta, Opener};

/// An envelope, and the value it was first opened to.
pub(crate) struct Kept {
    /// The envelope, shared: an opener may hand out part of it (a response's
    /// body) without a copy.
    bytes: Bytes,
    opened: OnceLock<Opened>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("bytes", &self.bytes.len())
            .field("opened", &self.opened.get().is_some())
            .finish()
    }
}

/// A value opened from a [`Kept`] envelope, with the opener that made it.
struct Opened {
    by: usize,
    value: Box<dyn Any + Send + Sync>,
}

impl Kept {
    pub(crate) fn new(bytes: Vec<u8>) -> Arc<Self> {
        Self::after(bytes, 0)
    }

    /// The envelope in `bytes` after their first `start` bytes (a batched
    /// read's generation), which are not copied away.
    pub(crate) fn after(bytes: Vec<u8>, start: usize) -> Arc<Self> {
        let mut bytes = Bytes::from(bytes);
        bytes.advance(start.min(bytes.len()));
        Arc::new(Kept {
            bytes,
            opened: OnceLock::new(),
        })
    }

    #[inline]
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The kept value, when `reader` opens envelopes the way it was opened
    /// and keeps values of its type.
    pub(crate) fn opened<V>(&self, reader: &Reader<V>) -> Option<(V, Meta)> {
        let keep = reader.keep.as_ref()?;
        let opened = self.opened.get()?;
        if opened.by != reader.open as usize {
            return None;
        }
        (keep.take)(opened.value.as_ref())
    }

    /// Keeps what `reader` opened these bytes to, unless a value is kept
    /// already.
    pub(crate) fn keep<V>(&self, reader: &Reader<V>, opened: &(V, Meta)) {
        if let Some(keep) = &reader.keep {
            let _ = self.opened.set(Opened {
                by: reader.open as usize,
                value: (keep.boxed)(opened),
            });
        }
    }
}

/// How a reader opens envelopes, and keeps what it opened when its values
/// can be cloned.
pub(crate) struct Reader<V> {
    pub(crate) open: Opener<V>,
    pub(crate) keep: Option<Keep<V>>,
}

/// How opened values of one type are kept and cloned out again, made where
/// the type is known to be `Clone + Send + Sync + 'static` (the code that
/// uses it is generic over types that need not be).
pub struct Keep<V> {
    boxed: fn(&(V, Meta)) -> Box<dyn Any + Send + Sync>,
    take: fn(&(dyn Any + Send + Sync)) -> Option<(V, Meta)>,
}

impl<V> Clone for Keep<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Keep<V> {}

/// Tells whether a cached value can be kept, by method resolution on its
/// type: `KeepProbe::<V>::NEW.keep()` finds the inherent method below when
/// `V: Clone + Send + Sync + 'static`, and otherwise, through `Deref`, the one
/// of [`KeepNothing`]. (A type parameter is never kept, whatever it stands
/// for.)
pub struct KeepProbe<V>(KeepNothing<V>);

/// The fallback of [`KeepProbe`]: values that are decoded on every hit.
pub struct KeepNothing<V>(PhantomData<fn() -> V>);

impl<V> KeepProbe<V> {
    /// The probe for `V`.
    pub const NEW: Self = KeepProbe(KeepNothing(PhantomData));
}

impl<V: Clone + Send + Sync + 'static> KeepProbe<V> {
    /// A value that can be kept, and cloned out on a hit.
    pub fn keep(&self) -> Option<Keep<V>> {
        Some(Keep {
            boxed: |opened| Box::new(opened.clone()),
            take: |value| value.downcast_ref::<(V, Meta)>().cloned(),
        })
    }
}

impl<V> KeepNothing<V> {
    /// A value that is decoded on every hit.
    pub fn keep(&self) -> Option<Keep<V>> {
        None
    }
}

impl<V> Deref for KeepProbe<V> {
    type Target = KeepNothing<V>;
    fn deref(&self) -> &KeepNothing<V> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::entry::codec::ValueCodec::Json;
    use crate::entry::envelope;

    struct NotClone;

    #[test]
    fn only_clone_values_are_kept() {
        assert!(KeepProbe::<String>::NEW.keep().is_some());
        assert!(KeepProbe::<NotClone>::NEW.keep().is_none());
        fn generic<T: Clone>() -> bool {
            KeepProbe::<T>::NEW.keep().is_some()
        }
        assert!(!generic::<String>(), "a type parameter is never kept");
    }

    #[test]
    fn a_kept_value_goes_to_readers_that_open_alike() {
        let bytes = envelope::seal(&Json, &7u32, Duration::ZERO, Duration::from_secs(1)).unwrap();
        let kept = Kept::new(bytes);
        let reader = Reader {
            open: |codec, bytes| envelope::open::<u32>(codec, bytes),
            keep: KeepProbe::<u32>::NEW.keep(),
        };
        assert!(kept.opened(&reader).is_none(), "nothing kept yet");
        let opened = (reader.open)(&Json, kept.bytes()).unwrap();
        kept.keep(&reader, &opened);
        assert_eq!(kept.opened(&reader).map(|(v, _)| v), Some(7));
        // Another opener of the same type (here: of results) is not handed it.
        let results = Reader {
            open: |codec, bytes| envelope::open_result::<u32, String>(codec, bytes),
            keep: KeepProbe::<Result<u32, String>>::NEW.keep(),
        };
        assert!(kept.opened(&results).is_none());
    }
}
