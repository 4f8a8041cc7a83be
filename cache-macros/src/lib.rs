//! The attribute macros of `cache-runtime`. Depend on `cache-runtime` and use
//! them from there: `use cache_runtime::{cached, cache_evict, cache_put};`.
//!
//! Each attribute rewrites the function's body in place into one call to
//! `cache_runtime::__private`, keeping the signature as written.

mod args;
mod expand;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;

use args::{Args, Attr};

/// Cache-aside read: on a hit return the stored value without running the
/// body; on a miss run the body and store its value.
///
/// ```text
/// #[cached(ttl = 300, group = "products", skip(db))]
/// async fn get_product(db: &Db, id: u64) -> Result<Product, DbError>
/// ```
///
/// Options: `group = "name"` (default: the function's path, with a method's
/// self type and trait and a generic function's type arguments, such as
/// `<app::Pg as app::Store>::load`), `ttl = secs | Duration`, `key = expr`
/// (default: the arguments left after `self` and `skip`), `skip(a, b)`,
/// `cache = &Cache`, `unless = |v| bool`, `ttl_fn = |v| Duration`,
/// `cache_none`, `none_ttl = ...`, `cache_err = |e| bool`, `err_ttl = ...`,
/// `lock` / `lock = false`, `lock_timeout = ...`, `early` / `early = beta`,
/// `jitter = 0.1`, `stale_while_revalidate = ...` (owned arguments only),
/// `result` / `option` / `plain`, `crate = "path"`, `each = ids` (a bulk
/// call returning a map, cached per element). Only `Ok` and `Some`
/// are stored, and `None` with `cache_none`, errors with `cache_err`. The
/// return type is read by its type, aliases included. Works on `async fn`
/// in impls and traits, and on `#[async_trait]` methods. Compiling examples
/// are in the `cache-runtime` crate documentation.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Attr::Cached, args, item)
}

/// Invalidate after the body succeeded: one entry, or the whole group with
/// `all`; `before` evicts before the body runs.
///
/// ```text
/// #[cache_evict(group = "products", skip(db))]
/// async fn delete_product(db: &Db, id: u64) -> Result<(), DbError>
/// ```
///
/// Options: `group = "name"` (required), `key = expr`, `each = ids` (an
/// entry per element), `skip(a, b)`,
/// `all`, `before`, `cache = &Cache`, `result` / `option` / `plain`,
/// `crate = "path"`. An `Err` evicts nothing (unless `before`). Several may
/// be stacked on one function.
#[proc_macro_attribute]
pub fn cache_evict(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Attr::Evict, args, item)
}

/// Write-through: run the body, then store its value under the key.
///
/// ```text
/// #[cache_put(ttl = 300, group = "products", key = id)]
/// async fn rename_product(db: &Db, id: u64, name: String) -> Result<Product, DbError>
/// ```
///
/// Options: `group = "name"` (required), `ttl`, `key = expr`, `each = ids`
/// (a map of elements, put per element), `skip(a, b)`,
/// `cache = &Cache`, `unless`, `ttl_fn`, `cache_none`, `none_ttl`,
/// `result` / `option` / `plain`, `crate = "path"`. An `Err` stores and
/// evicts nothing; a value that is not stored (`unless`, `None`) evicts the
/// old one. Puts that overlap each other leave the last write or nothing.
#[proc_macro_attribute]
pub fn cache_put(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Attr::Put, args, item)
}

fn expand(attr: Attr, args: TokenStream, item: TokenStream) -> TokenStream {
    expand_tokens(attr, args.into(), item.into()).into()
}

fn expand_tokens(attr: Attr, args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let result = syn::parse2::<syn::ItemFn>(item.clone()).and_then(|function| {
        let mut parsed = Args::default();
        let parser = syn::meta::parser(|meta| parsed.parse_one(attr, meta));
        syn::parse::Parser::parse2(parser, args)?;
        expand::expand(attr, parsed, function)
    });
    match result {
        Ok(tokens) => tokens,
        // Keep the function as written so that the user sees this one error,
        // not others caused by a missing function.
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(item);
            tokens
        }
    }
}

#[cfg(test)]
mod snapshots;
