//! A reverse proxy with the HTTP layer in front of an origin: what
//! `scripts/conformance.sh` runs the HTTP caching conformance suite through.
//!
//! ```text
//! cargo run -p cache-runtime --features http --example conformance_proxy -- \
//!     --listen 127.0.0.1:8001 --origin http://127.0.0.1:8000 [--redis URL] [--gateway]
//! ```
//!
//! The layer runs with its defaults (a default TTL for responses without
//! freshness of their own), or with `--gateway` in gateway mode (only what
//! the response's own headers allow). It prints `listening` once it accepts.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Response, StatusCode};
use axum::Router;
use cache_runtime::http::CacheLayer;
use cache_runtime::Cache;

/// Headers of one hop, not forwarded.
const HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
];

struct Origin {
    base: String,
    client: reqwest::Client,
}

async fn forward(State(origin): State<std::sync::Arc<Origin>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = origin
        .client
        .request(parts.method, format!("{}{path}", origin.base))
        .body(body);
    for (name, value) in &parts.headers {
        if !HOP.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.send().await else {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        return response;
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    // What `Connection` names is of this hop too.
    let named: Vec<String> = answer
        .headers()
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in answer.headers() {
        if !HOP.contains(&name.as_str()) && !named.iter().any(|n| n == name.as_str()) {
            headers.append(name, value.clone());
        }
    }
    let body: Bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:8001".to_owned());
    let base = arg(&args, "--origin").unwrap_or_else(|| "http://127.0.0.1:8000".to_owned());
    let cache = match arg(&args, "--redis") {
        Some(url) => Cache::builder().redis(url).build().await?,
        None => Cache::in_memory(),
    };
    let mut layer = CacheLayer::new("conformance").cache(cache);
    if args.iter().any(|a| a == "--gateway") {
        layer = layer.origin_freshness();
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // The origin closes idle connections; a fresh one each time.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()?;
    let origin = std::sync::Arc::new(Origin { base, client });
    let app = Router::new()
        .fallback(forward)
        .layer(layer)
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("listening on {listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
