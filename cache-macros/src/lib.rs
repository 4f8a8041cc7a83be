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
/// See the `cache-runtime` documentation for the options.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Attr::Cached, args, item)
}

/// Invalidate after the body succeeded: one entry, or the whole group with
/// `all`; `before` evicts before the body runs.
#[proc_macro_attribute]
pub fn cache_evict(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Attr::Evict, args, item)
}

/// Write-through: run the body, then store its value under the key.
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
