//! Side-by-side benchmarks: `#[cached]` against hand-written cache-aside on
//! redis-rs, the `cached` crate's async Redis store, `redis-benchmark`, a
//! SCAN+UNLINK group deletion, moka, the HTTP layer against no layer
//! and tower-http-cache's Redis backend, and write-behind against a plain
//! `SET` and (with `DATABASE_URL=postgres://...`) a direct `UPDATE`, on one
//! `redis-server` this binary starts. Contenders run interleaved, round after round, in this process;
//! each ratio compares medians of those interleaved samples.
//!
//! ```text
//! cargo bench --bench compare              # full run, writes BENCHMARKS.md
//! cargo bench --bench compare -- --quick   # fewer rounds, under a minute
//! cargo bench --bench compare -- --throughput    # only the hit throughput cases, printed
//! cargo bench --bench compare -- --throughput --quick --tasks=16 --rounds=30   # one concurrency, more rounds
//! cargo bench --bench compare -- --miss          # only the miss case, printed
//! cargo bench --bench compare -- --in-memory     # only the in-process hit cases, printed
//! cargo bench --bench compare -- --write-behind  # only the write-behind cases, printed
//! cargo bench --bench compare -- --profile-hit   # only #[cached] hits (for callgrind)
//! cargo bench --bench compare -- --profile-memory-hit   # the same, in memory (--hits=N, 200k)
//! cargo bench --bench compare -- --profile-moka-hit     # moka's hit, the in-memory baseline
//! cargo bench --bench compare -- --profile-concurrent=ours   # 256 tasks, 10k keys (=hand; --keys=1, --tasks=N)
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http;
use cache_runtime::{cached, Cache};
use http_body_util::Full;
use redis::aio::ConnectionManager;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// About 100 bytes of JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Small {
    id: u64,
    name: String,
    price_cents: u32,
    in_stock: bool,
    category: String,
}

/// About 10 KB of JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Large {
    id: u64,
    name: String,
    readings: Vec<u32>,
}

fn small(id: u64) -> Small {
    Small {
        id,
        name: format!("stainless steel teapot {id}"),
        price_cents: 4999,
        in_stock: true,
        category: "kitchen/tea".to_owned(),
    }
}

fn large(id: u64) -> Large {
    Large {
        id,
        name: format!("sensor {id}"),
        readings: (0..1100).map(|i| 1_000_000 + i * 7).collect(),
    }
}

// ---- contenders ----------------------------------------------------------

#[cached(group = "b_small", skip(cache), cache = cache, ttl = 3600)]
async fn ours_small(cache: &Cache, id: u64) -> Small {
    small(id)
}

#[cached(group = "b_large", skip(cache), cache = cache, ttl = 3600)]
async fn ours_large(cache: &Cache, id: u64) -> Large {
    large(id)
}

/// Cache-aside as one writes it by hand: GET, decode; on a miss compute and SET EX.
async fn by_hand<T: Serialize + DeserializeOwned>(
    conn: &ConnectionManager,
    key: String,
    compute: impl std::future::Future<Output = T>,
) -> T {
    let mut conn = conn.clone();
    let found: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap_or(None);
    if let Some(value) = found.and_then(|bytes| serde_json::from_slice(&bytes).ok()) {
        return value;
    }
    let value = compute.await;
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let _: redis::RedisResult<()> = redis::cmd("SET")
        .arg(&key)
        .arg(bytes)
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await;
    value
}

static URL: OnceLock<String> = OnceLock::new();

#[derive(Debug, Clone)]
struct BenchError;

#[cached::macros::concurrent_cached(
    map_error = r##"|_e| BenchError"##,
    ty = "cached::AsyncRedisCache<u64, Small>",
    create = r##" {
        cached::AsyncRedisCache::builder("cached_small")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(URL.get().expect("url set"))
            .build()
            .await
            .expect("cached crate store")
    } "##
)]
async fn crate_small(id: u64) -> Result<Small, BenchError> {
    Ok(small(id))
}

#[cached::macros::concurrent_cached(
    map_error = r##"|_e| BenchError"##,
    ty = "cached::AsyncRedisCache<u64, Large>",
    create = r##" {
        cached::AsyncRedisCache::builder("cached_large")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(URL.get().expect("url set"))
            .build()
            .await
            .expect("cached crate store")
    } "##
)]
async fn crate_large(id: u64) -> Result<Large, BenchError> {
    Ok(large(id))
}

// ---- measurement ---------------------------------------------------------

#[derive(Default, Clone)]
struct Sample {
    latencies: Vec<Duration>,
    calls: u64,
    busy: Duration,
}

impl Sample {
    fn median(&mut self) -> Duration {
        self.percentile(0.5)
    }
    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[at]
    }
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

