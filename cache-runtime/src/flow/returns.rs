//! How a function's return value maps to what is cached: the kinds of return
//! value, how an expansion tells them apart by the type itself, and what a
//! cached value must be.
//!
//! [`Kind`] is implemented in this crate only, and its `seal`/`open` use the
//! envelope's crate-private types: hence the allowed lint.
#![allow(private_interfaces)]

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entry::codec::ValueCodec;
use crate::entry::envelope::{self, Meta, OpenError};
use crate::flow::policy::Policy;
use crate::Error;

/// A value the attributes can store and read back. The diagnostic is what a
/// user sees for a return value that is not, spanned on the return type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is the value this function caches, but it does not implement `Serialize` and `DeserializeOwned`",
    label = "the cached value's type",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, or cache a type that has them",
    note = "an HTTP response (axum's `Json<T>`, `Html<T>`, `Response`) is not a value to cache: put the attribute on the function that loads the data, and build the response from what it returns"
)]
pub trait CacheValue: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> CacheValue for T {}

/// What a return value holds, for deciding what to store.
pub enum Split<'r, V, I, N> {
    /// A failed call: store nothing, evict nothing.
    Failed,
    /// A value to store; `unless` and `ttl_fn` see the item.
    Value(&'r V, &'r I),
    /// A `None`, or an `Err` under `cache_err`: stored only when selected.
    Negative(&'r V, &'r N),
}

/// Whether a call succeeded, from its return value: all `#[cache_evict]`
/// needs of a kind, which stores nothing.
pub trait Outcome<R> {
    /// Whether the call succeeded (only then is anything stored or evicted).
    fn succeeded(ret: &R) -> bool;
}

/// How a function's return value maps to what is cached.
#[diagnostic::on_unimplemented(
    message = "`{R}` does not fit the options of this cache attribute",
    label = "this option needs another return type",
    note = "`result` and `cache_err` need a `Result<T, E>`, and `cache_err` an `E: Serialize + DeserializeOwned`; `option` and `cache_none` need an `Option<T>`"
)]
pub trait Kind<R>: Outcome<R> {
    /// What is stored.
    type Value;
    /// What `unless` and `ttl_fn` see.
    type Item;
    /// What `cache_none` or `cache_err` select on.
    type Negative;
    /// What the return value holds.
    fn split(ret: &R) -> Split<'_, Self::Value, Self::Item, Self::Negative>;
    /// Rebuilds a return value from a stored one.
    fn rebuild(value: Self::Value) -> R;
    /// Seals a value in an envelope.
    fn seal(
        codec: &ValueCodec,
        value: &Self::Value,
        load: Duration,
        fresh: Duration,
    ) -> Result<Vec<u8>, Error>
    where
        Self::Value: Serialize,
    {
        envelope::seal(codec, value, load, fresh)
    }
    /// Opens an envelope sealed by [`Kind::seal`].
    fn open(codec: &ValueCodec, bytes: &Bytes) -> Result<(Self::Value, Meta), OpenError>
    where
        Self::Value: DeserializeOwned,
    {
        envelope::open(codec, bytes)
    }
}

/// `Result<T, E>`: only `Ok(T)` is stored.
pub struct ResultKind;
/// `Result<T, E>` with `cache_err`: `Ok(T)`, and the errors it selects.
pub struct ResultWithErrKind;
/// `Option<T>`: `Some` is stored, as a `T`; `None` only with `cache_none`.
pub struct OptionKind;
/// Any other type: stored as it is.
pub struct PlainKind;

impl<T, E> Outcome<Result<T, E>> for ResultKind {
    fn succeeded(ret: &Result<T, E>) -> bool {
        ret.is_ok()
    }
}

impl<T, E> Kind<Result<T, E>> for ResultKind {
    type Value = T;
    type Item = T;
    type Negative = E;
    fn split(ret: &Result<T, E>) -> Split<'_, T, T, E> {
        match ret {
            Ok(value) => Split::Value(value, value),
            Err(_) => Split::Failed,
        }
    }
    fn rebuild(value: T) -> Result<T, E> {
        Ok(value)
    }
}

impl<T, E> Outcome<Result<T, E>> for ResultWithErrKind {
    fn succeeded(ret: &Result<T, E>) -> bool {
        ret.is_ok()
    }
}

/// `Ok(T)` is stored as a `T`, so that `#[cache_put]` and readers without
/// `cache_err` share its entries; an error is sealed apart.
impl<T, E> Kind<Result<T, E>> for ResultWithErrKind
where
    T: Serialize + DeserializeOwned,
    E: Serialize + DeserializeOwned,
{
    type Value = Result<T, E>;
    type Item = T;
    type Negative = E;
    fn split(ret: &Result<T, E>) -> Split<'_, Result<T, E>, T, E> {
        match ret {
            Ok(value) => Split::Value(ret, value),
            Err(error) => Split::Negative(ret, error),
        }
    }
    fn rebuild(value: Result<T, E>) -> Result<T, E> {
        value
    }
    fn seal(
        codec: &ValueCodec,
        value: &Result<T, E>,
        load: Duration,
        fresh: Duration,
    ) -> Result<Vec<u8>, Error> {
        match value {
            Ok(value) => envelope::seal(codec, value, load, fresh),
            Err(error) => envelope::seal_error(codec, error, load, fresh),
        }
    }
    fn open(codec: &ValueCodec, bytes: &Bytes) -> Result<(Result<T, E>, Meta), OpenError> {
        envelope::open_result(codec, bytes)
    }
}

