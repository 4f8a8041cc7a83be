//! Whether a response may be shared: the one decision that every path of
//! the layer which reads or stores an entry makes (a read's miss and its
//! `Vary` variants, revalidation, write-through).

use http::header::SET_COOKIE;
use http::request::Parts;
use http::HeaderMap;

use super::freshness::Freshness;
use super::layer::Config;
use super::request;

/// Whom a request's entries are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every caller: a shared layer's entries, for a request that carries
    /// no identity.
    Everyone,
    /// One caller: a private layer's entries for this user (a hash of the
    /// identity; the same for every request without one).
    User(String),
    /// This caller alone: a request with an identity on a shared layer.
    /// Nothing is read from the cache for it, nor stored from it.
    Caller,
}

impl Audience {
    /// The audience of a request, by the layer's identity function.
    pub(crate) fn of(config: &Config, parts: &Parts) -> Audience {
        let identity = (config.identity.0)(parts);
        match (config.private, identity) {
            (true, identity) => Audience::User(request::user(identity.as_deref())),
            (false, None) => Audience::Everyone,
            (false, Some(_)) => Audience::Caller,
        }
    }

    /// Whether a response may be served from, or stored into, this
    /// audience's entries: with `None`, whether the request may use them at
    /// all; with a response's headers, whether that response may be kept
    /// in them. Never one that sets a cookie, nor one marked `private` in a
    /// shared entry.
    pub(crate) fn admits(&self, response: Option<&HeaderMap>) -> bool {
        match (self, response) {
            (Audience::Caller, _) => false,
            (_, None) => true,
            (audience, Some(headers)) => {
                !headers.contains_key(SET_COOKIE)
                    && (matches!(audience, Audience::User(_))
                        || !Freshness::of(headers, true).private)
            }
        }
    }

    /// The user whose entries these are, on a private layer.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Audience::User(user) => Some(user),
            Audience::Everyone | Audience::Caller => None,
        }
    }
}
