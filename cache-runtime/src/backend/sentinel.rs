//! The master that Redis Sentinel names (feature `sentinel`): the client
//! that asks the sentinels, which `backend/link.rs` asks on first use and
//! again whenever the connection breaks, times out or finds a replica.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, ProtocolVersion, TlsMode};

use crate::error::Error;

/// A client that asks the sentinels for the master named `master`, which
/// is its name (`mymaster`) or a URL naming it with its credentials and
/// database (`redis://app:secret@mymaster/2`, `rediss://` for TLS).
pub(crate) fn sentinel_client(
    sentinels: &[String],
    master: &str,
    protocol: ProtocolVersion,
    #[cfg(feature = "tls")] tls: Option<&crate::Tls>,
) -> Result<SentinelClient, Error> {
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
    .set_client_to_redis_protocol(protocol)
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
    Ok(builder.build()?)
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
