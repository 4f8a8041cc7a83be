//! The connection to Redis: one server through redis-rs's `ConnectionManager`
//! (multiplexed, reconnecting), a Redis Cluster through its async cluster
//! connection (routing each command by its keys' slot, following failovers),
//! or the master Sentinel names. All connect lazily, so a cache can be built
//! while Redis is down.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

#[cfg(feature = "sentinel")]
use crate::backend::sentinel::SentinelMaster;

#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
    #[cfg(feature = "sentinel")]
    Sentinel(Arc<SentinelMaster>),
}

/// Where the local tier subscribes to invalidations.
pub(crate) enum Subscriptions {
    /// Any of these servers (one, or a cluster's nodes), tried in turn.
    Nodes(Vec<redis::Client>),
    /// Whichever server Sentinel names master at the time.
    #[cfg(feature = "sentinel")]
    Sentinel(Arc<SentinelMaster>),
}

impl Subscriptions {
    /// The server to try on the `attempt`th subscription.
    pub(crate) async fn client(&self, attempt: usize) -> RedisResult<redis::Client> {
        match self {
            Subscriptions::Nodes(nodes) => match nodes.get(attempt % nodes.len().max(1)) {
                Some(node) => Ok(node.clone()),
                None => Err((
                    redis::ErrorKind::InvalidClientConfig,
                    "no node to subscribe on",
                )
                    .into()),
            },
            #[cfg(feature = "sentinel")]
            Subscriptions::Sentinel(master) => master.client().await,
        }
    }
}

/// A cluster connection made on first use (and again after a failed attempt).
pub(crate) struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    pub(crate) fn new(client: ClusterClient) -> Self {
        LazyCluster {
            client,
            connection: OnceCell::new(),
        }
    }

    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(single) => single.req_packed_command(cmd),
            Connection::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.get().await?;
                connection.req_packed_command(cmd).await
            }),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(master) => Box::pin(async move {
                let (id, mut connection) = master.connection().await?;
                let reply = connection.req_packed_command(cmd).await;
                if let Err(error) = &reply {
                    master.failed(id, error);
                }
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(single) => single.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.get().await?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(master) => Box::pin(async move {
                let (id, mut connection) = master.connection().await?;
                let replies = connection
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                if let Err(error) = &replies {
                    master.failed(id, error);
                }
                replies
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(single) => single.get_db(),
            Connection::Cluster(_) => 0,
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(master) => master.db(),
        }
    }
}
