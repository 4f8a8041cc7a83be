//! [`CacheService`]: a request goes to a read (`read.rs`) or a write
//! (`write.rs`); here is what both share: the cache and shape a request
//! gets, the entries' policy, and the responses of a failed load.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::body::CacheBody;
use super::layer::Config;
use super::response::{BodyError, Loaded, Shape, X_CACHE};
use super::stored;
use super::{read, write};
use crate::flow::policy::Policy;
use crate::flow::returns::ResultKind;
use crate::Cache;

/// The [`Service`] made by [`CacheLayer`](super::CacheLayer).
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
}

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
        let config = self.config.clone();
        // Apart, so that a read's future holds no write's state, nor the
        // other way round: each is moved into its box whole.
        if request.method() == Method::GET || request.method() == Method::HEAD {
            Box::pin(read::streamed(config, inner, request))
        } else {
            Box::pin(serve(config, inner, request))
        }
    }
}

/// Why a load produced no response to store.
pub(super) enum Failure<E, B> {
    /// The handler's service failed.
    Service(E),
    /// A response the layer does not store, sent on as it arrives.
    Passed(Response<CacheBody<B>>),
    /// Its body could not be read.
    Body(BodyError),
    /// An error status (for a write: nothing is stored or evicted).
    Status(Loaded),
    /// The handler failed, and a stale response stands in for it.
    Stale(Loaded),
}

/// Every method but `GET` and `HEAD`: unsafe ones write, the other safe
/// ones pass.
async fn serve<S, ReqB, ResB>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BodyError>,
{
    let Some((cache, shape)) = settle(&config) else {
        return passed(inner, request, Some("BYPASS")).await;
    };
    if [Method::OPTIONS, Method::TRACE, Method::CONNECT].contains(request.method()) {
        passed(inner, request, None).await
    } else {
        // Every other method is unsafe, known or not (RFC 9110 §9.2.1).
        write::write(&config, cache, shape, inner, request).await
    }
}

/// The cache a request goes to, and how the layer's responses are shaped;
/// `None` for a disabled cache, a kill switch: nothing is cached then, and
/// nothing said that would make a browser or a CDN cache it instead.
pub(super) fn settle(config: &Config) -> Option<(Cache, Shape)> {
    let cache = config
        .cache
        .clone()
        .unwrap_or_else(crate::cache::ambient::current);
    if cache.is_disabled() {
        return None;
    }
    let shape = Shape {
        private: config.private,
        ttl: config.ttl.unwrap_or(cache.settings().default_ttl),
        max_size: cache.settings().max_value_size,
        origin_freshness: config.origin_freshness,
        stale_if_error: config.stale_if_error,
    };
    Some((cache, shape))
}

/// The policy of the layer's entries: no jitter, so that `max-age` is the
/// entry's own TTL left, and no fail-safe: the layer serves stale responses
/// by HTTP's own rules (`stale-if-error`).
pub(super) fn policy<E, B>(
    group: &str,
    shape: Shape,
) -> Policy<'_, ResultKind, Result<Loaded, Failure<E, B>>> {
    Policy::new(group)
        .framed(stored::seal, stored::open)
        .keep_values(|values| values.keep())
        .ttl(shape.ttl)
        .ttl_fn(Loaded::ttl)
        .jitter(0.0)
        .fail_safe(std::time::Duration::ZERO)
        .unless(|loaded: &Loaded| !loaded.storable())
}

/// The handler's response, streamed through, with `X-Cache` when given.
pub(super) async fn passed<S, ReqB, ResB>(
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
    Ok(response.map(CacheBody::handler))
}

pub(super) fn failed<E, B>(failure: Failure<E, B>) -> Result<Response<CacheBody<B>>, E> {
    match failure {
        Failure::Service(error) => Err(error),
        Failure::Passed(response) => Ok(response),
        Failure::Status(loaded) | Failure::Stale(loaded) => {
            Ok(loaded.unchanged().map(CacheBody::built))
        }
        Failure::Body(error) => {
            tracing::warn!(%error, "the handler's response body failed; answering 500");
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            Ok(response.map(CacheBody::built))
        }
    }
}
