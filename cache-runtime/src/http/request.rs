//! What the layer reads from a request: its key, its cache directives, the
//! caller's identity and its validators.

use http::header::{
    HeaderName, AUTHORIZATION, CACHE_CONTROL, COOKIE, HOST, IF_NONE_MATCH, IF_RANGE,
    PROXY_AUTHORIZATION, RANGE,
};
use http::request::Parts;
use http::{HeaderMap, Uri};
use sha2::{Digest, Sha256};

/// The `Cache-Control` directives that the layer honours, of a request or a
/// response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// Neither served from the cache nor stored into it.
    pub(crate) no_store: bool,
    /// Served by the handler, and stored (also `max-age=0`).
    pub(crate) no_cache: bool,
    /// An entry older than this many seconds is a miss; in a response, how
    /// long it is fresh.
    pub(crate) max_age: Option<u64>,
    /// In a response: how long it is fresh in a shared cache.
    pub(crate) s_maxage: Option<u64>,
    /// In a response: for one user only.
    pub(crate) private: bool,
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
            } else if name.eq_ignore_ascii_case("private") {
                directives.private = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                // An invalid value is ignored, as RFC 9111 §4.2.1 allows.
                if let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok()) {
                    directives.max_age = Some(seconds);
                }
            } else if name.eq_ignore_ascii_case("s-maxage") {
                if let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok()) {
                    directives.s_maxage = Some(seconds);
                }
            }
        }
        if directives.max_age == Some(0) {
            directives.no_cache = true;
        }
        directives
    }
}

/// The headers that identify a caller by default: the usual credential
/// headers.
const CREDENTIALS: [HeaderName; 6] = [
    AUTHORIZATION,
    PROXY_AUTHORIZATION,
    COOKIE,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-auth-token"),
    HeaderName::from_static("x-access-token"),
];

/// The default identity of a caller: the names and values of the credential
/// headers it sent, or `None` when it sent none.
pub(crate) fn default_identity(parts: &Parts) -> Option<Vec<u8>> {
    let mut identity = Vec::new();
    for name in &CREDENTIALS {
        for value in parts.headers.get_all(name) {
            identity.extend_from_slice(name.as_str().as_bytes());
            identity.push(b':');
            identity.extend_from_slice(value.as_bytes());
            identity.push(b'\n');
        }
    }
    (!identity.is_empty()).then_some(identity)
}

/// Where a request's entries live: its authority and path. Every entry of
/// the path (whatever its query, and its `Vary` variants) is reached from
/// here, so that a write evicts them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// The authority, lower case, then the path: `shop-a.example/items/1`.
    path: String,
    /// The query parameters, sorted by name, the values of a repeated name in
    /// their order; empty for none.
    query: String,
}

impl Place {
    /// The place of a request to `uri` with `headers`: the authority is the
    /// URI's (HTTP/2, absolute form), else the `Host` header's.
    /// The `Host` is read as bytes ([`text`]): two hosts are one place only
    /// when they are the same, whatever bytes they hold.
    pub(crate) fn of(uri: &Uri, headers: &HeaderMap) -> Place {
        let authority = match uri.authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => headers
                .get(HOST)
                .map(|host| text(host.as_bytes()))
                .unwrap_or_default(),
        };
        let mut path = authority.to_ascii_lowercase();
        path.push_str(uri.path());
        Place {
            path,
            query: sorted_query(uri.query().unwrap_or_default()),
        }
    }

    /// The place a `Location` or `Content-Location` names, when it is on the
    /// same authority as `self` (RFC 9111 §4.4: another's is not invalidated).
    pub(crate) fn named(&self, headers: &HeaderMap, name: HeaderName) -> Option<Place> {
        let value = headers.get(name)?.to_str().ok()?;
        let uri: Uri = value.parse().ok()?;
        let authority = match uri.authority() {
            Some(authority) => authority.as_str().to_ascii_lowercase(),
            None => self.authority().to_owned(),
        };
        if authority != self.authority() || !uri.path().starts_with('/') {
            return None;
        }
        Some(Place {
            path: format!("{authority}{}", uri.path()),
            query: String::new(),
        })
    }

    fn authority(&self) -> &str {
        let slash = self.path.find('/').unwrap_or(self.path.len());
        &self.path[..slash]
    }

    /// Whether the request has query parameters: its entries are then
    /// variants of the path, reached through the path's anchor.
    pub(crate) fn has_query(&self) -> bool {
        !self.query.is_empty()
    }

    /// The key of the path's own entry (no query), and of its anchor in the
    /// anchors' group: both of which a write evicts.
    pub(crate) fn path_key(&self) -> &str {
        &self.path
    }

    /// The key of the request's entry: the path's own, or for a query, the
    /// query's under the anchor's token; on a private layer, with a hash of
    /// the caller's identity after it.
    pub(crate) fn key(&self, anchor: Option<&str>, user: Option<&str>) -> String {
        let mut key = self.path.clone();
        if let Some(anchor) = anchor {
            key.push('?');
            key.push_str(&self.query);
            key.push_str(" @");
            key.push_str(anchor);
        }
        if let Some(user) = user {
            key.push_str(" user=");
            key.push_str(user);
        }
        key
    }
}

