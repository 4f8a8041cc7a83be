//! The connection to one server: by URL, or (feature `sentinel`) the master
//! that Sentinel names. It is made on first use and made again, numbered,
//! after it breaks (through Sentinel, also after it times out or finds a
//! replica, so that the cache follows failovers). The number tells replies
//! from before a reconnection from those after it, which the restart check
//! needs (`backend/epochs.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use super::epochs::Epochs;

/// No connection: [`Link::number`] when there is none.
const NONE: u64 = u64::MAX;

/// How a connection is made.
pub(crate) enum Dialer {
    /// To the server at a URL.
    Url(redis::Client),
    /// To whichever server the sentinels name master at the time.
    #[cfg(feature = "sentinel")]
    Sentinel(redis::sentinel::SentinelClient),
}

impl Dialer {
    async fn dial(
        &mut self,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, RedisError> {
        match self {
            Dialer::Url(client) => {
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
            #[cfg(feature = "sentinel")]
            Dialer::Sentinel(sentinel) => sentinel.get_async_connection_with_config(config).await,
        }
    }
}

pub(crate) struct Link {
    /// Makes connections; a lock, so that one caller connects at a time.
    dialer: tokio::sync::Mutex<Dialer>,
    /// Whether a `READONLY` reply means the connection no longer leads to
    /// the master (through Sentinel; one server stays the server).
    follows_master: bool,
    config: AsyncConnectionConfig,
    /// The connection and its number; `None` until made, and after it
    /// failed.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// The current connection's number, [`NONE`] when there is none: read
    /// on every hit, so without the lock.
    number: AtomicU64,
    made: AtomicU64,
    db: i64,
    epochs: Epochs,
}

impl Link {
    pub(crate) fn new(
        dialer: Dialer,
        config: AsyncConnectionConfig,
        db: i64,
        epochs: Epochs,
    ) -> Self {
        Link {
            #[cfg(feature = "sentinel")]
            follows_master: matches!(dialer, Dialer::Sentinel(_)),
            #[cfg(not(feature = "sentinel"))]
            follows_master: false,
            dialer: tokio::sync::Mutex::new(dialer),
            config,
            current: Mutex::new(None),
            number: AtomicU64::new(NONE),
            made: AtomicU64::new(0),
            db,
            epochs,
        }
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    pub(crate) fn epochs(&self) -> &Epochs {
        &self.epochs
    }

    /// The number of the current connection, if there is one.
    pub(crate) fn number(&self) -> Option<u64> {
        Some(self.number.load(Ordering::Acquire)).filter(|&number| number != NONE)
    }

    /// The connection, made if there is none.
    pub(crate) async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        match self.current() {
            Some(current) => Ok(current),
            // Boxed: every command's future holds this one.
            None => Box::pin(self.reconnect()).await,
        }
    }

    async fn reconnect(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let mut dialer = self.dialer.lock().await;
        if let Some(current) = self.current() {
            return Ok(current); // made while this caller waited
        }
        let connection = dialer.dial(&self.config).await?;
        let made = (self.made.fetch_add(1, Ordering::Relaxed), connection);
        let mut slot = self.current.lock();
        *slot = Some(made.clone());
        self.number.store(made.0, Ordering::Release);
        drop(slot);
        tracing::debug!(connection = made.0, "cache: connected to Redis");
        Ok(made)
    }

    /// Forgets connection `number` when `error` says it may be broken (or,
    /// through Sentinel, no longer lead to the master); the next call makes
    /// another.
    pub(crate) fn failed(&self, number: u64, error: &RedisError) {
        let lost = super::connection::broke(error)
            || (self.follows_master
                && (error.is_timeout()
                    || error.code() == Some("READONLY")
                    || error.to_string().contains("READONLY")));
        let mut slot = self.current.lock();
        if lost && slot.as_ref().is_some_and(|(current, _)| *current == number) {
            *slot = None;
            self.number.store(NONE, Ordering::Release);
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().clone()
    }
}
