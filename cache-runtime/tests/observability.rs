//! What the cache reports: `Stats` counts, and metrics through the `metrics`
//! facade (checked with metrics-util's `DebuggingRecorder`). The spans are
//! checked in `tests/spans.rs`, a binary of their own.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use support::RedisServer;

#[cached(ttl = 60, group = "obs", cache = cache, skip(cache))]
async fn read(cache: &Cache, id: u64) -> u64 {
    id * 10
}

#[cache_put(ttl = 60, group = "obs", cache = cache, key = id)]
async fn write(cache: &Cache, id: u64, value: u64) -> u64 {
    value
}

#[cache_evict(group = "obs", cache = cache, skip(cache))]
async fn remove(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[cached(ttl = 1, stale_while_revalidate = 60, jitter = 0.0, group = "obs_swr", cache = &cache, skip(cache))]
async fn read_swr(cache: Cache, id: u64) -> u64 {
    id
}

/// Drives every kind of event once or twice.
async fn exercise(cache: &Cache) {
    assert_eq!(read(cache, 1).await, 10); // miss, load, store
    assert_eq!(read(cache, 1).await, 10); // hit
    write(cache, 1, 11).await; // store
    assert_eq!(read(cache, 1).await, 11); // hit
    remove(cache, 1).await.unwrap(); // eviction
    cache.evict_group("obs").await.unwrap(); // eviction
}

async fn stats_count_every_kind_of_event(cache: Cache) {
    exercise(&cache).await;
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (2, 1));
    assert_eq!((stats.loads, stats.stores, stats.evictions), (1, 2, 2));
    assert_eq!(stats.stale_served, 0);
    // Past its TTL, within the window: served stale, refreshed behind.
    read_swr(cache.clone(), 7).await;
    support::eventually(Duration::from_secs(5), "the value to go stale", || async {
        read_swr(cache.clone(), 7).await;
        cache.stats().stale_served == 1
    })
    .await;
}

on_each_backend!(stats_count_every_kind_of_event);

/// The metrics tests take turns: a snapshot drains what it reads.
static METRICS_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process-wide debugging recorder: installed once for this binary; each
/// test reads the series of its own groups.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    })
}

/// The series recorded since the last snapshot (a snapshot drains what it
/// reads), as (kind, name, sorted labels, value).
struct Series(Vec<Recorded>);

type Recorded = (MetricKind, String, Vec<(String, String)>, DebugValue);

impl Series {
    fn take() -> Series {
        let series = snapshotter().snapshot().into_vec().into_iter();
        Series(
            series
                .map(|(key, _, _, value): (CompositeKey, _, _, DebugValue)| {
                    let (kind, key) = key.into_parts();
                    let mut labels: Vec<_> = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    labels.sort();
                    (kind, key.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        self.0
            .iter()
            .find(|(k, n, l, _)| *k == kind && n == name && *l == wanted)
            .map(|(_, _, _, value)| value)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(MetricKind::Counter, name, labels) {
            None => 0,
            Some(DebugValue::Counter(count)) => *count,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_micrometer_names_and_labels() {
    let _turn = METRICS_TESTS.lock().await;
    Series::take();
    let server = RedisServer::start();
    let cache = server.cache().await;
    // The programmatic API meets the same counters; its own group keeps this
    // test apart from the ones running beside it.
    let load = || async { 10u64 };
    for _ in 0..3 {
        cache
            .get_or_load("obs_metrics", &1, None, load)
            .await
            .unwrap(); // miss, then hits
    }
    cache.set("obs_metrics", &1, &11u64, None).await.unwrap(); // a store
    cache.delete("obs_metrics", &1).await.unwrap(); // an eviction
    cache.evict_group("obs_metrics").await.unwrap(); // an eviction
    let series = Series::take();
    let group = [("group", "obs_metrics")];
    let gets = |result| {
        let labels = [("group", "obs_metrics"), ("result", result)];
        series.counter("cache_gets_total", &labels)
    };
    assert_eq!((gets("hit"), gets("miss")), (2, 1));
    assert_eq!(series.counter("cache_puts_total", &group), 2);
    assert_eq!(series.counter("cache_evictions_total", &group), 2);
    let loads = series.find(MetricKind::Histogram, "cache_load_duration_seconds", &group);
    match loads {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 1),
        other => panic!("no load histogram for group obs_metrics: {other:?}"),
    }
    // Errors by kind: a cache on a port where nothing listens.
    let down = RedisServer::reserve();
    let dead = Cache::builder()
        .redis(down.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    read(&dead, 2).await;
    let series = Series::take();
    let errors = |kind| series.counter("cache_errors_total", &[("kind", kind)]);
    let stats = dead.stats();
    assert!(stats.errors >= 1);
    // (Other tests' caches count into the same series, never fewer.)
    assert!(errors("timeout") >= stats.timeouts, "{stats:?}");
    assert!(
        errors("timeout") + errors("unreachable") >= stats.errors,
        "{stats:?}"
    );

    // Calls the open breaker sends straight to their bodies are bypassed,
    // not errors: an outage's error count is its failed operations.
    let tripped = Cache::builder()
        .redis(down.url())
        .op_timeout(Duration::from_millis(100))
        .breaker(1, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    for _ in 0..5 {
        read(&tripped, 3).await;
    }
    let stats = tripped.stats();
    assert_eq!((stats.breaker_trips, stats.errors), (1, 1), "{stats:?}");
    assert!(stats.bypassed >= 4, "{stats:?}");
    let series = Series::take();
    let bypassed = series.counter("cache_bypassed_total", &[("reason", "breaker_open")]);
    assert!(bypassed >= stats.bypassed, "{bypassed} < {stats:?}");
    assert_eq!(
        series.counter("cache_errors_total", &[("kind", "breaker_open")]),
        0
    );

    // The local tier: a gauge of whether it hears every writer, and the
    // client tracking pushes it received.
    let tiered = Cache::builder()
        .redis(server.url())
        .local(100, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&tiered).await;
    tiered.set("obs_local", &1, &1u64, None).await.unwrap(); // pushed to the feed
    support::eventually(Duration::from_secs(2), "a push", || async {
        tiered.stats().local_invalidations > 0
    })
    .await;
    let series = Series::take();
    assert!(series.counter("cache_local_invalidations_total", &[]) >= 1);
    match series.find(MetricKind::Gauge, "cache_local_tracking", &[]) {
        Some(DebugValue::Gauge(value)) => assert_eq!(value.into_inner(), 1.0),
        other => panic!("no cache_local_tracking gauge: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_layer_counts_under_the_same_names() {
    use axum::routing::get;
    let _turn = METRICS_TESTS.lock().await;
    Series::take();
    let cache = Cache::in_memory();
    let layer = cache_runtime::http::CacheLayer::new("obs_http").cache(cache);
    let app = axum::Router::new()
        .route("/{id}", get(|| async { "page" }))
        .route_layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    for _ in 0..3 {
        reqwest::get(&url).await.unwrap().text().await.unwrap();
    }
    // A query's path anchor is looked up too, but counted apart: the
    // layer's group counts requests.
    for _ in 0..2 {
        reqwest::get(format!("{url}?page=2"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    let series = Series::take();
    let gets = |result| {
        series.counter(
            "cache_gets_total",
            &[("group", "obs_http"), ("result", result)],
        )
    };
    assert_eq!((gets("hit"), gets("miss")), (3, 2));
    assert_eq!(
        series.counter("cache_puts_total", &[("group", "obs_http")]),
        2
    );
}
