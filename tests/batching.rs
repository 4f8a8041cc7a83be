//! Batched reads, pinned by forced interleavings on real servers: a proxy
//! holds the server's replies, so reads stay on the wire, answered by Redis
//! but not yet by the proxy, while a writer on its own connection writes.
//!
//! - A caller that arrives after a write returned never shares a read sent
//!   before it (it would get the value from before the write).
//! - Callers waiting together for one key share one read: 200 callers of a
//!   key cost three reads.
//! - The caller that sends a batch may be dropped: the others in it are
//!   answered all the same.
//! - With a read on the wire, callers of many keys share one command, each
//!   answered with its own key's value.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cache_runtime::Cache;
use support::{eventually, Proxy, RedisCluster, RedisServer};
use tokio::task::JoinHandle;

const GROUP: &str = "batching";

type Read = Pin<Box<dyn Future<Output = Option<u64>> + Send>>;

/// A read of `key` through `cache`, polled once: it has reached the cache's
/// reads (alone on the wire, or queued for the next batch) when this returns.
fn arrive(cache: &Cache, key: u64) -> Read {
    let cache = cache.clone();
    let mut read: Read = Box::pin(async move {
        cache
            .get::<u64>(GROUP, &key)
            .await
            .expect("a read through the proxy")
    });
    let poll = read.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(
        matches!(poll, Poll::Pending),
        "the read waits for the server"
    );
    read
}

/// Readers of `keys`, in order, that all arrive before any is spawned, so
/// that a batch's sender cannot run, on the other worker, before the last
/// of them has queued.
fn arrive_together(
    cache: &Cache,
    keys: impl IntoIterator<Item = u64>,
) -> Vec<JoinHandle<Option<u64>>> {
    let arrived: Vec<_> = keys.into_iter().map(|key| arrive(cache, key)).collect();
    arrived.into_iter().map(tokio::spawn).collect()
}

/// `MGET` calls the server has run: one per read (a lone peek, or a batch of a group).
fn entry_reads(port: u16) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_mget:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A cache whose replies pass `proxy`, a writer on its own connection, and
/// the port of the server that holds the group.
struct Setup<'a> {
    cache: &'a Cache,
    writer: &'a Cache,
    proxy: &'a Proxy,
    port: u16,
}

impl Setup<'_> {
    /// Stores `value` at `key`, holds the replies, and lets `callers` readers
    /// of `key` arrive: the first goes on the wire (the server runs it, its
    /// reply held), the rest in one batch after it. Returns them and the
    /// server's entry reads before them.
    async fn held_readers(
        &self,
        key: u64,
        value: u64,
        callers: usize,
    ) -> (Vec<JoinHandle<Option<u64>>>, u64) {
        self.writer.set(GROUP, &key, &value, None).await.unwrap();
        assert_eq!(
            self.cache.get::<u64>(GROUP, &key).await.unwrap(),
            Some(value)
        );
        self.proxy.hold();
        let before = entry_reads(self.port);
        let readers = arrive_together(self.cache, std::iter::repeat_n(key, callers));
        eventually(
            Duration::from_secs(5),
            "the server to run the first read (its reply held by the proxy)",
            || async { entry_reads(self.port) > before },
        )
        .await;
        (readers, before)
    }
}

/// A caller that arrives after a write returned never shares a read sent
/// before it.
async fn never_joins_a_read_on_the_wire(setup: &Setup<'_>) {
    let (early, _) = setup.held_readers(1, 1, 8).await;
    // A write returns; then a caller arrives.
    setup.writer.set(GROUP, &1u64, &2u64, None).await.unwrap();
    let late = tokio::spawn(arrive(setup.cache, 1));
    setup.proxy.release();

    for read in early {
        let value = read.await.unwrap();
        assert!(matches!(value, Some(1 | 2)), "{value:?}");
    }
    assert_eq!(
        late.await.unwrap(),
        Some(2),
        "a caller that arrived after the write returned read the value before it"
    );
}

/// Callers queued together for one key share one read.
async fn a_hot_key_costs_one_read_per_batch(setup: &Setup<'_>) {
    // A lone read and a batch of one key on the wire, replies held ...
    let (mut readers, before) = setup.held_readers(7, 70, 2).await;
    eventually(
        Duration::from_secs(5),
        "the server to run the batch after the lone read",
        || async { entry_reads(setup.port) > before + 1 },
    )
    .await;
    // ... so 198 callers that arrive now go out in one more batch.
    readers.extend(arrive_together(setup.cache, std::iter::repeat_n(7, 198)));
    setup.proxy.release();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), Some(70));
    }
    assert_eq!(
        entry_reads(setup.port) - before,
        3,
        "200 callers of one key: the lone read, the batch on the wire beside it, and one batch of those who waited"
    );
}