/// A query's parameters sorted by name, the values of a repeated name kept
/// in their order: `z=2&a=1` and `a=1&z=2` meet; `s=b&s=a` and `s=a&s=b`
/// do not, as an application reading the list sees them differently.
fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    pairs.sort_by_key(|(name, _)| *name); // stable: values keep their order
    let mut sorted = String::with_capacity(query.len());
    for (at, (name, value)) in pairs.iter().enumerate() {
        if at > 0 {
            sorted.push('&');
        }
        sorted.push_str(name);
        sorted.push('=');
        sorted.push_str(value);
    }
    sorted
}

/// A header value's bytes as text, one to one: visible ASCII as it is, but
/// `%`, which is written `%25`, as every other byte is (`%C3%BC` for the
/// UTF-8 of `ü`, `%09` for a tab). Values that are not visible ASCII are
/// thus neither dropped nor taken for one another.
pub(crate) fn text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_graphic() && byte != b'%' || byte == b' ' {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(byte & 0xf)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// A hash of a caller's identity: the user a private entry belongs to.
pub(crate) fn user(identity: Option<&[u8]>) -> String {
    hex(&Sha256::digest(identity.unwrap_or_default())[..16])
}

/// A strong validator for a body: the same in every process and restart.
pub(crate) fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex(&Sha256::digest(body)[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The single byte range a request's `Range` asks of a body of `len` bytes,
/// when the layer answers it from a stored response: `None` to send the
/// whole response (no `Range`, several ranges, another unit, or an
/// `If-Range` that does not match `etag`); `Some(None)` when it lies past
/// the end; else the first and last byte.
pub(crate) fn range(
    headers: &HeaderMap,
    len: usize,
    etag: &http::HeaderValue,
) -> Option<Option<(usize, usize)>> {
    let spec = headers.get(RANGE)?.to_str().ok()?.trim();
    if headers.get(IF_RANGE).is_some_and(|tag| tag != etag) {
        return None;
    }
    let spec = spec.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |text: &str| text.trim().parse::<usize>().ok();
    let (first, last) = match (first.trim().is_empty(), number(first), number(last)) {
        // A suffix: the last N bytes.
        (true, _, Some(suffix)) => (len.saturating_sub(suffix), len.checked_sub(1)?),
        (false, Some(first), last) if last.is_none() || last >= Some(first) => {
            (first, last.unwrap_or(usize::MAX).min(len.saturating_sub(1)))
        }
        _ => return None,
    };
    Some((first < len && len > 0).then_some((first, last)))
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

    fn place(uri: &str, host: Option<&str>) -> Place {
        let uri: Uri = uri.parse().unwrap();
        let headers = match host {
            Some(host) => headers(&[(HOST, host)]),
            None => HeaderMap::new(),
        };
        Place::of(&uri, &headers)
    }

    #[test]
    fn query_parameters_are_sorted_by_name_only() {
        let a = place("/items?z=2&a=1&a=0", None);
        assert_eq!(a, place("/items?a=1&z=2&a=0", None));
        assert_eq!(a.key(Some("t"), None), "/items?a=1&a=0&z=2 @t");
        assert_ne!(a, place("/items?a=0&a=1&z=2", None));
        let bare = place("/items?", None);
        assert!(!bare.has_query());
        assert_eq!(bare.key(None, None), "/items");
        assert_ne!(bare.key(None, Some("u1")), bare.key(None, Some("u2")));
    }

    #[test]
    fn header_bytes_are_text_one_to_one() {
        assert_eq!(text(b"en-GB, fr;q=0.5"), "en-GB, fr;q=0.5");
        assert_eq!(text("müller".as_bytes()), "m%C3%BCller");
        assert_eq!(text(b"100%"), "100%25");
        assert_ne!(text("müller".as_bytes()), text("jürgen".as_bytes()));
        assert_ne!(text(b"\xfc"), text(b""));
        assert_ne!(text(b"%C3"), text(&[0xc3]));
    }

    #[test]
    fn a_host_outside_visible_ascii_is_its_own_place() {
        let of = |host: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, http::HeaderValue::from_bytes(host).unwrap());
            Place::of(&"/".parse().unwrap(), &headers)
        };
        let (a, o) = (
            of("shop-ä.example".as_bytes()),
            of("shop-ö.example".as_bytes()),
        );
        assert_ne!(a, o);
        assert_ne!(a, place("/", None));
        assert_ne!(of(&[0xe4]), of(&[0xf6]));
        assert_eq!(
            of("Shop-Ä.example".as_bytes()).path_key(),
            "shop-%c3%84.example/"
        );
    }

    #[test]
    fn the_authority_is_part_of_the_place() {
        let a = place("/", Some("Shop-A.example"));
        assert_eq!(a.path_key(), "shop-a.example/");
        assert_ne!(a, place("/", Some("shop-b.example")));
        assert_eq!(place("http://shop-a.example/", Some("x")), a);
    }

    #[test]
    fn locations_on_the_same_authority_are_named() {
        let at = place("/items", Some("a.example"));
        let named = |value: &str| {
            at.named(
                &headers(&[(http::header::LOCATION, value)]),
                http::header::LOCATION,
            )
        };
        assert_eq!(
            named("/items/7?x=1").unwrap().path_key(),
            "a.example/items/7"
        );
        assert_eq!(
            named("http://A.example/items/8").unwrap().path_key(),
            "a.example/items/8"
        );
        assert_eq!(named("https://b.example/items/7"), None);
        assert_eq!(named("items/7"), None);
    }

    #[test]
    fn the_default_identity_is_any_credential_header() {
        let identity = |pairs: &[(HeaderName, &str)]| {
            let mut request = http::Request::new(());
            *request.headers_mut() = headers(pairs);
            default_identity(&request.into_parts().0)
        };
        assert_eq!(identity(&[]), None);
        let alice = identity(&[(HeaderName::from_static("x-api-key"), "alice")]);
        let bob = identity(&[(HeaderName::from_static("x-api-key"), "bob")]);
        assert!(alice.is_some() && alice != bob);
        assert!(identity(&[(PROXY_AUTHORIZATION, "Basic x")]).is_some());
        assert_ne!(user(alice.as_deref()), user(bob.as_deref()));
    }

    #[test]
    fn directives() {
        let parse = |value| Directives::of(&headers(&[(CACHE_CONTROL, value)]));
        assert!(parse("No-Store").no_store);
        assert!(parse("no-cache").no_cache && !parse("no-cache").no_store);
        assert!(parse("max-age=0").no_cache);
        assert_eq!(parse("public, max-age=\"30\"").max_age, Some(30));
        assert_eq!(parse("max-age=soon").max_age, None);
        assert!(parse("Private=\"set-cookie\", max-age=5").private);
        assert_eq!(parse("s-maxage=7").s_maxage, Some(7));
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