struct Row {
    case: String,
    contender: String,
    median: String,
    p99: String,
    throughput: String,
    ratio: String,
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Runs `batch` for each contender in turn, `rounds` times, and returns the
/// samples in contender order.
async fn interleave<F, Fut>(contenders: usize, rounds: usize, mut batch: F) -> Vec<Sample>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    let mut samples = vec![Sample::default(); contenders];
    for _ in 0..rounds {
        for (contender, sample) in samples.iter_mut().enumerate() {
            let batch = batch(contender).await;
            sample.latencies.extend(batch.latencies);
            sample.calls += batch.calls;
            sample.busy += batch.busy;
        }
    }
    samples
}

/// A contender's throughput over the baseline's: the median over rounds of
/// the baseline's time per call over the contender's in the same round.
/// A round's runs are adjacent in time, so a slow spell of the machine
/// spoils a pair rather than one side of the ratio, and the median drops
/// the pairs it spoiled.
fn paired_ratio(baseline: &Sample, sample: &Sample) -> f64 {
    let mut ratios: Vec<f64> = baseline
        .latencies
        .iter()
        .zip(&sample.latencies)
        .map(|(b, s)| b.as_secs_f64() / s.as_secs_f64().max(1e-12))
        .collect();
    ratios.sort_by(f64::total_cmp);
    match ratios.len() {
        0 => 0.0,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    }
}

/// Times `calls` sequential calls of `call(i)`.
async fn sequential<F, Fut>(calls: u64, mut call: F) -> Sample
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sample = Sample::default();
    let started = Instant::now();
    for i in 0..calls {
        let one = Instant::now();
        call(i).await;
        sample.latencies.push(one.elapsed());
    }
    sample.busy = started.elapsed();
    sample.calls = calls;
    sample
}

fn rows_for(case: &str, names: &[&str], samples: &mut [Sample], rows: &mut Vec<Row>) {
    let baseline = samples[0].median();
    for (name, sample) in names.iter().zip(samples.iter_mut()) {
        let median = sample.median();
        rows.push(Row {
            case: case.to_owned(),
            contender: (*name).to_owned(),
            median: micros(median),
            p99: micros(sample.percentile(0.99)),
            throughput: format!("{:.0}/s", sample.throughput()),
            ratio: format!(
                "{:.2}x",
                median.as_secs_f64() / baseline.as_secs_f64().max(1e-12)
            ),
        });
    }
}

// ---- cases ---------------------------------------------------------------

/// The concurrency levels of the throughput cases.
const TASKS: [usize; 4] = [1, 16, 64, 256];

struct Bench {
    quick: bool,
    /// `--rounds=N`: every case runs N rounds (more than `--quick`'s to
    /// rank a small change on a noisy machine).
    fixed_rounds: Option<usize>,
    /// `--throughput --tasks=N`: the throughput cases run at N tasks only.
    only_tasks: Option<usize>,
    /// `--throughput`: only the throughput cases, printed, nothing written.
    throughput_only: bool,
    server: support::RedisServer,
    cache: Cache,
    conn: ConnectionManager,
    rows: Vec<Row>,
    plot: Vec<(String, Vec<(usize, f64)>)>,
}

impl Bench {
    fn rounds(&self, full: usize) -> usize {
        if let Some(rounds) = self.fixed_rounds {
            rounds.max(1)
        } else if self.quick {
            (full / 4).max(2)
        } else {
            full
        }
    }

    async fn hit_latency(&mut self) {
        const KEYS: u64 = 100;
        for id in 0..KEYS {
            ours_small(&self.cache, id).await;
            ours_large(&self.cache, id).await;
            by_hand(&self.conn, format!("hand:s:{id}"), async { small(id) }).await;
            by_hand(&self.conn, format!("hand:l:{id}"), async { large(id) }).await;
            crate_small(id).await.ok();
            crate_large(id).await.ok();
        }
        let calls = if self.quick { 500 } else { 2000 };
        let rounds = self.rounds(8);
        let (cache, conn) = (self.cache.clone(), self.conn.clone());
        for (case, big) in [("hit, 100 B, 1 task", false), ("hit, 10 KB, 1 task", true)] {
            let mut samples = interleave(3, rounds, |contender| {
                let (cache, conn) = (cache.clone(), conn.clone());
                async move {
                    sequential(calls, |i| {
                        let (cache, conn) = (cache.clone(), conn.clone());
                        async move { hit_once(contender, big, &cache, &conn, i % KEYS).await }
                    })
                    .await
                }
            })
            .await;
            rows_for(
                case,
                &["hand-written redis-rs", "#[cached]", "cached crate"],
                &mut samples,
                &mut self.rows,
            );
        }
    }

