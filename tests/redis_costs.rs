//! What each operation sends to Redis, read from `INFO commandstats`:
//! group eviction does not grow with the group (guarantee 3, docs/design.md),
//! and a hit is one
//! round trip; and how it sends them (every connection sets `TCP_NODELAY`).

#[path = "support/sockets.rs"]
mod sockets;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::RedisServer;

/// Commands run since the last `CONFIG RESETSTAT`, by name (without the
/// INFO/CONFIG that the test itself sends).
async fn commands_since_reset(
    conn: &mut redis::aio::MultiplexedConnection,
) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let count = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap();
        calls.insert(name.to_owned(), count);
    }
    calls
}

async fn reset(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

async fn fill_group(cache: &Cache, group: &'static str, size: u64) {
    let mut batch = tokio::task::JoinSet::new();
    for start in (0..size).step_by(1000) {
        let cache = cache.clone();
        batch.spawn(async move {
            for id in start..(start + 1000).min(size) {
                cache.set(group, &id, &id, None).await.unwrap();
            }
        });
        while batch.len() >= 16 {
            batch.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = batch.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_eviction_does_not_grow_with_the_group() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.client().await;
    fill_group(&cache, "small", 10).await;
    fill_group(&cache, "big", 100_000).await;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(keys >= 100_010, "the groups were filled ({keys} keys)");

    cache.evict_group("warm-up").await.unwrap(); // loads the script
    let mut cost = Vec::new();
    for group in ["small", "big"] {
        reset(&mut conn).await;
        cache.evict_group(group).await.unwrap();
        cost.push(commands_since_reset(&mut conn).await);
    }
    for (group, calls) in ["small", "big"].iter().zip(&cost) {
        assert!(
            !calls.contains_key("scan") && !calls.contains_key("keys"),
            "evicting {group} scanned the keyspace: {calls:?}"
        );
        assert_eq!(
            calls.get("evalsha"),
            Some(&1),
            "evicting {group} is one script call: {calls:?}"
        );
    }
    assert_eq!(
        cost[0], cost[1],
        "evicting 10 keys and 100,000 keys sends the same commands"
    );
    for id in [0u64, 50_000, 99_999] {
        assert!(
            !cache.has("big", &id).await.unwrap(),
            "entry {id} is gone with its group"
        );
    }
    assert!(!cache.has("small", &3u64).await.unwrap());
}

#[cached(group = "costs", skip(cache), cache = cache)]
async fn read(cache: &Cache, id: u64) -> u64 {
    id
}

#[cache_put(group = "costs", skip(cache), cache = cache)]
async fn write(cache: &Cache, id: u64) -> u64 {
    id
}

#[cache_evict(group = "costs", skip(cache), cache = cache)]
async fn remove(cache: &Cache, id: u64) {}

/// The commands clients send (not those scripts run), read from `MONITOR`.
struct Monitor {
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        use std::io::{BufRead, BufReader, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("monitor connection");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let monitor = Monitor { lines };
        let ok = monitor
            .lines
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("MONITOR answered");
        assert_eq!(ok, "+OK", "MONITOR is on before the test sends anything");
        monitor
    }

    /// The client commands (upper-cased names) seen until `ECHO marker`.
    fn until(&self, marker: &str) -> Vec<String> {
        let mut commands = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("MONITOR saw the marker within 5 s");
            if line.contains(marker) {
                return commands;
            }
            // +1732300000.123 [0 127.0.0.1:53422] "GET" "..."; scripts: [0 lua]
            if line.contains("lua]") || !line.contains('"') {
                continue;
            }
            if let Some(name) = line.split('"').nth(1) {
                commands.push(name.to_uppercase());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_each_path_sends() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.client().await;
    let port = server.port();
    read(&cache, 1).await; // loads the scripts
    write(&cache, 1).await;
    remove(&cache, 1).await;
    let monitor = Monitor::start(port);
    let _: String = redis::cmd("ECHO")
        .arg("start")
        .query_async(&mut conn)
        .await
        .unwrap();
    monitor.until("start");

    let mut sent = BTreeMap::new();
    for (path, run) in [("miss", 0), ("hit", 1), ("put", 2), ("evict", 3)] {
        let stores = cache.stats().stores;
        match run {
            0 | 1 => drop(read(&cache, 2).await),
            2 => drop(write(&cache, 2).await),
            _ => remove(&cache, 2).await,
        }
        if path == "miss" {
            // A miss returns before its fill's reply: the marker goes on
            // another connection, so wait for the fill to have run.
            support::eventually(Duration::from_secs(5), "the miss's fill", || async {
                cache.stats().stores > stores
            })
            .await;
        }
        let _: String = redis::cmd("ECHO")
            .arg(path)
            .query_async(&mut conn)
            .await
            .unwrap();
        sent.insert(path, monitor.until(path));
    }
    assert_eq!(
        sent["hit"],
        ["MGET"],
        "a hit is one plain read of the generation and the entry, no script"
    );
    assert_eq!(
        sent["miss"],
        ["MGET", "EVALSHA", "EVALSHA"],
        "a miss: the read, the lease, the fill"
    );
    assert_eq!(
        sent["put"],
        ["EVALSHA", "EVALSHA"],
        "a put registers the write and ends it"
    );
    assert_eq!(sent["evict"], ["EVALSHA"], "an eviction is one call");
}

#[cached(group = "cold", skip(cache), cache = cache)]
async fn slow_read(cache: &Cache, id: u64) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    id
}

/// A stampede of one process asks Redis for the key's lease once: the other
/// callers follow this process's flight instead of being refused a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_in_one_process_asks_for_the_lease_once() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.client().await;
    slow_read(&cache, 0).await; // loads the scripts
    reset(&mut conn).await;
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { slow_read(&cache, 1).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 1);
    }
    let commands = commands_since_reset(&mut conn).await;
    // Each lookup script, which asks for the lease, reads the lease with
    // one HMGET; of a single-key read's scripts, only it does. (Counting
    // scripts counted two more that touch the lease, a fill and a second
    // fill or a release, on a loaded machine.)
    let lookups = commands.get("hmget").copied().unwrap_or(0);
    assert_eq!(
        lookups, 1,
        "200 callers asked for the lease {lookups} times: {commands:?}"
    );
}

#[cached(group = "first", ttl = 60, skip(cache), cache = cache)]
async fn first_read(cache: &Cache, id: u64) -> u64 {
    id
}

#[cached(group = "first_many", ttl = 60, each = ids, skip(cache), cache = cache)]
async fn first_reads(cache: &Cache, ids: &[u64]) -> std::collections::HashMap<u64, u64> {
    ids.iter().map(|id| (*id, *id)).collect()
}

#[cache_put(group = "first", ttl = 60, skip(cache), cache = cache)]
async fn first_write(cache: &Cache, id: u64) -> u64 {
    id + 1
}

/// A new cache's first miss, bulk miss, put and eviction, on a server that
/// never ran its scripts, in each group's first use.
async fn first_uses(cache: &Cache) {
    support::first_contact(cache).await;
    assert_eq!(first_read(cache, 1).await, 1);
    assert_eq!(first_reads(cache, &[1, 2, 3]).await.len(), 3);
    assert_eq!(first_write(cache, 1).await, 2);
    cache.delete("first", &1u64).await.unwrap();
}

/// `NOSCRIPT` errors a server reported, by `INFO errorstats`.
fn noscript(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix("errorstat_NOSCRIPT:count="))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// The scripts are loaded on first contact: no first use of a group waits
/// for `NOSCRIPT` and a second round trip (nor, for a fill, for its answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cache_meets_no_noscript() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    first_uses(&cache).await;
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(&mut server.client().await)
        .await
        .unwrap();
    // First contact probes the script rights with a script that does not
    // exist: that one NOSCRIPT is its own.
    assert_eq!(noscript(&info), 1, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cache_meets_no_noscript_on_a_cluster() {
    let cluster = support::RedisCluster::start(3, 0);
    let cache = cluster.cache().await;
    first_uses(&cache).await;
    let errors: u64 = cluster
        .on_every_node(&["INFO", "errorstats"])
        .iter()
        .map(|info| noscript(info))
        .sum();
    assert_eq!(errors, 1, "only first contact's probe");
}

/// Every connection a cache makes, to a server or to each node of a cluster,
/// for commands or for the local tier's invalidations, sets `TCP_NODELAY`
/// (redis-rs leaves it off). With Nagle's algorithm on, a command written
/// while another awaits its acknowledgement waits too: behind a network that
/// cost a hit most of a second round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_sends_at_once() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&cache).await;
    cache.set("nodelay", &1u64, &1u64, None).await.unwrap();
    sockets::assert_nodelay(&[server.port()], 2, "the connection and the subscription");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_sends_at_once_on_a_cluster() {
    let cluster = support::RedisCluster::start(3, 0);
    let cache = Cache::builder()
        .redis_cluster(cluster.urls())
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&cache).await;
    for id in 0..30u64 {
        cache.set("nodelay", &id, &id, None).await.unwrap();
    }
    let masters = cluster.masters();
    sockets::assert_nodelay(&masters, masters.len(), "a connection to each master");
}
