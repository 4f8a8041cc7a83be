//! The attribute macros of `cache-runtime`. Depend on `cache-runtime` and use
//! them from there: `use cache_runtime::{cached, cache_evict, cache_put};`.
//!
//! Each attribute rewrites the function's body in place into one call to
//! `cache_runtime::__private`, keeping the signature as written.

mod args;
mod expand;

use proc_macro::TokenStream;
use quote::ToTokens;

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
    let item_tokens = proc_macro2::TokenStream::from(item.clone());
    let result = syn::parse::<syn::ItemFn>(item).and_then(|function| {
        let mut parsed = Args::default();
        let parser = syn::meta::parser(|meta| parsed.parse_one(attr, meta));
        syn::parse::Parser::parse(parser, args)?;
        expand::expand(attr, parsed, function)
    });
    match result {
        Ok(tokens) => tokens.into(),
        // Keep the function as written so that the user sees this one error,
        // not others caused by a missing function.
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(item_tokens);
            tokens.into_token_stream().into()
        }
    }
}
