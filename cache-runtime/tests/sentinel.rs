//! Redis Sentinel (feature `sentinel`): a real master, a replica and three
//! `redis-server --sentinel` processes started by the test. The master is
//! killed; calls keep succeeding, and the cache comes back on the new master.

#[path = "../../tests/support/sockets.rs"]
mod sockets;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cached, Cache};
use support::{eventually, RedisServer};

const MASTER: &str = "cachemaster";

#[cached(group = "sentinel", cache = cache, skip(cache, loads))]
async fn read(cache: &Cache, loads: &AtomicUsize, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id * 10
}

/// Three sentinels watching one master, stopped when dropped.
struct Sentinels {
    processes: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
    /// Each sentinel's TLS port, when they serve TLS.
    #[cfg(feature = "tls")]
    tls_ports: Vec<u16>,
}

impl Sentinels {
    fn start(master_port: u16) -> Self {
        Self::start_with(master_port, |_| String::new())
    }

    /// Sentinels that also serve TLS, and reach the master (at its TLS
    /// port) over TLS.
    #[cfg(feature = "tls")]
    fn start_tls(master_tls_port: u16, certificates: &support::Certificates) -> Self {
        let mut tls_ports = Vec::new();
        let mut sentinels = Self::start_with(master_tls_port, |_| {
            let tls_port = support::unused_port();
            tls_ports.push(tls_port);
            let mut conf = certificates.server_args(tls_port, false);
            conf.extend(["--tls-replication", "yes"].map(str::to_owned));
            // `--name value` pairs as configuration lines
            conf.chunks(2)
                .map(|pair| format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]))
                .collect()
        });
        sentinels.tls_ports = tls_ports;
        sentinels
    }

    fn start_with(master_port: u16, mut extra: impl FnMut(u16) -> String) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cache-sentinel-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut sentinels = Sentinels {
            processes: Vec::new(),
            dir,
            #[cfg(feature = "tls")]
            tls_ports: Vec::new(),
        };
        for _ in 0..3 {
            let port = support::unused_port();
            let conf = sentinels.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 10000\n{extra}",
                    dir = sentinels.dir.display(),
                    extra = extra(port),
                ),
            )
            .expect("a sentinel configuration");
            let child = Command::new(support::server_binary())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            sentinels.processes.push((port, child));
        }
        sentinels
    }

    fn urls(&self) -> Vec<String> {
        self.processes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    #[cfg(feature = "tls")]
    fn tls_urls(&self) -> Vec<String> {
        self.tls_ports
            .iter()
            .map(|port| format!("rediss://127.0.0.1:{port}/"))
            .collect()
    }

    /// Asks every sentinel; `None` where one does not answer.
    async fn ask(&self, command: &[&str]) -> Vec<Option<redis::Value>> {
        let mut answers = Vec::new();
        for url in self.urls() {
            let answer = async {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                let mut cmd = redis::cmd(command[0]);
                cmd.arg(&command[1..]);
                cmd.query_async::<redis::Value>(&mut connection).await.ok()
            };
            answers.push(answer.await);
        }
        answers
    }

    /// The master's port, as every sentinel names it (`None` if they differ).
    async fn master_port(&self) -> Option<u16> {
        let mut ports = Vec::new();
        for answer in self
            .ask(&["SENTINEL", "get-master-addr-by-name", MASTER])
            .await
        {
            let (_, port): (String, u16) = redis::from_redis_value(answer?).ok()?;
            ports.push(port);
        }
        ports.dedup();
        (ports.len() == 1).then(|| ports[0])
    }

    /// Whether every sentinel knows the replica and the two other sentinels,
    /// which a failover needs.
    async fn ready(&self) -> bool {
        let replicas = self.ask(&["SENTINEL", "replicas", MASTER]).await;
        let peers = self.ask(&["SENTINEL", "sentinels", MASTER]).await;
        let count = |answer: &Option<redis::Value>| match answer {
            Some(redis::Value::Array(items)) => items.len(),
            _ => 0,
        };
        replicas.iter().all(|a| count(a) == 1) && peers.iter().all(|a| count(a) == 2)
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, its replica, and three sentinels that know both and each other.
async fn master_replica_sentinels() -> (RedisServer, RedisServer, Sentinels) {
    let master = RedisServer::start();
    let master_port = master.port();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port.to_string()]);
    let sentinels = Sentinels::start(master_port);
    eventually(
        Duration::from_secs(20),
        "the sentinels to find the replica and each other",
        || sentinels.ready(),
    )
    .await;
    (master, replica, sentinels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_a_failover() {
    let (mut master, replica, sentinels) = master_replica_sentinels().await;

    // Default settings: how quickly hits come back is what a user gets.
    let cache = Cache::builder()
        .redis_sentinel(sentinels.urls(), MASTER)
        .build()
        .await
        .expect("a Sentinel cache builds");
    let tiered = Cache::builder()
        .redis_sentinel(sentinels.urls(), format!("redis://{MASTER}/0"))
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .expect("a Sentinel cache with a local tier builds");
    support::local_tier_ready(&tiered).await;
    let loads = AtomicUsize::new(0);
    assert_eq!(read(&cache, &loads, 1).await, 10);
    assert_eq!(read(&cache, &loads, 1).await, 10);
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the second read hit");
    assert!(cache.health().await.serving);

    master.kill();
    let killed = Instant::now();
    // Keep calling, each call on a key not read before, until a write and a
    // read of it are served by the cache again: on the new master.
    let mut calls = 0;
    let mut slowest = Duration::ZERO;
    let mut promoted_at = None;
    let replica_port = replica.port();
    let back = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the cache did not come back within 60 s of the master's death ({calls} calls)"
        );
        calls += 1;
        let id = 100 + calls;
        let started = Instant::now();
        assert_eq!(
            read(&cache, &loads, id).await,
            id * 10,
            "every call succeeds"
        );
        let before = loads.load(Ordering::SeqCst);
        assert_eq!(
            read(&cache, &loads, id).await,
            id * 10,
            "every call succeeds"
        );
        slowest = slowest.max(started.elapsed() / 2);
        if loads.load(Ordering::SeqCst) == before {
            break killed.elapsed(); // stored and then hit
        }
        if promoted_at.is_none() && sentinels.master_port().await == Some(replica_port) {
            promoted_at = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        sentinels.master_port().await,
        Some(replica_port),
        "the replica is the master now"
    );
    let promoted_at = promoted_at.unwrap_or(back);
    eprintln!(
        "sentinel failover: the sentinels named the new master {promoted_at:?} after the kill; \
         the cache served from it {:?} later ({calls} calls in between, slowest {slowest:?})",
        back.saturating_sub(promoted_at)
    );
    assert!(
        back.saturating_sub(promoted_at) <= Duration::from_secs(1),
        "hits came back {:?} after the sentinels named the new master",
        back.saturating_sub(promoted_at)
    );
    let health = cache.health().await;
    assert!(health.reachable && health.serving, "{health:?}");

    // The local tier subscribes again, on the new master.
    eventually(
        Duration::from_secs(10),
        "the local tier to subscribe on the new master",
        || async { tiered.stats().local_flushes >= 3 },
    )
    .await;

    // With every sentinel gone, the connection to the master still serves.
    drop(sentinels);
    let before = loads.load(Ordering::SeqCst);
    assert_eq!(read(&cache, &loads, 999).await, 9990);
    assert_eq!(read(&cache, &loads, 999).await, 9990);
    assert_eq!(
        loads.load(Ordering::SeqCst),
        before + 1,
        "the second read hit"
    );
}

#[cached(group = "failover", cache = cache, skip(cache, db))]
async fn versioned(cache: &Cache, db: &support::VersionedDb, id: u64) -> u64 {
    db.read(id)
}

#[cache_evict(group = "failover", cache = cache, skip(cache, db))]
async fn bump(cache: &Cache, db: &support::VersionedDb, id: u64) -> Result<(), String> {
    db.bump(id);
    Ok(())
}

/// Guarantee 9 through Sentinel: the replica is frozen (`SIGSTOP`) and cut
/// off before an eviction, so it never receives it; the master dies and the sentinels
/// promote the replica, which holds the evicted entry. The cache serves
/// nothing from before the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_that_missed_a_write_serves_nothing_from_before_it() {
    let (mut master, replica, sentinels) = master_replica_sentinels().await;
    let cache = Cache::builder()
        .redis_sentinel(sentinels.urls(), MASTER)
        .build()
        .await
        .expect("a Sentinel cache builds");
    let db = support::VersionedDb::default();
    let entry = "cache:{failover}:e:1";
    assert_eq!(versioned(&cache, &db, 1).await, 0);
    let on_replica = replica.client().await;
    eventually(
        Duration::from_secs(10),
        "the replica to receive the entry",
        || {
            let mut on_replica = on_replica.clone();
            async move {
                redis::cmd("EXISTS")
                    .arg(entry)
                    .query_async::<bool>(&mut on_replica)
                    .await
                    .unwrap_or(false)
            }
        },
    )
    .await;

    // Frozen, and cut off from the master, the replica cannot receive what
    // follows (its socket would otherwise deliver it on SIGCONT).
    replica.pause();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "replica"][..])
        .query_async(&mut master.client().await)
        .await
        .unwrap();
    bump(&cache, &db, 1).await.unwrap(); // version 1; the replica misses the eviction
    assert_eq!(versioned(&cache, &db, 1).await, 1);
    master.kill();
    replica.resume();
    let replica_port = replica.port();
    eventually(
        Duration::from_secs(30),
        "the sentinels to promote the replica",
        || async { sentinels.master_port().await == Some(replica_port) },
    )
    .await;
    // (A fresh connection: Sentinel closes the clients of the server it
    // promotes.)
    let stale: bool = redis::cmd("EXISTS")
        .arg(entry)
        .query_async(&mut replica.client().await)
        .await
        .unwrap();
    assert!(stale, "the promoted replica holds the evicted entry");

    // Until the cache serves hits again, and twice after: never version 0.
    let mut hits = 0;
    let started = Instant::now();
    while hits < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cache did not serve hits again within 30 s of the promotion"
        );
        let before = cache.stats().hits;
        assert_eq!(
            versioned(&cache, &db, 1).await,
            1,
            "no read returns the entry from before the failover"
        );
        if cache.stats().hits > before {
            hits += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sentinel_settings_are_checked_at_build() {
    let error = Cache::builder()
        .redis_sentinel(Vec::<String>::new(), MASTER)
        .build()
        .await
        .expect_err("no sentinels");
    assert!(error.to_string().contains("sentinel"), "{error}");
    // Building connects to nothing: no sentinel needs to answer yet.
    Cache::builder()
        .redis_sentinel(
            ["redis://127.0.0.1:1/"],
            format!("redis://app:pw@{MASTER}/3"),
        )
        .build()
        .await
        .expect("a master URL with credentials and a database");
}

/// Sentinels and master over TLS: the cache asks the sentinels on their TLS
/// ports and reaches the master on its TLS port, with the test's CA.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_master_over_tls() {
    let certificates = support::Certificates::generate();
    let master_tls = support::unused_port();
    let args = certificates.server_args(master_tls, false);
    let master = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let sentinels = Sentinels::start_tls(master_tls, &certificates);
    eventually(
        Duration::from_secs(10),
        "the sentinels to name the master",
        || async { sentinels.master_port().await == Some(master_tls) },
    )
    .await;
    let cache = Cache::builder()
        .redis_sentinel(sentinels.tls_urls(), format!("rediss://{MASTER}/0"))
        .tls(cache_runtime::Tls::new().ca_pem(certificates.read("ca.crt")))
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a Sentinel cache over TLS builds");
    support::first_contact(&cache).await;
    let loads = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(read(&cache, &loads, 5).await, 50);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "two hits over TLS: {:?}",
        cache.stats()
    );
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
    sockets::assert_nodelay(&[master_tls], 1, "the connection to the master");
    let mut plain = master.client().await;
    let stored: bool = redis::cmd("EXISTS")
        .arg("cache:{sentinel}:e:5")
        .query_async(&mut plain)
        .await
        .expect("EXISTS");
    assert!(stored, "the value is on the master");
}

