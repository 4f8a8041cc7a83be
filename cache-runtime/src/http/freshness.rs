//! How long a response may be used: its freshness lifetime, its age, and
//! the windows past freshness in which it may still be served (RFC 9111
//! §4.2, RFC 5861), read from `CDN-Cache-Control` (RFC 9213) when it is
//! there, else from `Cache-Control` and `Expires`.

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, AGE, CACHE_CONTROL, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The field targeted at the layer, as the application's edge cache: when
/// a response carries it, it rules the layer's caching and `Cache-Control`
/// is left to the caches downstream.
pub(crate) const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// What a response says of its own caching.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// Its explicit freshness lifetime (`s-maxage` on a shared layer,
    /// `max-age`, or `Expires` less `Date`); zero for an invalid value,
    /// which makes it stale (RFC 9111 §4.2.1), and for `no-cache`.
    pub(crate) lifetime: Option<Duration>,
    /// How old it already was when it arrived (its `Age`).
    pub(crate) age: Duration,
    pub(crate) no_store: bool,
    pub(crate) private: bool,
    /// Never served stale, not even within a stale window.
    pub(crate) must_revalidate: bool,
    /// `stale-while-revalidate`: served stale this long past freshness
    /// while it is revalidated in the background.
    pub(crate) while_revalidate: Option<Duration>,
    /// `stale-if-error`: served stale this long past freshness when the
    /// handler fails.
    pub(crate) if_error: Option<Duration>,
}

impl Freshness {
    /// What `headers` say, for a shared layer or a private one.
    pub(crate) fn of(headers: &HeaderMap, shared: bool) -> Freshness {
        let targeted = targeted(headers);
        let mut freshness = Freshness {
            age: age(headers),
            ..Freshness::default()
        };
        let (mut max_age, mut s_maxage, mut no_cache) = (None, None, false);
        let fields = match &targeted {
            Some(_) => Vec::new(),
            None => directives(headers, &CACHE_CONTROL),
        };
        for (name, value) in targeted.clone().unwrap_or(fields) {
            match name.as_str() {
                "no-store" => freshness.no_store = true,
                "no-cache" => no_cache = true,
                "private" => freshness.private = true,
                "must-revalidate" => freshness.must_revalidate = true,
                "proxy-revalidate" if shared => freshness.must_revalidate = true,
                // The first of repeated values counts (RFC 9111 §4.2.1).
                "max-age" => max_age = max_age.or(Some(seconds(value))),
                "s-maxage" if shared => s_maxage = s_maxage.or(Some(seconds(value))),
                "stale-while-revalidate" => freshness.while_revalidate = Some(seconds(value)),
                "stale-if-error" => freshness.if_error = Some(seconds(value)),
                _ => {}
            }
        }
        freshness.lifetime = if no_cache {
            Some(Duration::ZERO)
        } else {
            s_maxage
                .or(max_age)
                .or_else(|| targeted.is_none().then(|| expires(headers)).flatten())
        };
        freshness
    }

    /// Whether it may be served stale at all (within a window it gives).
    pub(crate) fn may_serve_stale(&self) -> bool {
        !self.must_revalidate
    }
}

/// The directives of the field `name`, lower-cased, with their values.
fn directives(headers: &HeaderMap, name: &HeaderName) -> Vec<(String, Option<String>)> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().to_owned())),
                None => (directive.trim(), None),
            };
            (!name.is_empty()).then(|| (name.to_ascii_lowercase(), value))
        })
        .collect()
}

/// The directives of `CDN-Cache-Control`, when it is there and a valid
/// structured dictionary (RFC 9213 §2.1): keys that are sf-keys, and the
/// lifetimes integers. An invalid field is ignored whole, and
/// `Cache-Control` rules.
fn targeted(headers: &HeaderMap) -> Option<Vec<(String, Option<String>)>> {
    let mut members = Vec::new();
    for line in headers.get_all(&CDN_CACHE_CONTROL) {
        for member in line.to_str().ok()?.split(',') {
            let member = member.trim_matches([' ', '\t']);
            // Parameters (`;a=b`) carry nothing the layer reads.
            let member = member.split(';').next().unwrap_or_default();
            let (key, value) = match member.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (member, None),
            };
            let mut chars = key.chars();
            let key_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '*')
                && chars
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.*".contains(c));
            let integer = |v: &str| {
                let digits = v.strip_prefix('-').unwrap_or(v);
                !digits.is_empty()
                    && digits.len() <= 15
                    && digits.bytes().all(|b| b.is_ascii_digit())
            };
            let lifetime = [
                "max-age",
                "s-maxage",
                "stale-while-revalidate",
                "stale-if-error",
            ];
            let value_ok = match value {
                None => true,
                Some(v) if lifetime.contains(&key) => integer(v),
                Some(v) => !v.is_empty(),
            };
            if !key_ok || !value_ok {
                return None;
            }
            members.push((key.to_owned(), value.map(str::to_owned)));
        }
    }
    (!members.is_empty()).then_some(members)
}

