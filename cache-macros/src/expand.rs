//! Rewriting an annotated function's body in place.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Expr, ExprAsync, ExprCall, FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType,
    Stmt, Type, TypeParamBound,
};

use crate::args::{Args, Attr, Shape, Ttl};

/// Where the body to wrap is.
enum Body {
    /// An `async fn`: its block.
    Async,
    /// A function rewritten by `#[async_trait]` (or by another attribute that
    /// kept its shape, such as `#[tracing::instrument]`): the `async` block
    /// its last statement boxes, `Box::pin(async move { .. })`, and where
    /// that statement is.
    Boxed(usize, ExprAsync),
}

pub(crate) fn expand(attr: Attr, args: Args, mut item: ItemFn) -> syn::Result<TokenStream> {
    let (body, ret) = body_and_output(attr, &item)?;
    let sig = &item.sig;
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
    if let Some(each) = &args.each {
        check_each(&args, each, sig)?;
    }
    if let (Some(all), Some(key)) = (args.all, &args.key) {
        let mut error = syn::Error::new(all, "`all` evicts the whole group and takes no `key`");
        error.combine(syn::Error::new_spanned(key, "remove this `key` or `all`"));
        return Err(error);
    }
    check_return(attr, &ret, sig)?;
    if let Some((span, _)) = &args.stale_while_revalidate {
        check_owned_arguments(sig, *span, "`stale_while_revalidate` refreshes")?;
    }
    if let Some((span, _)) = &args.soft_timeout {
        check_owned_arguments(sig, *span, "`soft_timeout` lets the body finish")?;
    }
    if let (Some(ttl), None) = (&args.none_ttl, args.cache_none) {
        return Err(syn::Error::new(
            ttl_span(ttl),
            "`none_ttl` needs `cache_none`",
        ));
    }
    if let (Some(ttl), None) = (&args.err_ttl, &args.cache_err) {
        return Err(syn::Error::new(
            ttl_span(ttl),
            "`err_ttl` needs `cache_err`",
        ));
    }
    let krate = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::cache_runtime), ToTokens::to_token_stream);
    let private = quote!(#krate::__private);
    let group = match (&args.group, attr) {
        (Some(group), _) => group.to_token_stream(),
        // The path of the function, from the type name of a closure in it.
        (None, Attr::Cached) => {
            quote!(#private::default_group(::core::any::type_name_of_val(&|| ())))
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
    let cache = match &args.cache {
        Some(expr) => quote!(#private::handle(#expr)),
        None => quote!(#private::current()),
    };
    let wrapped = match &body {
        Body::Async => {
            let block = &item.block;
            quote!(async move #block)
        }
        Body::Boxed(_, future) => future.to_token_stream(),
    };

    if let (Attr::Cached, Some(each)) = (attr, &args.each) {
        let call = cached_each(&private, &args, each, &ret, &item, &body, &cache, &group)?;
        *item.block = syn::parse_quote!({ #call });
        return Ok(item.into_token_stream());
    }
    if let (Attr::Put, Some(each)) = (attr, &args.each) {
        check_bulk_options(&args, &ret)?;
        let policy = element_policy(&private, &args, &group);
        let keys = syn::Ident::new("__cache_keys", Span::mixed_site());
        let call = quote! {
            let #keys = #private::keys_of(#each.iter());
            #private::put_each(#cache, #policy, #keys, #wrapped).await
        };
        set_body(&mut item, body, call);
        return Ok(item.into_token_stream());
    }

    // The key is made in a statement of its own, so that the temporaries
    // it borrows (`&dyn Serialize` parts, not `Sync`) do not live across the
    // `.await` and make the future `!Send`. Mixed-site: the body can't see it.
    let bound = syn::Ident::new("__cache_key", Span::mixed_site());
    let call = match attr {
        Attr::Evict => {
            let target = match (args.all, &args.each) {
                (Some(_), _) => quote!(#private::Target::All),
                (None, Some(each)) => {
                    quote!(#private::Target::Keys(#private::keys_of(#each.iter())))
                }
                (None, None) => {
                    let key = key_expr(&private, attr, &args, sig)?;
                    quote!(#private::Target::Key(#key))
                }
            };
            let before = args.before;
            let kind = kind(&private, &args, &ret);
            quote! {
                let #bound = #target;
                #private::evict(#cache, #kind, #group, #bound, #before, #wrapped).await
            }
        }
        Attr::Cached | Attr::Put => {
            let key = key_expr(&private, attr, &args, sig)?;
            let mut policy = policy(&private, &args, &ret, &group)?;
            policy.extend(options(&private, &args));
            if attr == Attr::Cached && !may_borrow(&ret) {
                // Hits clone the decoded value when it is `Clone + 'static`
                // (a probe: any other type is decoded on every hit). A type
                // that names a lifetime may not be `'static`: not probed.
                policy.extend(quote!(.keep_values(|values| values.keep())));
            }
            if attr == Attr::Cached && args.fail_safe.is_some() {
                // The error a kept value stands in for, told by its
                // `Display` when it has one (autoref picks that impl first).
                let ret = syn::Ident::new("__cache_ret", Span::mixed_site());
                policy.extend(quote!(.describe_failure(|#ret| {
                    use #private::{DescribeDisplay as _, DescribeOther as _};
                    (&&#private::Failed(#ret)).describe()
                })));
            }
            if let Some((_, window)) = &args.stale_while_revalidate {
                let window = duration(&private, window);
                policy.extend(quote!(.stale_while_revalidate(#window)));
            }
            let owned = args.stale_while_revalidate.is_some() || args.soft_timeout.is_some();
            let flow = match attr {
                Attr::Cached if owned => quote!(cached_owned),
                Attr::Cached => quote!(cached),
                _ => quote!(put),
            };
            quote! {
                let #bound = #key;
                #private::#flow(#cache, #policy, #bound, #wrapped).await
            }
        }
    };
    set_body(&mut item, body, call);
    Ok(item.into_token_stream())
}

/// Puts `call` where the body was.
fn set_body(item: &mut ItemFn, body: Body, call: TokenStream) {
    match body {
        Body::Async => *item.block = syn::parse_quote!({ #call }),
        Body::Boxed(at, _) => {
            item.block.stmts[at] = Stmt::Expr(
                syn::parse_quote!(::std::boxed::Box::pin(async move { #call })),
                None,
            );
        }
    }
}

/// `each = arg` names a parameter that holds keys (`&[K]`, `Vec<K>`,
/// `&Vec<K>`, `HashSet<K>` or `BTreeSet<K>`), and takes neither `key` nor
/// `all`.
fn check_each(args: &Args, each: &syn::Ident, sig: &syn::Signature) -> syn::Result<()> {
    if let Some(key) = &args.key {
        return Err(syn::Error::new_spanned(
            key,
            "`each` names the keys, one entry per element; remove this `key` or `each`",
        ));
    }
    if let Some(all) = args.all {
        return Err(syn::Error::new(
            all,
            "`all` evicts the whole group; remove it or `each`",
        ));
    }
    let Some(ty) = each_type(sig, each) else {
        return Err(syn::Error::new(
            each.span(),
            format!("no parameter named `{each}` to take the keys from"),
        ));
    };
    if !is_key_collection(ty) {
        return Err(syn::Error::new_spanned(
            ty,
            "`each` takes a collection of keys: `&[K]`, `Vec<K>`, `&Vec<K>`, `HashSet<K>` or `BTreeSet<K>`",
        ));
    }
    Ok(())
}

/// The call of a bulk `#[cached(each = ids)]`: the keys collected, and the
/// body as a closure of the missing ones, `ids` rebound to them in the
/// type it was given.
#[allow(clippy::too_many_arguments)]
fn cached_each(
    private: &TokenStream,
    args: &Args,
    each: &syn::Ident,
    ret: &Type,
    item: &ItemFn,
    body: &Body,
    cache: &TokenStream,
    group: &TokenStream,
) -> syn::Result<TokenStream> {
    if let Body::Boxed(..) = body {
        return Err(syn::Error::new(
            each.span(),
            "`each` needs an `async fn` (not one rewritten by `#[async_trait]`)",
        ));
    }
    check_bulk_options(args, ret)?;
    let ty = each_type(&item.sig, each)
        .ok_or_else(|| syn::Error::new(each.span(), "no such parameter"))?;
    let missing = syn::Ident::new("__cache_missing", Span::mixed_site());
    let rebound = match ty {
        Type::Reference(r) => {
            let elem = &r.elem;
            quote!(let #each: &#elem = &#missing;)
        }
        Type::Path(path) if path.path.segments.last().is_some_and(|l| l.ident == "Vec") => {
            quote!(let #each: #ty = #missing;)
        }
        ty => quote!(let #each: #ty = ::std::iter::IntoIterator::into_iter(#missing).collect();),
    };
    let policy = element_policy(private, args, group);
    let block = &item.block;
    let keys = syn::Ident::new("__cache_keys", Span::mixed_site());
    Ok(quote! {
        let #keys = ::std::iter::Iterator::collect::<::std::vec::Vec<_>>(
            ::std::iter::Iterator::cloned(#each.iter()),
        );
        #private::cached_each(#cache, #policy, #keys, move |#missing| async move {
            #rebound
            #block
        })
        .await
    })
}

/// The options a bulk call does not take, and its return type: a map.
fn check_bulk_options(args: &Args, ret: &Type) -> syn::Result<()> {
    let unsupported = [
        ("cache_err", args.cache_err.as_ref().map(|(span, _)| *span)),
        (
            "stale_while_revalidate",
            args.stale_while_revalidate.as_ref().map(|(span, _)| *span),
        ),
        // The body of a bulk call borrows its keys: it cannot go on in the
        // background.
        (
            "soft_timeout",
            args.soft_timeout.as_ref().map(|(span, _)| *span),
        ),
        // Every element is loaded under its lease, and refreshed when it
        // expires: a bulk call has no lock to turn off and nothing to
        // refresh early.
        ("lock", args.lock.as_ref().map(|lock| lock.span)),
        ("early", args.early.as_ref().map(|(span, _)| *span)),
    ];
    for (name, span) in unsupported {
        if let Some(span) = span {
            return Err(syn::Error::new(
                span,
                format!("`{name}` does not apply to a bulk call (`each`)"),
            ));
        }
    }
    if let Some(depends_on) = &args.depends_on {
        return Err(syn::Error::new_spanned(
            depends_on,
            "`depends_on` does not apply to a bulk call (`each`): its elements depend on what its body reads through the cache",
        ));
    }
    if !is_element_map(ret) {
        return Err(syn::Error::new_spanned(
            ret,
            "`each` returns the elements by key: a `HashMap<K, V>` or `BTreeMap<K, V>`, bare or in a `Result`",
        ));
    }
    Ok(())
}

/// The policy of each element of a bulk call.
fn element_policy(private: &TokenStream, args: &Args, group: &TokenStream) -> TokenStream {
    let options = options(private, args);
    quote!(#private::Policy::new(#group) #options)
}

/// The policy's builder calls for the options given.
fn options(private: &TokenStream, args: &Args) -> TokenStream {
    let mut policy = TokenStream::new();
    if let Some(ttl) = &args.ttl {
        let ttl = duration(private, ttl);
        policy.extend(quote!(.ttl(#ttl)));
    }
    if args.cache_none.is_some() {
        policy.extend(quote!(.cache_none()));
    }
    if let Some((_, select)) = &args.cache_err {
        policy.extend(quote!(.cache_err(#select)));
    }
    if let Some(ttl) = args.none_ttl.as_ref().or(args.err_ttl.as_ref()) {
        let ttl = duration(private, ttl);
        policy.extend(quote!(.negative_ttl(#ttl)));
    }
    if let Some(unless) = &args.unless {
        policy.extend(quote!(.unless(#unless)));
    }
    if let Some(ttl_fn) = &args.ttl_fn {
        policy.extend(quote!(.ttl_fn(#ttl_fn)));
    }
    if let Some(depends_on) = &args.depends_on {
        policy.extend(quote!(.depends_on(#depends_on)));
    }
    if let Some(lock) = &args.lock {
        policy.extend(quote!(.lock(#lock)));
    }
    if let Some(timeout) = &args.lock_timeout {
        let timeout = duration(private, timeout);
        policy.extend(quote!(.lock_timeout(#timeout)));
    }
    match &args.early {
        Some((_, Some(beta))) => policy.extend(quote!(.early(#beta as f64))),
        Some((_, None)) => policy.extend(quote!(.early(1.0))),
        None => {}
    }
    if let Some(jitter) = &args.jitter {
        policy.extend(quote!(.jitter(#jitter)));
    }
    if let Some(keep) = &args.fail_safe {
        let keep = duration(private, keep);
        policy.extend(quote!(.fail_safe(#keep)));
    }
    if let Some((_, throttle)) = &args.fail_safe_throttle {
        let throttle = duration(private, throttle);
        policy.extend(quote!(.fail_safe_throttle(#throttle)));
    }
    if let Some((_, timeout)) = &args.soft_timeout {
        let timeout = duration(private, timeout);
        policy.extend(quote!(.soft_timeout(#timeout)));
    }
    policy
}

/// The type of the parameter `name`.
fn each_type<'s>(sig: &'s syn::Signature, name: &syn::Ident) -> Option<&'s Type> {
    sig.inputs.iter().find_map(|arg| match arg {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(pat) if pat.ident == *name => Some(&*typed.ty),
            _ => None,
        },
        FnArg::Receiver(_) => None,
    })
}

/// Whether `ty` is a map of elements, bare or as the first argument of a
/// `Result` (or an alias of one).
fn is_element_map(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    if last.ident == "HashMap" || last.ident == "BTreeMap" {
        return true;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(a) => match a.args.first() {
            Some(GenericArgument::Type(inner)) if last.ident.to_string().ends_with("Result") => {
                is_element_map(inner)
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether `ty` is one of the collections `each` takes.
fn is_key_collection(ty: &Type) -> bool {
    let (ty, by_ref) = match ty {
        Type::Reference(r) => (&*r.elem, true),
        ty => (ty, false),
    };
    match ty {
        Type::Slice(_) => by_ref,
        Type::Path(path) => path.path.segments.last().is_some_and(|last| {
            let one_argument = matches!(
                &last.arguments,
                PathArguments::AngleBracketed(a) if a.args.len() == 1
            );
            let name = last.ident.to_string();
            one_argument
                && (name == "Vec" || (!by_ref && (name == "HashSet" || name == "BTreeSet")))
        }),
        _ => false,
    }
}

/// Where the body is, and the type the function's future returns.
fn body_and_output(attr: Attr, item: &ItemFn) -> syn::Result<(Body, Type)> {
    let sig = &item.sig;
    if sig.asyncness.is_some() {
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => syn::parse_quote_spanned!(sig.ident.span()=> ()),
        };
        return Ok((Body::Async, ret));
    }
    let boxed = item.block.stmts.iter().enumerate().next_back();
    let boxed = boxed.and_then(|(at, stmt)| Some((at, boxed_future(stmt)?)));
    let output = match &sig.output {
        ReturnType::Type(_, ty) => future_output(ty),
        ReturnType::Default => None,
    };
    match (boxed, output) {
        (Some((at, future)), Some(ret)) => Ok((Body::Boxed(at, future.clone()), ret.clone())),
        _ => Err(syn::Error::new(
            sig.fn_token.span,
            format!(
                "#[{}] can only be applied to an `async fn` (in an `#[async_trait]` impl or trait too)",
                attr.name()
            ),
        )),
    }
}

/// The `async` block in `Box::pin(async move { .. })`, the shape of a
/// function rewritten by `#[async_trait]`.
fn boxed_future(stmt: &Stmt) -> Option<&ExprAsync> {
    let Stmt::Expr(Expr::Call(ExprCall { func, args, .. }), None) = stmt else {
        return None;
    };
    let Expr::Path(path) = &**func else {
        return None;
    };
    let segments: Vec<_> = path.path.segments.iter().map(|s| &s.ident).collect();
    match (segments.as_slice(), args.first()) {
        ([.., boxed, pin], Some(Expr::Async(future))) if *boxed == "Box" && *pin == "pin" => {
            Some(future)
        }
        _ => None,
    }
}

/// `R` in a return type such as `Pin<Box<dyn Future<Output = R> + Send>>`.
fn future_output(ty: &Type) -> Option<&Type> {
    let bounds = match ty {
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            return args.args.iter().find_map(|arg| match arg {
                GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
                GenericArgument::Type(inner) => future_output(inner),
                _ => None,
            });
        }
        Type::TraitObject(object) => &object.bounds,
        Type::ImplTrait(object) => &object.bounds,
        Type::Paren(inner) => return future_output(&inner.elem),
        _ => return None,
    };
    bounds.iter().find_map(|bound| match bound {
        TypeParamBound::Trait(bound) => {
            let future = bound.path.segments.last()?;
            if future.ident != "Future" {
                return None;
            }
            let PathArguments::AngleBracketed(args) = &future.arguments else {
                return None;
            };
            args.args.iter().find_map(|arg| match arg {
                GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
                _ => None,
            })
        }
        _ => None,
    })
}

/// The return type must be nameable, and `#[cached]`/`#[cache_put]` need a
/// value to store.
fn check_return(attr: Attr, ret: &Type, sig: &syn::Signature) -> syn::Result<()> {
    struct FindImpl<'a>(Option<&'a syn::TypeImplTrait>);
    impl<'a> Visit<'a> for FindImpl<'a> {
        fn visit_type_impl_trait(&mut self, found: &'a syn::TypeImplTrait) {
            self.0.get_or_insert(found);
        }
    }
    let mut find = FindImpl(None);
    find.visit_type(ret);
    if let Some(opaque) = find.0 {
        let why = match attr {
            Attr::Cached | Attr::Put => {
                "stores the return value and reads it back, so it must name its type"
            }
            Attr::Evict => "tells success from failure by the return type, so it must name it",
        };
        return Err(syn::Error::new_spanned(
            opaque,
            format!(
                "#[{}] {why}; `impl Trait` can't be named. Put the attribute on a function that returns the data (a `Result<Product, DbError>`, say), and build the response from it",
                attr.name()
            ),
        ));
    }
    let unit = matches!(ret, Type::Tuple(t) if t.elems.is_empty());
    let message = match attr {
        _ if !unit => return Ok(()),
        Attr::Evict => return Ok(()),
        Attr::Cached => "#[cached] returns the stored value instead of running the body, but this function returns `()`: a hit would skip its effects. Cache a function that returns the data, or use #[cache_evict] on a write",
        Attr::Put => "#[cache_put] stores the function's return value, but this function returns `()`; use #[cache_evict] to invalidate instead",
    };
    let span = match &sig.output {
        ReturnType::Type(_, ty) if sig.asyncness.is_some() => ty.span(),
        _ => sig.ident.span(),
    };
    Err(syn::Error::new(span, message))
}

/// Whether a type may hold a lifetime: it names one, a reference or `Self`.
fn may_borrow(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Punct(punct) => matches!(punct.as_char(), '\'' | '&'),
            proc_macro2::TokenTree::Ident(ident) => ident == "Self",
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            proc_macro2::TokenTree::Literal(_) => false,
        })
    }
    walk(ty.to_token_stream())
}

/// The policy, for the kind of return value an option asks for, else for the
/// one the type itself has, found by method resolution on it (aliases too).
fn policy(
    private: &TokenStream,
    args: &Args,
    ret: &Type,
    group: &TokenStream,
) -> syn::Result<TokenStream> {
    // Spanned on the option: a return type that does not fit is reported there.
    let forced = |name: &str, span: Span| {
        let kind = syn::Ident::new(name, span);
        let policy = respan(quote!(#private::policy::<#private::#kind, #ret>), span);
        quote_spanned!(span=> #policy(#group))
    };
    let shape_span = Span::call_site();
    let cache_err = args.cache_err.as_ref().map(|(span, _)| *span);
    Ok(match (cache_err, args.cache_none, args.shape) {
        (Some(err), Some(none), _) => {
            let mut error = syn::Error::new(
                err,
                "`cache_err` is for `Result` returns and `cache_none` for `Option` returns: use one",
            );
            error.combine(syn::Error::new(none, "`cache_none` here"));
            return Err(error);
        }
        (Some(span), None, None | Some(Shape::Result)) => forced("ResultWithErrKind", span),
        (None, Some(span), None | Some(Shape::Option)) => forced("OptionKind", span),
        (Some(span), None, Some(_)) | (None, Some(span), Some(_)) => {
            return Err(syn::Error::new(
                span,
                "this option contradicts `result`/`option`/`plain`",
            ))
        }
        (None, None, Some(Shape::Result)) => forced("ResultKind", shape_span),
        (None, None, Some(Shape::Option)) => forced("OptionKind", shape_span),
        (None, None, Some(Shape::Plain)) => forced("PlainKind", shape_span),
        (None, None, None) => {
            // Spanned on the return type: a value that can't be cached is reported there.
            let probe = respan(
                quote!(#private::Probe::<#ret>::NEW.cache_policy),
                ret.span(),
            );
            quote!(#probe(#group))
        }
    })
}

/// The kind of return value `#[cache_evict]` reads: as for [`policy`], but
/// with no bound on the value, which it does not store.
fn kind(private: &TokenStream, args: &Args, ret: &Type) -> TokenStream {
    match args.shape {
        Some(Shape::Result) => quote!(#private::ResultKind),
        Some(Shape::Option) => quote!(#private::OptionKind),
        Some(Shape::Plain) => quote!(#private::PlainKind),
        None => quote!(#private::Probe::<#ret>::NEW.cache_kind()),
    }
}

/// The key: `key = expr`, or the arguments left after `self` and `skip`.
/// A write's default key may not hold more than one argument: keyed by
/// `(id, price)`, it would silently miss the reader's entry at `id`.
fn key_expr(
    private: &TokenStream,
    attr: Attr,
    args: &Args,
    sig: &syn::Signature,
) -> syn::Result<TokenStream> {
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
        parts.push(ident);
    }
    if attr != Attr::Cached && parts.len() > 1 {
        return Err(write_key_error(attr, &parts));
    }
    Ok(match parts.as_slice() {
        [one] => quote_spanned!(one.span()=> #private::key_of(&#one)),
        many => {
            let many = many
                .iter()
                .map(|ident| quote_spanned!(ident.span()=> #private::key_part(&#ident)));
            quote!(#private::key(&(#(#many,)*)))
        }
    })
}

/// The error for a write whose default key would hold several arguments,
/// spanned on the second of them.
fn write_key_error(attr: Attr, parts: &[&syn::Ident]) -> syn::Error {
    let names: Vec<String> = parts.iter().map(ToString::to_string).collect();
    let tuple = format!("({})", names.join(", "));
    let first = &names[0];
    let message = format!(
        "`#[{}]` would key its entry by `{tuple}`, and silently miss a reader's entry \
         keyed by `{first}`; write `key = {first}` or `key = {tuple}`, or `skip(...)` what \
         is not part of the key",
        attr.name(),
    );
    syn::Error::new(parts[1].span(), message)
}

/// `tokens`, every one spanned at `span`, so that an error about the
/// expression they make points there.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(group) = &token {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = inner.into();
            }
            token.set_span(span);
            token
        })
        .collect()
}

fn duration(private: &TokenStream, ttl: &Ttl) -> TokenStream {
    match ttl {
        Ttl::Secs(secs) => quote!(#private::StdDuration::from_secs(#secs)),
        Ttl::Expr(expr) => expr.to_token_stream(),
    }
}

fn ttl_span(ttl: &Ttl) -> Span {
    match ttl {
        Ttl::Secs(secs) => secs.span(),
        Ttl::Expr(expr) => expr.span(),
    }
}

/// `stale_while_revalidate` and `soft_timeout` run the body in a background
/// task that may outlive the call, so the body may not borrow anything from
/// the caller.
fn check_owned_arguments(sig: &syn::Signature, option: Span, why: &str) -> syn::Result<()> {
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
                format!(
                    "{why} in a background task, so the arguments must be owned: \
                     pass an `Arc` or a clone instead of a reference"
                ),
            );
            error.combine(syn::Error::new(option, "background work requested here"));
            Err(error)
        }
    }
}
