//! Unsafe methods: after a non-error status, the entries of the path, and
//! of the paths the response names, are evicted; or with `write_through`,
//! a `PUT`/`PATCH` response is stored as the path's entry.

use bytes::Bytes;
use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::CacheBody;
use super::layer::Config;
use super::privacy::Audience;
use super::request::Place;
use super::response::{BodyError, Loaded, Shape};
use super::service::{failed, policy, Failure};
use crate::flow::evict::{evict_now, Target};
use crate::flow::put;
use crate::{Cache, EntryKey};

/// `POST`, `PUT`, `PATCH`, `DELETE`: after a `2xx`, evict (RFC 9111 §4.4),
/// or with `write_through`, store a `PUT`/`PATCH` response as the entry.
pub(super) async fn write<S, ReqB, ResB>(
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
