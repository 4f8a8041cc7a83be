//! The connection to Redis: one server, or the master Sentinel names,
//! through one multiplexed connection made again when it breaks
//! (`backend/link.rs`); a Redis Cluster through redis-rs's async cluster
//! connection (routing each command by its keys' slot, following
//! failovers). All connect lazily, so a cache can be built while Redis is
//! down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use super::epochs::Epochs;
use super::link::Link;

#[derive(Clone)]
pub(crate) enum Connection {
    Server(Arc<Link>),
    Cluster(Arc<LazyCluster>),
}

impl Connection {
    /// What this process knows of the servers' epochs.
    pub(crate) fn epochs(&self) -> &Epochs {
        match self {
            Connection::Server(link) => link.epochs(),
            Connection::Cluster(cluster) => &cluster.epochs,
        }
    }

    /// The number of the connection a command sent now goes out on: one
    /// server's current connection (`None` when there is none), or for a
    /// cluster how many connection errors it has met.
    pub(crate) fn number(&self) -> Option<u64> {
        match self {
            Connection::Server(link) => link.number(),
            Connection::Cluster(cluster) => Some(cluster.breaks.load(Ordering::Acquire)),
        }
    }
}

/// Where the local tier hears of writes: RESP3 clients, whose connections
/// carry client tracking's invalidations as pushes.
pub(crate) enum Subscriptions {
    /// Some of a cluster's nodes, tried in turn, to find its masters.
    Nodes(Vec<redis::Client>),
    /// The one server.
    Server(redis::Client),
    /// Whichever server Sentinel names master at the time.
    #[cfg(feature = "sentinel")]
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
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
            Subscriptions::Server(client) => Ok(client.clone()),
            #[cfg(feature = "sentinel")]
            Subscriptions::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}

/// A cluster connection made on first use (and again after a failed attempt).
pub(crate) struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
    /// How many replies were connection errors: a node may have restarted.
    breaks: AtomicU64,
    epochs: Epochs,
}

impl LazyCluster {
    pub(crate) fn new(client: ClusterClient, epochs: Epochs) -> Self {
        LazyCluster {
            client,
            connection: OnceCell::new(),
            breaks: AtomicU64::new(0),
            epochs,
        }
    }

    /// Counts a reply that says a node's connection broke.
    fn note<T>(&self, reply: &RedisResult<T>) {
        if reply.as_ref().is_err_and(broke) {
            self.breaks.fetch_add(1, Ordering::AcqRel);
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
            Connection::Server(link) => Box::pin(async move {
                let (number, mut connection) = link.connection().await?;
                let reply = connection.send_packed_command(cmd).await;
                if let Err(error) = &reply {
                    link.failed(number, error);
                }
                reply
            }),
            Connection::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.get().await?;
                let reply = connection.req_packed_command(cmd).await;
                cluster.note(&reply);
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
            Connection::Server(link) => Box::pin(async move {
                let (number, mut connection) = link.connection().await?;
                let replies = connection
                    .send_packed_commands(pipeline, offset, count)
                    .await;
                if let Err(error) = &replies {
                    link.failed(number, error);
                }
                replies
            }),
            Connection::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.get().await?;
                let replies = connection
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                cluster.note(&replies);
                replies
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(link) => link.db(),
            Connection::Cluster(_) => 0,
        }
    }
}

/// Whether an error says the connection it came on broke.
pub(crate) fn broke(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
}
