//! Guarantee 10 (docs/design.md): the local tier's hits cost no round trip,
//! and a copy is dropped when any client writes, deletes, expires or evicts
//! its entry; while the feed is down or silent the tier is flushed and
//! bypassed.

#[path = "support/decodes.rs"]
mod decodes;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::{eventually, RedisServer};

/// The "database" is a Redis key, so that two processes share it.
async fn db_read(conn: &redis::aio::MultiplexedConnection, id: u64) -> u64 {
    redis::cmd("GET")
        .arg(format!("test:row:{id}"))
        .query_async::<Option<u64>>(&mut conn.clone())
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn db_write(conn: &redis::aio::MultiplexedConnection, id: u64, version: u64) {
    let _: () = redis::cmd("SET")
        .arg(format!("test:row:{id}"))
        .arg(version)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
}

#[cached(group = "rows", skip(cache, conn), cache = cache, ttl = 60)]
async fn read(cache: &Cache, conn: &redis::aio::MultiplexedConnection, id: u64) -> u64 {
    db_read(conn, id).await
}

#[cache_evict(group = "rows", key = id, cache = cache)]
async fn update(cache: &Cache, conn: &redis::aio::MultiplexedConnection, id: u64, version: u64) {
    db_write(conn, id, version).await;
}

#[cache_put(group = "rows", key = id, skip(cache, conn), cache = cache)]
async fn put(
    cache: &Cache,
    conn: &redis::aio::MultiplexedConnection,
    id: u64,
    version: u64,
) -> u64 {
    db_write(conn, id, version).await;
    version
}

#[cache_evict(group = "rows", all, skip(cache, conn), cache = cache)]
async fn update_all(
    cache: &Cache,
    conn: &redis::aio::MultiplexedConnection,
    id: u64,
    version: u64,
) {
    db_write(conn, id, version).await;
}

async fn local_cache(url: &str) -> Cache {
    let cache = Cache::builder()
        .redis(url)
        .local(1000, Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&cache).await;
    cache
}

/// Reads until the local tier serves the read, then once more: the copy a
/// read makes may be dropped by the invalidation of this process's own fill
/// (client tracking reports every write, this process's too), which arrives
/// just after it.
async fn warm<F, Fut>(cache: &Cache, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    eventually(Duration::from_secs(2), "a local hit", || {
        let hits = cache.stats().local_hits;
        let read = read();
        async move {
            read.await;
            cache.stats().local_hits > hits
        }
    })
    .await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hits_skip_redis_and_own_writes_drop_them() {
    let server = RedisServer::start();
    let cache = local_cache(&server.url()).await;
    let conn = server.client().await;
    update(&cache, &conn, 1, 10).await;
    assert_eq!(read(&cache, &conn, 1).await, 10); // miss: loads
    warm(&cache, || read(&cache, &conn, 1)).await;
    let before = cache.stats().local_hits;
    assert_eq!(read(&cache, &conn, 1).await, 10);
    assert_eq!(
        cache.stats().local_hits,
        before + 1,
        "served by the local tier"
    );
    update(&cache, &conn, 1, 11).await;
    assert_eq!(
        read(&cache, &conn, 1).await,
        11,
        "this process's write dropped its copy at once"
    );
    assert_eq!(put(&cache, &conn, 1, 12).await, 12);
    assert_eq!(read(&cache, &conn, 1).await, 12);
}

#[cached(group = "local_kept", skip(cache), cache = cache)]
async fn kept_value(cache: &Cache, id: u64) -> decodes::Cloned {
    decodes::Cloned(id)
}

/// The local copy keeps what the Redis hit decoded: local hits of a `Clone`
/// value decode nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hits_clone_what_the_redis_hit_decoded() {
    let server = RedisServer::start();
    let cache = local_cache(&server.url()).await;
    assert_eq!(kept_value(&cache, 1).await, decodes::Cloned(1)); // miss
    warm(&cache, || kept_value(&cache, 1)).await;
    let (decoded, local_hits) = (decodes::decoded(), cache.stats().local_hits);
    for _ in 0..10 {
        assert_eq!(kept_value(&cache, 1).await, decodes::Cloned(1));
    }
    assert_eq!(cache.stats().local_hits - local_hits, 10, "local hits");
    assert_eq!(
        decodes::decoded() - decoded,
        0,
        "decoded by the Redis hit that made the copy alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_flushes_and_bypasses_the_local_tier() {
    let server = RedisServer::start();
    let cache = local_cache(&server.url()).await;
    let mut conn = server.client().await;
    update(&cache, &conn, 2, 20).await;
    read(&cache, &conn, 2).await;
    warm(&cache, || read(&cache, &conn, 2)).await;

    let flushes = cache.stats().local_flushes;
    assert_eq!(
        kill_feeds(&mut conn).await,
        1,
        "the invalidation connection was killed"
    );
    eventually(
        Duration::from_secs(2),
        "the local tier to be flushed",
        || async { cache.stats().local_flushes > flushes },
    )
    .await;
    let hits = cache.stats().local_hits;
    // change the row behind the cache's back: only Redis knows nothing of it
    // either, but the local copy must be gone, so this read goes to Redis
    read(&cache, &conn, 2).await;
    assert_eq!(
        cache.stats().local_hits,
        hits,
        "the flushed tier served nothing"
    );
}

/// Kills the local tiers' invalidation connections (by their name);
/// returns how many.
async fn kill_feeds(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    let mut killed = 0;
    for line in clients
        .lines()
        .filter(|l| l.contains("name=cache-invalidations "))
    {
        let id = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("id="))
            .unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg(&["KILL", "ID", id][..])
            .query_async(conn)
            .await
            .unwrap();
        killed += 1;
    }
    killed
}

/// Another client changes what the cache holds behind its back, on its
/// prefix: a delete (`UNLINK`), an expiry (`PEXPIRE`), a flushed database
/// (`FLUSHDB`), and the server's own eviction under `maxmemory`
/// (`allkeys-lru`). Client tracking reports each, and the local copy goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_other_clients_drop_local_copies() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]);
    let cache = local_cache(&server.url()).await;
    let mut conn = server.client().await;
    for (id, change) in [(101u64, "UNLINK"), (102, "PEXPIRE"), (103, "FLUSHDB")] {
        update(&cache, &conn, id, 1).await;
        assert_eq!(read(&cache, &conn, id).await, 1);
        warm(&cache, || read(&cache, &conn, id)).await;
        // The row changes where the cache cannot see it; only the foreign
        // change to the entry can tell the tier.
        db_write(&conn, id, 2).await;
        let entry = format!("cache:{{rows}}:e:{id}");
        let mut cmd = redis::cmd(change);
        match change {
            "UNLINK" => drop(cmd.arg(&entry)),
            "PEXPIRE" => drop(cmd.arg(&entry).arg(1)),
            _ => {}
        }
        let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        if change == "FLUSHDB" {
            db_write(&conn, id, 2).await; // the row went with the database
        }
        eventually(
            Duration::from_secs(2),
            &format!("the local copy to go after a foreign {change}"),
            || async { read(&cache, &conn, id).await == 2 },
        )
        .await;
    }
    assert!(cache.stats().local_invalidations > 0, "{:?}", cache.stats());

    // Eviction by the server: fill it past maxmemory with other keys.
    update(&cache, &conn, 999, 1).await;
    assert_eq!(read(&cache, &conn, 999).await, 1);
    warm(&cache, || read(&cache, &conn, 999)).await;
    db_write(&conn, 999, 2).await;
    let filler = "x".repeat(64 * 1024);
    let mut round = 0;
    eventually(
        Duration::from_secs(10),
        "the server to evict the entry",
        || {
            round += 1;
            let (conn, filler) = (conn.clone(), filler.clone());
            async move {
                for j in 0..16 {
                    let _: () = redis::cmd("SET")
                        .arg(format!("filler:{round}:{j}"))
                        .arg(&filler)
                        .query_async(&mut conn.clone())
                        .await
                        .unwrap();
                }
                // `KEYS` leaves the entry's LRU clock alone; a read would not.
                let left: Vec<String> = redis::cmd("KEYS")
                    .arg("cache:{rows}:e:999")
                    .query_async(&mut conn.clone())
                    .await
                    .unwrap();
                left.is_empty()
            }
        },
    )
    .await;
    db_write(&conn, 999, 2).await; // the row may have gone too
    eventually(
        Duration::from_secs(2),
        "the local copy of the evicted entry to go",
        || async { read(&cache, &conn, 999).await == 2 },
    )
    .await;
    let health = cache.health().await;
    assert!(
        health.problems.is_empty(),
        "client tracking is live: {health:?}"
    );
}

