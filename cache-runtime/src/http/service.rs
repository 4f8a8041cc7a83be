//! [`CacheService`]: how a request is served, read through the cache or
//! written and evicted.

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONTENT_LOCATION, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
    LOCATION,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tokio::sync::{mpsc, oneshot};
use tower_service::Service;

use super::body::{self, CacheBody};
use super::incoming::Incoming;
use super::layer::Config;
use super::privacy::Audience;
use super::request::{Directives, Place};
use super::response::{BodyError, Loaded, Shape, X_CACHE};
use super::stored;
use crate::background;
use crate::flow::evict::{evict_now, Target};
use crate::flow::policy::Policy;
use crate::flow::returns::{PlainKind, ResultKind};
use crate::flow::{put, read};
use crate::{Cache, EntryKey};

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
            Box::pin(streamed(config, inner, request))
        } else {
            Box::pin(serve(config, inner, request))
        }
    }
}

/// Why a load produced no response to store.
enum Failure<E, B> {
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
        write(&config, cache, shape, inner, request).await
    }
}

/// The cache a request goes to, and how the layer's responses are shaped;
/// `None` for a disabled cache, a kill switch: nothing is cached then, and
/// nothing said that would make a browser or a CDN cache it instead.
fn settle(config: &Config) -> Option<(Cache, Shape)> {
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

/// The response a load begins to send, its body forwarded as it arrives.
type Started<B> = oneshot::Sender<Response<CacheBody<B>>>;

/// How a load sends the handler's body on.
enum Feed<'a, B> {
    /// To the client, as it arrives, once the head is sent on `Started`.
    Client(&'a Mutex<Option<Started<B>>>),
    /// Read whole, then sent (no runtime to finish the load on).
    Whole,
    /// To no one: a revalidation in the background.
    Background,
}

/// `GET` and `HEAD` ([`read`]), with the handler's body streamed to the
/// client as it arrives: once a load starts sending it, the rest of the
/// read (the body, then its store) finishes in a task of its own.
async fn streamed<S, ReqB, ResB>(
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
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Box::pin(read(config, cache, shape, inner, request, None)).await;
    };
    let (started, streaming) = oneshot::channel();
    let flow = Box::pin(read(config, cache, shape, inner, request, Some(started)));
    match futures_util::future::select(flow, streaming).await {
        futures_util::future::Either::Left((response, _)) => response,
        futures_util::future::Either::Right((Ok(response), flow)) => {
            runtime.spawn(async move { drop(flow.await) });
            Ok(response)
        }
        futures_util::future::Either::Right((Err(_), flow)) => flow.await,
    }
}

