//! The HTTP layer by the standard (RFC 9111, RFC 5861, RFC 9213), through a
//! real axum server and a real client, on memory and on Redis: an origin
//! whose every answer the test scripts.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use cache_runtime::http::CacheLayer;
use cache_runtime::Cache;
use reqwest::{Client, Method};
use support::{eventually, RedisServer};
use tokio::sync::mpsc;

/// What the origin answers next, and what it saw.
#[derive(Default)]
struct Origin {
    status: Mutex<u16>,
    headers: Mutex<Vec<(&'static str, String)>>,
    body: Mutex<String>,
    /// Answers `304` to a request whose `If-None-Match` is this.
    current: Mutex<Option<String>>,
    calls: AtomicUsize,
    last: Mutex<HeaderMap>,
    /// The parts of the next streamed body, as the test sends them.
    parts: Mutex<Option<mpsc::UnboundedReceiver<&'static str>>>,
}

impl Origin {
    fn answer(&self, status: u16, headers: &[(&'static str, &str)], body: &str) {
        *self.status.lock().unwrap() = status;
        *self.headers.lock().unwrap() = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
        *self.body.lock().unwrap() = body.to_owned();
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn respond(State(origin): State<Arc<Origin>>, request: HeaderMap) -> impl IntoResponse {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    *origin.last.lock().unwrap() = request.clone();
    let mut headers = HeaderMap::new();
    for (name, value) in origin.headers.lock().unwrap().iter() {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let current = origin.current.lock().unwrap().clone();
    let matches = current.is_some_and(|etag| {
        request
            .get("if-none-match")
            .is_some_and(|sent| sent.to_str().unwrap() == etag)
    });
    if matches {
        return (StatusCode::NOT_MODIFIED, headers, String::new());
    }
    let status = StatusCode::from_u16(*origin.status.lock().unwrap()).unwrap();
    (status, headers, origin.body.lock().unwrap().clone())
}

/// A body streamed in the parts the test sends, as they are sent.
async fn stream(State(origin): State<Arc<Origin>>) -> impl IntoResponse {
    let parts = origin.parts.lock().unwrap().take().expect("parts to send");
    let body = futures_util::stream::unfold(parts, |mut parts| async move {
        let part = parts.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(part), parts))
    });
    let mut headers = HeaderMap::new();
    for (name, value) in origin.headers.lock().unwrap().iter() {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    (headers, axum::body::Body::from_stream(body))
}

struct App {
    addr: SocketAddr,
    origin: Arc<Origin>,
    client: Client,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |value| value.to_str().unwrap())
    }
    fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
}

impl App {
    async fn start(layer: CacheLayer) -> App {
        let origin = Arc::new(Origin {
            status: Mutex::new(200),
            ..Origin::default()
        });
        let app = Router::new()
            .route("/stream/{*path}", any(stream))
            .route("/{*path}", any(respond))
            .layer(layer)
            .with_state(origin.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        App {
            addr,
            origin,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the app answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers).await
    }
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new("standard")
        .ttl(Duration::from_secs(60))
        .cache(cache.clone())
}

/// A response's headers, as a case of a test gives them.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn http_date(ago: Duration) -> String {
    httpdate::fmt_http_date(SystemTime::now() - ago)
}

/// Whether a second request for `path` is served from the cache.
async fn stored(app: &App, path: &str) -> bool {
    app.get(path).await;
    app.get(path).await.x_cache() == "HIT"
}

async fn the_response_s_own_freshness_rules(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let cases: [(Headers, bool, &str); 6] = [
        (
            &[("cache-control", "max-age=-3600")],
            false,
            "an invalid max-age is stale",
        ),
        (
            &[("cache-control", "max-age='3600'")],
            false,
            "so is a quoted one",
        ),
        (
            &[("cache-control", "max-age=0, s-maxage=60")],
            true,
            "s-maxage rules a shared cache",
        ),
        (
            &[("cache-control", "max-age=20"), ("age", "30")],
            false,
            "older than its lifetime",
        ),
        (
            &[("cache-control", "max-age=60"), ("age", "30")],
            true,
            "younger than it",
        ),
        (&[("expires", "never")], false, "an invalid Expires is past"),
    ];
    for (i, (headers, expected, why)) in cases.into_iter().enumerate() {
        app.origin.answer(200, headers, "body");
        assert_eq!(
            stored(&app, &format!("/fresh/{i}")).await,
            expected,
            "{why}"
        );
    }
    app.origin.answer(
        200,
        &[("cache-control", "max-age=600"), ("age", "100")],
        "x",
    );
    let miss = app.get("/aged").await;
    assert_eq!(miss.header("age"), "100", "the upstream Age is passed on");
    let hit = app.get("/aged").await;
    let age: u64 = hit.header("age").parse().unwrap();
    assert!((100..105).contains(&age), "a hit counts from it: {age}");
}

async fn statuses_cacheable_by_default_and_explicit_freshness(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    for (status, headers, expected) in [
        (404, &[][..], true),
        (301, &[("location", "/elsewhere")][..], true),
        (302, &[("location", "/elsewhere")][..], false),
        (
            302,
            &[("location", "/elsewhere"), ("cache-control", "max-age=60")][..],
            true,
        ),
        (500, &[][..], false),
        (503, &[("cache-control", "max-age=60")][..], true),
    ] {
        app.origin.answer(status, headers, "");
        let path = format!("/status/{status}/{}", headers.len());
        assert_eq!(stored(&app, &path).await, expected, "{status} {headers:?}");
    }
}

async fn a_stale_response_is_revalidated_by_a_304(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    // Stale at once, but kept: it has the handler's own validator.
    app.origin.answer(
        200,
        &[
            ("cache-control", "max-age=0"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
        ],
        "the body",
    );
    assert_eq!(app.get("/doc").await.x_cache(), "MISS");
    *app.origin.current.lock().unwrap() = Some("\"v1\"".into());
    app.origin.answer(
        200,
        &[("cache-control", "max-age=60"), ("x-version", "2")],
        "",
    );
    let revalidated = app.get("/doc").await;
    assert_eq!(
        app.origin.last.lock().unwrap()["if-none-match"],
        "\"v1\"",
        "the handler was asked with the stored validator"
    );
    assert_eq!(
        (
            revalidated.status,
            revalidated.body.as_str(),
            revalidated.header("x-version")
        ),
        (200, "the body", "2"),
        "the stored body, with the 304's headers"
    );
    let hit = app.get("/doc").await;
    assert_eq!(
        (hit.x_cache(), hit.header("x-version")),
        ("HIT", "2"),
        "fresh again"
    );
    assert_eq!(app.origin.calls(), 2);
}

async fn stale_if_error_serves_the_stored_response(cache: Cache) {
    let app = App::start(layer(&cache).stale_if_error(Duration::from_secs(60))).await;
    app.origin
        .answer(200, &[("cache-control", "max-age=0")], "good");
    assert_eq!(app.get("/page").await.body, "good");
    app.origin.answer(503, &[], "down");
    let stale = app.get("/page").await;
    assert_eq!(
        (stale.status, stale.x_cache(), stale.body.as_str()),
        (200, "STALE", "good")
    );
    assert!(!stale.header("age").is_empty(), "with its true Age");
    // A write evicts: nothing is left to stand in.
    app.origin.answer(204, &[], "");
    app.send(Method::DELETE, "/page", &[]).await;
    app.origin.answer(503, &[], "down");
    let gone = app.get("/page").await;
    assert_eq!((gone.status, gone.body.as_str()), (503, "down"));

    app.origin.answer(
        200,
        &[(
            "cache-control",
            "max-age=0, must-revalidate, stale-if-error=60",
        )],
        "strict",
    );
    app.get("/strict").await;
    app.origin.answer(500, &[], "failed");
    assert_eq!(app.get("/strict").await.status, 500, "must-revalidate");
}

async fn stale_while_revalidate_serves_stale_and_refreshes(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let control = [("cache-control", "max-age=0, stale-while-revalidate=60")];
    app.origin.answer(200, &control, "v1");
    assert_eq!(app.get("/feed").await.body, "v1");
    app.origin.answer(200, &control, "v2");
    let stale = app.get("/feed").await;
    assert_eq!((stale.x_cache(), stale.body.as_str()), ("STALE", "v1"));
    eventually(Duration::from_secs(5), "the background refresh", || async {
        app.get("/feed").await.body == "v2"
    })
    .await;
}

async fn conditional_and_range_requests_from_clients(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let modified = http_date(Duration::from_secs(3600));
    app.origin
        .answer(200, &[("last-modified", &modified)], "0123456789");
    app.get("/file").await;
    let since = http_date(Duration::from_secs(60));
    let not_modified = app
        .get_with("/file", &[("if-modified-since", &since)])
        .await;
    assert_eq!(not_modified.status, 304);
    let older = http_date(Duration::from_secs(7200));
    assert_eq!(
        app.get_with("/file", &[("if-modified-since", &older)])
            .await
            .status,
        200
    );
    let part = app.get_with("/file", &[("range", "bytes=2-4")]).await;
    assert_eq!(
        (
            part.status,
            part.body.as_str(),
            part.header("content-range")
        ),
        (206, "234", "bytes 2-4/10")
    );
    let suffix = app.get_with("/file", &[("range", "bytes=-3")]).await;
    assert_eq!((suffix.status, suffix.body.as_str()), (206, "789"));
    let past = app.get_with("/file", &[("range", "bytes=20-")]).await;
    assert_eq!(
        (past.status, past.header("content-range")),
        (416, "bytes */10")
    );
    assert_eq!(app.origin.calls(), 1, "all answered from the entry");
}

async fn any_unsafe_method_invalidates(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    app.origin.answer(200, &[], "item");
    for method in ["M-SEARCH", "MOVE", "POST"] {
        assert!(stored(&app, "/item").await);
        app.origin.answer(303, &[("location", "/item")], "");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        app.send(method.clone(), "/item", &[]).await;
        app.origin.answer(200, &[], "item");
        assert_eq!(
            app.get("/item").await.x_cache(),
            "MISS",
            "{method} invalidated"
        );
    }
    app.origin.answer(404, &[], "");
    app.send(Method::DELETE, "/item", &[]).await;
    assert_eq!(
        app.get("/item").await.x_cache(),
        "HIT",
        "an error status does not"
    );
}

async fn cdn_cache_control_rules_the_layer(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let cases: [(Headers, bool); 4] = [
        (
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            true,
        ),
        (
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            false,
        ),
        (
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "private"),
            ],
            false,
        ),
        // Not a valid structured field: ignored, and Cache-Control rules.
        (
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=\"60\""),
            ],
            false,
        ),
    ];
    for (i, (headers, expected)) in cases.into_iter().enumerate() {
        app.origin.answer(200, headers, "edge");
        assert_eq!(
            stored(&app, &format!("/cdn/{i}")).await,
            expected,
            "{headers:?}"
        );
    }
}

