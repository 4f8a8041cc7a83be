//! The master that Redis Sentinel names (feature `sentinel`): asked of the
//! sentinels on first use, and again whenever the connection to it breaks,
//! times out or finds a replica, so that the cache follows failovers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisError, TlsMode};

use crate::error::Error;

pub(crate) struct SentinelMaster {
    /// Asks the sentinels; a lock, so that one caller asks at a time.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    /// The connection to the master, with an id telling it from the ones
    /// before it; `None` until made, and after it failed.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    made: AtomicU64,
    db: i64,
}

impl SentinelMaster {
    /// Settings for the master named `master`, which is its name
    /// (`mymaster`) or a URL naming it with its credentials and database
    /// (`redis://app:secret@mymaster/2`, `rediss://` for TLS).
    pub(crate) fn new(
        sentinels: &[String],
        master: &str,
        #[cfg(feature = "tls")] tls: Option<&crate::Tls>,
        op_timeout: std::time::Duration,
    ) -> Result<Self, Error> {
        let (name, master_tls, settings) = master_settings(master)?;
        let sentinels = sentinels
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        let sentinel_tls = sentinels
            .iter()
            .any(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        let mut builder = SentinelClientBuilder::new(
            sentinels.iter().map(|info| info.addr().clone()),
            &name,
            SentinelServerType::Master,
        )?
        .set_client_to_redis_db(settings.db())
        .set_client_to_redis_tcp_settings(crate::backend::server::tcp())
        .set_client_to_sentinel_tcp_settings(crate::backend::server::tcp());
        if let Some(username) = settings.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(mode) = master_tls {
            builder = builder.set_client_to_redis_tls_mode(mode);
        }
        // The sentinels share one set of credentials: the first URL's.
        let credentials = sentinels.iter().map(|info| info.redis_settings());
        if let Some(username) = credentials.clone().find_map(|s| s.username()) {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = credentials.clone().find_map(|s| s.password()) {
            builder = builder.set_client_to_sentinel_password(password);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = tls {
            if master_tls.is_some() {
                builder = builder.set_client_to_redis_certificates(tls.certificates());
            }
            if sentinel_tls {
                builder = builder.set_client_to_sentinel_certificates(tls.certificates());
            }
        }
        #[cfg(not(feature = "tls"))]
        let _ = sentinel_tls; // checked by the caller: no TLS without the feature
        Ok(SentinelMaster {
            sentinel: tokio::sync::Mutex::new(builder.build()?),
            config: AsyncConnectionConfig::new()
                // As for one server: operations keep their own deadlines.
                .set_response_timeout(None)
                .set_connection_timeout(Some(op_timeout)),
            current: Mutex::new(None),
            made: AtomicU64::new(0),
            db: settings.db(),
        })
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// A client for the server the sentinels name master now.
    pub(crate) async fn client(&self) -> Result<redis::Client, RedisError> {
        self.sentinel.lock().await.async_get_client().await
    }

    /// The connection to the master, made (asking the sentinels) if there
    /// is none.
    pub(crate) async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut sentinel = self.sentinel.lock().await;
        if let Some(current) = self.current() {
            return Ok(current); // made while this caller waited
        }
        let connection = sentinel
            .get_async_connection_with_config(&self.config)
            .await?;
        let made = (self.made.fetch_add(1, Ordering::Relaxed), connection);
        *self.slot() = Some(made.clone());
        tracing::debug!(
            connection = made.0,
            "cache: connected to the master Sentinel names"
        );
        Ok(made)
    }

    /// Forgets connection `id` when `error` says it may no longer lead to
    /// the master; the next call asks the sentinels again.
    pub(crate) fn failed(&self, id: u64, error: &RedisError) {
        let lost = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
            || error.code() == Some("READONLY")
            || error.to_string().contains("READONLY");
        let mut slot = self.slot();
        if lost && slot.as_ref().is_some_and(|(current, _)| *current == id) {
            *slot = None;
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The database the master's settings name.
pub(crate) fn master_db(master: &str) -> Result<i64, Error> {
    Ok(master_settings(master)?.2.db())
}

/// The master's name, its TLS mode and its connection settings, from its
/// name or a URL naming it.
fn master_settings(
    master: &str,
) -> Result<(String, Option<TlsMode>, redis::RedisConnectionInfo), Error> {
    if !master.contains("://") {
        return Ok((master.to_owned(), None, Default::default()));
    }
    let info = master.into_connection_info()?;
    let (name, tls) = match info.addr() {
        ConnectionAddr::Tcp(host, _) => (host.clone(), None),
        ConnectionAddr::TcpTls { host, insecure, .. } => (
            host.clone(),
            Some(match insecure {
                true => TlsMode::Insecure,
                false => TlsMode::Secure,
            }),
        ),
        ConnectionAddr::Unix(_) => {
            return Err(Error::Config(
                "a Sentinel master is named by `redis://[user:password@]name[/db]`".to_owned(),
            ))
        }
        _ => return Err(Error::Config("unsupported Sentinel master URL".to_owned())),
    };
    Ok((name, tls, info.redis_settings().clone()))
}
