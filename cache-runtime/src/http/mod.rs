//! Route-level HTTP response caching for axum and any tower stack (feature
//! `http`), in the same cache, groups, leases and generations as the
//! attributes.
//!
//! ```
//! use std::time::Duration;
//! use cache_runtime::http::CacheLayer;
//!
//! // With axum: Router::new().route("/products/{id}", get(show).put(replace))
//! //     .route_layer(layer)
//! let layer = CacheLayer::new("products").ttl(Duration::from_secs(60));
//! # let _ = layer;
//! ```
//!
//! - **Key.** The path and its query parameters sorted by name then value.
//!   `GET`, `HEAD`, `PUT`, `PATCH`, `POST` and `DELETE` on one path address
//!   one entry, in the layer's group.
//! - **Stored.** `200` responses to `GET`; never one with `Set-Cookie`, a
//!   `Cache-Control` of `no-store` (or `private` on a shared layer), `Vary:
//!   *`, or a body over the cache's maximum value size. A response with
//!   `Vary` is stored per value of the request headers it names. A `HEAD` is
//!   answered from the `GET` entry.
//! - **Sent.** `X-Cache: HIT | MISS | BYPASS`; a strong `ETag` from a hash of
//!   the body (a handler's own is kept); `Cache-Control: max-age=<seconds
//!   left>` (`private, ` on a private layer; a handler's own is kept); `Age`
//!   on hits; `304 Not Modified` for a matching `If-None-Match`.
//! - **Request directives.** `no-store` skips the cache both ways; `no-cache`
//!   and `max-age=0` run the handler and store its response; `max-age=N`
//!   treats an entry older than N seconds as a miss.
//! - **Credentials.** On a shared layer a request with `Authorization` or
//!   `Cookie` is neither served from the cache nor stored (`BYPASS`); a
//!   private layer keys it per user.
//! - **Writes.** A `2xx` to `POST`, `PUT`, `PATCH` or `DELETE` evicts the
//!   path's entry after the handler (the whole group with `evict_group`, and
//!   on a private layer, whose entries are per user), or with `write_through`
//!   a `PUT`/`PATCH` stores its response as the entry. An error status evicts
//!   nothing.

mod request;
mod response;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::__private::{self as private, Policy, ResultKind, Target};
use crate::key::check_group;
use crate::{Cache, EntryKey};
use request::Directives;
use response::{BodyError, Loaded, Shape, X_CACHE};

/// A [`Layer`] that caches a route's responses; see the [module
/// docs](self).
#[derive(Clone, Debug)]
pub struct CacheLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
struct Config {
    group: String,
    ttl: Option<Duration>,
    cache: Option<Cache>,
    private: bool,
    write_through: bool,
    evict_group: bool,
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
                group,
                ttl: None,
                cache: None,
                private: false,
                write_through: false,
                evict_group: false,
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

    /// Per-user entries: the key holds a hash of the request's
    /// `Authorization` and `Cookie`, and responses say `Cache-Control:
    /// private`.
    pub fn private(self) -> CacheLayer {
        self.with(|config| config.private = true)
    }

    /// A successful `PUT` or `PATCH` stores its response as the entry.
    pub fn write_through(self) -> CacheLayer {
        self.with(|config| config.write_through = true)
    }

    /// A successful unsafe request evicts the whole group.
    pub fn evict_group(self) -> CacheLayer {
        self.with(|config| config.evict_group = true)
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

/// The [`Service`] made by [`CacheLayer`].
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    inner: S,
    config: Arc<Config>,
}

/// The body of a response from [`CacheService`]: one the cache built, or
/// the handler's own, streamed through.
pub type CacheBody<B> = Either<Full<Bytes>, B>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BodyError>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(serve(self.config.clone(), inner, request))
    }
}

/// Why a load produced no response to store.
enum Failure<E> {
    /// The handler's service failed.
    Service(E),
    /// Its body could not be read.
    Body(BodyError),
    /// An error status (for a write: nothing is stored or evicted).
    Status(Loaded),
}

