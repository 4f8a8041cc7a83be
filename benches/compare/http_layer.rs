//! The HTTP layer: hits through it, against the same route with no layer
//! and against tower-http-cache, through an axum server on loopback and a
//! reqwest client in this process.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http;
use http_body_util::Full;

use crate::harness::*;
use crate::support;

/// Paths the load spreads over.
const PATHS: u64 = 1_000;
/// Concurrent connections of the throughput case.
const CONNECTIONS: usize = 64;

/// A product as a service returns it: about 1 KB of JSON.
fn product_json(id: u64) -> String {
    serde_json::json!({
        "id": id,
        "name": format!("product {id}"),
        "price_cents": id * 100 + 99,
        "description": "a sturdy product that does what it says, ".repeat(22),
    })
    .to_string()
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The route, as axum serves it.
fn route() -> axum::Router {
    use axum::routing::get;
    async fn show(
        axum::extract::Path(id): axum::extract::Path<u64>,
    ) -> impl axum::response::IntoResponse {
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            product_json(id),
        )
    }
    axum::Router::new().route("/products/{id}", get(show))
}

/// The route behind tower-http-cache's Redis backend. It wants a `Sync`
/// request body and boxes its errors: it serves a plain service, behind an
/// adapter for axum's types.
fn tower_http_cache_route(conn: redis::aio::ConnectionManager) -> axum::Router {
    use tower::{Layer, ServiceExt};
    use tower_http_cache::prelude::*;
    let backend = RedisBackend::new(conn);
    let layer = CacheLayer::builder(backend)
        .ttl(Duration::from_secs(3600))
        .build();
    let handler = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
        let id = request.uri().path().rsplit('/').next().unwrap_or("0");
        let body = product_json(id.parse().unwrap_or(0));
        let response = http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::from(body))
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(response)
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
}