/// A delta-seconds value: digits, or digits in double quotes; anything else
/// is invalid, and reads as zero (stale), as caches must treat it.
fn seconds(value: Option<String>) -> Duration {
    let value = value.unwrap_or_default();
    let digits = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(&value);
    delta(digits).unwrap_or_default()
}

/// Digits as seconds, saturating (RFC 9111 §1.2.2: a value too large is the
/// greatest one can hold).
fn delta(digits: &str) -> Option<Duration> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = digits.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31);
    Some(Duration::from_secs(seconds))
}

/// The response's `Age`: the first value of its first line, when it is a
/// number of seconds; else none (RFC 9111 §5.1).
fn age(headers: &HeaderMap) -> Duration {
    let first = headers
        .get(AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next());
    first.and_then(|v| delta(v.trim())).unwrap_or_default()
}

/// `Expires` less `Date` (or now), an invalid `Expires` being already past.
fn expires(headers: &HeaderMap) -> Option<Duration> {
    let expires = headers.get(EXPIRES)?;
    let Some(expires) = date(expires) else {
        return Some(Duration::ZERO);
    };
    let now = headers
        .get(DATE)
        .and_then(date)
        .unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(now).unwrap_or_default())
}

/// An HTTP date, in any of the three formats recipients accept, the names
/// of days and months, and `GMT`, in any case.
pub(crate) fn date(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?.trim();
    httpdate::parse_http_date(text).ok().or_else(|| {
        let mut cased = String::with_capacity(text.len());
        let mut word_start = true;
        for c in text.chars() {
            cased.push(match word_start {
                true => c.to_ascii_uppercase(),
                false => c.to_ascii_lowercase(),
            });
            word_start = !c.is_ascii_alphabetic();
        }
        httpdate::parse_http_date(&cased.replace("Gmt", "GMT")).ok()
    })
}

/// A heuristic freshness lifetime (RFC 9111 §4.2.2) for a response without
/// an explicit one: a tenth of the time since its `Last-Modified`, for a
/// status that is cacheable by default.
pub(crate) fn heuristic(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if !cacheable_by_default(status) {
        return None;
    }
    let modified = date(headers.get(LAST_MODIFIED)?)?;
    let now = headers
        .get(DATE)
        .and_then(date)
        .unwrap_or_else(SystemTime::now);
    Some(now.duration_since(modified).unwrap_or_default() / 10)
}

/// The statuses a cache may store without explicit freshness (RFC 9110
/// §15.1).
pub(crate) fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn invalid_lifetimes_are_stale_and_s_maxage_rules_a_shared_layer() {
        let of = |pairs: &[(&str, &str)]| Freshness::of(&headers(pairs), true).lifetime;
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(of(&[("cache-control", "max-age=-3600")]), secs(0));
        assert_eq!(of(&[("cache-control", "max-age='3600'")]), secs(0));
        assert_eq!(of(&[("cache-control", "max-age=\"3600\"")]), secs(3600));
        assert_eq!(
            of(&[("cache-control", "max-age=0, s-maxage=3600")]),
            secs(3600)
        );
        assert_eq!(of(&[("cache-control", "max-age=60, max-age=0")]), secs(60));
        assert_eq!(of(&[("cache-control", "no-cache, max-age=60")]), secs(0));
        assert_eq!(
            of(&[
                ("cache-control", "max-age=0"),
                ("cdn-cache-control", "max-age=60")
            ]),
            secs(60),
            "the targeted field rules"
        );
        assert_eq!(of(&[("expires", "not a date")]), secs(0));
        assert_eq!(
            of(&[
                ("cache-control", "max-age=5"),
                ("cdn-cache-control", "max-age=\"60\"")
            ]),
            secs(5),
            "an invalid targeted field is ignored"
        );
        assert_eq!(
            of(&[
                ("cache-control", "max-age=5"),
                ("cdn-cache-control", "max-age=60, &&")
            ]),
            secs(5)
        );
        let private = Freshness::of(&headers(&[("cache-control", "s-maxage=60")]), false);
        assert_eq!(private.lifetime, None, "s-maxage is for shared caches");
    }

    #[test]
    fn dates_are_read_in_any_case() {
        let at = |text: &str| date(&HeaderValue::from_str(text).unwrap());
        let exact = at("Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(exact.is_some());
        assert_eq!(at("sun, 06 NOV 1994 08:49:37 gmt"), exact);
        assert_eq!(at("Sun Nov  6 08:49:37 1994"), exact);
    }

    #[test]
    fn age_is_the_first_number() {
        let age = |pairs: &[(&str, &str)]| Freshness::of(&headers(pairs), true).age.as_secs();
        assert_eq!(age(&[("age", "7200, 0")]), 7200);
        assert_eq!(age(&[("age", "0, 7200")]), 0);
        assert_eq!(age(&[("age", "7200"), ("age", "0")]), 7200);
        assert_eq!(age(&[("age", "-7200")]), 0);
        assert_eq!(age(&[("age", "7200.0")]), 0);
        assert_eq!(age(&[("age", "2147483649")]), 1 << 31);
    }
}
