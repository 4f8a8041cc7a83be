//! What the layer reads from a request: its key, its cache directives, its
//! credentials and its validators.

use http::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, IF_NONE_MATCH};
use http::{HeaderMap, Uri};
use sha2::{Digest, Sha256};

/// The request's `Cache-Control` directives that the layer honours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// Neither served from the cache nor stored into it.
    pub(crate) no_store: bool,
    /// Served by the handler, and stored (also `max-age=0`).
    pub(crate) no_cache: bool,
    /// An entry older than this many seconds is a miss.
    pub(crate) max_age: Option<u64>,
}

impl Directives {
    pub(crate) fn of(headers: &HeaderMap) -> Directives {
        let mut directives = Directives::default();
        let values = headers.get_all(CACHE_CONTROL).iter();
        for directive in values
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
        {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                directives.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                directives.no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                // An invalid value is ignored, as RFC 9111 §4.2.1 allows.
                if let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok()) {
                    directives.max_age = Some(seconds);
                }
            }
        }
        if directives.max_age == Some(0) {
            directives.no_cache = true;
        }
        directives
    }
}

/// Whether the request carries credentials (`Authorization` or `Cookie`).
pub(crate) fn credentialed(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || headers.contains_key(COOKIE)
}

/// The entry key of a request: its path and its query parameters sorted by
/// name then value, so that `?z=2&a=1` and `?a=1&z=2` meet; on a private
/// layer, with a hash of the credentials after it.
pub(crate) fn key(uri: &Uri, user: Option<&str>) -> String {
    let mut key = uri.path().to_owned();
    let mut pairs: Vec<(&str, &str)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    pairs.sort_unstable();
    for (at, (name, value)) in pairs.iter().enumerate() {
        key.push(if at == 0 { '?' } else { '&' });
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    if let Some(user) = user {
        key.push_str(" user=");
        key.push_str(user);
    }
    key
}

/// A hash of the request's `Authorization` and `Cookie` headers: the user a
/// private entry belongs to.
pub(crate) fn user(headers: &HeaderMap) -> String {
    let mut hash = Sha256::new();
    for name in [AUTHORIZATION, COOKIE] {
        for value in headers.get_all(&name) {
            hash.update(name.as_str());
            hash.update(b":");
            hash.update(value.as_bytes());
            hash.update(b"\n");
        }
    }
    hex(&hash.finalize()[..16])
}

/// A strong validator for a body: the same in every process and restart.
pub(crate) fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex(&Sha256::digest(body)[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `If-None-Match` matches `etag`, by the weak comparison of RFC 9110
/// §13.1.2: `*`, or any listed tag whose opaque part is the same.
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn query_parameters_are_sorted() {
        let a: Uri = "/items?z=2&a=1&a=0".parse().unwrap();
        let b: Uri = "/items?a=0&a=1&z=2".parse().unwrap();
        assert_eq!(key(&a, None), key(&b, None));
        assert_eq!(key(&a, None), "/items?a=0&a=1&z=2");
        let bare: Uri = "/items?".parse().unwrap();
        assert_eq!(key(&bare, None), "/items");
        assert_ne!(key(&bare, Some("u1")), key(&bare, Some("u2")));
    }

    #[test]
    fn directives() {
        let parse = |value| Directives::of(&headers(&[(CACHE_CONTROL, value)]));
        assert!(parse("No-Store").no_store);
        assert!(parse("no-cache").no_cache && !parse("no-cache").no_store);
        assert!(parse("max-age=0").no_cache);
        assert_eq!(parse("public, max-age=\"30\"").max_age, Some(30));
        assert_eq!(parse("max-age=soon").max_age, None);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "\"abc\"";
        assert!(none_match(&headers(&[(IF_NONE_MATCH, "\"abc\"")]), tag));
        assert!(none_match(&headers(&[(IF_NONE_MATCH, "W/\"abc\"")]), tag));
        assert!(none_match(
            &headers(&[(IF_NONE_MATCH, "\"x\", \"abc\"")]),
            tag
        ));
        assert!(none_match(&headers(&[(IF_NONE_MATCH, "*")]), tag));
        assert!(!none_match(&headers(&[(IF_NONE_MATCH, "\"abcd\"")]), tag));
        assert!(!none_match(&HeaderMap::new(), tag));
    }

    #[test]
    fn etags_are_stable_and_quoted() {
        assert_eq!(etag(b"hello"), etag(b"hello"));
        assert_ne!(etag(b"hello"), etag(b"hello!"));
        assert_eq!(etag(b"").len(), 34);
    }
}