    /// Hits from many tasks at once, on one hot key and spread over 10,000
    /// keys: hand-written redis-rs, `#[cached]` and the `cached` crate.
    async fn hit_throughput(&mut self) {
        let total: u64 = if self.quick { 20_000 } else { 100_000 };
        let names = ["hand-written redis-rs", "#[cached]", "cached crate"];
        let mut lines: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
        for (shape, keys) in [("one hot key", 1u64), ("10k keys", 10_000)] {
            for id in 0..keys {
                ours_small(&self.cache, id).await;
                by_hand(&self.conn, format!("hand:s:{id}"), async { small(id) }).await;
                crate_small(id).await.ok();
            }
            let only = self.only_tasks;
            for tasks in TASKS.into_iter().filter(|&t| only.is_none_or(|n| n == t)) {
                // One task makes its calls one round trip at a time: fewer.
                let per_task = (total / tasks as u64).min(5_000);
                let (cache, conn) = (self.cache.clone(), self.conn.clone());
                let samples = interleave(names.len(), self.rounds(8), |c| {
                    let (cache, conn) = (cache.clone(), conn.clone());
                    async move {
                        let started = Instant::now();
                        let handles: Vec<_> = (0..tasks)
                            .map(|t| {
                                let (cache, conn) = (cache.clone(), conn.clone());
                                tokio::spawn(async move {
                                    for i in 0..per_task {
                                        let id = (i * 7919 + t as u64 * 104_729) % keys;
                                        match c {
                                            0 => {
                                                by_hand(&conn, format!("hand:s:{id}"), async {
                                                    small(0)
                                                })
                                                .await;
                                            }
                                            1 => {
                                                ours_small(&cache, id).await;
                                            }
                                            _ => {
                                                let _ = crate_small(id).await;
                                            }
                                        }
                                    }
                                })
                            })
                            .collect();
                        for handle in handles {
                            handle.await.expect("a bench task panicked");
                        }
                        let busy = started.elapsed();
                        let calls = per_task * tasks as u64;
                        Sample {
                            latencies: vec![busy / calls as u32],
                            calls,
                            busy,
                        }
                    }
                })
                .await;
                let case = format!("hit throughput, {shape}, {tasks} tasks");
                for (name, sample) in names.iter().zip(&samples) {
                    let label = format!("{name}, {shape}");
                    match lines.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, line)) => line.push((tasks, sample.throughput())),
                        None => lines.push((label, vec![(tasks, sample.throughput())])),
                    }
                    self.rows.push(Row {
                        case: case.clone(),
                        contender: (*name).to_owned(),
                        median: micros(sample.busy / sample.calls.max(1) as u32),
                        p99: "".to_owned(),
                        throughput: format!("{:.0}/s", sample.throughput()),
                        ratio: format!("{:.2}x throughput", paired_ratio(&samples[0], sample)),
                    });
                }
                if keys > 1 && !self.throughput_only {
                    let rps = redis_benchmark(
                        &self.server,
                        tasks,
                        1,
                        if self.quick { 50_000 } else { 200_000 },
                    );
                    self.rows.push(Row {
                        case: case.clone(),
                        contender: format!("redis-benchmark -t get -c {tasks}"),
                        median: "".to_owned(),
                        p99: "".to_owned(),
                        throughput: format!("{rps:.0}/s"),
                        ratio: format!("{:.2}x (#[cached] / this)", samples[1].throughput() / rps),
                    });
                }
            }
        }
        self.plot = lines
            .into_iter()
            .filter(|(label, _)| !label.starts_with("cached crate"))
            .collect();
    }

    async fn miss_path(&mut self) {
        let calls = if self.quick { 300 } else { 1500 };
        let next = Arc::new(AtomicU64::new(1_000_000));
        let (cache, conn) = (self.cache.clone(), self.conn.clone());
        let mut samples = interleave(2, self.rounds(8), |c| {
            let (cache, conn, next) = (cache.clone(), conn.clone(), next.clone());
            async move {
                sequential(calls, |_| {
                    let (cache, conn) = (cache.clone(), conn.clone());
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    async move {
                        if c == 0 {
                            by_hand(&conn, format!("hand:s:{id}"), async { small(id) }).await;
                        } else {
                            ours_small(&cache, id).await;
                        }
                    }
                })
                .await
            }
        })
        .await;
        rows_for(
            "miss (lookup, body, store), 100 B",
            &["hand-written GET + SET EX", "#[cached]"],
            &mut samples,
            &mut self.rows,
        );
    }

    async fn group_eviction(&mut self) {
        let sizes: &[u64] = if self.quick {
            &[10, 1_000, 100_000]
        } else {
            &[10, 1_000, 100_000, 1_000_000]
        };
        let mut conn = self.conn.clone();
        for &size in sizes {
            let group = format!("ev{size}");
            self.cache
                .set(&group, &0u64, &small(0), None)
                .await
                .expect("seed the group");
            let gen: Vec<u8> = redis::cmd("GET")
                .arg(format!("cache:{{{group}}}:gen"))
                .query_async(&mut conn)
                .await
                .expect("gen");
            let value = serde_json::to_vec(&small(0)).unwrap_or_default();
            for start in (1..size).step_by(10_000) {
                let mut pipe = redis::pipe();
                for i in start..(start + 10_000).min(size) {
                    pipe.cmd("SET")
                        .arg(format!("cache:{{{group}}}:e:{i}"))
                        .arg([gen.as_slice(), value.as_slice()].concat())
                        .ignore();
                    pipe.cmd("SET")
                        .arg(format!("scan:{size}:{i}"))
                        .arg(&value)
                        .ignore();
                }
                let _: () = pipe.query_async(&mut conn).await.expect("fill");
            }
            let started = Instant::now();
            self.cache.evict_group(&group).await.expect("evict group");
            let ours = started.elapsed();
            let started = Instant::now();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("scan:{size}:*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("scan");
                if !keys.is_empty() {
                    let _: () = redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .expect("unlink");
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            let scan = started.elapsed();
            for (name, took, ratio) in [
                ("SCAN + UNLINK", scan, 1.0),
                (
                    "#[cache_evict(all)]",
                    ours,
                    ours.as_secs_f64() / scan.as_secs_f64(),
                ),
            ] {
                self.rows.push(Row {
                    case: format!("evict a group of {size} keys"),
                    contender: name.to_owned(),
                    median: micros(took),
                    p99: "".to_owned(),
                    throughput: "".to_owned(),
                    ratio: format!("{ratio:.5}x"),
                });
            }
            let _: () = redis::cmd("FLUSHDB")
                .arg("ASYNC")
                .query_async(&mut conn)
                .await
                .expect("flush");
        }
    }

    async fn stampede(&mut self) {
        const CALLERS: usize = 1000;
        let rounds = if self.quick { 2 } else { 5 };
        let round = Arc::new(AtomicU64::new(0));
        let runs: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let (cache, conn) = (self.cache.clone(), self.conn.clone());
        let mut samples = interleave(3, rounds, |c| {
            let (cache, conn, runs, round) =
                (cache.clone(), conn.clone(), runs.clone(), round.clone());
            async move {
                let key = 5_000_000 + round.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let (cache, conn, runs) = (cache.clone(), conn.clone(), runs.clone());
                        tokio::spawn(async move {
                            let one = Instant::now();
                            let slow = async {
                                runs[0].fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                small(key)
                            };
                            match c {
                                0 => drop(by_hand(&conn, format!("hand:s:{key}"), slow).await),
                                1 => drop(stampede_ours(&cache, &runs[1], key).await),
                                _ => drop(stampede_crate(key).await),
                            }
                            one.elapsed()
                        })
                    })
                    .collect();
                let mut sample = Sample::default();
                for task in tasks {
                    sample
                        .latencies
                        .push(task.await.expect("a caller panicked"));
                }
                sample.busy = started.elapsed();
                sample.calls = CALLERS as u64;
                sample
            }
        })
        .await;
        let names = ["hand-written redis-rs", "#[cached]", "cached crate"];
        for (i, (name, sample)) in names.iter().zip(samples.iter_mut()).enumerate() {
            let runs = if i == 2 {
                CRATE_STAMPEDE_RUNS.load(Ordering::Relaxed)
            } else {
                runs[i].load(Ordering::Relaxed)
            };
            let body_runs = runs as f64 / rounds as f64;
            self.rows.push(Row {
                case: format!("stampede: {CALLERS} callers, cold key, 20 ms body"),
                contender: format!("{name} ({body_runs:.0} body runs per key)"),
                median: micros(sample.median()),
                p99: micros(sample.percentile(0.99)),
                throughput: "".to_owned(),
                ratio: "".to_owned(),
            });
        }
    }

    async fn in_memory_hit(&mut self) {
        let cache = Cache::in_memory();
        let local = Cache::builder()
            .redis(self.server.url())
            .local(10_000, Duration::from_secs(60))
            .build()
            .await
            .expect("cache with a local tier");
        support::local_tier_ready(&local).await;
        let moka: moka::future::Cache<u64, Arc<Small>> = moka::future::Cache::new(10_000);
        for id in 0..100 {
            ours_small(&cache, id).await;
            ours_small(&local, id).await;
            ours_small(&local, id).await; // a Redis hit: now kept locally
            moka.insert(id, Arc::new(small(id))).await;
        }
        let calls = if self.quick { 20_000 } else { 100_000 };
        let mut samples = interleave(3, self.rounds(8), |c| {
            let (cache, local, moka) = (cache.clone(), local.clone(), moka.clone());
            async move {
                sequential(calls, |i| {
                    let (cache, local, moka) = (cache.clone(), local.clone(), moka.clone());
                    async move {
                        match c {
                            0 => drop(std::hint::black_box(moka.get(&(i % 100)).await)),
                            1 => drop(std::hint::black_box(ours_small(&cache, i % 100).await)),
                            _ => drop(std::hint::black_box(ours_small(&local, i % 100).await)),
                        }
                    }
                })
                .await
            }
        })
        .await;
        rows_for(
            "in-process hit, 100 B",
            &[
                "moka::future::Cache::get",
                "#[cached] in memory",
                "#[cached] local tier over Redis",
            ],
            &mut samples,
            &mut self.rows,
        );
    }
}

