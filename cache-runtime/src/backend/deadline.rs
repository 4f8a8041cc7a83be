//! An operation's deadline: the op timeout as a point in time, which the
//! parts of one operation share, and which a batched read takes from the
//! earliest of its callers, so that one timer bounds them all.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// When an operation must have ended, and the op timeout it came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// The deadline of an operation that starts now.
    pub(crate) fn after(limit: Duration) -> Self {
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    /// `op`'s result, or [`elapsed`](Self::elapsed) if it has not ended by
    /// the deadline.
    pub(crate) async fn bound<T>(
        self,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout_at(self.at, op)
            .await
            .unwrap_or(Err(self.elapsed()))
    }

    /// The error of an operation that did not end in time.
    pub(crate) fn elapsed(&self) -> Error {
        Error::Timeout(self.limit)
    }

    /// The earlier of two deadlines.
    pub(crate) fn earlier(self, other: Deadline) -> Deadline {
        if other.at < self.at {
            other
        } else {
            self
        }
    }
}
