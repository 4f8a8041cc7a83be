//! The error type of the programmatic API.

use std::time::Duration;

/// Everything that can go wrong in a cache operation.
///
/// The attribute macros never surface these to the caller: a failing cache is
/// logged and bypassed, and the function's own result is returned. The
/// programmatic API ([`Cache::get`](crate::Cache::get) and friends) returns them
/// so that callers can decide; [`Error::kind`] says which kind of failure
/// it is.
///
/// ```
/// use cache_runtime::{Cache, ErrorKind};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::in_memory();
/// let error = cache.get::<u64>("bad{group", &1).await.unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::Usage);
/// assert!(!error.is_timeout() && !error.is_unreachable());
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis answered with an error (full under `noeviction`, a read-only
    /// replica, a missing ACL right, a script that failed), or the
    /// connection failed (refused, broken, a TLS handshake, a name that does
    /// not resolve), or the client's own response timeout elapsed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// The backend did not answer within the configured operation timeout.
    #[error("cache operation timed out after {0:?}")]
    Timeout(Duration),
    /// A key or value could not be serialized.
    #[error("could not encode the cache {what}: {message}")]
    Encode {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The serializer's message.
        message: String,
    },
    /// A group name holds a character that would break the Redis layout.
    #[error("invalid cache group {0:?}: a group name must be non-empty and may not contain `{{` or `}}`")]
    InvalidGroup(String),
    /// The builder was given settings that cannot work together.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// The cache did not try the backend: its circuit breaker is open after
    /// repeated failures; first contact found a server that refuses what
    /// the cache needs (a read-only replica, a user without script rights:
    /// see [`Cache::health`](crate::Cache::health)); a batched read was
    /// dropped unanswered as the runtime shut down; or a write-behind was
    /// asked of a cache that is not on Redis.
    #[error("cache backend unavailable: its circuit breaker is open, the server refuses what the cache needs, or the runtime is shutting down")]
    Unavailable,
}

/// What kind of failure an [`Error`] is: whether to retry, to alert, or to
/// fix the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend did not answer in time: the operation timeout, or the
    /// client's response timeout.
    Timeout,
    /// The backend could not be reached, or the cache did not try it
    /// ([`Error::Unavailable`]).
    Unreachable,
    /// The server answered, and refused the operation: full, read-only, a
    /// missing right, a failed script.
    Refused,
    /// A key or value that could not be encoded, or a reply the cache could
    /// not read.
    BadValue,
    /// A call or a configuration that cannot work: an invalid group name,
    /// builder settings that conflict.
    Usage,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            _ if self.is_timeout() => ErrorKind::Timeout,
            Error::Timeout(_) | Error::Unavailable => ErrorKind::Unreachable,
            Error::Redis(e) => match e.kind() {
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => ErrorKind::Refused,
                redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
                    ErrorKind::BadValue
                }
                _ => ErrorKind::Unreachable,
            },
            Error::Encode { .. } => ErrorKind::BadValue,
            Error::InvalidGroup(_) | Error::Config(_) => ErrorKind::Usage,
        }
    }

    /// Whether the operation timed out (the operation timeout, or the
    /// client's response timeout).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// Whether the backend could not be reached or did not answer in time
    /// (or was not tried), as opposed to answering with an error, which
    /// shows it is up.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Timeout | ErrorKind::Unreachable)
    }
}

/// A reply of Redis (or of one of the cache's scripts) that has not the shape
/// the cache asked for. Not a failure to reach the server: the breaker does
/// not count it.
pub(crate) fn unexpected_reply(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_kind() {
        let redis = |kind, what| Error::Redis(redis::RedisError::from((kind, what)));
        let io = |kind| Error::Redis(redis::RedisError::from(std::io::Error::from(kind)));
        let read_only = redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        for (error, kind) in [
            (Error::Timeout(Duration::from_millis(5)), ErrorKind::Timeout),
            (io(std::io::ErrorKind::TimedOut), ErrorKind::Timeout),
            (
                io(std::io::ErrorKind::ConnectionRefused),
                ErrorKind::Unreachable,
            ),
            (Error::Unavailable, ErrorKind::Unreachable),
            (redis(read_only, "READONLY"), ErrorKind::Refused),
            (
                redis(redis::ErrorKind::Parse, "bad reply"),
                ErrorKind::BadValue,
            ),
            (
                unexpected_reply("a script's reply").into(),
                ErrorKind::BadValue,
            ),
            (
                Error::Encode {
                    what: "value",
                    message: String::new(),
                },
                ErrorKind::BadValue,
            ),
            (Error::InvalidGroup("a{b".into()), ErrorKind::Usage),
            (Error::Config(String::new()), ErrorKind::Usage),
        ] {
            assert_eq!(error.kind(), kind, "{error}");
            let unreachable = matches!(kind, ErrorKind::Timeout | ErrorKind::Unreachable);
            assert_eq!(error.is_unreachable(), unreachable, "{error}");
            assert_eq!(error.is_timeout(), kind == ErrorKind::Timeout, "{error}");
        }
    }
}