impl Bench {
    /// A `GET` answered from the cache through an axum server on loopback,
    /// request to response, against the same route with no layer and with
    /// tower-http-cache's Redis backend; one keep-alive client.
    async fn http_hit(&mut self) {
        use axum::routing::get;
        async fn show(axum::extract::Path(id): axum::extract::Path<u64>) -> String {
            serde_json::to_string(&small(id)).unwrap_or_default()
        }
        async fn serve(app: axum::Router) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("bound");
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }
        let route = || axum::Router::new().route("/products/{id}", get(show));
        let ours = cache_runtime::http::CacheLayer::new("b_http")
            .ttl(Duration::from_secs(3600))
            .cache(self.cache.clone());
        // tower-http-cache wants a `Sync` request body and boxes its errors:
        // it serves a plain service, behind an adapter for axum's types.
        let theirs = {
            use tower::{Layer, ServiceExt};
            use tower_http_cache::prelude::*;
            let backend = RedisBackend::new(self.conn.clone());
            let layer = CacheLayer::builder(backend)
                .ttl(Duration::from_secs(3600))
                .build();
            let handler = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
                let id = request.uri().path().rsplit('/').next().unwrap_or("0");
                let body = serde_json::to_string(&small(id.parse().unwrap_or(0)));
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::from(
                    body.unwrap_or_default(),
                )))
            });
            let cached = layer.layer(handler);
            let adapter = tower::service_fn(move |request: http::Request<axum::body::Body>| {
                let request = request.map(|_| Full::new(Bytes::new())); // a GET has no body
                let cached = cached.clone();
                async move {
                    match cached.oneshot(request).await {
                        Ok(response) => Ok(response.map(axum::body::Body::new)),
                        Err(_) => Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(500)
                                .body(axum::body::Body::empty())
                                .unwrap_or_default(),
                        ),
                    }
                }
            });
            axum::Router::new().route_service("/products/{id}", adapter)
        };
        let bases = [
            serve(route()).await,
            serve(route().route_layer(ours)).await,
            serve(theirs).await,
        ];
        let client = reqwest::Client::new();
        const KEYS: u64 = 50;
        for base in &bases {
            for id in 0..KEYS {
                let url = format!("{base}/products/{id}");
                client.get(&url).send().await.expect("warm up");
            }
        }
        let calls = if self.quick { 100 } else { 400 };
        let mut samples = interleave(3, self.rounds(20), |contender| {
            let (client, base) = (client.clone(), bases[contender].clone());
            async move {
                sequential(calls, |i| {
                    let url = format!("{base}/products/{}", i % KEYS);
                    let client = client.clone();
                    async move {
                        let response = client.get(url).send().await.expect("an answer");
                        std::hint::black_box(response.bytes().await.expect("a body"));
                    }
                })
                .await
            }
        })
        .await;
        rows_for(
            "HTTP GET, 100 B, keep-alive client",
            &[
                "axum route, no cache",
                "CacheLayer hit (Redis)",
                "tower-http-cache 0.6 hit (Redis backend)",
            ],
            &mut samples,
            &mut self.rows,
        );
    }

    /// Write-behind `write` against a plain `SET` of the same JSON and, when
    /// `DATABASE_URL` names a PostgreSQL, a direct `UPDATE`; keys drawn from
    /// a Zipf distribution (s = 1) over 10,000 ids, as page views are. The
    /// handler makes the same `UPDATE` (or, without PostgreSQL, counts).
    /// Each write-behind round is flushed after its timing, so that its
    /// consumer does not run during the others' rounds.
    async fn write_behind(&mut self) {
        const KEYS: usize = 10_000;
        let zipf = Arc::new(Zipf::new(KEYS, 1.0));
        let pg = postgres().await;
        let db_calls = Arc::new(AtomicU64::new(0));
        let cache = Cache::builder()
            .redis(self.server.url())
            .build()
            .await
            .expect("a write-behind cache");
        let writer = {
            let (pg, db_calls) = (pg.clone(), db_calls.clone());
            cache
                .write_behind("b_views", move |id: u64, views: u64| {
                    let (pg, db_calls) = (pg.clone(), db_calls.clone());
                    async move {
                        db_calls.fetch_add(1, Ordering::Relaxed);
                        match &pg {
                            Some(pg) => update(pg, id, views).await,
                            None => Ok(()),
                        }
                    }
                })
                .delay(Duration::from_millis(100))
                .batch(200)
                .start()
        };
        let mut names = vec!["plain SET (redis-rs)", "write-behind write"];
        if pg.is_some() {
            names.push("PostgreSQL UPDATE (sqlx)");
        }
        let flushed = Arc::new(Mutex::new(Sample::default()));
        let write = {
            let (conn, writer, pg) = (self.conn.clone(), writer.clone(), pg.clone());
            move |contender: usize, id: u64, views: u64| {
                let (mut conn, writer, pg) = (conn.clone(), writer.clone(), pg.clone());
                async move {
                    match contender {
                        0 => {
                            let json = serde_json::to_vec(&views).unwrap_or_default();
                            let _: Result<(), _> = redis::cmd("SET")
                                .arg(format!("b_set:{id}"))
                                .arg(json)
                                .query_async(&mut conn)
                                .await;
                        }
                        1 => writer.write(&id, &views).await.expect("a durable write"),
                        _ => {
                            if let Some(pg) = &pg {
                                update(pg, id, views).await.expect("an UPDATE");
                            }
                        }
                    }
                }
            }
        };
        // Flushes after a write-behind round, timing the flush apart.
        let settle = |contender: usize, sample: Sample| {
            let (writer, flushed) = (writer.clone(), flushed.clone());
            async move {
                if contender == 1 {
                    let started = Instant::now();
                    writer.flush().await.expect("flush");
                    let mut flushed = flushed.lock().unwrap_or_else(|e| e.into_inner());
                    flushed.latencies.push(started.elapsed());
                }
                sample
            }
        };
        let views = Arc::new(AtomicU64::new(1));
        let calls = if self.quick { 300 } else { 1500 };
        let mut samples = interleave(names.len(), self.rounds(8), |c| {
            let (write, zipf, views, settle) =
                (write.clone(), zipf.clone(), views.clone(), &settle);
            async move {
                let sample = sequential(calls, |_| {
                    let id = zipf.sample() as u64;
                    write(c, id, views.fetch_add(1, Ordering::Relaxed))
                })
                .await;
                settle(c, sample).await
            }
        })
        .await;
        rows_for(
            "write, 1 task, Zipf keys",
            &names,
            &mut samples,
            &mut self.rows,
        );
        let total: u64 = if self.quick { 20_000 } else { 64_000 };
        let tasks = 64u64;
        let before = cache.stats();
        let calls_before = db_calls.load(Ordering::Relaxed);
        let samples = interleave(names.len(), self.rounds(4), |c| {
            let (write, zipf, views, settle) =
                (write.clone(), zipf.clone(), views.clone(), &settle);
            async move {
                let started = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let (write, zipf, views) = (write.clone(), zipf.clone(), views.clone());
                        tokio::spawn(async move {
                            for _ in 0..total / tasks {
                                let id = zipf.sample() as u64;
                                write(c, id, views.fetch_add(1, Ordering::Relaxed)).await;
                            }
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.expect("a bench task panicked");
                }
                let busy = started.elapsed();
                let calls = total / tasks * tasks;
                settle(
                    c,
                    Sample {
                        latencies: vec![busy / calls as u32],
                        calls,
                        busy,
                    },
                )
                .await
            }
        })
        .await;
        let set = samples[0].throughput();
        for (name, sample) in names.iter().zip(&samples) {
            self.rows.push(Row {
                case: format!("write throughput, {tasks} tasks, Zipf keys"),
                contender: (*name).to_owned(),
                median: micros(sample.busy / sample.calls.max(1) as u32),
                p99: "".to_owned(),
                throughput: format!("{:.0}/s", sample.throughput()),
                ratio: format!("{:.2}x throughput", sample.throughput() / set),
            });
        }
        let after = cache.stats();
        let settled = after.behind_settled - before.behind_settled;
        let batches = (after.behind_batches - before.behind_batches).max(1);
        let db = db_calls.load(Ordering::Relaxed) - calls_before;
        let mut flushed = flushed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.rows.push(Row {
            case: format!("write-behind consumer, {tasks} tasks, Zipf keys"),
            contender: format!(
                "{} entries per batch; {db} database writes for {settled} writes ({:.0}% saved by coalescing)",
                settled / batches,
                100.0 * (1.0 - db as f64 / settled.max(1) as f64)
            ),
            median: micros(flushed.median()),
            p99: micros(flushed.percentile(0.99)),
            throughput: "".to_owned(),
            ratio: "median and p99: flush after a round".to_owned(),
        });
    }

    /// How long a second cache (its own connections, as another process
    /// would have) keeps serving a local copy after a write returns.
    async fn propagation(&mut self) {
        let writer = Cache::builder()
            .redis(self.server.url())
            .build()
            .await
            .expect("writer");
        let reader = Cache::builder()
            .redis(self.server.url())
            .local(1000, Duration::from_secs(60))
            .build()
            .await
            .expect("reader with a local tier");
        support::local_tier_ready(&reader).await;
        let rounds = if self.quick { 50 } else { 300 };
        let mut sample = Sample::default();
        for round in 0..rounds {
            let id = 9_000_000 + round;
            ours_small(&reader, id).await; // miss
            ours_small(&reader, id).await; // Redis hit, kept locally
            writer.delete("b_small", &id).await.expect("delete");
            let written = Instant::now();
            loop {
                let local_hits = reader.stats().local_hits;
                ours_small(&reader, id).await;
                if reader.stats().local_hits == local_hits {
                    break; // no longer served locally
                }
                tokio::task::yield_now().await;
            }
            sample.latencies.push(written.elapsed());
            sample.calls += 1;
        }
        self.rows.push(Row {
            case: "local tier: write to invalidation in another cache".to_owned(),
            contender: "pub/sub, two caches with their own connections (one process)".to_owned(),
            median: micros(sample.median()),
            p99: micros(sample.percentile(0.99)),
            throughput: "".to_owned(),
            ratio: "".to_owned(),
        });
    }
}

