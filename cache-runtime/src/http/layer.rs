//! [`CacheLayer`]: the layer and its builder.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use tower_layer::Layer;

use super::request;
use super::service::CacheService;
use crate::entry::check_group;
use crate::Cache;

/// A [`Layer`] that caches a route's responses; see the [module
/// docs](crate::http).
#[derive(Clone, Debug)]
pub struct CacheLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) group: String,
    /// Where the anchors of the paths' query variants live.
    pub(super) anchors: String,
    pub(super) ttl: Option<Duration>,
    pub(super) cache: Option<Cache>,
    pub(super) private: bool,
    pub(super) identity: Identity,
    pub(super) write_through: bool,
    pub(super) evict_group: bool,
    /// Gateway mode: only what the response's own headers allow is stored.
    pub(super) origin_freshness: bool,
    pub(super) stale_if_error: Option<Duration>,
}

/// What identifies a caller (see [`CacheLayer::identity`]).
#[derive(Clone)]
pub(super) struct Identity(pub(super) Arc<IdentityFn>);

type IdentityFn = dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync;

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(..)")
    }
}

impl CacheLayer {
    /// A layer whose entries live in `group`.
    ///
    /// # Panics
    ///
    /// When `group` is empty or holds `{` or `}`: at router construction,
    /// as axum does for a malformed route.
    pub fn new(group: impl Into<String>) -> CacheLayer {
        let group = group.into();
        if let Err(error) = check_group(&group) {
            panic!("CacheLayer::new: {error}");
        }
        CacheLayer {
            config: Arc::new(Config {
                anchors: format!("{group}#anchors"),
                group,
                ttl: None,
                cache: None,
                private: false,
                identity: Identity(Arc::new(request::default_identity)),
                write_through: false,
                evict_group: false,
                origin_freshness: false,
                stale_if_error: None,
            }),
        }
    }

    /// How long responses are stored (default: the cache's default TTL).
    pub fn ttl(self, ttl: Duration) -> CacheLayer {
        self.with(|config| config.ttl = Some(ttl))
    }

    /// The cache to use (default: the installed cache, else the in-memory
    /// one, as for the attributes).
    pub fn cache(self, cache: Cache) -> CacheLayer {
        self.with(|config| config.cache = Some(cache))
    }

    /// Per-user entries: the key holds a hash of the caller's
    /// [identity](Self::identity), and responses say `Cache-Control:
    /// private`.
    pub fn private(self) -> CacheLayer {
        self.with(|config| config.private = true)
    }

    /// What identifies the caller of a request, or `None` for an anonymous
    /// one. On a shared layer a request with an identity bypasses the cache
    /// (`X-Cache: BYPASS`); on a [private](Self::private) layer its entries
    /// are its own.
    ///
    /// The default is the names and values of the usual credential headers
    /// the request carries: `Authorization`, `Proxy-Authorization`,
    /// `Cookie`, `X-Api-Key`, `X-Auth-Token` and `X-Access-Token`. An
    /// application that authenticates otherwise says so here, and one whose
    /// browsers also send analytics cookies names its session cookie, so that
    /// anonymous visitors still share entries:
    ///
    /// ```
    /// use cache_runtime::http::CacheLayer;
    ///
    /// let layer = CacheLayer::new("pages").identity(|parts| {
    ///     let cookies = parts.headers.get_all(http::header::COOKIE);
    ///     let session = cookies
    ///         .iter()
    ///         .filter_map(|value| value.to_str().ok())
    ///         .flat_map(|value| value.split(';'))
    ///         .find(|cookie| cookie.trim().starts_with("session="));
    ///     let token = parts.headers.get("x-tenant-token").map(|v| v.as_bytes());
    ///     match (session, token) {
    ///         (None, None) => None,
    ///         (session, token) => Some(
    ///             [session.unwrap_or_default().trim().as_bytes(), b"\n", token.unwrap_or_default()]
    ///                 .concat(),
    ///         ),
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    pub fn identity<F>(self, identity: F) -> CacheLayer
    where
        F: Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        self.with(|config| config.identity = Identity(Arc::new(identity)))
    }

    /// A successful `PUT` or `PATCH` stores its response as the entry.
    pub fn write_through(self) -> CacheLayer {
        self.with(|config| config.write_through = true)
    }

    /// A successful unsafe request evicts the whole group.
    pub fn evict_group(self) -> CacheLayer {
        self.with(|config| config.evict_group = true)
    }

    /// Gateway mode: store only what the response's own headers allow (an
    /// explicit lifetime, or for a response with `Last-Modified` a heuristic
    /// one, a tenth of its age), as a standards-conforming gateway cache in
    /// front of any upstream does, instead of giving every `200` the layer's
    /// TTL. The layer's TTL still caps each entry.
    pub fn origin_freshness(self) -> CacheLayer {
        self.with(|config| config.origin_freshness = true)
    }

    /// When the handler answers `5xx` or fails, a stored response up to
    /// this long past its freshness is served instead (`X-Cache: STALE`,
    /// with its true `Age`), as a response's own `stale-if-error` directive
    /// asks (RFC 5861). A response with `must-revalidate` never is. No
    /// write is undone: a response evicted by a write is not stale, it is
    /// gone.
    pub fn stale_if_error(self, window: Duration) -> CacheLayer {
        self.with(|config| config.stale_if_error = Some(window))
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> CacheLayer {
        change(Arc::make_mut(&mut self.config));
        self
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            config: self.config.clone(),
        }
    }
}
