//! Test support: a real `redis-server` per test, on a free loopback port.
#![allow(dead_code)] // each test binary uses a part of this module

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_runtime::Cache;

/// The server the tests start: `redis-server`, or the binary that
/// `CACHE_TEST_SERVER` names (a `valkey-server`, say), so that every suite
/// runs on either without copies.
pub fn server_binary() -> String {
    std::env::var("CACHE_TEST_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// The server's command on loopback `port`, persistence off (a test that
/// wants a snapshot asks for it with `SAVE`).
fn server_on(port: u16) -> Command {
    let mut command = Command::new(server_binary());
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    command.args(["--save", "", "--appendonly", "no"]);
    command
}

/// A `redis-server` started for one test and stopped when dropped. Tests can
/// kill it, pause it (`SIGSTOP`), and start it again on the same port.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server with persistence off; panics with a clear message when
    /// `redis-server` is missing or does not answer within 10 s.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra configuration (`["--maxmemory", "2mb"]`).
    pub fn start_with(args: &[&str]) -> Self {
        for _attempt in 0..5 {
            let mut server = Self::reserve_with(args);
            if server.spawn() {
                return server;
            }
            // Most likely another process took the port between our probe and
            // the server's bind: try another one.
        }
        panic!("redis-server did not start on a free loopback port after 5 attempts");
    }

    /// A free port with no server on it yet: [`restart`](Self::restart) starts it.
    pub fn reserve() -> Self {
        Self::reserve_with(&[])
    }

    fn reserve_with(args: &[&str]) -> Self {
        RedisServer {
            child: None,
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn spawn(&mut self) -> bool {
        let child = server_on(self.port)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed: run the README's test command, which installs it",
            );
        self.child = Some(child);
        if self.wait_ready(Duration::from_secs(10)) {
            return true;
        }
        self.kill();
        false
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)),
    /// empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        for _attempt in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100)); // the port may linger briefly
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill(1) is available");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => {}
                _ => return false,
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A cache on this server.
    pub async fn cache(&self) -> Cache {
        Cache::builder()
            .redis(self.url())
            .op_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("cache on the test server")
    }

    /// Fills the server, then sets its limit below what it holds: started
    /// with `--maxmemory-policy noeviction`, it stays over the limit and
    /// refuses every write that would add memory. Returns a connection.
    pub async fn make_full(&self) -> redis::aio::MultiplexedConnection {
        let mut conn = self.client().await;
        for i in 0..64 {
            let _: () = redis::cmd("SET")
                .arg(format!("junk:{i}"))
                .arg(vec![b'x'; 16 * 1024])
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap();
        let used: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(used - 256 * 1024)
            .query_async(&mut conn)
            .await
            .unwrap();
        let refused: redis::RedisResult<()> = redis::cmd("SET")
            .arg("one-more")
            .arg("x")
            .query_async(&mut conn)
            .await;
        assert!(refused.is_err(), "Redis refuses writes once full");
        conn
    }

    /// A plain redis-rs connection, for inspecting the server.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection to the test server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // a paused server would not die of SIGKILL until resumed on some systems
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
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

/// A local Redis Cluster for one test: `masters` masters with `replicas`
/// replicas each, on free loopback ports, created with
/// `redis-cli --cluster create` and stopped when dropped.
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    dir: std::path::PathBuf,
    /// TLS settings for every node (each on its TLS port, `port - 10000`).
    tls: Vec<String>,
}

/// A node's TLS port, when its cluster has TLS.
fn tls_port(port: u16) -> u16 {
    port - 10_000
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        Self::start_with(masters, replicas, None)
    }

    /// A cluster whose nodes also serve TLS, with TLS on the cluster bus and
    /// for replication; [`tls_urls`](Self::tls_urls) reach them.
    pub fn start_tls(masters: usize, replicas: usize, certificates: &Certificates) -> Self {
        Self::start_with(masters, replicas, Some(certificates))
    }

    /// Starts the nodes and joins them; a join that hangs (a node that never
    /// hears the others' `MEET`: `redis-cli --cluster create` then waits
    /// forever) is abandoned after 20 s and tried again on new nodes.
    fn start_with(masters: usize, replicas: usize, tls: Option<&Certificates>) -> Self {
        for _attempt in 0..3 {
            if let Some(cluster) = Self::try_start(masters, replicas, tls) {
                return cluster;
            }
        }
        panic!("the cluster did not form in 3 attempts of 20 s");
    }

    fn try_start(masters: usize, replicas: usize, tls: Option<&Certificates>) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "cache-cluster-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let tls = tls.map_or_else(Vec::new, |certificates| {
            let mut args = certificates.server_args(0, false);
            args.drain(..2); // each node has its own port
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
            args
        });
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
            tls,
        };
        for _ in 0..masters * (1 + replicas) {
            let node = cluster.spawn_node();
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        let mut create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli comes with redis-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        let created = loop {
            if let Some(status) = create.try_wait().expect("redis-cli runs") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                let _ = create.wait();
                eprintln!("redis-cli --cluster create hung 20 s; trying new nodes");
                return None; // dropping the cluster stops its nodes
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut said = String::new();
        if let Some(mut out) = create.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut said);
        }
        assert!(
            created.success(),
            "redis-cli --cluster create failed: {said}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.is_ok() || !cluster.replicas_in_sync() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach state ok (replicas in sync) within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// Starts one node on a free port whose cluster bus port (+10000) is free
    /// too; another process may take either between the probe and the bind,
    /// so a node that exits or does not answer is tried again elsewhere.
    fn spawn_node(&self) -> (u16, Option<Child>) {
        for _attempt in 0..10 {
            let port = free_port();
            if port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue; // no room for its bus port
            }
            let tls = !self.tls.is_empty();
            if tls && (port < 11_024 || TcpListener::bind(("127.0.0.1", tls_port(port))).is_err()) {
                continue; // no room for its TLS port
            }
            if let Some(child) = self.spawn_on(port) {
                return (port, Some(child));
            }
        }
        panic!("no cluster node started after 10 attempts on free loopback ports");
    }

    /// Starts the node of `port` (its configuration and snapshot files are
    /// named by the port): `None` when it exits or does not answer in 10 s.
    fn spawn_on(&self, port: u16) -> Option<Child> {
        let tls = !self.tls.is_empty();
        let mut child = server_on(port)
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            // a replica may take over whatever its data's age (tests only)
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(&self.tls)
            // the bus follows the TLS port unless told: keep it at port + 10000
            .args(
                tls.then(|| {
                    [
                        "--tls-port".to_owned(),
                        tls_port(port).to_string(),
                        "--cluster-port".to_owned(),
                        (port + 10_000).to_string(),
                    ]
                })
                .into_iter()
                .flatten(),
            )
            .args([
                "--logfile",
                &format!("node-{port}.log"),
                "--dbfilename",
                &format!("dump-{port}.rdb"),
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed: run the README's test command, which installs it",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(port) {
                return Some(child);
            }
            if !matches!(child.try_wait(), Ok(None)) {
                break; // it exited: most likely a port was taken
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts a killed node again on its port, with its cluster
    /// configuration and its last snapshot (`SAVE`), and waits for the
    /// cluster to be ok.
    pub fn restart(&mut self, port: u16) {
        let mut restarted = None;
        for _attempt in 0..50 {
            restarted = self.spawn_on(port);
            if restarted.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100)); // the port may linger
        }
        let Some(child) = restarted else {
            panic!("cluster node {port} did not restart");
        };
        for (node, slot) in &mut self.nodes {
            if *node == port {
                *slot = Some(child);
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the cluster was not ok 20 s after node {port} restarted"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether every running node reports `cluster_state:ok` and sees every
    /// slot served.
    pub fn is_ok(&self) -> bool {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .all(|(port, _)| {
                let info = cli(*port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
    }

    /// Whether every replica has synced with its master.
    fn replicas_in_sync(&self) -> bool {
        self.nodes.iter().all(|(port, _)| {
            let info = cli(*port, &["INFO", "replication"]);
            !info.contains("role:slave") || info.contains("master_link_status:up")
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// Runs a command on every running node (`ACL SETUSER ...`), through
    /// `redis-cli`; returns the answers.
    pub fn on_every_node(&self, args: &[&str]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| cli(*port, args))
            .collect()
    }

    /// The nodes' TLS URLs (a cluster started with [`start_tls`](Self::start_tls)).
    pub fn tls_urls(&self) -> Vec<String> {
        self.urls()
            .iter()
            .filter_map(|url| url.trim_end_matches('/').rsplit(':').next()?.parse().ok())
            .map(|port| format!("rediss://127.0.0.1:{}/", tls_port(port)))
            .collect()
    }

    /// A cache on this cluster.
    pub async fn cache(&self) -> Cache {
        Cache::builder()
            .redis_cluster(self.urls())
            .op_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("cache on the test cluster")
    }

    /// The ports of the masters, by `CLUSTER NODES`.
    pub fn masters(&self) -> Vec<u16> {
        let Some((port, _)) = self.nodes.iter().find(|(_, child)| child.is_some()) else {
            return Vec::new();
        };
        cli(*port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter_map(|address| address.split(['@', ':']).nth(1)?.parse().ok())
            .collect()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        // Asked of a running node: a killed master stays in `masters()`
        // until the others notice.
        let port = self
            .nodes
            .iter()
            .find(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .expect("a running node");
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        for line in cli(port, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2).is_some_and(|flags| flags.contains("master")) {
                continue;
            }
            for range in &fields[8..] {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>()) {
                    if (start..=end).contains(&slot) {
                        return fields[1]
                            .split(['@', ':'])
                            .nth(1)
                            .and_then(|p| p.parse().ok())
                            .expect("a port");
                    }
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Kills the node on `port` (`SIGKILL`).
    pub fn kill(&mut self, port: u16) {
        for (node, child) in &mut self.nodes {
            if *node == port {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os("KEEP_CLUSTER_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ping(port: u16) -> bool {
    cli(port, &["PING"]).trim() == "PONG"
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with `openssl` in a temporary directory removed when dropped.
pub struct Certificates {
    pub dir: std::path::PathBuf,
}

impl Certificates {
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cache-tls-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl is installed (the README's test command installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cache test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("san.ext");
        for name in ["server", "client"] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &format!("{name}.crt"),
            ]);
        }
        Certificates { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).expect("a generated certificate")
    }

    /// `redis-server` arguments for a TLS port with these certificates;
    /// `clients` says whether clients must present a certificate.
    pub fn server_args(&self, tls_port: u16, clients: bool) -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.path("server.crt"),
            "--tls-key-file",
            &self.path("server.key"),
            "--tls-ca-cert-file",
            &self.path("ca.crt"),
            "--tls-auth-clients",
            if clients { "yes" } else { "no" },
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now.
pub fn unused_port() -> u16 {
    free_port()
}

/// A TCP proxy on a free loopback port in front of `127.0.0.1:target`, which
/// can hold the server's replies (requests still pass): a test can keep a
/// read on the wire, answered by the server but not yet by the proxy.
pub struct Proxy {
    port: u16,
    held: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("its address").port();
        let held = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let gate = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                forward(client, server_out, None);
                forward(server, client_out, Some(gate.clone()));
            }
        });
        Proxy { port, held }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A proxy that delivers every byte, each way, `one_way` after it came:
    /// a network with a round trip of twice that, as the kernel's `netem`
    /// would make it, in plain threads (a tokio timer rounds up to a
    /// millisecond). Order is kept; reading is never held up by the delay.
    pub fn delayed(target: u16, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("its address").port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                forward_late(client, server_out, one_way);
                forward_late(server, client_out, one_way);
            }
        });
        let held = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        Proxy { port, held }
    }

    /// Holds every reply from now on until [`release`](Self::release).
    pub fn hold(&self) {
        *self.held.0.lock().expect("the proxy's gate") = true;
    }

    pub fn release(&self) {
        *self.held.0.lock().expect("the proxy's gate") = false;
        self.held.1.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.release();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read: one thread
/// reads and stamps, another sleeps until each stamp and writes.
fn forward_late(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (sender, receiver) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0
                || sender
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in receiver {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// Copies `from` to `to` in a thread, waiting at `gate` before each write.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    gate: Option<std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>>,
) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            if let Some(gate) = &gate {
                let (held, open) = &**gate;
                let mut guard = held.lock().expect("the proxy's gate");
                while *guard {
                    guard = open.wait(guard).expect("the proxy's gate");
                }
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
