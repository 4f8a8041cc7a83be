//! The HTTP layer: a hit through it, against the same route with no layer
//! and against tower-http-cache.

use std::time::Duration;

use axum::body::Bytes;
use axum::http;
use http_body_util::Full;

use crate::contenders::*;
use crate::harness::*;

impl Bench {
    /// A `GET` answered from the cache through an axum server on loopback,
    /// request to response, against the same route with no layer and with
    /// tower-http-cache's Redis backend; one keep-alive client.
    pub(crate) async fn http_hit(&mut self) {
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
}