async fn serve<S, ReqB, ResB>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BodyError>,
{
    let cache = config.cache.clone().unwrap_or_else(crate::current::current);
    let shape = Shape {
        private: config.private,
        ttl: config.ttl.unwrap_or(cache.settings().default_ttl),
        max_size: cache.settings().max_value_size,
    };
    let method = request.method().clone();
    if method == Method::GET || method == Method::HEAD {
        read(&config, cache, shape, inner, request).await
    } else if [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(&method) {
        write(&config, cache, shape, inner, request).await
    } else {
        passed(inner, request, None).await
    }
}

/// `GET` and `HEAD`: served from the entry, or by the handler and stored.
async fn read<S, ReqB, ResB>(
    config: &Config,
    cache: Cache,
    shape: Shape,
    inner: S,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BodyError>,
{
    let headers = request.headers();
    let directives = Directives::of(headers);
    if directives.no_store || (request::credentialed(headers) && !config.private) {
        return passed(inner, request, Some("BYPASS")).await;
    }
    let user = config.private.then(|| request::user(headers));
    let key = request::key(request.uri(), user.as_deref());
    let head = request.method() == Method::HEAD;
    let headers = headers.clone();
    let revalidate = match directives {
        Directives { no_cache: true, .. } => Some(Duration::ZERO),
        Directives { max_age, .. } => max_age.map(Duration::from_secs),
    };
    // The handler runs at most once, for the path's entry or for a variant.
    let call = Mutex::new(Some((inner, request)));
    let lookup = |key: String| {
        let mut policy = policy::<S::Error>(&config.group, shape);
        if let Some(age) = revalidate {
            policy = policy.revalidate_after(age);
        }
        let load = load(&call, &headers, shape, head);
        private::cached(cache.clone(), policy, EntryKey::new(&key), load)
    };
    let mut found = lookup(key.clone()).await;
    if let Some(variant) = found
        .as_ref()
        .ok()
        .and_then(|l| l.variant_key(&key, &headers))
    {
        found = lookup(variant).await;
    }
    match found {
        Ok(loaded) => Ok(loaded.respond(&headers, shape, head).map(Either::Left)),
        Err(failure) => failed(failure),
    }
}

/// Runs the handler, if it has not run yet, and reads its response.
async fn load<S, ReqB, ResB>(
    call: &Mutex<Option<(S, Request<ReqB>)>>,
    request: &HeaderMap,
    shape: Shape,
    head: bool,
) -> Result<Loaded, Failure<S::Error>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BodyError>,
{
    let taken = call.lock().unwrap_or_else(PoisonError::into_inner).take();
    let Some((mut inner, req)) = taken else {
        return Err(Failure::Body("the handler was already called".into()));
    };
    let response = inner.call(req).await.map_err(Failure::Service)?;
    Loaded::read(response, request, shape, head)
        .await
        .map_err(Failure::Body)
}

/// `POST`, `PUT`, `PATCH`, `DELETE`: after a `2xx`, evict (RFC 9111 §4.4),
/// or with `write_through`, store a `PUT`/`PATCH` response as the entry.
async fn write<S, ReqB, ResB>(
    config: &Config,
    cache: Cache,
    shape: Shape,
    mut inner: S,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BodyError>,
{
    let key = EntryKey::new(&request::key(request.uri(), None));
    let method = request.method();
    let through = config.write_through && !config.private;
    if through && (method == Method::PUT || method == Method::PATCH) {
        let headers = request.headers().clone();
        let load = async move {
            let response = inner.call(request).await.map_err(Failure::Service)?;
            let success = response.status().is_success();
            let loaded = Loaded::read(response, &headers, shape, false)
                .await
                .map_err(Failure::Body)?;
            if success {
                Ok(loaded)
            } else {
                Err(Failure::Status(loaded))
            }
        };
        let policy = policy::<S::Error>(&config.group, shape);
        return match private::put(cache, policy, key, load).await {
            Ok(loaded) => Ok(loaded.unchanged().map(Either::Left)),
            Err(failure) => failed(failure),
        };
    }
    let response = inner.call(request).await?;
    if response.status().is_success() {
        // Private entries are per user: a write reaches them all.
        let target = match config.evict_group || config.private {
            true => Target::All,
            false => Target::Key(key),
        };
        private::evict_now(&cache, &config.group, target).await;
    }
    Ok(response.map(Either::Right))
}

/// The policy of the layer's entries: no jitter, so that `max-age` is the
/// entry's own TTL left.
fn policy<E>(group: &str, shape: Shape) -> Policy<'_, ResultKind, Result<Loaded, Failure<E>>> {
    Policy::new(group)
        .ttl(shape.ttl)
        .jitter(0.0)
        .unless(|loaded: &Loaded| !loaded.storable())
}

/// The handler's response, streamed through, with `X-Cache` when given.
async fn passed<S, ReqB, ResB>(
    mut inner: S,
    request: Request<ReqB>,
    outcome: Option<&'static str>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    let mut response = inner.call(request).await?;
    if let Some(outcome) = outcome {
        let value = HeaderValue::from_static(outcome);
        response.headers_mut().insert(X_CACHE, value);
    }
    Ok(response.map(Either::Right))
}

fn failed<E, B>(failure: Failure<E>) -> Result<Response<CacheBody<B>>, E> {
    match failure {
        Failure::Service(error) => Err(error),
        Failure::Status(loaded) => Ok(loaded.unchanged().map(Either::Left)),
        Failure::Body(error) => {
            tracing::warn!(%error, "the handler's response body failed; answering 500");
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            Ok(response.map(Either::Left))
        }
    }
}
