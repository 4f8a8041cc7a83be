//! What the layer stores of a response, whether it may, and the responses it
//! sends: with `X-Cache`, `ETag`, `Cache-Control`, `Age`, or a `304`.

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
use serde::{Deserialize, Serialize};

use super::freshness::{self, Freshness};
use super::privacy::Audience;
use super::request;
use crate::entry::codec::ValueCodec;
use crate::entry::envelope::{self, now_ms, Meta, OpenError};
use crate::Error;

/// Whether the response came from the cache (`HIT`), from the handler
/// (`MISS`), or the cache was skipped (`BYPASS`).
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A response as the layer keeps it: its head parsed, ready to send, and
/// its body as it was sent.
#[derive(Debug)]
struct Stored {
    status: StatusCode,
    /// The handler's headers, but those of the connection and the cache's own.
    headers: HeaderMap,
    body: Bytes,
    etag: HeaderValue,
    /// When the handler produced it, Unix milliseconds (for `Age`).
    generated_ms: u64,
    /// When the entry expires, Unix milliseconds (for `max-age`).
    expires_ms: u64,
    /// What the response varies on, when it names request headers.
    vary: Option<Vary>,
    /// How long past `expires_ms` it is kept, to be revalidated or served
    /// stale (decided when it is stored; not stored itself).
    keep: Duration,
}

impl Stored {
    /// A response produced now, `age` old when it arrived (its upstream
    /// `Age`, which is not kept), with the times it is fresh until and kept
    /// until: its lifetime is its
    /// own (or the layer's TTL, or a heuristic one) capped by the layer's
    /// TTL, and it is kept past that to be revalidated when it has a
    /// validator of the handler's, or to be served stale within the windows
    /// of `stale-while-revalidate` and `stale-if-error`.
    fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        etag: HeaderValue,
        vary: Option<Vary>,
        shape: Shape,
        age: Duration,
    ) -> Stored {
        let freshness = Freshness::of(&headers, !shape.private);
        let lifetime = match freshness.lifetime {
            Some(own) => own,
            None if shape.origin_freshness => {
                freshness::heuristic(status, &headers).unwrap_or_default()
            }
            None => shape.ttl,
        };
        let generated_ms =
            now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // Fresh for its lifetime from when it was made, and for at most the
        // layer's TTL from now.
        let expires_ms = generated_ms
            .saturating_add(millis(lifetime))
            .min(now_ms().saturating_add(millis(shape.ttl)));
        let validated = headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED);
        let mut keep = freshness.if_error.max(shape.stale_if_error);
        keep = keep.max(freshness.while_revalidate);
        if validated {
            keep = Some(keep.unwrap_or_default().max(shape.ttl));
        }
        Stored {
            status,
            headers,
            body,
            etag,
            generated_ms,
            expires_ms,
            vary,
            keep: keep.unwrap_or_default(),
        }
    }
}

/// The headers of a response that are kept: not those of the connection
/// (and those `Connection` names), its length, its `Age` nor the cache's
/// own. A value that is not text is sent but makes the response unstorable
/// (the stored head is text).
fn kept_headers(from: HeaderMap, storable: &mut bool) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::with_capacity(from.len());
    let mut current = None;
    for (name, value) in from {
        // No name: another value of the one before.
        current = name.or(current);
        let Some(name) = &current else { continue };
        if [CONNECTION, TRANSFER_ENCODING, CONTENT_LENGTH, AGE, X_CACHE].contains(name)
            || named.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        *storable &= value.to_str().is_ok();
        headers.append(name.clone(), value);
    }
    headers
}

/// Whether a final status may be stored at all: not a partial or a `304`,
/// which only update a stored response.
fn storable_status(status: StatusCode) -> bool {
    !status.is_informational()
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// A stored response's head, as [`seal`] writes it: JSON under one-letter
/// names (it is stored with every response).
#[derive(Serialize, Deserialize)]
struct Head {
    #[serde(rename = "s")]
    status: u16,
    #[serde(rename = "h")]
    headers: Vec<(String, String)>,
    #[serde(rename = "e")]
    etag: String,
    #[serde(rename = "g")]
    generated_ms: u64,
    #[serde(rename = "x")]
    expires_ms: u64,
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    vary: Option<Vary>,
}

impl Head {
    fn of(stored: &Stored) -> Head {
        let text = |value: &HeaderValue| value.to_str().unwrap_or_default().to_owned();
        Head {
            status: stored.status.as_u16(),
            headers: stored
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), text(value)))
                .collect(),
            etag: text(&stored.etag),
            generated_ms: stored.generated_ms,
            expires_ms: stored.expires_ms,
            vary: stored.vary.clone(),
        }
    }

    fn with_body(self, body: Bytes) -> Stored {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        Stored {
            status: StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK),
            headers,
            body,
            etag: etag_value(&self.etag),
            generated_ms: self.generated_ms,
            expires_ms: self.expires_ms,
            vary: self.vary,
            keep: Duration::ZERO,
        }
    }
}

