//! The error type of the programmatic API.

use std::time::Duration;

/// Everything that can go wrong in a cache operation.
///
/// The attribute macros never surface these to the caller: a failing cache is
/// logged and bypassed, and the function's own result is returned. The
/// programmatic API ([`Cache::get`](crate::Cache::get) and friends) returns them
/// so that callers can decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis answered with an error or the connection failed.
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
    /// The backend failed repeatedly; the circuit breaker skips it for a
    /// cool-down.
    #[error("cache backend unavailable: the circuit breaker is open after repeated failures")]
    Unavailable,
}

impl Error {
    /// Whether the operation timed out (ours or the client's response timeout).
    pub(crate) fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// Whether the backend could not be reached or did not answer in time, as
    /// opposed to answering with an error (which shows it is up).
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::Unavailable => true,
            Error::Redis(e) => !matches!(
                e.kind(),
                redis::ErrorKind::Server(_)
                    | redis::ErrorKind::Extension
                    | redis::ErrorKind::Parse
                    | redis::ErrorKind::UnexpectedReturnType
            ),
            Error::Encode { .. } | Error::InvalidGroup(_) | Error::Config(_) => false,
        }
    }
}

/// A reply of Redis (or of one of the cache's scripts) that has not the shape
/// the cache asked for. Not a failure to reach the server: the breaker does
/// not count it.
pub(crate) fn unexpected_reply(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}
