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
//! - **Key.** The request's authority (`Host`), its path, and its query
//!   parameters sorted by name, the values of a repeated name in their
//!   order. `GET`, `HEAD`, `PUT`, `PATCH`, `POST` and `DELETE` on one path
//!   address one entry, in the layer's group. Entries with a query name
//!   their path's *anchor*, a token that a write to the path replaces: a
//!   request with a query reads it first (one more lookup, a hit once
//!   drawn); one without pays nothing for it.
//! - **Stored.** Final responses to `GET` with a freshness lifetime
//!   (`freshness`): their own (`CDN-Cache-Control`, else `s-maxage`,
//!   `max-age`, `Expires`, less an upstream `Age`), else for a status
//!   cacheable by default the layer's TTL, or in
//!   [gateway mode](CacheLayer::origin_freshness) a heuristic one; never
//!   one with `Set-Cookie`, `no-store` (or `private` on a shared layer),
//!   `Vary: *`, or a body over the cache's maximum value size. A response
//!   with `Vary` is stored per value of the request headers it names. A
//!   `HEAD` is answered from the `GET` entry.
//! - **Stale.** An entry with the handler's own validator is kept past its
//!   freshness and revalidated (`If-None-Match`, `If-Modified-Since`; a
//!   `304` refreshes it); within `stale-while-revalidate` it is served while
//!   revalidated in the background, within `stale-if-error` (or
//!   [`CacheLayer::stale_if_error`]) when the handler fails.
//! - **Sent.** `X-Cache: HIT | MISS | STALE | BYPASS`; a strong `ETag` from a
//!   hash of the body (a handler's own is kept); `Cache-Control:
//!   max-age=<seconds left>` (`private, ` on a private layer; a handler's
//!   own is kept); `Age`; `304 Not Modified` for a matching `If-None-Match`
//!   or `If-Modified-Since`, and `206` for a byte range, from a hit. A
//!   [disabled](crate::Cache::disabled) cache makes the layer transparent:
//!   `BYPASS`, and none of these.
//! - **Streamed.** A response the layer will not store is passed on as it
//!   arrives; one it stores is forwarded frame by frame while copied
//!   ([`CacheBody`]), and is not stored once it grows past the cache's
//!   maximum value size.
//! - **Request directives.** `no-store` skips the cache both ways; `no-cache`
//!   and `max-age=0` run the handler and store its response; `max-age=N`
//!   treats an entry older than N seconds as a miss.
//! - **Identity.** On a shared layer a request with an
//!   [identity](CacheLayer::identity) (by default, any of the usual
//!   credential headers) is neither served from the cache nor stored
//!   (`BYPASS`), and its write evicts rather than writes through; a private
//!   layer keys it per user. One decision (`privacy`) says which requests
//!   and responses may share an entry, for every path that reads or stores.
//! - **Writes.** A `2xx` or `3xx` to an unsafe method (`POST`, `PUT`,
//!   `PATCH`, `DELETE`, or any not known to be safe) evicts, after
//!   the handler, every entry of its path whatever their query, and of the
//!   paths its `Location` and `Content-Location` name on the same authority
//!   (the whole group with `evict_group`, and on a private layer, whose
//!   entries are per user); with `write_through` a `PUT`/`PATCH` stores its
//!   response as the path's entry. An error status evicts nothing.

mod body;
mod freshness;
mod incoming;
mod layer;
mod privacy;
mod read;
mod request;
mod response;
mod service;
mod stored;
mod write;

pub use body::CacheBody;
pub use layer::CacheLayer;
pub use service::CacheService;