/// A response that varies on request headers is stored per value of them:
/// the entry at the path's key holds the variant for the request that made
/// it, and the others live at keys derived from `token`, which each new
/// entry at the path's key draws afresh. Once that entry is evicted, the
/// variants made for it can no longer be reached.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Vary {
    /// The request headers named, lower case.
    names: Vec<String>,
    token: String,
    /// Their values in the request the response was made for.
    values: Vec<Option<String>>,
}

/// The values of `names` in a request's headers, as bytes made text
/// ([`request::text`]): an absent header, an empty value and every distinct
/// value are apart.
fn values_of(request: &HeaderMap, names: &[String]) -> Vec<Option<String>> {
    names
        .iter()
        .map(|name| {
            let values: Vec<String> = request
                .get_all(name.as_str())
                .iter()
                .map(|v| request::text(v.as_bytes()))
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        })
        .collect()
}

/// The type the layer's entries are framed for: a length-prefixed JSON head
/// (status, headers, validators, times, variants), then the body, byte for
/// byte. A body costs its own size to store, whatever it holds (text,
/// compressed or binary), and is read back without decoding.
struct FramedResponse;

/// Seals a response for the layer's entries (the cache's codec is not
/// used: the head is small JSON, the body its own bytes).
pub(crate) fn seal(
    _: &ValueCodec,
    loaded: &Loaded,
    load: Duration,
    fresh: Duration,
) -> Result<Vec<u8>, Error> {
    let head = serde_json::to_vec(&Head::of(&loaded.stored)).map_err(|e| Error::Encode {
        what: "response",
        message: e.to_string(),
    })?;
    let body = &loaded.stored.body;
    let mut payload = Vec::with_capacity(4 + head.len() + body.len());
    payload.extend_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes());
    payload.extend_from_slice(&head);
    payload.extend_from_slice(body);
    Ok(envelope::seal_framed::<FramedResponse>(
        &payload, load, fresh,
    ))
}

/// Opens a response sealed by [`seal`].
/// The body is a slice of the envelope's bytes, not a copy.
pub(crate) fn open(_: &ValueCodec, bytes: &Bytes) -> Result<(Loaded, Meta), OpenError> {
    let (payload, meta) = envelope::open_framed::<FramedResponse>(bytes)?;
    let truncated = || OpenError::Truncated(bytes.len());
    let len = payload.get(..4).ok_or_else(truncated)?;
    let len = usize::try_from(u32::from_le_bytes([len[0], len[1], len[2], len[3]]))
        .map_err(|_| truncated())?;
    let head = payload.get(4..4 + len).ok_or_else(truncated)?;
    let head: Head = serde_json::from_slice(head).map_err(|e| OpenError::Codec(Box::new(e)))?;
    let body = bytes.slice_ref(&payload[4 + len..]);
    let loaded = Loaded {
        stored: Arc::new(head.with_body(body)),
        fresh: false,
        storable: false,
        stale: false,
    };
    Ok((loaded, meta))
}

/// A response the handler produced or the cache returned. A hit that the
/// local tier (or a batched read) shares is opened once and shared after:
/// its head is parsed once, its body a `Bytes` handed out without a copy.
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    stored: Arc<Stored>,
    /// Produced by the handler in this call (never set on a hit).
    fresh: bool,
    /// May be stored (decided when it was produced).
    storable: bool,
    /// A stored response past its freshness, served within a stale window.
    stale: bool,
}

/// What a cached value must be; the layer's entries are framed by [`seal`]
/// and [`open`], and these are the head alone.
impl Serialize for Loaded {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Head::of(&self.stored).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Loaded {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Loaded {
            stored: Arc::new(Head::deserialize(deserializer)?.with_body(Bytes::new())),
            fresh: false,
            storable: false,
            stale: false,
        })
    }
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

/// A handler's response whose head has arrived and whose body has not been
/// read: what the layer decides of it from the head alone.
pub(crate) struct Incoming {
    parts: http::response::Parts,
    /// May be stored, as far as its head tells.
    storable: bool,
    vary: Option<Vary>,
    /// Its upstream `Age`.
    age: Duration,
}

