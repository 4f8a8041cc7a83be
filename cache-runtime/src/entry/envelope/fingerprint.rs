//! The type fingerprint in an envelope, which keeps a value from being read
//! as another type.
//!
//! It is FNV-1a over the type's name, stable across processes built by the
//! same compiler, which is what a deploy needs to notice a changed type. A
//! value is sealed with the fingerprint of its type's *canonical* name, in
//! which the borrowed and owned forms of a type are one: `&T` is `T`; `str`,
//! `Box<str>` and `Cow<str>` are `String`; `[T]`, `Box<[T]>` and `Cow<[T]>`
//! are `Vec<T>`; `Box<T>`, `Rc<T>` and `Arc<T>` are `T`. Those serialize
//! alike, so `cache.set(g, &k, &"hello", None)` is read back as a `String`.
//!
//! A reader's own fingerprint is compared first: for the owned types that
//! readers are (`DeserializeOwned`), it is nearly always the canonical one,
//! so a hit computes no canonical name.

use std::any::type_name;
use std::borrow::Cow;

/// Whether an envelope sealed with `found` holds a `T`.
pub(super) fn holds<T: ?Sized>(found: u64) -> bool {
    found == fnv(type_name::<T>()) || found == sealed::<T>()
}

/// The fingerprint a `T` is sealed with.
pub(super) fn sealed<T: ?Sized>() -> u64 {
    fnv(&canonical(type_name::<T>()))
}

fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The paths whose one argument a value serializes as.
const TRANSPARENT: [&str; 4] = [
    "alloc::boxed::Box",
    "alloc::rc::Rc",
    "alloc::sync::Arc",
    "alloc::borrow::Cow",
];

/// A type name with its borrowed forms made owned; borrowed when there is
/// nothing to change.
pub(super) fn canonical(name: &str) -> Cow<'_, str> {
    if !name.contains(['&', '[']) && !name.contains("str") && !name.contains("<") {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 16);
    let rest = one_type(name, &mut out);
    out.push_str(rest); // anything not understood, as it is
    match out == name {
        true => Cow::Borrowed(name),
        false => Cow::Owned(out),
    }
}

/// Writes the canonical form of the type at the start of `name` to `out`,
/// and returns what follows it.
fn one_type<'n>(name: &'n str, out: &mut String) -> &'n str {
    if let Some(rest) = name.strip_prefix('&') {
        let rest = skip_lifetime(rest);
        return one_type(rest.strip_prefix("mut ").unwrap_or(rest), out);
    }
    if let Some(rest) = name.strip_prefix('[') {
        let mut element = String::new();
        let rest = one_type(rest, &mut element);
        if let Some(rest) = rest.strip_prefix(']') {
            out.push_str("alloc::vec::Vec<");
            out.push_str(&element);
            out.push('>');
            return rest;
        }
        // An array, `[T; N]`: its length is part of the type.
        let end = rest.find(']').map_or(rest.len(), |at| at + 1);
        out.push('[');
        out.push_str(&element);
        out.push_str(&rest[..end]);
        return &rest[end..];
    }
    if let Some(rest) = name.strip_prefix('(') {
        out.push('(');
        let rest = list(rest, out);
        return match rest.strip_prefix(')') {
            Some(rest) => {
                out.push(')');
                rest
            }
            None => rest,
        };
    }
    let end = name
        .find(['<', '>', ',', ']', ')', ';'])
        .unwrap_or(name.len());
    let (path, rest) = name.split_at(end);
    if path == "str" {
        out.push_str("alloc::string::String");
        return rest;
    }
    let Some(arguments) = rest.strip_prefix('<') else {
        out.push_str(path);
        return rest;
    };
    let mut inner = String::new();
    let after = list(arguments, &mut inner);
    let Some(after) = after.strip_prefix('>') else {
        out.push_str(path);
        out.push('<');
        out.push_str(&inner);
        return after;
    };
    if TRANSPARENT.contains(&path) && !inner.contains(", ") {
        out.push_str(&inner);
    } else {
        out.push_str(path);
        out.push('<');
        out.push_str(&inner);
        out.push('>');
    }
    after
}

/// Writes a list of types separated by `, `, without its lifetimes, and
/// returns what follows it.
fn list<'n>(mut name: &'n str, out: &mut String) -> &'n str {
    let mut first = true;
    loop {
        if name.starts_with([')', '>']) || name.is_empty() {
            return name;
        }
        if name.starts_with('\'') {
            let end = name.find([',', '>']).unwrap_or(name.len());
            name = &name[end..];
        } else {
            if !first {
                out.push_str(", ");
            }
            first = false;
            name = one_type(name, out);
        }
        match name.strip_prefix(", ") {
            Some(rest) => name = rest,
            None => return name,
        }
    }
}

/// `name` without the lifetime it starts with (`'_ str` is `str`).
fn skip_lifetime(name: &str) -> &str {
    match name.strip_prefix('\'') {
        Some(rest) => rest.split_once(' ').map_or(rest, |(_, after)| after),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_forms_are_one() {
        let string = "alloc::string::String";
        for name in [
            "&str",
            "str",
            "alloc::boxed::Box<str>",
            "alloc::borrow::Cow<'_, str>",
            "&'_ str",
            "&alloc::string::String",
            "alloc::sync::Arc<str>",
        ] {
            assert_eq!(canonical(name), string, "{name}");
        }
        let vec = "alloc::vec::Vec<alloc::string::String>";
        for name in [
            "&[&str]",
            "[alloc::string::String]",
            "alloc::boxed::Box<[alloc::string::String]>",
            "alloc::borrow::Cow<'_, [&str]>",
            "alloc::vec::Vec<&str>",
        ] {
            assert_eq!(canonical(name), vec, "{name}");
        }
        assert_eq!(
            canonical("(u8, &str, &mut [u32])"),
            "(u8, alloc::string::String, alloc::vec::Vec<u32>)"
        );
        assert_eq!(
            canonical("std::collections::hash::map::HashMap<&str, core::option::Option<&[u8]>>"),
            "std::collections::hash::map::HashMap<alloc::string::String, \
             core::option::Option<alloc::vec::Vec<u8>>>"
        );
    }

    #[test]
    fn other_types_are_themselves() {
        for name in [
            "u64",
            "alloc::string::String",
            "app::Product",
            "alloc::vec::Vec<app::Product>",
            "[u8; 4]",
            "()",
            "alloc::collections::btree::map::BTreeMap<u64, (i32, bool)>",
            "app::Strange<u8, alloc::string::String>",
            "app::structure::Thing",
        ] {
            assert!(matches!(canonical(name), Cow::Borrowed(_)), "{name}");
            assert_eq!(canonical(name), name);
        }
        assert_eq!(canonical("[&str; 2]"), "[alloc::string::String; 2]");
    }

    #[test]
    fn a_reader_meets_what_its_borrowed_forms_sealed() {
        assert!(holds::<String>(sealed::<&str>()));
        assert!(holds::<String>(sealed::<Box<str>>()));
        assert!(holds::<Box<str>>(sealed::<String>()));
        assert!(holds::<Vec<u32>>(sealed::<&[u32]>()));
        assert!(holds::<std::borrow::Cow<'static, str>>(sealed::<&&str>()));
        assert!(!holds::<String>(sealed::<u32>()));
        assert!(!holds::<Vec<u8>>(sealed::<[u8; 4]>()));
    }
}