/// Guarantee 5 (docs/design.md) through Sentinel: a hung master (`SIGSTOP`) costs every call,
/// lone or batched, at most the op timeout, and the cache serves again once
/// the master answers. The connection carries no response timeout of
/// redis-rs's own: the cache's deadline alone bounds it. There is no
/// replica, so the sentinels cannot fail over: the master they named stays
/// the one that hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_master_costs_at_most_the_op_timeout() {
    const OP_TIMEOUT: Duration = Duration::from_millis(100);
    // Scheduling slack on a loaded 2-core machine.
    const SLACK: Duration = Duration::from_millis(250);
    let master = RedisServer::start();
    let sentinels = Sentinels::start(master.port());
    eventually(
        Duration::from_secs(10),
        "the sentinels to name the master",
        || async { sentinels.master_port().await == Some(master.port()) },
    )
    .await;
    let cache = Cache::builder()
        .redis_sentinel(sentinels.urls(), MASTER)
        .op_timeout(OP_TIMEOUT)
        .breaker(3, Duration::from_millis(300))
        .build()
        .await
        .expect("a Sentinel cache builds");
    let loads = Arc::new(AtomicUsize::new(0));
    for id in 0..8 {
        assert_eq!(read(&cache, &loads, id).await, id * 10);
    }

    master.pause();
    // Callers that arrive together: lone reads, batches, and callers queued
    // behind the reads of their key.
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                assert_eq!(read(&cache, &loads, i % 8).await, i % 8 * 10);
                started.elapsed()
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for call in calls {
        let took = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a call against the hung master did not return within 5 s")
            .expect("a caller panicked");
        worst = worst.max(took);
    }
    eprintln!("Sentinel master hung: 64 concurrent callers of 8 keys, the slowest took {worst:?}");
    assert!(
        worst <= OP_TIMEOUT + SLACK,
        "a call took {worst:?}, more than the op timeout"
    );
    assert!(
        cache.stats().timeouts >= 1,
        "the hung reads time out: {:?}",
        cache.stats()
    );

    master.resume();
    eventually(
        Duration::from_secs(5),
        "the cache to serve hits from the master again",
        || async {
            read(&cache, &loads, 1).await;
            let before = loads.load(Ordering::SeqCst);
            read(&cache, &loads, 1).await;
            loads.load(Ordering::SeqCst) == before
        },
    )
    .await;
}