impl Incoming {
    /// Decides from its head whether a handler's response to `request`
    /// may be stored: a final status with a freshness lifetime (its own, or
    /// for a status cacheable by default the layer's TTL, or in gateway
    /// mode a heuristic one), that its `audience` admits, without `Vary: *`
    /// or `no-store`, and no `Content-Length` over the cache's maximum value
    /// size.
    pub(crate) fn of(
        parts: http::response::Parts,
        request: &HeaderMap,
        audience: &Audience,
        shape: Shape,
        head: bool,
    ) -> Incoming {
        let names: Vec<String> = parts
            .headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap_or("*"))
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        let vary = (!names.is_empty()).then(|| Vary {
            values: values_of(request, &names),
            names,
            token: crate::backend::token(),
        });
        let vary_all = vary
            .as_ref()
            .is_some_and(|v| v.names.iter().any(|n| n == "*"));
        let freshness = Freshness::of(&parts.headers, !shape.private);
        let lifetime = match freshness.lifetime {
            Some(own) => Some(own),
            None if shape.origin_freshness => freshness::heuristic(parts.status, &parts.headers),
            None if freshness::cacheable_by_default(parts.status) => Some(shape.ttl),
            None => None,
        };
        let fits = length(&parts.headers).is_none_or(|len| len <= shape.max_size as u64);
        let storable = lifetime.is_some()
            && storable_status(parts.status)
            && !head
            && audience.admits(Some(&parts.headers))
            && !vary_all
            && !freshness.no_store
            && fits;
        Incoming {
            parts,
            storable,
            vary,
            age: freshness.age,
        }
    }

    pub(crate) fn storable(&self) -> bool {
        self.storable
    }

    /// The response as the handler made it, its body streamed through, for
    /// one the layer does not store.
    pub(crate) fn passed<B>(self, body: B) -> Response<B> {
        let mut response = Response::from_parts(self.parts, body);
        let miss = HeaderValue::from_static("MISS");
        response.headers_mut().insert(X_CACHE, miss);
        response
    }

    /// The response sent while its body is forwarded as it arrives: the
    /// layer's headers, less the `ETag` it would derive from the body (a
    /// handler's own is kept); and the body's length, when the handler said.
    pub(crate) fn forwarded_head(&self, shape: Shape) -> (Response<()>, Option<u64>) {
        let mut storable = true;
        let headers = kept_headers(self.parts.headers.clone(), &mut storable);
        let etag = headers
            .get(ETAG)
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        let stored = Stored::new(
            self.parts.status,
            headers,
            Bytes::new(),
            etag,
            None,
            shape,
            self.age,
        );
        let loaded = Loaded {
            stored: Arc::new(stored),
            fresh: true,
            storable: true,
            stale: false,
        };
        let mut head = Response::new(());
        *head.status_mut() = self.parts.status;
        *head.headers_mut() = loaded.sent_headers(shape, false);
        (head, length(&self.parts.headers))
    }

    /// The response with its body read (`None`: it grew past the cache's
    /// maximum value size, and is not stored).
    pub(crate) fn finish(self, body: Option<Bytes>, shape: Shape) -> Loaded {
        let mut storable =
            self.storable && body.as_ref().is_some_and(|b| b.len() <= shape.max_size);
        let body = body.unwrap_or_default();
        let status = self.parts.status;
        let headers = kept_headers(self.parts.headers, &mut storable);
        let etag = match headers.get(ETAG).filter(|v| v.to_str().is_ok()) {
            Some(own) => own.clone(),
            None => etag_value(&request::etag(&body)),
        };
        let stored = Stored::new(status, headers, body, etag, self.vary, shape, self.age);
        storable &= stored.expires_ms > now_ms() || !stored.keep.is_zero();
        Loaded {
            stored: Arc::new(stored),
            fresh: true,
            storable,
            stale: false,
        }
    }
}

/// A response's `Content-Length`, when it gives one.
fn length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

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
    fn sent_headers(&self, shape: Shape, with_etag: bool) -> HeaderMap {
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

/// An entity tag as a header value; the empty tag for text that is not one.
fn etag_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("\"\""))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A hit hands out the stored body as a slice of the envelope it read,
    /// not a copy: a 1 MB response costs no 1 MB copy a hit.
    #[test]
    fn an_opened_body_is_the_envelope_s_bytes() {
        let loaded = Loaded {
            stored: Arc::new(Stored {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(vec![7u8; 1 << 20]),
                etag: HeaderValue::from_static("\"1\""),
                generated_ms: 0,
                expires_ms: 1,
                vary: None,
                keep: Duration::ZERO,
            }),
            fresh: true,
            storable: true,
            stale: false,
        };
        let codec = ValueCodec::Json;
        let sealed = seal(&codec, &loaded, Duration::ZERO, Duration::from_secs(60)).unwrap();
        let sealed = Bytes::from(sealed);
        let (opened, _) = open(&codec, &sealed).unwrap();
        assert_eq!(opened.stored.body, loaded.stored.body);
        assert!(
            sealed.as_ptr_range().contains(&opened.stored.body.as_ptr()),
            "the body was copied out of the envelope"
        );
    }
}
