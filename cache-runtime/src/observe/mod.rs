//! What the cache tells its operators: [`Stats`] counters, the `metrics`
//! facade (feature `metrics`), and warnings logged at most once a second
//! with the count of what they stand for. The spans of annotated calls are
//! made where the calls run (`flow`).

pub(crate) mod metrics;
mod refusals;
pub(crate) mod stats;

pub(crate) use refusals::{refused, Refusal, Refusals};
pub use stats::Stats;
pub(crate) use stats::{bump, Counters, Warning};

use crate::error::Error;

/// Logs a failed cache operation (at most once a second, with the number of
/// failures the line stands for) and turns it into `None`: the call goes on
/// without the cache. Skips while the breaker is open are counted, not logged.
pub(crate) fn ok_or_warn<T>(
    counters: &Counters,
    what: &str,
    group: &str,
    result: Result<T, Error>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Error::Unavailable) => None,
        Err(error) => {
            warn_failed(counters, what, group, &error);
            None
        }
    }
}

/// Logs a failed cache operation, at most once a second with the number of
/// failures the line stands for.
pub(crate) fn warn_failed(counters: &Counters, what: &str, group: &str, error: &Error) {
    counters.warn_limited(Warning::Failure, |count| {
        tracing::warn!(group, %error, count, "cache {what} failed; continuing without the cache");
    });
}
