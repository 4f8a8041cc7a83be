//! First contact: a server that cannot take the cache's writes (a read-only
//! replica, a user without script rights) is never read from, and
//! `cache.health()` says what is wrong and how to fix it.

mod logs;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_runtime::{cache_evict, cached, Cache, Health};
use support::{eventually, RedisCluster, RedisServer};

#[cached(group = "health", cache = cache, skip(cache, loads))]
async fn read(cache: &Cache, loads: &AtomicUsize, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id
}

#[cache_evict(group = "health", cache = cache, skip(cache))]
async fn remove(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

/// Two reads and an eviction: how many loads, with nothing counted as failed.
async fn loads_for_two_reads(cache: &Cache) -> usize {
    let loads = AtomicUsize::new(0);
    read(cache, &loads, 1).await;
    read(cache, &loads, 1).await;
    remove(cache, 1).await.unwrap();
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.evictions_queued), (0, 0), "{stats:?}");
    loads.load(Ordering::SeqCst)
}

/// A cache refused on first contact: every read runs its body, and
/// `health()` says it serves nothing, its first problem naming `why`.
async fn serves_nothing(cache: &Cache, why: &str) -> Health {
    assert_eq!(
        loads_for_two_reads(cache).await,
        2,
        "every read ran its body"
    );
    let health = cache.health().await;
    assert!(!health.serving, "{health:?}");
    assert!(health.problems[0].contains(why), "{health:?}");
    health
}

async fn with_user(server: &RedisServer, rules: &[&str]) -> Cache {
    let mut admin = server.client().await;
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg("app").arg("on").arg(">pw");
    for rule in rules {
        setuser.arg(*rule);
    }
    let _: () = setuser.query_async(&mut admin).await.expect("ACL SETUSER");
    let url = server.url().replacen("redis://", "redis://app:pw@", 1);
    Cache::builder().redis(url).build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_allows_everything_is_healthy() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let health = cache.health().await;
    assert!(health.reachable && health.serving, "{health:?}");
    assert!(health.problems.is_empty(), "{health:?}");
    assert_eq!(loads_for_two_reads(&cache).await, 1);
}

/// `valkey://` names a server as `redis://` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valkey_url_is_accepted() {
    let server = RedisServer::start();
    let url = server.url().replacen("redis://", "valkey://", 1);
    let cache = Cache::builder().redis(url).build().await.unwrap();
    let health = cache.health().await;
    assert!(health.reachable && health.serving, "{health:?}");
    assert_eq!(loads_for_two_reads(&cache).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_is_never_read_from() {
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let cache = replica.cache().await;
    serves_nothing(&cache, "replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_script_rights_is_never_read_from() {
    let server = RedisServer::start();
    let cache = with_user(&server, &["~*", "+@all", "-@scripting"]).await;
    serves_nothing(&cache, "scripts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_channel_rights_lacks_nothing() {
    let server = RedisServer::start();
    let cache = with_user(&server, &["~*", "+@all"]).await;
    assert_eq!(loads_for_two_reads(&cache).await, 1);
    let health = cache.health().await;
    assert!(health.serving && health.problems.is_empty(), "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_user_is_checked_too() {
    let cluster = RedisCluster::start(3, 0);
    for answer in cluster.on_every_node(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-@scripting",
    ]) {
        assert_eq!(answer.trim(), "OK");
    }
    let urls = cluster
        .urls()
        .iter()
        .map(|url| url.replacen("redis://", "redis://app:pw@", 1))
        .collect::<Vec<_>>();
    let cache = Cache::builder().redis_cluster(urls).build().await.unwrap();
    let health = serves_nothing(&cache, "scripts").await;
    assert!(health.reachable, "{health:?}");
    assert_eq!(health.problems.len(), 1, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_reported() {
    let nothing = RedisServer::reserve();
    let cache = Cache::builder().redis(nothing.url()).build().await.unwrap();
    let health = cache.health().await;
    assert!(!health.reachable && !health.serving, "{health:?}");
}

/// A server that stops answering after first contact is reported as such,
/// and as serving again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_not_serving() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let health = cache.health().await;
    assert!(health.reachable && health.serving, "{health:?}");
    server.pause();
    let health = cache.health().await;
    assert!(
        !health.reachable && !health.serving && health.degraded,
        "hung: {health:?}"
    );
    server.resume();
    eventually(
        Duration::from_secs(5),
        "the cache to serve again",
        || async { cache.health().await.serving },
    )
    .await;
}

/// First contact says what the server does not allow once, at `warn`, one
/// line a problem, however many calls follow.
#[test]
fn what_the_server_refuses_is_said_once() {
    let told = logs::Logged::new(
        &[tracing::Level::WARN],
        Some("the Redis server limits what the cache can do"),
    );
    logs::run_traced(told.clone(), async {
        let server = RedisServer::start();
        let cache = with_user(&server, &["~*", "+@all", "-@scripting"]).await;
        let health = serves_nothing(&cache, "scripts").await;
        assert_eq!(health.problems.len(), 1, "{health:?}"); // scripts
        assert_eq!(loads_for_two_reads(&cache).await, 2);
        assert_eq!(
            told.count(),
            health.problems.len(),
            "one line a problem, once"
        );
    });
}

/// Reads of keys that miss, each running its body: how many did.
async fn loads_for_misses(cache: &Cache, ids: std::ops::Range<u64>) -> usize {
    let loads = AtomicUsize::new(0);
    for id in ids {
        read(cache, &loads, id).await;
    }
    loads.load(Ordering::SeqCst)
}

/// A server over `maxmemory` (with `noeviction`) refuses every store: the
/// cache runs its bodies, and says so in `health()`, and once in the log.
#[test]
fn a_full_server_is_reported_degraded() {
    let told = logs::Logged::new(
        &[tracing::Level::WARN],
        Some("the Redis server refuses the cache's operations"),
    );
    logs::run_traced(told.clone(), async {
        let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
        let cache = server.cache().await;
        let health = cache.health().await;
        assert!(health.serving && !health.degraded, "{health:?}");
        server.make_full().await;
        assert_eq!(loads_for_misses(&cache, 10..14).await, 4);
        assert_eq!(
            loads_for_misses(&cache, 10..14).await,
            4,
            "nothing is stored"
        );
        let health = cache.health().await;
        assert!(
            health.reachable && health.serving && health.degraded,
            "{health:?}"
        );
        assert!(health.problems[0].contains("full"), "{health:?}");
        assert_eq!(told.count(), 1, "said once");
    });
}

/// A master that becomes a replica after first contact (a failover seen
/// from the old master, or `REPLICAOF`) refuses the cache's writes: the
/// cache says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_turned_replica_is_reported_degraded() {
    let master = RedisServer::start();
    let server = RedisServer::start();
    let cache = server.cache().await;
    assert_eq!(loads_for_two_reads(&cache).await, 1);
    let mut admin = server.client().await;
    let port = master.port().to_string();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query_async(&mut admin)
        .await
        .expect("REPLICAOF");
    assert_eq!(loads_for_misses(&cache, 20..23).await, 3);
    let health = cache.health().await;
    assert!(health.degraded, "{health:?}");
    assert!(
        health
            .problems
            .iter()
            .any(|p| p.contains("read-only replica")),
        "{health:?}"
    );
}
