//! Rewriting an annotated function's body in place.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::args::{Args, Attr, Shape, Ttl};

pub(crate) fn expand(attr: Attr, args: Args, mut item: ItemFn) -> syn::Result<TokenStream> {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            format!("#[{}] can only be applied to an `async fn`", attr.name()),
        ));
    }
    for name in &args.skip {
        let exists = sig.inputs.iter().any(|arg| match arg {
            FnArg::Typed(pat) => matches!(&*pat.pat, Pat::Ident(p) if p.ident == *name),
            FnArg::Receiver(_) => false,
        });
        if !exists {
            return Err(syn::Error::new(
                name.span(),
                format!("no parameter named `{name}` to skip"),
            ));
        }
    }
    if let (Some(all), Some(key)) = (args.all, &args.key) {
        let mut error = syn::Error::new(all, "`all` evicts the whole group and takes no `key`");
        error.combine(syn::Error::new_spanned(key, "remove this `key` or `all`"));
        return Err(error);
    }
    let ret: Type = match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };
    if attr == Attr::Put && is_unit(&ret) {
        return Err(syn::Error::new(
            match &sig.output {
                ReturnType::Type(_, ty) => ty.span(),
                ReturnType::Default => sig.ident.span(),
            },
            "#[cache_put] stores the function's return value, but this function returns `()`; use #[cache_evict] to invalidate instead",
        ));
    }
    if let Some((span, _)) = &args.stale_while_revalidate {
        check_owned_arguments(sig, *span)?;
    }
    let shape = args.shape.unwrap_or_else(|| shape_of(&ret));
    if let Some(span) = args.cache_none {
        if shape != Shape::Option {
            return Err(syn::Error::new(
                span,
                "`cache_none` needs a function returning `Option<T>`",
            ));
        }
    }
    if args.none_ttl.is_some() && args.cache_none.is_none() {
        return Err(syn::Error::new(
            Span::call_site(),
            "`none_ttl` needs `cache_none`",
        ));
    }
    let group = match (&args.group, attr) {
        (Some(group), _) => group.to_token_stream(),
        (None, Attr::Cached) => {
            let name = sig.ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #name))
        }
        (None, _) => {
            return Err(syn::Error::new(
                Span::call_site(),
                format!(
                "#[{}] needs `group = \"...\"`: the group of the #[cached] functions it updates",
                attr.name()
            ),
            ))
        }
    };

    let krate = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::cache_runtime), ToTokens::to_token_stream);
    let private = quote!(#krate::__private);
    let kind = match shape {
        Shape::Result => quote!(#private::ResultKind),
        Shape::Option => quote!(#private::OptionKind),
        Shape::Plain => quote!(#private::PlainKind),
    };
    let cache = match &args.cache {
        Some(expr) => quote!(#private::handle(#expr)),
        None => quote!(#private::current()),
    };
    let block = &item.block;
    let body = quote!(async move #block);

    let call = match attr {
        Attr::Evict => {
            let target = match args.all {
                Some(_) => quote!(#private::Target::All),
                None => {
                    let key = key_expr(&private, &args, sig)?;
                    quote!(#private::Target::Key(#key))
                }
            };
            let before = args.before;
            quote! {
                #private::evict::<#kind, #ret, _>(#cache, #group, #target, #before, #body).await
            }
        }
        Attr::Cached | Attr::Put => {
            let key = key_expr(&private, &args, sig)?;
            let mut policy = quote!(#private::Policy::<#kind, #ret>::new(#group));
            if let Some(ttl) = &args.ttl {
                let ttl = duration(&private, ttl);
                policy.extend(quote!(.ttl(#ttl)));
            }
            if args.cache_none.is_some() {
                policy.extend(quote!(.cache_none()));
            }
            if let Some(ttl) = &args.none_ttl {
                let ttl = duration(&private, ttl);
                policy.extend(quote!(.none_ttl(#ttl)));
            }
            if let Some(unless) = &args.unless {
                policy.extend(quote!(.unless(#unless)));
            }
            if let Some(ttl_fn) = &args.ttl_fn {
                policy.extend(quote!(.ttl_fn(#ttl_fn)));
            }
            if let Some(lock) = &args.lock {
                policy.extend(quote!(.lock(#lock)));
            }
            if let Some(timeout) = &args.lock_timeout {
                let timeout = duration(&private, timeout);
                policy.extend(quote!(.lock_timeout(#timeout)));
            }
            match &args.early {
                Some(Some(beta)) => policy.extend(quote!(.early(#beta as f64))),
                Some(None) => policy.extend(quote!(.early(1.0))),
                None => {}
            }
            if let Some(jitter) = &args.jitter {
                policy.extend(quote!(.jitter(#jitter)));
            }
            let flow = match (&args.stale_while_revalidate, attr) {
                (Some((_, window)), _) => {
                    let window = duration(&private, window);
                    policy.extend(quote!(.stale_while_revalidate(#window)));
                    quote!(cached_swr)
                }
                (None, Attr::Cached) => quote!(cached),
                (None, _) => quote!(put),
            };
            quote! {
                #private::#flow(#cache, #policy, #key, #body).await
            }
        }
    };
    item.block = Box::new(syn::parse_quote!({ #call }));
    Ok(item.into_token_stream())
}

/// The key: `key = expr`, or the arguments left after `self` and `skip`.
fn key_expr(private: &TokenStream, args: &Args, sig: &syn::Signature) -> syn::Result<TokenStream> {
    if let Some(key) = &args.key {
        return Ok(quote!(#private::key(&(#key))));
    }
    let mut parts = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(typed) = arg else { continue };
        let Pat::Ident(pat) = &*typed.pat else {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "a parameter bound to a pattern can't be part of the default key; set `key = ...`",
            ));
        };
        let ident = &pat.ident;
        if args.skip.contains(ident) {
            continue;
        }
        parts.push(quote_spanned!(ident.span()=> #private::key_part(&#ident)));
    }
    Ok(match parts.as_slice() {
        [one] => quote!(#private::key(#one)),
        many => quote!(#private::key(&(#(#many,)*))),
    })
}

fn duration(private: &TokenStream, ttl: &Ttl) -> TokenStream {
    match ttl {
        Ttl::Secs(secs) => quote!(#private::StdDuration::from_secs(#secs)),
        Ttl::Expr(expr) => expr.to_token_stream(),
    }
}

/// `stale_while_revalidate` runs the body in a background task after the
/// call returned, so the body may not borrow anything from the caller.
fn check_owned_arguments(sig: &syn::Signature, option: Span) -> syn::Result<()> {
    let borrowed = sig.inputs.iter().find(|arg| match arg {
        FnArg::Receiver(receiver) => {
            receiver.reference.is_some() || matches!(&*receiver.ty, Type::Reference(_))
        }
        FnArg::Typed(typed) => matches!(&*typed.ty, Type::Reference(_)),
    });
    match borrowed {
        None => Ok(()),
        Some(arg) => {
            let mut error = syn::Error::new_spanned(
                arg,
                "`stale_while_revalidate` refreshes in a background task, so the arguments must be owned: \
                 pass an `Arc` or a clone instead of a reference",
            );
            error.combine(syn::Error::new(option, "background refresh requested here"));
            Err(error)
        }
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// `Result`, `Option` or anything else, by the last path segment.
fn shape_of(ty: &Type) -> Shape {
    let last = match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    match last.as_deref() {
        Some("Result") => Shape::Result,
        Some("Option") => Shape::Option,
        _ => Shape::Plain,
    }
}
