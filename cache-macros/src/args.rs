//! Parsing and checking the options of the three attributes.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitFloat, LitInt, LitStr, Path};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    Cached,
    Evict,
    Put,
}

impl Attr {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Attr::Cached => "cached",
            Attr::Evict => "cache_evict",
            Attr::Put => "cache_put",
        }
    }

    fn options(self) -> &'static [&'static str] {
        const WRITE: &[&str] = &[
            "group",
            "ttl",
            "key",
            "each",
            "skip",
            "cache",
            "unless",
            "ttl_fn",
            "depends_on",
            "cache_none",
            "none_ttl",
            "fail_safe",
            "crate",
            "result",
            "option",
            "plain",
        ];
        const READ: &[&str] = &[
            "group",
            "ttl",
            "key",
            "skip",
            "cache",
            "unless",
            "ttl_fn",
            "depends_on",
            "each",
            "cache_none",
            "none_ttl",
            "cache_err",
            "err_ttl",
            "lock",
            "lock_timeout",
            "early",
            "jitter",
            "stale_while_revalidate",
            "fail_safe",
            "fail_safe_throttle",
            "soft_timeout",
            "crate",
            "result",
            "option",
            "plain",
        ];
        const EVICT: &[&str] = &[
            "group", "key", "each", "skip", "cache", "all", "before", "crate", "result", "option",
            "plain",
        ];
        match self {
            Attr::Cached => READ,
            Attr::Put => WRITE,
            Attr::Evict => EVICT,
        }
    }
}

/// A time to live: whole seconds, or a `Duration` expression.
pub(crate) enum Ttl {
    Secs(LitInt),
    Expr(Expr),
}

/// How the return value is judged, when forced by `result`/`option`/`plain`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Result,
    Option,
    Plain,
}

#[derive(Default)]
pub(crate) struct Args {
    pub(crate) group: Option<LitStr>,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) none_ttl: Option<Ttl>,
    /// `cache_err = |e| bool`, spanned on the option's name.
    pub(crate) cache_err: Option<(Span, Expr)>,
    pub(crate) err_ttl: Option<Ttl>,
    pub(crate) key: Option<Expr>,
    /// `each = arg`: the argument that holds the keys of a bulk call.
    pub(crate) each: Option<Ident>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) cache: Option<Expr>,
    pub(crate) unless: Option<Expr>,
    pub(crate) ttl_fn: Option<Expr>,
    pub(crate) depends_on: Option<Expr>,
    pub(crate) all: Option<Span>,
    pub(crate) before: bool,
    pub(crate) cache_none: Option<Span>,
    pub(crate) krate: Option<Path>,
    pub(crate) lock: Option<LitBool>,
    pub(crate) lock_timeout: Option<Ttl>,
    /// `early` (beta 1.0) or `early = beta`, with where it was written.
    pub(crate) early: Option<(Span, Option<Expr>)>,
    pub(crate) jitter: Option<LitFloat>,
    pub(crate) stale_while_revalidate: Option<(Span, Ttl)>,
    pub(crate) fail_safe: Option<Ttl>,
    pub(crate) fail_safe_throttle: Option<(Span, Ttl)>,
    pub(crate) soft_timeout: Option<(Span, Ttl)>,
    pub(crate) shape: Option<Shape>,
    seen: Vec<String>,
}

