//! Where a cache's Redis is, and how to reach it: one server, a cluster, or
//! (feature `sentinel`) the master that Sentinel names; over TLS (feature
//! `tls`) for `rediss://` URLs.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, ProtocolVersion};

use crate::backend::connection::{Connection, LazyCluster, Subscriptions};
use crate::backend::epochs::{Epochs, CLUSTER_TRUST};
use crate::backend::link::{Dialer, Link};
use crate::error::Error;

/// Which Redis deployment a cache uses.
pub(crate) enum Place {
    /// One server, by URL.
    Single(String),
    /// A cluster, by some of its nodes' URLs.
    Cluster(Vec<String>),
    /// A master found through Sentinel: the sentinels' URLs, and the master's
    /// name (or a URL naming it, for its credentials and database).
    #[cfg(feature = "sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// A Redis deployment and the TLS settings for reaching it.
pub(crate) struct Server {
    pub(crate) place: Place,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::Tls>,
}

impl Server {
    /// Refuses settings that cannot work, before anything connects.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.place {
            Place::Single(_) => {}
            Place::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::Config(
                        "redis_cluster needs at least one node".to_owned(),
                    ));
                }
            }
            #[cfg(feature = "sentinel")]
            Place::Sentinel { sentinels, master } => {
                if sentinels.is_empty() || master.is_empty() {
                    return Err(Error::Config(
                        "redis_sentinel needs at least one sentinel and the master's name"
                            .to_owned(),
                    ));
                }
            }
        }
        #[cfg(not(feature = "tls"))]
        if self.uses_tls() {
            return Err(Error::Config(
                "`rediss://` URLs need cache-runtime's `tls` feature".to_owned(),
            ));
        }
        #[cfg(feature = "tls")]
        if let Some(certificates) = &self.tls {
            if !self.uses_tls() {
                return Err(Error::Config(
                    "TLS certificates were given, but no URL is `rediss://`".to_owned(),
                ));
            }
            certificates.check()?;
        }
        Ok(())
    }

    /// Whether any of the deployment's URLs asks for TLS.
    fn uses_tls(&self) -> bool {
        match &self.place {
            Place::Single(url) => is_tls(url),
            Place::Cluster(urls) => urls.iter().any(|url| is_tls(url)),
            #[cfg(feature = "sentinel")]
            Place::Sentinel { sentinels, master } => {
                sentinels.iter().chain([master]).any(|url| is_tls(url))
            }
        }
    }

    /// The database index the cache writes to (0 on a cluster).
    pub(crate) fn db(&self) -> Result<i64, Error> {
        match &self.place {
            Place::Single(url) => Ok(info(url)?.redis_settings().db()),
            Place::Cluster(_) => Ok(0),
            #[cfg(feature = "sentinel")]
            Place::Sentinel { master, .. } => Ok(crate::backend::sentinel::master_db(master)?),
        }
    }

    /// The connection, made lazily (building never waits for Redis), and
    /// where the local tier hears of writes: the server, any node of a
    /// cluster, or whichever server Sentinel names master at the time. `check_restarts`: whether
    /// entries from before a restart or failover are refused
    /// (`backend/epochs.rs`).
    pub(crate) fn connect(
        &self,
        op_timeout: Duration,
        check_restarts: bool,
    ) -> Result<(Connection, Subscriptions), Error> {
        #[cfg(feature = "tls")]
        if self.uses_tls() {
            crate::backend::tls::install_crypto_provider();
        }
        // No response timeout on one server: every operation is bounded by
        // its own deadline (a batched read by one for all its callers), and
        // a second timer on each command costs a hit more than its key does.
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(op_timeout));
        let link = |dialer| {
            let link = Link::new(
                dialer,
                config,
                self.db()?,
                Epochs::new(check_restarts, None),
            );
            Ok::<_, Error>(Connection::Server(Arc::new(link)))
        };
        match &self.place {
            Place::Single(url) => Ok((
                link(Dialer::Url(self.client(url, ProtocolVersion::RESP2)?))?,
                Subscriptions::Server(self.client(url, ProtocolVersion::RESP3)?),
            )),
            Place::Cluster(urls) => {
                // The cluster client keeps its response timeout: it bounds
                // each attempt of a call it routes and retries itself.
                let builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .response_timeout(op_timeout)
                    .connection_timeout(op_timeout)
                    .tcp_settings(tcp())
                    .retries(2);
                #[cfg(feature = "tls")]
                let builder = match &self.tls {
                    Some(tls) => builder.certs(tls.certificates()),
                    None => builder,
                };
                let epochs = Epochs::new(check_restarts, Some(CLUSTER_TRUST));
                let cluster = Arc::new(LazyCluster::new(builder.build()?, epochs));
                let nodes = urls
                    .iter()
                    .map(|url| self.client(url, ProtocolVersion::RESP3))
                    .collect::<Result<_, _>>()?;
                Ok((Connection::Cluster(cluster), Subscriptions::Nodes(nodes)))
            }
            #[cfg(feature = "sentinel")]
            Place::Sentinel { sentinels, master } => {
                let sentinel = |protocol| {
                    crate::backend::sentinel::sentinel_client(
                        sentinels,
                        master,
                        protocol,
                        #[cfg(feature = "tls")]
                        self.tls.as_ref(),
                    )
                };
                Ok((
                    link(Dialer::Sentinel(sentinel(ProtocolVersion::RESP2)?))?,
                    Subscriptions::Sentinel(tokio::sync::Mutex::new(sentinel(
                        ProtocolVersion::RESP3,
                    )?)),
                ))
            }
        }
    }

    /// A client for one server, speaking `protocol`, with the certificates
    /// when TLS is asked for.
    fn client(&self, url: &str, protocol: ProtocolVersion) -> Result<redis::Client, Error> {
        let info = info(url)?.set_tcp_settings(tcp());
        let info = info
            .clone()
            .set_redis_settings(info.redis_settings().clone().set_protocol(protocol));
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            if is_tls(url) {
                return Ok(redis::Client::build_with_tls(info, tls.certificates())?);
            }
        }
        Ok(redis::Client::open(info)?)
    }
}

/// Every connection's socket settings: `TCP_NODELAY`, which redis-rs leaves
/// off. A connection carries many small commands at once; with Nagle's
/// algorithm on, each write waits for the acknowledgement of the one before
/// it, which behind a network held a hit for most of a second round trip
/// (docs/performance.md, "Across a network").
pub(crate) fn tcp() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Whether a URL asks for TLS (`rediss://`, or `valkeys://`).
fn is_tls(url: &str) -> bool {
    ["rediss://", "valkeys://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    })
}

/// A URL's connection settings.
fn info(url: &str) -> Result<redis::ConnectionInfo, Error> {
    Ok(redis::IntoConnectionInfo::into_connection_info(url)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn valkeys_asks_for_tls_as_rediss_does() {
        for url in [
            "rediss://h:1/",
            "REDISS://h",
            "valkeys://h:1/0",
            "Valkeys://h",
        ] {
            assert!(super::is_tls(url), "{url}");
        }
        for url in ["redis://h:1/", "valkey://h", "valkeys:/h", ""] {
            assert!(!super::is_tls(url), "{url}");
        }
    }
}