/// Client tracking spans the server's databases: a tier on database 3
/// hears a foreign `UNLINK` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_on_another_database_hears_its_writers() {
    let server = RedisServer::start();
    let url = format!("{}/3", server.url());
    let cache = local_cache(&url).await;
    let conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    update(&cache, &conn, 7, 1).await;
    warm(&cache, || read(&cache, &conn, 7)).await;
    db_write(&conn, 7, 2).await;
    let _: i64 = redis::cmd("UNLINK")
        .arg("cache:{rows}:e:7")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(2),
        "the local copy to go after a foreign UNLINK on database 3",
        || async { read(&cache, &conn, 7).await == 2 },
    )
    .await;
}

/// A cache with a local tier on `cluster`, its feed ready.
async fn tiered_on(cluster: &support::RedisCluster) -> Cache {
    let cache = Cache::builder()
        .redis_cluster(cluster.urls())
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&cache).await;
    cache
}

/// `UNLINK`s `key` on the cluster node at `port`, as another client would;
/// how many keys it removed.
async fn unlink_on(port: u16, key: &str) -> i64 {
    let mut node = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("UNLINK")
        .arg(key)
        .query_async(&mut node)
        .await
        .unwrap()
}

// Three groups whose slots lie on the three masters of a cluster made by
// `redis-cli --cluster create` (0-5460, 5461-10922, 10923-16383).
#[cached(group = "t2", skip(cache, db), cache = cache, ttl = 60)]
async fn on_first(cache: &Cache, db: &support::VersionedDb, id: u64) -> u64 {
    db.read(id)
}