/// `GET` and `HEAD`: served from the entry, or by the handler and stored.
async fn read<S, ReqB, ResB>(
    config: Arc<Config>,
    cache: Cache,
    shape: Shape,
    inner: S,
    request: Request<ReqB>,
    started: Option<Started<ResB>>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BodyError>,
{
    let (mut parts, body) = request.into_parts();
    let audience = Audience::of(&config, &parts);
    let directives = Directives::of(&parts.headers);
    if directives.no_store || !audience.admits(None) {
        return passed(inner, Request::from_parts(parts, body), Some("BYPASS")).await;
    }
    let place = Place::of(&parts.uri, &parts.headers);
    let anchor = match place.has_query() {
        true => Some(anchor(&cache, &config.anchors, shape, &place).await),
        false => None,
    };
    let key = place.key(anchor.as_deref(), audience.user());
    let head = parts.method == Method::HEAD;
    // The request's headers stay here; the handler, if it runs, gets a copy.
    let headers = std::mem::take(&mut parts.headers);
    let request = Request::from_parts(parts, body);
    let revalidate = match directives {
        Directives { no_cache: true, .. } => Some(Duration::ZERO),
        Directives { max_age, .. } => max_age.map(Duration::from_secs),
    };
    // The handler runs at most once, for the path's entry or for a variant.
    let call = Mutex::new(Some((inner, request)));
    let started = started.map(|started| Mutex::new(Some(started)));
    let feed = started.as_ref().map_or(Feed::Whole, Feed::Client);
    let lookup = |key: &str, stale: Option<Loaded>| {
        let mut policy = policy::<S::Error, ResB>(&config.group, shape);
        match (revalidate, &stale) {
            (_, Some(_)) => policy = policy.revalidate_after(Duration::ZERO),
            (Some(age), None) => policy = policy.revalidate_after(age),
            (None, None) => {}
        }
        let load = load(&call, &headers, &audience, shape, head, stale, &feed);
        read::cached(cache.clone(), policy, EntryKey::of_str(key), load)
    };
    let mut key = key;
    let mut found = lookup(&key, None).await;
    if let Some(variant) = found
        .as_ref()
        .ok()
        .and_then(|l| l.variant_key(&key, &headers))
    {
        key = variant;
        found = lookup(&key, None).await;
    }
    // A stored response past its freshness: served stale while it is
    // revalidated (within `stale-while-revalidate`), else revalidated now.
    let stale = found.as_ref().ok().filter(|loaded| loaded.stale()).cloned();
    if let Some(stale) = stale {
        found = match stale.stale_windows(shape).0.is_zero() {
            true => lookup(&key, Some(stale)).await,
            false => {
                let taken = call.lock().take();
                if let Some(taken) = taken {
                    let call = Mutex::new(Some(taken));
                    let (config, headers, audience) = (config.clone(), headers.clone(), audience);
                    let again = stale.clone();
                    // Outside a runtime it is revalidated by the next read.
                    background::spawn(async move {
                        let mut policy = policy::<S::Error, ResB>(&config.group, shape);
                        policy = policy.revalidate_after(Duration::ZERO);
                        let (stale, feed) = (Some(again), Feed::Background);
                        let load = load(&call, &headers, &audience, shape, false, stale, &feed);
                        let key = EntryKey::of_str(&key);
                        drop(read::cached(cache, policy, key, load).await);
                    });
                }
                Ok(stale.served_stale())
            }
        };
    }
    match found {
        Ok(loaded) | Err(Failure::Stale(loaded)) => {
            Ok(loaded.respond(&headers, shape, head).map(CacheBody::built))
        }
        Err(failure) => failed(failure),
    }
}

/// Runs the handler, if it has not run yet, and reads its response. With
/// a `stale` response to revalidate, the request carries its validators,
/// and the handler's `304` refreshes it; a failure or a `5xx` within its
/// `stale-if-error` window serves it stale instead. A response the layer
/// does not store is passed on as it arrives; one it stores is sent on as
/// `feed` says while it is copied, within the cache's maximum value size.
async fn load<S, ReqB, ResB>(
    call: &Mutex<Option<(S, Request<ReqB>)>>,
    request: &HeaderMap,
    audience: &Audience,
    shape: Shape,
    head: bool,
    stale: Option<Loaded>,
    feed: &Feed<'_, ResB>,
) -> Result<Loaded, Failure<S::Error, ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BodyError>,
{
    let taken = call.lock().take();
    let Some((mut inner, mut req)) = taken else {
        return Err(Failure::Body("the handler was already called".into()));
    };
    *req.headers_mut() = request.clone();
    let validators = stale.as_ref().map(Loaded::validators).unwrap_or_default();
    if !validators.is_empty() {
        for name in [
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
        ] {
            req.headers_mut().remove(name);
        }
        req.headers_mut().extend(validators);
    }
    let if_error = stale
        .as_ref()
        .is_some_and(|stale| !stale.stale_windows(shape).1.is_zero());
    let response = match (inner.call(req).await, stale) {
        (Ok(response), Some(stale)) if response.status() == StatusCode::NOT_MODIFIED => {
            return Ok(stale.revalidated(response.headers(), shape));
        }
        (Ok(response), Some(stale)) if if_error && response.status().is_server_error() => {
            return Err(Failure::Stale(stale.served_stale()));
        }
        (Err(_), Some(stale)) if if_error => return Err(Failure::Stale(stale.served_stale())),
        (response, _) => response.map_err(Failure::Service)?,
    };
    let (parts, body) = response.into_parts();
    let incoming = Incoming::of(parts, request, audience, shape, head);
    if !incoming.storable() {
        return Err(Failure::Passed(incoming.passed(CacheBody::handler(body))));
    }
    let body = match feed {
        Feed::Client(started) => {
            let started = started.lock().take();
            let (head, length) = incoming.forwarded_head(shape);
            let open = move || {
                let (sent, frames) = mpsc::channel(16);
                let response = head.map(|()| CacheBody::forwarded(frames, length));
                started?.send(response).ok()?;
                Some(sent)
            };
            body::copy(body, Some(open), shape.max_size).await
        }
        Feed::Whole => body::copy(body, None::<fn() -> _>, usize::MAX).await,
        Feed::Background => body::copy(body, None::<fn() -> _>, shape.max_size).await,
    };
    let body = body.map_err(Failure::Body)?;
    Ok(incoming.finish(body, shape))
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
    let place = Place::of(request.uri(), request.headers());
    // A write's response is shared only as a shared read's would be: a
    // credentialed write evicts.
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let audience = Audience::of(config, &parts);
    let request = Request::from_parts(parts, body);
    let through = config.write_through && audience == Audience::Everyone;
    if through && (method == Method::PUT || method == Method::PATCH) {
        let headers = request.headers().clone();
        let load = async move {
            let response = inner.call(request).await.map_err(Failure::Service)?;
            let success = response.status().is_success();
            let loaded = Loaded::read(response, &headers, &audience, shape)
                .await
                .map_err(Failure::Body)?;
            if success {
                Ok(loaded)
            } else {
                Err(Failure::Status(loaded))
            }
        };
        let policy = policy::<S::Error, ResB>(&config.group, shape);
        let key = EntryKey::of_str(place.path_key());
        return match put::put(cache.clone(), policy, key, load).await {
            Ok(loaded) => {
                // The path's own entry holds the response; its variants go.
                let named = named_places(&place, loaded.headers());
                evict_places(&cache, config, [Key::Anchor(&place)], &named).await;
                Ok(loaded.unchanged().map(CacheBody::built))
            }
            Err(failure) => failed(failure),
        };
    }
    let response = inner.call(request).await?;
    // A non-error status invalidates (RFC 9111 §4.4).
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        if config.evict_group || config.private {
            // Private entries are per user: a write reaches them all.
            evict_now(&cache, &config.group, Target::All).await;
        } else {
            let named = named_places(&place, response.headers());
            let own = [Key::Path(&place), Key::Anchor(&place)];
            evict_places(&cache, config, own, &named).await;
        }
    }
    Ok(response.map(CacheBody::handler))
}

