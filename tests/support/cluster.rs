//! A Redis Cluster for a test: its nodes, joined, and what tests do to them.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, server_on, Certificates};
use cache_runtime::Cache;

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

pub(super) fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}