#[cached(group = "t1", skip(cache, db), cache = cache, ttl = 60)]
async fn on_second(cache: &Cache, db: &support::VersionedDb, id: u64) -> u64 {
    db.read(id)
}

#[cached(group = "t0", skip(cache, db), cache = cache, ttl = 60)]
async fn on_third(cache: &Cache, db: &support::VersionedDb, id: u64) -> u64 {
    db.read(id)
}

/// On a cluster the tier tracks every master: a foreign `UNLINK` of an
/// entry, on the master that holds it, drops the copy, whichever master
/// that is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_master_is_tracked() {
    let cluster = support::RedisCluster::start(3, 0);
    let cache = tiered_on(&cluster).await;
    let db = support::VersionedDb::default();
    let mut masters = std::collections::BTreeSet::new();
    for (group, place) in [("t2", 0), ("t1", 1), ("t0", 2)] {
        let read = || async {
            match place {
                0 => on_first(&cache, &db, 1).await,
                1 => on_second(&cache, &db, 1).await,
                _ => on_third(&cache, &db, 1).await,
            }
        };
        read().await;
        warm(&cache, read).await;
        db.bump(1); // behind the cache's back
        let entry = format!("cache:{{{group}}}:e:1");
        let port = cluster.master_of(&entry);
        masters.insert(port);
        let unlinked = unlink_on(port, &entry).await;
        assert_eq!(unlinked, 1, "{entry} was on {port}");
        eventually(
            Duration::from_secs(2),
            &format!("the copy of {entry} to go after a foreign UNLINK"),
            || async { read().await == db.read(1) },
        )
        .await;
    }
    assert_eq!(masters.len(), 3, "the groups are on three masters");
    assert!(support::local_tier_hears_all(&cache).await);
}