/// The token that a path's entries with a query name in their keys: drawn
/// by the first such read, and kept until a write to the path evicts it,
/// which leaves every entry made under it unreachable at once, whatever its
/// query. The path's own entry (no query) names none, and costs no more.
/// Anchors live in a group of their own (`<group>#anchors`), so that the
/// layer's group counts requests, not anchor lookups; evicting the layer's
/// group still drops every entry, whatever anchor it names.
async fn anchor(cache: &Cache, group: &str, shape: Shape, place: &Place) -> String {
    let policy = Policy::<PlainKind, String>::new(group)
        .ttl(shape.ttl)
        .jitter(0.0);
    let key = EntryKey::of_str(place.path_key());
    read::cached(cache.clone(), policy, key, async {
        crate::backend::token()
    })
    .await
}

/// One of the keys a write to a path evicts.
enum Key<'p> {
    /// The path's own entry.
    Path(&'p Place),
    /// Its anchor: every entry of the path with a query.
    Anchor(&'p Place),
}

/// The places a response's `Location` and `Content-Location` name on the
/// request's authority (RFC 9111 §4.4).
fn named_places(place: &Place, headers: &HeaderMap) -> Vec<Place> {
    [LOCATION, CONTENT_LOCATION]
        .into_iter()
        .filter_map(|name| place.named(headers, name))
        .filter(|named| named != place)
        .collect()
}

/// Evicts `own` and every entry of the `named` places, at once, with the
/// guarantee of `#[cache_evict]`.
async fn evict_places<'p>(
    cache: &Cache,
    config: &Config,
    own: impl IntoIterator<Item = Key<'p>>,
    named: &'p [Place],
) {
    let named = named
        .iter()
        .flat_map(|place| [Key::Path(place), Key::Anchor(place)]);
    let evictions = own.into_iter().chain(named).map(|key| {
        let (group, key) = match key {
            Key::Path(place) => (&config.group, place.path_key()),
            Key::Anchor(place) => (&config.anchors, place.path_key()),
        };
        evict_now(cache, group, Target::Key(EntryKey::of_str(key)))
    });
    futures_util::future::join_all(evictions).await;
}

/// The policy of the layer's entries: no jitter, so that `max-age` is the
/// entry's own TTL left.
fn policy<E, B>(
    group: &str,
    shape: Shape,
) -> Policy<'_, ResultKind, Result<Loaded, Failure<E, B>>> {
    Policy::new(group)
        .framed(stored::seal, stored::open)
        .keep_values(|values| values.keep())
        .ttl(shape.ttl)
        .ttl_fn(Loaded::ttl)
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
    Ok(response.map(CacheBody::handler))
}

fn failed<E, B>(failure: Failure<E, B>) -> Result<Response<CacheBody<B>>, E> {
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