/// The caller that sends a batch may be dropped, before it sent it or with
/// it on the wire: the batch's other callers are answered all the same.
async fn a_dropped_sender_strands_no_one(setup: &Setup<'_>) {
    for on_the_wire in [false, true] {
        let (lone, before) = setup.held_readers(3, 30, 1).await;
        // Both queue behind the lone read; the first is to send the batch.
        let sender = arrive(setup.cache, 3);
        let other = arrive(setup.cache, 3);
        let other = tokio::spawn(other);
        if on_the_wire {
            let sender = tokio::spawn(sender);
            eventually(
                Duration::from_secs(5),
                "the server to run the batch (its reply held by the proxy)",
                || async { entry_reads(setup.port) > before + 1 },
            )
            .await;
            sender.abort();
            assert!(sender.await.unwrap_err().is_cancelled());
        } else {
            drop(sender);
        }
        setup.proxy.release();
        assert_eq!(lone.into_iter().next().unwrap().await.unwrap(), Some(30));
        let other = tokio::time::timeout(Duration::from_secs(5), other)
            .await
            .unwrap_or_else(|_| {
                panic!("a caller was stranded (sender dropped on the wire: {on_the_wire})")
            });
        assert_eq!(
            other.unwrap(),
            Some(30),
            "a caller whose batch's sender was dropped (on the wire: {on_the_wire}) was not answered"
        );
        assert_eq!(
            entry_reads(setup.port) - before,
            2,
            "the lone read and one batch"
        );
    }
}

/// Once a read is on the wire, callers of other keys go out together, one
/// `MGET` for the group, and each is answered with its own key's value:
/// keys whose names sort apart from their order of arrival, two callers of
/// one key, and a key with no entry.
async fn a_busy_wire_batches_other_keys(setup: &Setup<'_>) {
    let lone_key = 1000u64;
    let batched_keys = [9, 1_000_000, 10, 99, 100, 10, 5, 55, 404];
    let missing = 404;
    for key in std::iter::once(lone_key).chain(batched_keys) {
        if key != missing {
            setup
                .writer
                .set(GROUP, &key, &(key * 3), None)
                .await
                .unwrap();
        }
    }
    setup.proxy.hold();
    let before = entry_reads(setup.port);
    let lone = tokio::spawn(arrive(setup.cache, lone_key));
    eventually(
        Duration::from_secs(5),
        "the server to run the lone read (its reply held by the proxy)",
        || async { entry_reads(setup.port) > before },
    )
    .await;
    let batched = batched_keys
        .into_iter()
        .zip(arrive_together(setup.cache, batched_keys));
    eventually(
        Duration::from_secs(5),
        "the server to run the batch",
        || async { entry_reads(setup.port) > before + 1 },
    )
    .await;
    setup.proxy.release();
    for (key, read) in std::iter::once((lone_key, lone)).chain(batched) {
        let expected = (key != missing).then_some(key * 3);
        assert_eq!(read.await.unwrap(), expected, "the reader of key {key}");
    }
    assert_eq!(
        entry_reads(setup.port) - before,
        2,
        "the lone read and one batch of the other keys"
    );
}

async fn through(url: String) -> Cache {
    Cache::builder()
        .redis(url)
        .op_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let cache = through(proxy.url()).await;
    let writer = server.cache().await;
    let port = server.port();
    let setup = Setup {
        cache: &cache,
        writer: &writer,
        proxy: &proxy,
        port,
    };
    never_joins_a_read_on_the_wire(&setup).await;
    a_hot_key_costs_one_read_per_batch(&setup).await;
    a_dropped_sender_strands_no_one(&setup).await;
    a_busy_wire_batches_other_keys(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    // Every node announces its proxy's port, so the cluster client reaches
    // each node through its proxy.
    let proxies: Vec<(u16, Proxy)> = cluster
        .masters()
        .into_iter()
        .map(|port| (port, Proxy::start(port)))
        .collect();
    for (port, proxy) in &proxies {
        for (setting, value) in [
            ("cluster-announce-port", proxy.port()),
            ("cluster-announce-bus-port", port + 10_000),
        ] {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "CONFIG", "SET", setting])
                .arg(value.to_string())
                .output()
                .expect("redis-cli");
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
        }
    }
    eventually(
        Duration::from_secs(20),
        "every node to know every node by its proxy's port",
        || async {
            cluster
                .on_every_node(&["CLUSTER", "NODES"])
                .iter()
                .all(|nodes| {
                    proxies
                        .iter()
                        .all(|(_, proxy)| nodes.contains(&format!(":{}@", proxy.port())))
                })
        },
    )
    .await;
    let cache = Cache::builder()
        .redis_cluster(proxies.iter().map(|(_, proxy)| proxy.url()))
        .op_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    // The nodes name each other by their proxies' ports now.
    let announced = cluster.master_of(&format!("{{{GROUP}}}"));
    let (port, proxy) = proxies
        .iter()
        .find(|(_, proxy)| proxy.port() == announced)
        .map(|(real, proxy)| (*real, proxy))
        .expect("a proxy for the group's master");
    // The writer talks to that node directly (a cluster client would follow
    // the announced ports, through the proxies): it serves the group's slot.
    let writer = through(format!("redis://127.0.0.1:{port}/")).await;
    let setup = Setup {
        cache: &cache,
        writer: &writer,
        proxy,
        port,
    };
    never_joins_a_read_on_the_wire(&setup).await;
    a_hot_key_costs_one_read_per_batch(&setup).await;
    a_dropped_sender_strands_no_one(&setup).await;
    a_busy_wire_batches_other_keys(&setup).await;
}
