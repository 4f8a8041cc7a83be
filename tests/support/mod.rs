//! Test support: real servers on free loopback ports, started per test and
//! stopped when dropped: one server (`server.rs`), a cluster
//! (`cluster.rs`), TLS certificates (`tls.rs`), a delaying proxy
//! (`proxy.rs`); and here, what tests share: waits with a bound, gates, a
//! versioned database, and the macros that run a test on every backend.
#![allow(dead_code)] // each test binary uses a part of this module

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cache_runtime::Cache;

mod cluster;
mod proxy;
mod server;
mod tls;

// Each test binary uses some of these.
use cluster::cli;
#[allow(unused_imports)]
pub use cluster::RedisCluster;
#[allow(unused_imports)]
pub use proxy::{unused_port, Proxy};
use server::server_on;
#[allow(unused_imports)]
pub use server::{RedisServer, ScratchDir};
#[allow(unused_imports)]
pub use tls::Certificates;

/// The server the tests start: `redis-server`, or the binary that
/// `CACHE_TEST_SERVER` names (a `valkey-server`, say), so that every suite
/// runs on either without copies.
pub fn server_binary() -> String {
    std::env::var("CACHE_TEST_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A versioned table: every write bumps a row's version, so a test can tell
/// whether a read returned a value older than a write.
#[derive(Default)]
pub struct VersionedDb {
    rows: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
}

impl VersionedDb {
    pub fn read(&self, id: u64) -> u64 {
        self.rows.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
    pub fn bump(&self, id: u64) -> u64 {
        let mut rows = self.rows.lock().unwrap();
        let version = rows.entry(id).or_insert(0);
        *version += 1;
        *version
    }
}

/// Waits until a cache's local tier has subscribed to invalidations (it
/// serves nothing before): its first flush marks the subscription.
pub async fn local_tier_ready(cache: &Cache) {
    eventually(
        Duration::from_secs(5),
        "the local tier's invalidation subscription",
        || async { cache.stats().local_flushes >= 1 },
    )
    .await;
}

/// Whether a cache's local tier hears every writer: `health()` names no
/// problem of the tier (bypassed, or hearing only this library's writes).
pub async fn local_tier_hears_all(cache: &Cache) -> bool {
    let health = cache.health().await;
    let quiet = health
        .problems
        .iter()
        .all(|p| !p.starts_with("the local tier"));
    if !quiet {
        eprintln!("{health:?}");
    }
    quiet
}

/// Waits until a cache has made first contact with its server and found it
/// serving. First contact over TLS (the handshakes, the rights check, and
/// under Sentinel its answer) is slow in a debug build: 0.25-0.56 s through
/// Sentinel here. When the whole suite loads the machine it can pass a
/// test's op timeout, and the call then runs its body uncached. Tests that
/// count hits make first contact before they count.
pub async fn first_contact(cache: &Cache) {
    eventually(
        Duration::from_secs(30),
        "first contact with a serving server",
        || async { cache.health().await.serving },
    )
    .await;
}

/// Holds a body at one point until the test releases it: the body calls
/// [`pass`](Gate::pass); the test waits for [`reached`](Gate::reached),
/// acts, then notifies `release`.
#[derive(Default)]
pub struct Gate {
    pub reached: tokio::sync::Notify,
    pub release: tokio::sync::Notify,
}

impl Gate {
    pub async fn pass(&self) {
        self.reached.notify_one();
        self.release.notified().await;
    }

    /// Waits, bounded, for a body to reach the gate.
    pub async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.reached.notified())
            .await
            .expect("no body reached its gate within 10 s: it was not run");
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs async test cases against every backend: `in_memory`, `on_redis` (a
/// server per test) and `on_cluster` (a 3-master cluster per test) modules,
/// each with one `#[tokio::test]` per case.
#[macro_export]
macro_rules! on_each_backend {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(cache_runtime::Cache::in_memory()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = $crate::support::RedisServer::start();
                    super::$case(server.cache().await).await;
                }
            )*
        }
        mod on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cluster = $crate::support::RedisCluster::start(3, 0);
                    super::$case(cluster.cache().await).await;
                }
            )*
        }
    };
}

/// Runs each case with two caches of one store: in memory one cache twice;
/// on Redis and the cluster two connections, as two processes have.
#[macro_export]
macro_rules! with_two_caches {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cache = cache_runtime::Cache::in_memory();
                    super::$case(cache.clone(), cache).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = $crate::support::RedisServer::start();
                    super::$case(server.cache().await, server.cache().await).await;
                }
            )*
        }
        mod on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cluster = $crate::support::RedisCluster::start(3, 0);
                    super::$case(cluster.cache().await, cluster.cache().await).await;
                }
            )*
        }
    };
}

/// A Redis store of either shape, for cases that act on the server itself
/// (refuse a command, plant a key): one server, or a 3-master cluster.
pub enum Store {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    /// A cache on this store; each call makes another, as another process
    /// would.
    pub async fn cache(&self) -> Cache {
        match self {
            Store::Server(server) => server.cache().await,
            Store::Cluster(cluster) => cluster.cache().await,
        }
    }

    /// A builder for a cache on this store, to set more options on.
    pub fn builder(&self) -> cache_runtime::CacheBuilder {
        match self {
            Store::Server(server) => Cache::builder().redis(server.url()),
            Store::Cluster(cluster) => Cache::builder().redis_cluster(cluster.urls()),
        }
    }

    /// Runs a command on every node, through `redis-cli`.
    pub fn on_every_node(&self, args: &[&str]) -> Vec<String> {
        match self {
            Store::Server(server) => vec![cli(server.port(), args)],
            Store::Cluster(cluster) => cluster.on_every_node(args),
        }
    }

    /// Runs a command that names `key` on the node that serves it.
    pub fn on_key_node(&self, key: &str, args: &[&str]) -> String {
        match self {
            Store::Server(server) => cli(server.port(), args),
            Store::Cluster(cluster) => cli(cluster.master_of(key), args),
        }
    }
}

/// Runs each case with a [`Store`]: `on_redis` (one server per test) and
/// `on_cluster` (a 3-master cluster per test).
#[macro_export]
macro_rules! on_each_store {
    ($($case:ident),* $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = $crate::support::RedisServer::start();
                    super::$case($crate::support::Store::Server(server)).await;
                }
            )*
        }
        mod on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cluster = $crate::support::RedisCluster::start(3, 0);
                    super::$case($crate::support::Store::Cluster(cluster)).await;
                }
            )*
        }
    };
}
