//! Values that count how often they are decoded: one that can be cloned
//! (hits keep it decoded) and one that cannot (decoded on every hit).
#![allow(dead_code)] // each test binary uses a part of this module

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `Clone` value; `DECODED` counts its decodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Cloned(pub u64);

/// A value without `Clone`; `OPAQUE_DECODED` counts its decodes.
#[derive(Debug, PartialEq)]
pub struct Opaque(pub u64);

pub static DECODED: AtomicUsize = AtomicUsize::new(0);
pub static OPAQUE_DECODED: AtomicUsize = AtomicUsize::new(0);

pub fn decoded() -> usize {
    DECODED.load(Ordering::SeqCst)
}

pub fn opaque_decoded() -> usize {
    OPAQUE_DECODED.load(Ordering::SeqCst)
}

impl Serialize for Cloned {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cloned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Cloned)
    }
}

impl Serialize for Opaque {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OPAQUE_DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Opaque)
    }
}