impl Args {
    /// Parses one `name`, `name = value` or `name(...)` option.
    pub(crate) fn parse_one(&mut self, attr: Attr, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        let name = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        if !attr.options().contains(&name.as_str()) {
            let shown = if name.is_empty() {
                "this".to_owned()
            } else {
                format!("`{name}`")
            };
            return Err(meta.error(format!(
                "unknown option {shown} for #[{}]; expected one of: {}",
                attr.name(),
                attr.options().join(", ")
            )));
        }
        if self.seen.contains(&name) {
            return Err(meta.error(format!("duplicate option `{name}`")));
        }
        self.seen.push(name.clone());
        let span = meta.path.segments[0].ident.span();
        match name.as_str() {
            "group" => {
                let lit: LitStr = meta.value()?.parse()?;
                let value = lit.value();
                if value.is_empty() || value.contains(['{', '}']) {
                    return Err(syn::Error::new(
                        lit.span(),
                        "a group name must be non-empty and may not contain `{` or `}`: the group is put inside a Redis hash tag",
                    ));
                }
                self.group = Some(lit);
            }
            "ttl" => self.ttl = Some(parse_ttl("ttl", meta.value()?)?),
            "none_ttl" => self.none_ttl = Some(parse_ttl("none_ttl", meta.value()?)?),
            "err_ttl" => self.err_ttl = Some(parse_ttl("err_ttl", meta.value()?)?),
            "cache_err" => self.cache_err = Some((span, meta.value()?.parse()?)),
            "key" => self.key = Some(meta.value()?.parse()?),
            "each" => self.each = Some(meta.value()?.parse()?),
            "cache" => self.cache = Some(meta.value()?.parse()?),
            "unless" => self.unless = Some(meta.value()?.parse()?),
            "ttl_fn" => self.ttl_fn = Some(meta.value()?.parse()?),
            "depends_on" => self.depends_on = Some(meta.value()?.parse()?),
            "crate" => {
                let lit: LitStr = meta.value()?.parse()?;
                self.krate = Some(lit.parse()?);
            }
            "lock_timeout" => self.lock_timeout = Some(parse_ttl("lock_timeout", meta.value()?)?),
            "stale_while_revalidate" => {
                self.stale_while_revalidate =
                    Some((span, parse_ttl("stale_while_revalidate", meta.value()?)?));
            }
            "fail_safe" => self.fail_safe = Some(parse_ttl("fail_safe", meta.value()?)?),
            "fail_safe_throttle" => {
                self.fail_safe_throttle =
                    Some((span, parse_ttl("fail_safe_throttle", meta.value()?)?));
            }
            "soft_timeout" => {
                self.soft_timeout = Some((span, parse_ttl("soft_timeout", meta.value()?)?));
            }
            "lock" if meta.input.peek(syn::Token![=]) => {
                let value: Expr = meta.value()?.parse()?;
                match value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(on), ..
                    }) => self.lock = Some(LitBool::new(on.value, span)),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`lock` takes `true` or `false`",
                        ))
                    }
                }
            }
            "lock" => self.lock = Some(LitBool::new(true, span)),
            "early" if meta.input.peek(syn::Token![=]) => {
                let beta: Expr = meta.value()?.parse()?;
                if let Expr::Lit(ExprLit { lit, .. }) = &beta {
                    let positive = match lit {
                        Lit::Float(f) => f
                            .base10_parse::<f64>()
                            .is_ok_and(|b| b > 0.0 && b.is_finite()),
                        Lit::Int(i) => i.base10_parse::<u64>().is_ok_and(|b| b > 0),
                        _ => false,
                    };
                    if !positive {
                        return Err(syn::Error::new_spanned(
                            &beta,
                            "`early` takes XFetch's beta, a positive number (`early = 1.0`; larger refreshes earlier)",
                        ));
                    }
                }
                self.early = Some((span, Some(beta)));
            }
            "early" => self.early = Some((span, None)),
            "jitter" => {
                let value = meta.value()?;
                let jitter: LitFloat = value.parse().map_err(|_| {
                    value.error("`jitter` takes a fraction in [0, 1), such as `jitter = 0.1`")
                })?;
                if !jitter
                    .base10_parse::<f64>()
                    .is_ok_and(|j| (0.0..1.0).contains(&j))
                {
                    return Err(syn::Error::new(
                        jitter.span(),
                        "`jitter` takes a fraction in [0, 1), such as `jitter = 0.1`",
                    ));
                }
                self.jitter = Some(jitter);
            }
            "skip" => meta.parse_nested_meta(|inner| match inner.path.get_ident() {
                Some(ident) => {
                    self.skip.push(ident.clone());
                    Ok(())
                }
                None => Err(inner.error("`skip` takes parameter names: `skip(db, client)`")),
            })?,
            flag => {
                if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                    return Err(meta.error(format!("`{flag}` is a flag and takes no value")));
                }
                match flag {
                    "all" => self.all = Some(span),
                    "before" => self.before = true,
                    "cache_none" => self.cache_none = Some(span),
                    "result" => self.set_shape(Shape::Result, span)?,
                    "option" => self.set_shape(Shape::Option, span)?,
                    _ => self.set_shape(Shape::Plain, span)?,
                }
            }
        }
        Ok(())
    }

    fn set_shape(&mut self, shape: Shape, span: Span) -> syn::Result<()> {
        if self.shape.is_some() {
            return Err(syn::Error::new(
                span,
                "use at most one of `result`, `option` and `plain`",
            ));
        }
        self.shape = Some(shape);
        Ok(())
    }
}

fn parse_ttl(name: &str, input: ParseStream<'_>) -> syn::Result<Ttl> {
    let expr: Expr = input.parse()?;
    let malformed = || {
        syn::Error::new_spanned(
            &expr,
            format!("`{name}` takes whole seconds (`{name} = 300`) or a `std::time::Duration` expression"),
        )
    };
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(secs),
            ..
        }) => {
            secs.base10_parse::<u64>().map_err(|_| malformed())?;
            if !secs.suffix().is_empty() {
                return Err(malformed());
            }
            Ok(Ttl::Secs(secs.clone()))
        }
        Expr::Lit(_) | Expr::Unary(_) => Err(malformed()),
        _ => Ok(Ttl::Expr(expr)),
    }
}
