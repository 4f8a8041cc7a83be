//! TLS (feature `tls`) against real `redis-server --tls-port` processes, with
//! certificates this test makes: a private CA, mutual TLS, `#insecure`, a
//! cluster over TLS, and a server the cache must not trust.

#[path = "../../tests/support/sockets.rs"]
mod sockets;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_runtime::{cached, Cache, Tls};
use support::{Certificates, RedisCluster, RedisServer};

#[cached(group = "tls", cache = cache, skip(cache, loads))]
async fn read(cache: &Cache, loads: &AtomicUsize, id: u64) -> u64 {
    loads.fetch_add(1, Ordering::SeqCst);
    id * 10
}

/// Reads one key three times: how many times the body ran.
async fn loads_for_three_reads(cache: &Cache) -> usize {
    let loads = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(read(cache, &loads, 7).await, 70);
    }
    loads.load(Ordering::SeqCst)
}

/// A server with a plain port (for the test to inspect) and a TLS port.
fn tls_server(certificates: &Certificates, client_certificates: bool) -> (RedisServer, String) {
    let tls_port = support::unused_port();
    let args = certificates.server_args(tls_port, client_certificates);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = RedisServer::start_with(&args);
    (server, format!("rediss://127.0.0.1:{tls_port}/"))
}

async fn cache(url: &str, tls: Option<Tls>) -> Cache {
    let builder = Cache::builder()
        .redis(url)
        .op_timeout(Duration::from_secs(2));
    let builder = match tls {
        Some(tls) => builder.tls(tls),
        None => builder,
    };
    builder.build().await.expect("a TLS cache builds")
}

/// How many entries the server holds, asked over its plain port.
async fn entries(server: &RedisServer) -> usize {
    let mut plain = server.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("cache:{tls}:*")
        .query_async(&mut plain)
        .await
        .expect("KEYS");
    keys.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_when_given() {
    let certificates = Certificates::generate();
    let (server, url) = tls_server(&certificates, false);
    let cache = cache(&url, Some(Tls::new().ca_pem(certificates.read("ca.crt")))).await;
    support::first_contact(&cache).await;
    assert_eq!(loads_for_three_reads(&cache).await, 1, "two hits over TLS");
    assert!(
        entries(&server).await > 0,
        "the value is stored on the server"
    );
    let health = cache.health().await;
    assert!(health.reachable && health.serving, "{health:?}");

    // The local tier subscribes over TLS too.
    let tiered = Cache::builder()
        .redis(&url)
        .tls(Tls::new().ca_pem(certificates.read("ca.crt")))
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .expect("a TLS cache with a local tier");
    support::local_tier_ready(&tiered).await;

    // Every connection, for commands or for invalidations, sets TCP_NODELAY.
    let tls_port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the TLS port");
    sockets::assert_nodelay(&[tls_port], 2, "a connection and a subscription");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_system_does_not_trust_is_refused() {
    let certificates = Certificates::generate();
    let (server, url) = tls_server(&certificates, false);
    // No CA given: the system's roots do not know the test's CA.
    let cache = cache(&url, None).await;
    assert_eq!(
        loads_for_three_reads(&cache).await,
        3,
        "every call ran its body"
    );
    assert_eq!(entries(&server).await, 0, "nothing reached the server");
    let health = cache.health().await;
    assert!(!health.reachable, "{health:?}");
    assert!(cache.stats().errors > 0, "the failures are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skips_verification_only_when_the_url_asks() {
    let certificates = Certificates::generate();
    let (_server, url) = tls_server(&certificates, false);
    let cache = cache(&format!("{url}#insecure"), None).await;
    assert_eq!(loads_for_three_reads(&cache).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let certificates = Certificates::generate();
    let (server, url) = tls_server(&certificates, true);
    let ca_only = cache(&url, Some(Tls::new().ca_pem(certificates.read("ca.crt")))).await;
    assert_eq!(
        loads_for_three_reads(&ca_only).await,
        3,
        "refused without a client certificate"
    );
    assert!(!ca_only.health().await.reachable);

    let tls = Tls::new().ca_pem(certificates.read("ca.crt")).client_pem(
        certificates.read("client.crt"),
        certificates.read("client.key"),
    );
    let mutual = cache(&url, Some(tls)).await;
    assert_eq!(loads_for_three_reads(&mutual).await, 1);
    assert!(entries(&server).await > 0);
}

#[tokio::test]
async fn settings_that_cannot_work_fail_at_build() {
    let certificates = Certificates::generate();
    let error = Cache::builder()
        .redis("redis://127.0.0.1:1/")
        .tls(Tls::new().ca_pem(certificates.read("ca.crt")))
        .build()
        .await
        .expect_err("certificates without a rediss:// URL");
    assert!(error.to_string().contains("rediss://"), "{error}");
    let error = Cache::builder()
        .redis("rediss://127.0.0.1:1/")
        .tls(Tls::new().ca_pem("not a certificate"))
        .build()
        .await
        .expect_err("a CA that is not PEM");
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls() {
    let certificates = Certificates::generate();
    let cluster = RedisCluster::start_tls(3, 0, &certificates);
    let cache = Cache::builder()
        .redis_cluster(cluster.tls_urls())
        .tls(Tls::new().ca_pem(certificates.read("ca.crt")))
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a TLS cluster cache builds");
    support::first_contact(&cache).await;
    let loads = AtomicUsize::new(0);
    for round in 0..2 {
        for id in 0..20 {
            assert_eq!(read(&cache, &loads, id).await, id * 10);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 20, "round {round}");
    }
    let health = cache.health().await;
    assert!(health.reachable && health.serving, "{health:?}");
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
}