/// A slot migrated to another master (`CLUSTER SETSLOT`, `MIGRATE`): the
/// old master reports the keys it gives away, and the new master's writes
/// to them are heard (every master is tracked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_is_heard_on_its_new_master() {
    let cluster = support::RedisCluster::start(3, 0);
    let cache = tiered_on(&cluster).await;
    let db = support::VersionedDb::default();
    let read = || on_first(&cache, &db, 1);
    read().await;
    warm(&cache, read).await;

    let entry = "cache:{t2}:e:1";
    let from = cluster.master_of(entry);
    let to = *cluster
        .masters()
        .iter()
        .find(|&&port| port != from)
        .unwrap();
    let cli = |port: u16, args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let slot = cli(from, &["CLUSTER", "KEYSLOT", entry]);
    let id = |port| cli(port, &["CLUSTER", "MYID"]);
    let (from_id, to_id) = (id(from), id(to));
    assert_eq!(
        cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        "OK"
    );
    assert_eq!(
        cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
        "OK"
    );
    let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.contains(&entry), "{keys:?}");
    let mut migrate = vec!["MIGRATE", "127.0.0.1"];
    let to_port = to.to_string();
    migrate.extend([to_port.as_str(), "", "0", "5000", "KEYS"]);
    migrate.extend(keys.iter().copied());
    assert_eq!(cli(from, &migrate), "OK");
    for port in cluster.masters() {
        assert_eq!(
            cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]),
            "OK"
        );
    }
    // The old master deleted what it gave away, and said so.
    eventually(
        Duration::from_secs(5),
        "the copy to go with the migration",
        || async {
            let hits = cache.stats().local_hits;
            read().await;
            cache.stats().local_hits == hits
        },
    )
    .await;
    assert_eq!(cluster.master_of(entry), to);

    read().await;
    warm(&cache, read).await;
    db.bump(1); // behind the cache's back
    assert_eq!(cli(to, &["UNLINK", entry]), "1");
    eventually(
        Duration::from_secs(2),
        "the copy to go after a foreign UNLINK on the new master",
        || async { read().await == db.read(1) },
    )
    .await;
}

/// After a cluster failover the tier tracks the new master: it is bypassed
/// while a slot has no live master, then made again, and a foreign `UNLINK`
/// on the promoted replica drops the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_failover_the_new_master_is_tracked() {
    let mut cluster = support::RedisCluster::start(3, 1);
    let cache = tiered_on(&cluster).await;
    let db = support::VersionedDb::default();
    let read = || on_first(&cache, &db, 1);
    read().await;
    warm(&cache, read).await;
    let entry = "cache:{t2}:e:1";
    let victim = cluster.master_of(entry);
    cluster.kill(victim);
    eventually(
        Duration::from_secs(20),
        "the replica to take over",
        || async { cluster.master_of(entry) != victim },
    )
    .await;
    let promoted = cluster.master_of(entry);
    eventually(
        Duration::from_secs(10),
        "the tier to track the new masters",
        || support::local_tier_hears_all(&cache),
    )
    .await;
    read().await;
    warm(&cache, read).await;
    db.bump(1); // behind the cache's back
    assert_eq!(unlink_on(promoted, entry).await, 1);
    eventually(
        Duration::from_secs(2),
        "the copy to go after a foreign UNLINK on the promoted master",
        || async { read().await == db.read(1) },
    )
    .await;
}

#[cached(group = "frozen", skip(cache, db), cache = cache, ttl = 60)]
async fn frozen_read(cache: &Cache, db: &support::VersionedDb, id: u64) -> u64 {
    db.read(id)
}

#[cache_evict(group = "frozen", skip(cache, db), cache = cache)]
async fn frozen_write(cache: &Cache, db: &support::VersionedDb, id: u64) {
    db.bump(id);
}