/// Keys 0..n drawn with probability proportional to 1 / (rank + 1)^s.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = fastrand::f64() * total;
        self.cumulative.partition_point(|&c| c < u)
    }
}

/// A PostgreSQL pool with the bench's table, when `DATABASE_URL` names one.
async fn postgres() -> Option<sqlx::PgPool> {
    let url = std::env::var("DATABASE_URL").ok()?;
    if !url.starts_with("postgres") {
        return None;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await
        .expect("DATABASE_URL's PostgreSQL");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_views (id BIGINT PRIMARY KEY, views BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the bench table");
    sqlx::query("INSERT INTO bench_views SELECT g, 0 FROM generate_series(0, 9999) g ON CONFLICT DO NOTHING")
        .execute(&pool)
        .await
        .expect("the bench rows");
    Some(pool)
}

async fn update(pool: &sqlx::PgPool, id: u64, views: u64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE bench_views SET views = $2 WHERE id = $1")
        .bind(id as i64)
        .bind(views as i64)
        .execute(pool)
        .await
        .map(drop)
}

#[cached(group = "b_stampede", skip(cache, runs), cache = cache, ttl = 3600)]
async fn stampede_ours(cache: &Cache, runs: &AtomicUsize, id: u64) -> Small {
    runs.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    small(id)
}

/// Body runs of the `cached` crate's stampede contender (its macro takes
/// only the key's arguments).
static CRATE_STAMPEDE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached::macros::concurrent_cached(
    map_error = r##"|_e| BenchError"##,
    ty = "cached::AsyncRedisCache<u64, Small>",
    create = r##" {
        cached::AsyncRedisCache::builder("cached_stampede")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(URL.get().expect("url set"))
            .build()
            .await
            .expect("cached crate store")
    } "##
)]
async fn stampede_crate(id: u64) -> Result<Small, BenchError> {
    CRATE_STAMPEDE_RUNS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(small(id))
}

