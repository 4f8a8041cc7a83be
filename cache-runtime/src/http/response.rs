//! A response the layer produced or found ([`Loaded`]), and the responses
//! it sends: with `X-Cache`, `ETag`, `Cache-Control`, `Age`, a `304` or a
//! `206`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderName, AGE, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, TRANSFER_ENCODING,
    VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};

use super::freshness::{self, Freshness};
use super::incoming::Incoming;
use super::privacy::Audience;
use super::request;
use super::stored::{values_of, Stored};
use crate::entry::envelope::now_ms;

/// Whether the response came from the cache (`HIT`), from the handler
/// (`MISS`), or the cache was skipped (`BYPASS`).
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A response the handler produced or the cache returned. A hit that the
/// local tier (or a batched read) shares is opened once and shared after:
/// its head is parsed once, its body a `Bytes` handed out without a copy.
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    pub(super) stored: Arc<Stored>,
    /// Produced by the handler in this call (never set on a hit).
    pub(super) fresh: bool,
    /// May be stored (decided when it was produced).
    pub(super) storable: bool,
    /// A stored response past its freshness, served within a stale window.
    pub(super) stale: bool,
}

/// How the layer that sends a response is configured.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) private: bool,
    pub(crate) ttl: Duration,
    pub(crate) max_size: usize,
    /// Gateway mode: no TTL of the layer's own for responses without one.
    pub(crate) origin_freshness: bool,
    /// The layer's own `stale-if-error` window.
    pub(crate) stale_if_error: Option<Duration>,
}

