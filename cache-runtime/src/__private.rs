//! What the attribute expansions call: a thin door to the flows. Not a
//! public API: names and signatures change without notice. What runs
//! behind it is documented in `flow`.

use std::collections::HashMap;
use std::sync::LazyLock;

use parking_lot::Mutex;
use serde::Serialize;

pub use crate::entry::shared::{Keep, KeepNothing, KeepProbe};
use crate::entry::EntryKey;
pub use crate::flow::each::{cached_each, Bulk};
pub use crate::flow::evict::{evict, Target};
pub use crate::flow::fail_safe::{DescribeDisplay, DescribeOther, Failed};
pub use crate::flow::policy::Policy;
pub use crate::flow::put::{put, put_each};
pub use crate::flow::read::{cached, cached_owned};
pub use crate::flow::returns::{
    CacheValue, Kind, OptionKind, PlainKind, PlainProbe, Probe, ResultKind, ResultWithErrKind,
};
use crate::{Cache, Error};

pub use std::time::Duration as StdDuration;

/// The group of a `#[cached]` without `group = ...`, from the `type_name` of
/// a closure in its body: the function's path as the compiler prints it, with
/// the module, a method's self type and trait, and a generic function's type
/// arguments (`app::Users::get`, `app::<app::Pg as app::Store>::load`,
/// `app::parse<u64>`). No two functions, nor two instantiations of one, share
/// it.
pub fn default_group(closure: &'static str) -> &'static str {
    let mut name = closure;
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    if name.contains(['{', '}']) {
        // A closure among the type arguments: braces would end the hash tag.
        return without_braces(name);
    }
    name
}

/// `name` with its braces made parentheses, made once per name.
fn without_braces(name: &'static str) -> &'static str {
    static NAMES: LazyLock<Mutex<HashMap<&'static str, &'static str>>> =
        LazyLock::new(Mutex::default);
    let mut names = NAMES.lock();
    names.entry(name).or_insert_with(|| {
        let replaced = name.replace('{', "(").replace('}', ")");
        Box::leak(replaced.into_boxed_str())
    })
}

/// The cache for an attribute without `cache = ...`.
pub fn current() -> Cache {
    crate::cache::ambient::current()
}

/// The cache named by `cache = expr`.
pub fn handle(cache: &Cache) -> Cache {
    cache.clone()
}

/// An argument that is part of a default key. The diagnostic below is what a
/// user sees for an argument that is not `Serialize`, spanned on it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is part of the cache key but does not implement `serde::Serialize`",
    label = "this argument is part of the cache key",
    note = "add this argument's name to `skip(...)` to leave it out of the key, or choose the key with `key = ...`"
)]
pub trait KeyPart {
    /// The argument as a type-erased key part, so that the tuple of parts is
    /// `Serialize` whatever the arguments: one error per argument, not two.
    fn as_key_part(&self) -> &dyn erased_serde::Serialize;
    /// The key of a function whose one argument this is, encoded without
    /// erasure (no virtual call per value).
    fn entry_key(&self) -> Result<EntryKey, Error>;
}

impl<T: Serialize> KeyPart for T {
    fn as_key_part(&self) -> &dyn erased_serde::Serialize {
        self
    }
    fn entry_key(&self) -> Result<EntryKey, Error> {
        EntryKey::new(self)
    }
}

/// Checks (at compile time, spanned on the argument) that an argument can be
/// part of a key.
pub fn key_part<T: KeyPart>(value: &T) -> &dyn erased_serde::Serialize {
    value.as_key_part()
}

/// The key of a function with one key argument, checked as [`key_part`] is.
pub fn key_of<T: KeyPart>(value: &T) -> Result<EntryKey, Error> {
    value.entry_key()
}

/// Encodes the keys of a bulk call (`each = arg`), each once, in the
/// order first seen.
pub fn keys_of<'k, K: Serialize + 'k>(
    keys: impl IntoIterator<Item = &'k K>,
) -> Result<Vec<EntryKey>, Error> {
    let mut out: Vec<EntryKey> = Vec::new();
    for key in keys {
        let key = EntryKey::new(key)?;
        if !out.contains(&key) {
            out.push(key);
        }
    }
    Ok(out)
}

/// Encodes a key value.
pub fn key<K: Serialize + ?Sized>(key: &K) -> Result<EntryKey, Error> {
    EntryKey::new(key)
}

/// The policy of an attribute whose options choose the kind of return value
/// (`result`, `option`, `plain`, `cache_none`, `cache_err`).
pub fn policy<K: Kind<R>, R>(group: &str) -> Policy<'_, K, R>
where
    K::Value: CacheValue,
{
    Policy::new(group)
}

#[cfg(test)]
mod tests {
    use super::default_group;

    #[test]
    fn default_groups_are_the_function_path() {
        assert_eq!(
            default_group("app::<app::Pg as app::Store>::load::{{closure}}::{{closure}}"),
            "app::<app::Pg as app::Store>::load"
        );
        assert_eq!(
            default_group("app::parse<u64>::{{closure}}"),
            "app::parse<u64>"
        );
        let with_closure = default_group("app::run<app::main::{{closure}}>::{{closure}}");
        assert_eq!(with_closure, "app::run<app::main::((closure))>");
        assert!(std::ptr::eq(
            with_closure,
            default_group("app::run<app::main::{{closure}}>::{{closure}}")
        ));
    }
}