/// `--profile-http=none|theirs|ours|local|memory`: `hits` `GET`s through one
/// contender from `tasks` connections at once (for callgrind, minus a run
/// with `--hits=0`).
pub(crate) async fn profile(
    who: &str,
    url: &str,
    conn: redis::aio::ConnectionManager,
    hits: u64,
    tasks: u64,
) {
    let ours = |cache: cache_runtime::Cache| {
        route().route_layer(
            cache_runtime::http::CacheLayer::new("b_http_profile")
                .ttl(Duration::from_secs(3600))
                .cache(cache),
        )
    };
    let redis = || cache_runtime::Cache::builder().redis(url);
    let app = match who {
        "none" => route(),
        "theirs" => tower_http_cache_route(conn.clone()),
        "ours" => ours(redis().build().await.expect("a cache")),
        "local" => {
            let cache = redis().local(10_000, Duration::from_secs(5)).build().await;
            let cache = cache.expect("a cache with a local tier");
            support::local_tier_ready(&cache).await;
            ours(cache)
        }
        _ => ours(cache_runtime::Cache::in_memory()),
    };
    let base = serve(app).await;
    let client = reqwest::Client::new();
    for round in 0..2 {
        // The first round fills the entries (and a local tier), the second
        // is all hits.
        let calls = if round == 0 { PATHS } else { hits };
        let (before, started) = (server_commands(&conn).await, Instant::now());
        let clients: Vec<_> = (0..tasks.max(1))
            .map(|t| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    for i in (t..calls).step_by(tasks.max(1) as usize) {
                        let url = format!("{base}/products/{}", i * 7919 % PATHS);
                        let response = client.get(url).send().await.expect("an answer");
                        std::hint::black_box(response.bytes().await.expect("a body"));
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("a client task panicked");
        }
        if round == 1 && hits > 0 {
            let commands = server_commands(&conn).await - before - 1; // the INFO itself
            println!(
                "{who}: {:?} and {:.2} server commands a request",
                started.elapsed() / hits as u32,
                commands as f64 / hits as f64
            );
        }
    }
}

impl Bench {
    /// `GET`s answered from the cache, request to response: one keep-alive
    /// connection one request at a time, and 64 connections at once over
    /// 1,000 paths. Contenders: no layer, tower-http-cache, and our layer
    /// on Redis, with a local tier in front of Redis, and in memory.
    pub(crate) async fn http_hit(&mut self) {
        let ours = |cache: &cache_runtime::Cache| {
            cache_runtime::http::CacheLayer::new("b_http")
                .ttl(Duration::from_secs(3600))
                .cache(cache.clone())
        };
        let local = cache_runtime::Cache::builder()
            .redis(&self.url)
            .local(10_000, Duration::from_secs(5))
            .build()
            .await
            .expect("a cache with a local tier");
        support::local_tier_ready(&local).await;
        let memory = cache_runtime::Cache::in_memory();
        let bases = [
            serve(route()).await,
            serve(tower_http_cache_route(self.conn.clone())).await,
            serve(route().route_layer(ours(&self.cache))).await,
            serve(route().route_layer(ours(&local))).await,
            serve(route().route_layer(ours(&memory))).await,
        ];
        let names = [
            "axum route, no layer",
            "tower-http-cache 0.6 hit (Redis backend)",
            "CacheLayer hit (Redis)",
            "CacheLayer hit (Redis, local tier)",
            "CacheLayer hit (in memory)",
        ];
        let client = reqwest::Client::new();
        for base in &bases {
            for id in 0..PATHS {
                let url = format!("{base}/products/{id}");
                let body = client.get(&url).send().await.expect("warm up");
                assert_eq!(body.status(), 200);
            }
        }
        // Every path once more through the local tier, which a hit fills.
        for id in 0..PATHS {
            let url = format!("{}/products/{id}", bases[3]);
            client.get(&url).send().await.expect("warm up");
        }

        let calls = if self.quick { 200 } else { 800 };
        let mut samples = interleave(bases.len(), self.rounds(20), |contender| {
            let (client, base) = (client.clone(), bases[contender].clone());
            async move {
                sequential(calls, |i| {
                    let url = format!("{base}/products/{}", i * 7919 % PATHS);
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
            "HTTP GET, 1 KB JSON, 1 keep-alive connection",
            &names,
            &mut samples,
            &mut self.rows,
        );

        let per_task: u64 = if self.quick { 150 } else { 400 };
        let commands = std::sync::Mutex::new(vec![0u64; bases.len()]);
        let samples = interleave(bases.len(), self.rounds(8), |contender| {
            let (client, base) = (client.clone(), bases[contender].clone());
            let (conn, commands) = (self.conn.clone(), &commands);
            async move {
                let before = server_commands(&conn).await;
                let started = Instant::now();
                let tasks: Vec<_> = (0..CONNECTIONS as u64)
                    .map(|t| {
                        let (client, base) = (client.clone(), base.clone());
                        tokio::spawn(async move {
                            for i in 0..per_task {
                                let id = (i * 7919 + t * 104_729) % PATHS;
                                let url = format!("{base}/products/{id}");
                                let response = client.get(url).send().await.expect("an answer");
                                std::hint::black_box(response.bytes().await.expect("a body"));
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("a client task panicked");
                }
                let busy = started.elapsed();
                let used = server_commands(&conn).await - before - 1; // the INFO itself
                commands.lock().expect("not poisoned")[contender] += used;
                Sample::of_throughput(per_task * CONNECTIONS as u64, busy)
            }
        })
        .await;
        let case = format!("HTTP GET, 1 KB JSON, {CONNECTIONS} connections, {PATHS} paths");
        let commands = commands.into_inner().expect("not poisoned");
        for ((name, sample), commands) in names.iter().zip(&samples).zip(commands) {
            self.rows.push(Row {
                case: case.clone(),
                contender: format!(
                    "{name}, {:.2} server commands a request",
                    commands as f64 / sample.calls.max(1) as f64
                ),
                median: micros(sample.busy / sample.calls.max(1) as u32),
                p99: String::new(),
                throughput: format!("{:.0}/s", sample.throughput()),
                ratio: format!(
                    "{:.2}x no layer, {:.2}x tower-http-cache (throughput)",
                    paired_ratio(&samples[0], sample),
                    paired_ratio(&samples[1], sample)
                ),
            });
        }
    }
}