/// One hit by contender 0 (hand-written), 1 (`#[cached]`) or 2 (the `cached`
/// crate), of the 100 B value or, when `big`, the 10 KB one.
async fn hit_once(contender: usize, big: bool, cache: &Cache, conn: &ConnectionManager, id: u64) {
    match (contender, big) {
        (0, false) => drop(by_hand(conn, format!("hand:s:{id}"), async { small(0) }).await),
        (0, true) => drop(by_hand(conn, format!("hand:l:{id}"), async { large(0) }).await),
        (1, false) => drop(ours_small(cache, id).await),
        (1, true) => drop(ours_large(cache, id).await),
        (_, false) => drop(crate_small(id).await),
        (_, true) => drop(crate_large(id).await),
    }
}

/// `redis-benchmark -t get` at this concurrency: the server's own ceiling.
fn redis_benchmark(
    server: &support::RedisServer,
    clients: usize,
    pipeline: usize,
    requests: u64,
) -> f64 {
    let port = server
        .url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("6379")
        .to_owned();
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port,
            "-t",
            "get",
            "-q",
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .output()
        .expect("redis-benchmark comes with redis-server");
    let text = String::from_utf8_lossy(&output.stdout);
    // "GET: 123456.79 requests per second, p50=0.191 msec"
    text.rsplit("GET: ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|rps| rps.parse().ok())
        .unwrap_or(0.0)
}

/// Commands the server has run, by `INFO commandstats`.
async fn server_commands(conn: &ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn.clone())
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn svg(lines: &[(String, Vec<(usize, f64)>)]) -> String {
    let (w, h, left, bottom) = (640.0, 400.0, 80.0, 50.0);
    let max = lines
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |tasks: usize| {
        left + (TASKS.iter().position(|&t| t == tasks).unwrap_or(0) as f64) * (w - left - 40.0)
            / (TASKS.len() - 1) as f64
    };
    let y = |v: f64| h - bottom - v / max * (h - bottom - 30.0);
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Hit throughput (GET/s) vs concurrent tasks</text>"#,
        w / 2.0
    );
    let _ = write!(
        out,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="30" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - 30.0,
        h - bottom,
        h - bottom
    );
    for t in TASKS {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#,
            x(t),
            h - bottom + 18.0
        );
    }
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}k</text>"#,
            left - 6.0,
            y(v) + 4.0,
            v / 1000.0
        );
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(t, v) in points {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(t),
                y(v)
            );
        }
        let _ = write!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{name}</text>"#,
            left + 10.0,
            40.0 + i as f64 * 16.0,
            left + 28.0,
            44.0 + i as f64 * 16.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrent tasks</text></svg>"#,
        w / 2.0,
        h - 10.0
    );
    out
}