impl<T> Outcome<Option<T>> for OptionKind {
    fn succeeded(_: &Option<T>) -> bool {
        true
    }
}

/// `Some` is stored as the `T` it holds, in the entries that functions
/// returning `T` and bulk calls read too; `None` is sealed apart.
impl<T> Kind<Option<T>> for OptionKind
where
    T: Serialize + DeserializeOwned,
{
    type Value = Option<T>;
    type Item = T;
    type Negative = ();
    fn split(ret: &Option<T>) -> Split<'_, Option<T>, T, ()> {
        match ret {
            Some(value) => Split::Value(ret, value),
            None => Split::Negative(ret, &()),
        }
    }
    fn rebuild(value: Option<T>) -> Option<T> {
        value
    }
    fn seal(
        codec: &ValueCodec,
        value: &Option<T>,
        load: Duration,
        fresh: Duration,
    ) -> Result<Vec<u8>, Error> {
        envelope::seal_option(codec, value, load, fresh)
    }
    fn open(codec: &ValueCodec, bytes: &Bytes) -> Result<(Option<T>, Meta), OpenError> {
        envelope::open_option(codec, bytes)
    }
}

impl<T> Outcome<T> for PlainKind {
    fn succeeded(_: &T) -> bool {
        true
    }
}

impl<T> Kind<T> for PlainKind {
    type Value = T;
    type Item = T;
    type Negative = ();
    fn split(ret: &T) -> Split<'_, T, T, ()> {
        Split::Value(ret, ret)
    }
    fn rebuild(value: T) -> T {
        value
    }
}

/// Tells the kind of a return type `R` by method resolution on the type
/// itself, so that aliases (`io::Result<T>`, `type ApiResult<T> = Result<T,
/// ApiError>`) are seen through: `Probe::<R>::NEW.cache_policy(group)`
/// finds the inherent method of `Probe<Result<T, E>>` or `Probe<Option<T>>`
/// when `R` is one of those, and otherwise, through `Deref`, the one of
/// [`PlainProbe`]. (A type parameter is plain, whatever it stands for.)
pub struct Probe<R>(PlainProbe<R>);

/// The fallback of [`Probe`]: any other type is plain.
pub struct PlainProbe<R>(PhantomData<fn() -> R>);

impl<R> Probe<R> {
    /// The probe for `R`.
    pub const NEW: Self = Probe(PlainProbe(PhantomData));
}

impl<T, E> Probe<Result<T, E>> {
    /// A `Result`: `Ok(T)` is stored. (The bound is on the method, not the
    /// impl, so that a `T` that is not a [`CacheValue`] is an error here
    /// rather than a fall back to plain.)
    pub fn cache_policy<'a>(&self, group: &'a str) -> Policy<'a, ResultKind, Result<T, E>>
    where
        T: CacheValue,
    {
        Policy::new(group)
    }
    /// A `Result`, for `#[cache_evict]`.
    pub fn cache_kind(&self) -> ResultKind {
        ResultKind
    }
}

impl<T> Probe<Option<T>> {
    /// An `Option`.
    pub fn cache_policy<'a>(&self, group: &'a str) -> Policy<'a, OptionKind, Option<T>>
    where
        T: CacheValue,
    {
        Policy::new(group)
    }
    /// An `Option`, for `#[cache_evict]`.
    pub fn cache_kind(&self) -> OptionKind {
        OptionKind
    }
}

impl<R> PlainProbe<R> {
    /// Anything else.
    pub fn cache_policy<'a>(&self, group: &'a str) -> Policy<'a, PlainKind, R>
    where
        R: CacheValue,
    {
        Policy::new(group)
    }
    /// Anything else, for `#[cache_evict]`.
    pub fn cache_kind(&self) -> PlainKind {
        PlainKind
    }
}

impl<R> Deref for Probe<R> {
    type Target = PlainProbe<R>;
    fn deref(&self) -> &PlainProbe<R> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::any::type_name;

    use super::*;

    type ApiResult<T> = Result<T, String>;
    type Maybe = Option<u8>;

    fn kind_of<K>(_: K) -> &'static str {
        type_name::<K>()
    }

    #[test]
    fn the_probe_sees_through_aliases() {
        assert_eq!(
            kind_of(Probe::<ApiResult<u8>>::NEW.cache_kind()),
            type_name::<ResultKind>()
        );
        assert_eq!(
            kind_of(Probe::<std::io::Result<u8>>::NEW.cache_kind()),
            type_name::<ResultKind>()
        );
        assert_eq!(
            kind_of(Probe::<Maybe>::NEW.cache_kind()),
            type_name::<OptionKind>()
        );
        assert_eq!(
            kind_of(Probe::<Vec<u8>>::NEW.cache_kind()),
            type_name::<PlainKind>()
        );
    }

    #[test]
    fn a_type_parameter_is_plain_whatever_it_is_instantiated_with() {
        fn generic<T>() -> &'static str {
            kind_of(Probe::<T>::NEW.cache_kind())
        }
        assert_eq!(generic::<Option<u8>>(), type_name::<PlainKind>());
    }
}
