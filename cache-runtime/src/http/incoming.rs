//! A handler's response whose head has arrived: what the layer decides of
//! it before its body is read, and the forms it is then sent in.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, VARY};
use http::{HeaderMap, HeaderValue, Response};

use super::freshness::{self, Freshness};
use super::privacy::Audience;
use super::request;
use super::response::{Loaded, Shape, X_CACHE};
use super::stored::{etag_value, kept_headers, storable_status, values_of, Stored, Vary};
use crate::entry::envelope::now_ms;

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