/// The number a `--name=N` argument gives, if any.
fn number<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .find_map(|a| a.strip_prefix(name))
        .and_then(|n| n.parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let server = support::RedisServer::start();
    let _ = URL.set(server.url());
    let cache = Cache::builder()
        .redis(server.url())
        .build()
        .await
        .expect("cache");
    let conn = ConnectionManager::new(redis::Client::open(server.url()).expect("url"))
        .await
        .expect("connection");

    if args.iter().any(|a| a == "--profile-hit") {
        ours_small(&cache, 1).await;
        for _ in 0..20_000 {
            std::hint::black_box(ours_small(&cache, 1).await);
        }
        return;
    }
    if let Some(who) = args
        .iter()
        .find_map(|a| a.strip_prefix("--profile-concurrent="))
    {
        // 256 tasks (`--tasks=N`) reading warm keys (`--keys=1`: one hot
        // key), `ours` or `hand`; prints the server's commands per read.
        let arg = |name: &str, default: u64| number(&args, name).unwrap_or(default);
        let (keys, reads) = (arg("--keys=", 10_000), arg("--reads=", 200));
        let tasks = arg("--tasks=", 256);
        for id in 0..keys {
            ours_small(&cache, id).await;
            by_hand(&conn, format!("hand:s:{id}"), async { small(id) }).await;
        }
        // A miss returns before its fill's reply: let the warm-up's land,
        // so that the reads alone are measured.
        while cache.stats().stores < keys {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let hand = who == "hand";
        let before = server_commands(&conn).await;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (cache, conn) = (cache.clone(), conn.clone());
                tokio::spawn(async move {
                    for i in 0..reads {
                        let id = (i * 7919 + t * 104_729) % keys;
                        if hand {
                            by_hand(&conn, format!("hand:s:{id}"), async { small(0) }).await;
                        } else {
                            std::hint::black_box(ours_small(&cache, id).await);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a profile task panicked");
        }
        let commands = server_commands(&conn).await - before - 1; // the INFO itself
        println!(
            "{who}: {:.3} server commands per read",
            commands as f64 / (tasks * reads).max(1) as f64
        );
        return;
    }
    let hits = number(&args, "--hits=").unwrap_or(200_000);
    if args.iter().any(|a| a == "--profile-memory-hit") {
        let cache = Cache::in_memory();
        ours_small(&cache, 1).await;
        for _ in 0..hits {
            std::hint::black_box(ours_small(&cache, 1).await);
        }
        return;
    }
    if args.iter().any(|a| a == "--profile-moka-hit") {
        let moka: moka::future::Cache<u64, Arc<Small>> = moka::future::Cache::new(10_000);
        moka.insert(1, Arc::new(small(1))).await;
        for _ in 0..hits {
            std::hint::black_box(moka.get(&1).await);
        }
        return;
    }

    let started = Instant::now();
    let throughput_only = args.iter().any(|a| a == "--throughput");
    let mut bench = Bench {
        quick,
        fixed_rounds: number(&args, "--rounds="),
        only_tasks: number(&args, "--tasks=").filter(|_| throughput_only),
        throughput_only,
        server,
        cache,
        conn,
        rows: Vec::new(),
        plot: Vec::new(),
    };
    // One case alone, its rows printed and nothing written.
    let only = ["--throughput", "--miss", "--in-memory", "--write-behind"]
        .into_iter()
        .find(|flag| args.iter().any(|a| a == flag));
    if let Some(flag) = only {
        match flag {
            "--throughput" => bench.hit_throughput().await,
            "--miss" => bench.miss_path().await,
            "--in-memory" => bench.in_memory_hit().await,
            _ => bench.write_behind().await,
        }
        for r in &bench.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.case, r.contender, r.median, r.p99, r.throughput, r.ratio
            );
        }
        return;
    }
    bench.hit_latency().await;
    bench.hit_throughput().await;
    bench.miss_path().await;
    bench.group_eviction().await;
    bench.stampede().await;
    bench.in_memory_hit().await;
    bench.propagation().await;
    bench.http_hit().await;
    bench.write_behind().await;

    let mut conn = bench.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut table = String::from("| case | contender | median | p99 | throughput | ratio |\n| --- | --- | --- | --- | --- | --- |\n");
    for r in &bench.rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            r.case, r.contender, r.median, r.p99, r.throughput, r.ratio
        );
    }
    println!("{table}");
    println!(
        "{} cores, Redis {version}, {:?}{}",
        cores,
        started.elapsed(),
        if quick { " (--quick)" } else { "" }
    );
    let report = format!(
        "# Benchmarks\n\nMeasured by `cargo bench --bench compare{}` on {cores} cores against Redis {version} on loopback, \
         all contenders in one process, interleaved round by round; ratios compare medians (first row of each case is \
         the baseline unless the ratio column says otherwise); a throughput ratio is the median over rounds of the \
         ratio within a round.\n\n{table}\n![hit throughput vs concurrency](benchmarks/throughput.svg)\n",
        if quick { " -- --quick" } else { "" }
    );
    // At the workspace root, wherever cargo runs this from.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::create_dir_all(root.join("benchmarks")).expect("benchmarks/");
    std::fs::write(root.join("benchmarks/throughput.svg"), svg(&bench.plot))
        .expect("write the plot");
    // The shop's load test (`cargo bench -p shop`) keeps its own section.
    let path = root.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let shop = existing
        .find("<!-- shop:start -->")
        .map_or("", |at| &existing[at..]);
    let report = format!("{report}\n{shop}");
    std::fs::write(path, report.trim_end().to_owned() + "\n").expect("write BENCHMARKS.md");
}
