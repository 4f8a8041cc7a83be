//! What the layer keeps of a response, and how an entry frames it: a small
//! JSON head, then the body byte for byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderName, AGE, CONNECTION, CONTENT_LENGTH, ETAG, LAST_MODIFIED, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::freshness::{self, Freshness};
use super::request;
use super::response::{Loaded, Shape, X_CACHE};
use crate::entry::codec::ValueCodec;
use crate::entry::envelope::{self, now_ms, Meta, OpenError};
use crate::Error;

/// A response as the layer keeps it: its head parsed, ready to send, and
/// its body as it was sent.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) status: StatusCode,
    /// The handler's headers, but those of the connection and the cache's own.
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) etag: HeaderValue,
    /// When the handler produced it, Unix milliseconds (for `Age`).
    pub(super) generated_ms: u64,
    /// When the entry expires, Unix milliseconds (for `max-age`).
    pub(super) expires_ms: u64,
    /// What the response varies on, when it names request headers.
    pub(super) vary: Option<Vary>,
    /// How long past `expires_ms` it is kept, to be revalidated or served
    /// stale (decided when it is stored; not stored itself).
    pub(super) keep: Duration,
}

impl Stored {
    /// A response produced now, `age` old when it arrived (its upstream
    /// `Age`, which is not kept), with the times it is fresh until and kept
    /// until: its lifetime is its
    /// own (or the layer's TTL, or a heuristic one) capped by the layer's
    /// TTL, and it is kept past that to be revalidated when it has a
    /// validator of the handler's, or to be served stale within the windows
    /// of `stale-while-revalidate` and `stale-if-error`.
    pub(super) fn new(
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
pub(super) fn kept_headers(from: HeaderMap, storable: &mut bool) -> HeaderMap {
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
pub(super) fn storable_status(status: StatusCode) -> bool {
    !status.is_informational()
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// A stored response's head, as [`seal`] writes it: JSON under one-letter
/// names (it is stored with every response).
#[derive(Serialize, Deserialize)]
pub(super) struct Head {
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
pub(super) struct Vary {
    /// The request headers named, lower case.
    pub(super) names: Vec<String>,
    pub(super) token: String,
    /// Their values in the request the response was made for.
    pub(super) values: Vec<Option<String>>,
}

/// The values of `names` in a request's headers, as bytes made text
/// ([`request::text`]): an absent header, an empty value and every distinct
/// value are apart.
pub(super) fn values_of(request: &HeaderMap, names: &[String]) -> Vec<Option<String>> {
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
pub(super) struct FramedResponse;

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

/// An entity tag as a header value; the empty tag for text that is not one.
pub(super) fn etag_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("\"\""))
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