/// An error reading the handler's body.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Loaded {
    /// Reads a handler's response to `request` whole (a write-through's,
    /// whose response is the entry), and decides whether it may be stored.
    pub(crate) async fn read<B>(
        response: Response<B>,
        request: &HeaderMap,
        audience: &Audience,
        shape: Shape,
    ) -> Result<Loaded, BodyError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BodyError>,
    {
        let (parts, body) = response.into_parts();
        let incoming = Incoming::of(parts, request, audience, shape, false);
        let body = body.collect().await.map_err(Into::into)?.to_bytes();
        Ok(incoming.finish(Some(body), shape))
    }

    /// This stale response, revalidated by the handler's `304`: its stored
    /// headers updated with the `304`'s (RFC 9111 §3.2), fresh again.
    pub(crate) fn revalidated(&self, not_modified: &HeaderMap, shape: Shape) -> Loaded {
        let stored = &self.stored;
        let mut headers = stored.headers.clone();
        let mut names: Vec<&HeaderName> = not_modified.keys().collect();
        names.dedup();
        for name in names {
            if [
                CONTENT_LENGTH,
                CONTENT_TYPE,
                CONTENT_ENCODING,
                CONTENT_RANGE,
                ETAG,
            ]
            .contains(name)
                || [CONNECTION, TRANSFER_ENCODING, AGE, X_CACHE].contains(name)
            {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let stored = Stored::new(
            stored.status,
            headers,
            stored.body.clone(),
            stored.etag.clone(),
            stored.vary.clone(),
            shape,
            Freshness::of(not_modified, !shape.private).age,
        );
        Loaded {
            storable: stored.expires_ms > now_ms() || !stored.keep.is_zero(),
            stored: Arc::new(stored),
            fresh: true,
            stale: false,
        }
    }

    /// Whether it is past its freshness.
    pub(crate) fn stale(&self) -> bool {
        !self.fresh && self.stored.expires_ms <= now_ms()
    }

    /// The validators of the handler's own (`ETag`, `Last-Modified`) to ask
    /// whether a stale response is still good, as the request headers that
    /// carry them.
    pub(crate) fn validators(&self) -> Vec<(HeaderName, HeaderValue)> {
        let headers = &self.stored.headers;
        let mut validators = Vec::new();
        if let Some(etag) = headers.get(ETAG) {
            validators.push((IF_NONE_MATCH, etag.clone()));
        }
        if let Some(modified) = headers.get(LAST_MODIFIED) {
            validators.push((IF_MODIFIED_SINCE, modified.clone()));
        }
        validators
    }

    /// How long past its freshness it may be served stale: while it is
    /// revalidated in the background, or when the handler fails.
    pub(crate) fn stale_windows(&self, shape: Shape) -> (Duration, Duration) {
        let freshness = Freshness::of(&self.stored.headers, !shape.private);
        if !freshness.may_serve_stale() {
            return (Duration::ZERO, Duration::ZERO);
        }
        let stale_for = Duration::from_millis(now_ms().saturating_sub(self.stored.expires_ms));
        let within = |window: Option<Duration>| {
            window
                .filter(|window| *window > stale_for)
                .unwrap_or_default()
        };
        (
            within(freshness.while_revalidate),
            within(freshness.if_error.max(shape.stale_if_error)),
        )
    }

    /// Served stale: marked so.
    pub(crate) fn served_stale(mut self) -> Loaded {
        self.fresh = false;
        self.storable = false;
        self.stale = true;
        self
    }

    /// The response's headers, as stored.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.stored.headers
    }

    /// The response as the handler made it.
    pub(crate) fn unchanged(self) -> Response<Full<Bytes>> {
        let stored = &self.stored;
        build(stored.status, stored.headers.clone(), stored.body.clone())
    }

    /// The key of the variant for `request` when this entry, found at
    /// `key`, was made for other values of the headers it varies on.
    pub(crate) fn variant_key(&self, key: &str, request: &HeaderMap) -> Option<String> {
        let vary = self.stored.vary.as_ref().filter(|_| !self.fresh)?;
        let values = values_of(request, &vary.names);
        if values == vary.values {
            return None;
        }
        let values = serde_json::to_string(&values).unwrap_or_default();
        Some(format!("{key} vary={} {values}", vary.token))
    }

    pub(crate) fn storable(&self) -> bool {
        self.storable
    }

    /// How long the entry is stored: until it is stale (the layer's TTL,
    /// capped by the response's own lifetime), and kept past that to be
    /// revalidated or served stale.
    pub(crate) fn ttl(&self) -> Duration {
        let stored = &self.stored;
        Duration::from_millis(stored.expires_ms.saturating_sub(now_ms())) + stored.keep
    }

    /// The response to send for `request`: a `304` when its `If-None-Match`
    /// matches, else the response with the cache's headers; no body for a
    /// `HEAD`.
    pub(crate) fn respond(
        self,
        request: &HeaderMap,
        shape: Shape,
        head: bool,
    ) -> Response<Full<Bytes>> {
        let stored = &self.stored;
        let status = stored.status;
        let mut headers = self.sent_headers(shape, true);
        if self.fresh && !self.storable {
            // Not the cache's: sent as the handler made it.
            return build(status, headers, stored.body.clone());
        }
        if self.not_modified(request) {
            // RFC 9110 §15.4.5: what a 200 would carry that a cache needs.
            let mut kept = HeaderMap::new();
            for name in [ETAG, CACHE_CONTROL, VARY, AGE, X_CACHE] {
                for value in headers.get_all(&name) {
                    kept.append(name.clone(), value.clone());
                }
            }
            return build(StatusCode::NOT_MODIFIED, kept, Bytes::new());
        }
        let body = stored.body.clone();
        if head {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            return build(status, headers, Bytes::new());
        }
        if status == StatusCode::OK && !self.fresh {
            if let Some(range) = request::range(request, body.len(), &stored.etag) {
                return partial(range, headers, body);
            }
        }
        build(status, headers, body)
    }

    /// The headers sent with it: the stored ones, and the cache's own
    /// (`X-Cache`, `Age`, and on one the cache stores its `Cache-Control`
    /// and, `with_etag`, its `ETag`, unless the handler gave its own).
    pub(super) fn sent_headers(&self, shape: Shape, with_etag: bool) -> HeaderMap {
        let stored = &self.stored;
        // Room for the cache's own four: a map that grows hashes again.
        let mut headers = HeaderMap::with_capacity(stored.headers.len() + 4);
        for (name, value) in &stored.headers {
            headers.append(name, value.clone());
        }
        let outcome = match (self.fresh, self.stale) {
            (true, _) => "MISS",
            (false, true) => "STALE",
            (false, false) => "HIT",
        };
        headers.insert(X_CACHE, HeaderValue::from_static(outcome));
        // Its age: since it was made (less its upstream `Age` on arrival).
        let now = now_ms();
        let age = now.saturating_sub(stored.generated_ms) / 1000;
        if !self.fresh || age > 0 {
            headers.insert(AGE, HeaderValue::from(age));
        }
        if self.fresh && !self.storable {
            return headers;
        }
        if with_etag {
            headers.entry(ETAG).or_insert_with(|| stored.etag.clone());
        }
        if !headers.contains_key(CACHE_CONTROL) {
            let left = stored.expires_ms.saturating_sub(now) / 1000;
            let value = match shape.private {
                true => format!("private, max-age={left}"),
                false => format!("max-age={left}"),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(CACHE_CONTROL, value);
            }
        }
        headers
    }

    /// Whether `request`'s validators match: its `If-None-Match` names the
    /// entity tag, or without one its `If-Modified-Since` is no earlier
    /// than the response's `Last-Modified` (RFC 9110 §13.2.2).
    fn not_modified(&self, request: &HeaderMap) -> bool {
        let stored = &self.stored;
        if request.contains_key(IF_NONE_MATCH) {
            return request::none_match(request, stored.etag.to_str().unwrap_or_default());
        }
        let since = request.get(IF_MODIFIED_SINCE).and_then(freshness::date);
        // Without a `Last-Modified`, its `Date` stands for it (RFC 9110 §13.1.3).
        let modified = (stored.headers.get(LAST_MODIFIED))
            .or_else(|| stored.headers.get(DATE))
            .and_then(freshness::date);
        matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
    }
}

/// The part of a stored body a `Range` asks for: `206` with its
/// `Content-Range`, or `416` when it lies past the end.
fn partial(
    range: Option<(usize, usize)>,
    mut headers: HeaderMap,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let len = body.len();
    let Some((first, last)) = range else {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
            headers.insert(CONTENT_RANGE, value);
        }
        return build(StatusCode::RANGE_NOT_SATISFIABLE, headers, Bytes::new());
    };
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
        headers.insert(CONTENT_RANGE, value);
    }
    build(
        StatusCode::PARTIAL_CONTENT,
        headers,
        body.slice(first..=last),
    )
}

fn build(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