async fn gateway_mode_stores_what_the_headers_allow(cache: Cache) {
    let app = App::start(layer(&cache).origin_freshness()).await;
    app.origin.answer(200, &[], "plain");
    assert!(!stored(&app, "/plain").await, "no freshness of its own");
    let modified = http_date(Duration::from_secs(10 * 24 * 3600));
    app.origin
        .answer(200, &[("last-modified", &modified)], "old");
    assert!(stored(&app, "/old").await, "a heuristic lifetime");
    app.origin
        .answer(200, &[("cache-control", "max-age=60")], "explicit");
    assert!(stored(&app, "/explicit").await);
}

/// Sends a body through the layer in parts, each only once the client has
/// the one before (or fails); the body the client got.
async fn streamed_in_parts(app: &App, path: &str, parts: &[&'static str]) -> String {
    let (send, sent) = mpsc::unbounded_channel();
    *app.origin.parts.lock().unwrap() = Some(sent);
    let request = app.client.get(format!("http://{}{path}", app.addr)).send();
    let mut request = Some(tokio::spawn(request));
    let mut response: Option<reqwest::Response> = None;
    let mut got = String::new();
    for part in parts {
        let sent_at = std::time::Instant::now();
        send.send(*part).unwrap();
        if response.is_none() {
            let head = tokio::time::timeout(Duration::from_secs(5), request.take().unwrap());
            response = Some(
                head.await
                    .expect("the head with the first part")
                    .unwrap()
                    .unwrap(),
            );
        }
        let response = response.as_mut().unwrap();
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .unwrap_or_else(|_| panic!("{path}: {part:?} arrives before the next part is sent"))
            .unwrap()
            .expect("a part");
        // Not asserted (timing): `cargo test ... -- --nocapture` shows it.
        println!(
            "{path}: a part reached the client {:?} after it was sent",
            sent_at.elapsed()
        );
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(send);
    let mut response = response.expect("a response");
    while let Some(rest) = response.chunk().await.unwrap() {
        got.push_str(std::str::from_utf8(&rest).unwrap());
    }
    got
}

/// Bodies stream through the layer as the handler makes them: one it does
/// not store, one it stores (copied on the way, then a hit), and one that
/// grows past the cache's maximum value size (sent whole, not stored).
async fn bodies_stream_through_as_they_arrive(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    app.origin.answer(200, &[("cache-control", "no-store")], "");
    let got = streamed_in_parts(&app, "/stream/events", &["one ", "two"]).await;
    assert_eq!(got, "one two");
    app.origin
        .answer(200, &[("cache-control", "max-age=60")], "");
    let got = streamed_in_parts(&app, "/stream/page", &["head ", "tail"]).await;
    assert_eq!(got, "head tail");
    eventually(
        Duration::from_secs(5),
        "the streamed page stored",
        || async {
            let hit = app.get("/stream/page").await;
            hit.x_cache() == "HIT" && hit.body == "head tail"
        },
    )
    .await;
    let big = "x".repeat(400);
    let parts: Vec<&'static str> = vec![big.clone().leak(); 3];
    let got = streamed_in_parts(&app, "/stream/big", &parts).await;
    assert_eq!(got.len(), 1200, "sent whole");
    let (send, sent) = mpsc::unbounded_channel();
    *app.origin.parts.lock().unwrap() = Some(sent);
    drop(send);
    assert_eq!(app.get("/stream/big").await.x_cache(), "MISS", "not stored");
}

macro_rules! on_memory_and_redis {
    ($($test:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let cache = cache_runtime::Cache::builder()
                        .max_value_size(1000)
                        .build()
                        .await
                        .unwrap();
                    super::$test(cache).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = super::RedisServer::start();
                    let cache = cache_runtime::Cache::builder()
                        .redis(server.url())
                        .max_value_size(1000)
                        .build()
                        .await
                        .unwrap();
                    super::$test(cache).await;
                }
            )*
        }
    };
}

on_memory_and_redis!(
    the_response_s_own_freshness_rules,
    statuses_cacheable_by_default_and_explicit_freshness,
    a_stale_response_is_revalidated_by_a_304,
    stale_if_error_serves_the_stored_response,
    stale_while_revalidate_serves_stale_and_refreshes,
    conditional_and_range_requests_from_clients,
    any_unsafe_method_invalidates,
    cdn_cache_control_rules_the_layer,
    gateway_mode_stores_what_the_headers_allow,
    bodies_stream_through_as_they_arrive,
);