/// A frozen server (`SIGSTOP`) keeps the invalidation connection open and
/// silent. Another process's write meanwhile cannot evict (its eviction
/// waits for a retry) nor announce itself; the heartbeat finds the silence
/// (within 250 ms) and the tier is flushed and bypassed, so the copy stops
/// hiding the write. Before the heartbeat, it served the copy until its
/// local TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_flushes_and_bypasses_the_local_tier() {
    let server = RedisServer::start();
    let tiered = || async {
        let cache = Cache::builder()
            .redis(server.url())
            .op_timeout(Duration::from_millis(100))
            .local(100, Duration::from_secs(60))
            .build()
            .await
            .unwrap();
        support::local_tier_ready(&cache).await;
        cache
    };
    let (writer, reader) = (tiered().await, tiered().await);
    let db = support::VersionedDb::default();
    assert_eq!(frozen_read(&reader, &db, 1).await, 0);
    warm(&reader, || frozen_read(&reader, &db, 1)).await;
    let flushes = reader.stats().local_flushes;

    server.pause();
    let frozen = Instant::now();
    frozen_write(&writer, &db, 1).await; // version 1; its eviction waits
    eventually(
        Duration::from_secs(5),
        "the other process to stop serving its local copy",
        || async { frozen_read(&reader, &db, 1).await == 1 },
    )
    .await;
    eprintln!(
        "silent feed: the other process read the write {:?} after the freeze",
        frozen.elapsed()
    );
    assert!(
        reader.stats().local_flushes > flushes,
        "the tier was flushed"
    );
    server.resume();
    eventually(
        Duration::from_secs(5),
        "the tier to serve again once Redis answers",
        || async {
            let hits = reader.stats().local_hits;
            frozen_read(&reader, &db, 1).await;
            reader.stats().local_hits > hits
        },
    )
    .await;
    assert_eq!(
        frozen_read(&reader, &db, 1).await,
        1,
        "and serves the write"
    );
}

// ---- two processes --------------------------------------------------------

const WORKER_URL: &str = "LOCAL_WORKER_URL";

/// Process B: reads key 9 in a loop from its local tier and records when it
/// first sees each new version. Run by the two-process test only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process spawned by the two-process test"]
async fn local_tier_worker() {
    let url = std::env::var(WORKER_URL).expect("run by the two-process test");
    let cache = local_cache(&url).await;
    let conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut last = read(&cache, &conn, 9).await;
    let _: () = redis::cmd("SET")
        .arg("test:ready")
        .arg(1)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stop: bool = redis::cmd("EXISTS")
            .arg("test:stop")
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        if stop || Instant::now() > deadline {
            break;
        }
        for _ in 0..50 {
            let seen = read(&cache, &conn, 9).await;
            if seen != last {
                let _: () = redis::cmd("SET")
                    .arg(format!("test:seen:{seen}"))
                    .arg(now_ms())
                    .query_async(&mut conn.clone())
                    .await
                    .unwrap();
                last = seen;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let _: () = redis::cmd("SET")
        .arg("test:local_hits")
        .arg(cache.stats().local_hits)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_stops_serving_the_old_value_within_a_bound() {
    let server = RedisServer::start();
    let cache = Cache::builder().redis(server.url()).build().await.unwrap();
    let mut conn = server.client().await;
    let _: () = redis::cmd("SET")
        .arg("test:row:9")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut worker: Child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "local_tier_worker",
            "--ignored",
            "--test-threads=1",
            "--quiet",
        ])
        .env(WORKER_URL, server.url())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the worker to cache the row",
        || async {
            redis::cmd("EXISTS")
                .arg("test:ready")
                .query_async::<bool>(&mut conn.clone())
                .await
                .unwrap()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the worker serves locally now

    let mut delays = Vec::new();
    for version in 2..=61u64 {
        match version % 3 {
            0 => update(&cache, &conn, 9, version).await,
            1 => drop(put(&cache, &conn, 9, version).await),
            _ => update_all(&cache, &conn, 9, version).await,
        }
        let written = now_ms();
        let key = format!("test:seen:{version}");
        let started = Instant::now();
        let seen = loop {
            let seen: Option<u64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(seen) = seen {
                break seen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the worker still served version {} 2 s after the write",
                version - 1
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        delays.push(seen.saturating_sub(written));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _: () = redis::cmd("SET")
        .arg("test:stop")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let status = worker.wait().unwrap();
    assert!(status.success(), "the worker failed");
    let local_hits: u64 = redis::cmd("GET")
        .arg("test:local_hits")
        .query_async(&mut conn)
        .await
        .unwrap();
    delays.sort_unstable();
    let (p50, p99) = (delays[delays.len() / 2], delays[delays.len() * 99 / 100]);
    eprintln!("local tier invalidation across processes: p50 {p50} ms, p99 {p99} ms, max {} ms over {} writes (evict, put, group); worker served {local_hits} local hits", delays[delays.len() - 1], delays.len());
    assert!(
        local_hits > 100,
        "the worker was reading from its local tier ({local_hits} local hits)"
    );
    assert!(p99 <= 100, "p99 propagation {p99} ms");
}
