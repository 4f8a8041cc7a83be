//! `GET` and `HEAD`: served from the entry, or by the handler (streamed to
//! the client as it arrives) and stored; stale entries revalidated.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tower_service::Service;

use super::body::{self, CacheBody};
use super::incoming::Incoming;
use super::layer::Config;
use super::privacy::Audience;
use super::request::{Directives, Place};
use super::response::{BodyError, Loaded, Shape};
use super::service::{failed, passed, policy, settle, Failure};
use crate::background;
use crate::flow::policy::Policy;
use crate::flow::read;
use crate::flow::returns::PlainKind;
use crate::{Cache, EntryKey};

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
pub(super) async fn streamed<S, ReqB, ResB>(
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
        .jitter(0.0)
        .fail_safe(Duration::ZERO);
    let key = EntryKey::of_str(place.path_key());
    read::cached(cache.clone(), policy, key, async {
        crate::backend::token()
    })
    .await
}
