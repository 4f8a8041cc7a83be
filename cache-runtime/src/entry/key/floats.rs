//! Floats in key values: negative zero, and the non-finite floats, which
//! serde_json writes as `null`.
//!
//! `-0.0 == 0.0` in Rust, so an eviction at one must reach the entry stored
//! at the other: both formatters write every zero as `0.0`.
//!
//! `f64::NAN`, `f64::INFINITY` and `f64::NEG_INFINITY` would otherwise share
//! a key with each other and with `None` and `()`. A key whose JSON holds a
//! `null` is written again through [`Floats`], which tells the formatter
//! which `null` stands for which float, and the formatter writes
//! `NaN`, `Infinity` or `-Infinity` there: tokens that no JSON value holds,
//! so the encoding stays injective. Keys without a `null` (nearly all) are
//! written once, as before.

use std::cell::Cell;
use std::io;

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};
use serde_json::ser::{CompactFormatter, Formatter};

thread_local! {
    /// The token for the `null` serde_json is about to write for a
    /// non-finite float: set by [`Floats`] just before, taken by
    /// [`KeyFormatter::write_null`].
    static NON_FINITE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// serde_json's compact output, noting whether it wrote a `null`.
pub(super) struct NullFormatter<'a> {
    pub(super) wrote_null: &'a Cell<bool>,
}

impl Formatter for NullFormatter<'_> {
    fn write_null<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.wrote_null.set(true);
        CompactFormatter.write_null(writer)
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // `-0.0 + 0.0` is `0.0`; every other value is itself.
        CompactFormatter.write_f32(writer, value + 0.0)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        CompactFormatter.write_f64(writer, value + 0.0)
    }
}

/// serde_json's compact output, writing the token [`Floats`] names where
/// serde_json writes `null` for a non-finite float.
struct FloatFormatter;

impl Formatter for FloatFormatter {
    fn write_null<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match NON_FINITE.with(Cell::take) {
            Some(token) => writer.write_all(token.as_bytes()),
            None => CompactFormatter.write_null(writer),
        }
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        CompactFormatter.write_f32(writer, value + 0.0)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        CompactFormatter.write_f64(writer, value + 0.0)
    }
}

/// Writes `key`'s JSON with the non-finite floats named.
pub(super) fn write_named<W: io::Write, K: ?Sized + Serialize>(
    writer: W,
    key: &K,
) -> serde_json::Result<()> {
    NON_FINITE.with(|next| next.set(None));
    let mut json = serde_json::Serializer::with_formatter(writer, FloatFormatter);
    let written = Floats(key).serialize(&mut json);
    // A float that serde_json refused (a map key) leaves its token unused.
    NON_FINITE.with(|next| next.set(None));
    written
}

/// A value whose non-finite floats, at any depth, are told to the formatter.
struct Floats<'a, T: ?Sized>(&'a T);

impl<T: ?Sized + Serialize> Serialize for Floats<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Adapter(serializer))
    }
}

fn token(value: f64) -> Option<&'static str> {
    match value {
        v if v.is_nan() => Some("NaN"),
        v if v == f64::INFINITY => Some("Infinity"),
        v if v == f64::NEG_INFINITY => Some("-Infinity"),
        _ => None,
    }
}

/// A serializer that passes everything on, wrapping what it holds in
/// [`Floats`], and names a non-finite float before passing it on.
struct Adapter<S>(S);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.0.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Adapter<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Adapter<S::SerializeSeq>;
    type SerializeTuple = Adapter<S::SerializeTuple>;
    type SerializeTupleStruct = Adapter<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Adapter<S::SerializeTupleVariant>;
    type SerializeMap = Adapter<S::SerializeMap>;
    type SerializeStruct = Adapter<S::SerializeStruct>;
    type SerializeStructVariant = Adapter<S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        NON_FINITE.with(|next| next.set(token(f64::from(v))));
        self.0.serialize_f32(v)
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        NON_FINITE.with(|next| next.set(token(v)));
        self.0.serialize_f64(v)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Floats(v))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Floats(v))
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Floats(v))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Adapter)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Adapter)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Adapter)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let inner = self.0.serialize_tuple_variant(name, index, variant, len);
        inner.map(Adapter)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Adapter)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Adapter)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let inner = self.0.serialize_struct_variant(name, index, variant, len);
        inner.map(Adapter)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound serializers: each element wrapped in [`Floats`].
macro_rules! compound {
    ($($trait:ident { $($method:ident($($name:ident: $ty:ty),*));* })*) => {$(
        impl<C: $trait> $trait for Adapter<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            $(fn $method<T: ?Sized + Serialize>(&mut self, $($name: $ty,)* value: &T) -> Result<(), C::Error> {
                self.0.$method($($name,)* &Floats(value))
            })*
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    )*};
}

compound! {
    SerializeSeq { serialize_element() }
    SerializeTuple { serialize_element() }
    SerializeTupleStruct { serialize_field() }
    SerializeTupleVariant { serialize_field() }
    SerializeMap { serialize_key(); serialize_value() }
    SerializeStruct { serialize_field(key: &'static str) }
    SerializeStructVariant { serialize_field(key: &'static str) }
}
