//! The connection to Redis: one server through redis-rs's `ConnectionManager`
//! (multiplexed, reconnecting), or a Redis Cluster through its async cluster
//! connection (routing each command by its keys' slot, following failovers).
//! Both connect lazily, so a cache can be built while Redis is down.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(single) => single.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}
