//! The HTTP layer through a real axum server on a loopback port and a real
//! HTTP client, on every backend.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cache_runtime::http::CacheLayer;
use cache_runtime::Cache;
use reqwest::{Client, Method};
use support::{eventually, RedisServer};
use tokio::sync::Notify;

/// The data behind the routes, and how often the read handler ran.
#[derive(Default)]
struct Shop {
    names: Mutex<HashMap<u64, String>>,
    reads: AtomicUsize,
    /// How long the read handler takes.
    slow: Mutex<Duration>,
    /// When set, the read handler waits for it before it reads.
    gate: Mutex<Option<Arc<Notify>>>,
}

type Shared = Arc<Shop>;

impl Shop {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
    fn name(&self, id: u64) -> String {
        let names = self.names.lock().unwrap();
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("product {id}"))
    }
}

async fn show(State(shop): State<Shared>, Path(id): Path<u64>) -> String {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let slow = *shop.slow.lock().unwrap();
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let name = shop.name(id);
    let gate = shop.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        gate.notified().await; // the name was read before
    }
    name
}

async fn greet(State(shop): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let lang = headers
        .get("accept-language")
        .map_or("none", |v| v.to_str().unwrap());
    ([("vary", "Accept-Language")], format!("hello {lang}"))
}

async fn forget() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// A response the handler marks: `vary` is a `Vary`, else a `Cache-Control`.
async fn marked(State(shop): State<Shared>, Path(mark): Path<String>) -> impl IntoResponse {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let header = match mark.as_str() {
        "vary" => ("vary", "*"),
        other => (
            "cache-control",
            if other == "private" {
                "private"
            } else {
                "no-store"
            },
        ),
    };
    ([header], mark)
}

async fn replace(
    State(shop): State<Shared>,
    Path(id): Path<u64>,
    name: String,
) -> impl IntoResponse {
    if name == "fail" {
        return (StatusCode::INTERNAL_SERVER_ERROR, "refused".to_owned());
    }
    shop.names.lock().unwrap().insert(id, name.clone());
    (StatusCode::OK, name)
}

async fn remove(State(shop): State<Shared>, Path(id): Path<u64>) -> StatusCode {
    shop.names.lock().unwrap().insert(id, format!("gone {id}"));
    StatusCode::NO_CONTENT
}

async fn with_cookie(State(shop): State<Shared>) -> impl IntoResponse {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    ([("set-cookie", "session=1")], "personal")
}

async fn missing(State(shop): State<Shared>) -> impl IntoResponse {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    (StatusCode::NOT_FOUND, "no such thing")
}

/// Who the caller says it is (an app that authenticates by `X-Api-Key`).
async fn me(State(shop): State<Shared>, headers: HeaderMap) -> String {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let key = headers.get("x-api-key").map(|v| v.to_str().unwrap());
    format!("you are {}", key.unwrap_or("nobody"))
}

/// A page with an absolute link to its own host.
async fn home(State(shop): State<Shared>, headers: HeaderMap) -> String {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let host = headers.get("host").map_or("", |v| v.to_str().unwrap());
    format!("<a href=\"https://{host}/\">home</a>")
}

/// The query as the handler sees it.
async fn echo(State(shop): State<Shared>, uri: axum::http::Uri) -> String {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    uri.query().unwrap_or_default().to_owned()
}

/// A response with the `Cache-Control` (or, for `expired`, the `Expires`)
/// that the path names.
async fn fresh(State(shop): State<Shared>, Path(control): Path<String>) -> impl IntoResponse {
    let reads = shop.reads.fetch_add(1, Ordering::SeqCst);
    let header = match control.as_str() {
        "expired" => ("expires", "Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
        control => ("cache-control", control.to_owned()),
    };
    ([header], format!("read {reads}"))
}

/// Creates a product and says where it lives.
async fn create(State(shop): State<Shared>, name: String) -> impl IntoResponse {
    shop.names.lock().unwrap().insert(3, name);
    (StatusCode::CREATED, [("location", "/products/3")], "")
}

/// A page per tenant, which varies on `X-Tenant` (read as bytes).
async fn tenant_page(State(shop): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let tenant = headers.get("x-tenant").map_or("(none)".into(), |v| {
        String::from_utf8_lossy(v.as_bytes()).into_owned()
    });
    ([("vary", "X-Tenant")], format!("page of {tenant}"))
}

/// A page naming the host it was asked of (read as bytes).
async fn site(State(shop): State<Shared>, headers: HeaderMap) -> String {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    let host = headers.get("host").map_or("(none)".into(), |v| {
        String::from_utf8_lossy(v.as_bytes()).into_owned()
    });
    format!("site of {host}")
}

/// A note: anyone reads it; an edit answers with who made it.
async fn note(State(shop): State<Shared>, Path(id): Path<u64>) -> String {
    shop.reads.fetch_add(1, Ordering::SeqCst);
    shop.name(id)
}

async fn edit_note(
    State(shop): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    text: String,
) -> String {
    shop.names.lock().unwrap().insert(id, text.clone());
    match headers.get("authorization") {
        Some(who) => format!("{text} (your draft, {})", who.to_str().unwrap()),
        None => text,
    }
}

/// A running app: its address, data and a client.
struct App {
    addr: SocketAddr,
    shop: Shared,
    client: Client,
}

impl App {
    async fn start(layer: CacheLayer) -> App {
        let shop = Shared::default();
        let app = Router::new()
            .route(
                "/products/{id}",
                get(show).put(replace).delete(remove).post(replace),
            )
            .route("/cookie", get(with_cookie))
            .route("/missing", get(missing))
            .route("/lang", get(greet).delete(forget))
            .route("/marked/{mark}", get(marked))
            .route("/me", get(me))
            .route("/home", get(home))
            .route("/echo", get(echo))
            .route("/fresh/{control}", get(fresh))
            .route("/products", axum::routing::post(create))
            .route("/tenant", get(tenant_page))
            .route("/site", get(site))
            .route("/notes/{id}", get(note).put(edit_note))
            .route_layer(layer)
            .with_state(shop.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        App {
            addr,
            shop,
            client: Client::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.addr))
            .body(body.to_owned());
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

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, "").await
    }
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new("products")
        .ttl(Duration::from_secs(60))
        .cache(cache.clone())
}

async fn a_miss_then_a_hit_with_validators(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let first = app.get("/products/1", &[]).await;
    assert_eq!(
        (first.status, first.x_cache(), first.body.as_str()),
        (200, "MISS", "product 1")
    );
    assert!(
        first.header("etag").starts_with('"'),
        "a strong, quoted ETag"
    );
    // The TTL left, rounded down.
    assert!(["max-age=60", "max-age=59"].contains(&first.header("cache-control")));
    assert_eq!(first.header("age"), "", "no Age on a miss");
    let second = app.get("/products/1", &[]).await;
    assert_eq!(
        (second.status, second.x_cache(), second.body.as_str()),
        (200, "HIT", "product 1")
    );
    assert_eq!(second.header("etag"), first.header("etag"));
    assert!(
        ["0", "1"].contains(&second.header("age")),
        "Age: {}",
        second.header("age")
    );
    assert!(second.header("cache-control").starts_with("max-age="));
    assert_eq!(app.shop.reads(), 1, "the hit did not run the handler");
    // Query parameters in any order meet.
    app.get("/products/1?b=2&a=1", &[]).await;
    let sorted = app.get("/products/1?a=1&b=2", &[]).await;
    assert_eq!(sorted.x_cache(), "HIT");
}

async fn if_none_match_gets_304_without_the_handler(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let etag = app.get("/products/2", &[]).await.header("etag").to_owned();
    let not_modified = app.get("/products/2", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.header("etag"), etag);
    assert!(not_modified.header("cache-control").starts_with("max-age="));
    assert_eq!(not_modified.x_cache(), "HIT");
    assert_eq!(app.shop.reads(), 1);
    let weak = format!("\"other\", W/{etag}");
    assert_eq!(
        app.get("/products/2", &[("if-none-match", &weak)])
            .await
            .status,
        304
    );
    let other = app
        .get("/products/2", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!((other.status, other.body.as_str()), (200, "product 2"));
    // A second, independent app computes the same ETag: a 304 on its miss.
    let elsewhere = App::start(layer(&Cache::in_memory())).await;
    let fresh = elsewhere
        .get("/products/2", &[("if-none-match", &etag)])
        .await;
    assert_eq!((fresh.status, fresh.x_cache()), (304, "MISS"));
    assert_eq!(elsewhere.shop.reads(), 1);
}

async fn age_counts_seconds_since_the_response_was_made(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    app.get("/products/3", &[]).await;
    eventually(Duration::from_secs(5), "Age to reach 1", || async {
        app.get("/products/3", &[]).await.header("age") == "1"
    })
    .await;
    let hit = app.get("/products/3", &[]).await;
    let left: u64 = hit.header("cache-control")["max-age=".len()..]
        .parse()
        .unwrap();
    assert!(left < 60, "max-age is the TTL left: {left}");
}

async fn request_directives(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    // no-store: bypassed both ways.
    let bypass = app
        .get("/products/4", &[("cache-control", "no-store")])
        .await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    assert_eq!(
        app.get("/products/4", &[]).await.x_cache(),
        "MISS",
        "no-store stored nothing"
    );
    assert_eq!(
        app.get("/products/4", &[("cache-control", "no-store")])
            .await
            .x_cache(),
        "BYPASS"
    );
    assert_eq!(app.shop.reads(), 3);
    // no-cache: runs the handler and stores its response.
    app.shop.names.lock().unwrap().insert(4, "renamed".into());
    assert_eq!(
        app.get("/products/4", &[]).await.body,
        "product 4",
        "the old entry"
    );
    let refreshed = app
        .get("/products/4", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(
        (refreshed.x_cache(), refreshed.body.as_str()),
        ("MISS", "renamed")
    );
    let after = app.get("/products/4", &[]).await;
    assert_eq!((after.x_cache(), after.body.as_str()), ("HIT", "renamed"));
    // max-age=N: an entry older than N seconds is a miss.
    let reads = app.shop.reads();
    assert_eq!(
        app.get("/products/4", &[("cache-control", "max-age=100")])
            .await
            .x_cache(),
        "HIT"
    );
    eventually(
        Duration::from_secs(5),
        "the entry to be a second old",
        || async { app.get("/products/4", &[]).await.header("age") == "1" },
    )
    .await;
    let old = app
        .get("/products/4", &[("cache-control", "max-age=1")])
        .await;
    assert_eq!(old.x_cache(), "MISS");
    assert_eq!(app.shop.reads(), reads + 1);
}

async fn writes_evict_after_success_only(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    app.get("/products/5", &[]).await;
    let failed = app.send(Method::PUT, "/products/5", &[], "fail").await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        app.get("/products/5", &[]).await.x_cache(),
        "HIT",
        "a failed PUT evicted nothing"
    );
    let put = app.send(Method::PUT, "/products/5", &[], "kettle").await;
    assert_eq!(put.status, 200);
    let after = app.get("/products/5", &[]).await;
    assert_eq!((after.x_cache(), after.body.as_str()), ("MISS", "kettle"));
    assert_eq!(
        app.send(Method::DELETE, "/products/5", &[], "")
            .await
            .status,
        204
    );
    let gone = app.get("/products/5", &[]).await;
    assert_eq!((gone.x_cache(), gone.body.as_str()), ("MISS", "gone 5"));
    // The attributes' group eviction reaches the layer's entries.
    cache.evict_group("products").await.unwrap();
    assert_eq!(app.get("/products/5", &[]).await.x_cache(), "MISS");
}

async fn write_through_and_evict_group(cache: Cache) {
    let app = App::start(layer(&cache).write_through()).await;
    app.get("/products/6", &[]).await;
    app.send(Method::PUT, "/products/6", &[], "teapot").await;
    let hit = app.get("/products/6", &[]).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_str()),
        ("HIT", "teapot"),
        "the PUT's response is the entry"
    );
    assert_eq!(app.shop.reads(), 1);
    app.send(Method::PUT, "/products/6", &[], "fail").await;
    assert_eq!(
        app.get("/products/6", &[]).await.body,
        "teapot",
        "a failed PUT stores nothing"
    );

    let grouped = CacheLayer::new("grouped")
        .cache(cache.clone())
        .evict_group();
    let grouped = App::start(grouped).await;
    grouped.get("/products/7", &[]).await;
    grouped.get("/products/8", &[]).await;
    grouped.send(Method::POST, "/products/9", &[], "new").await;
    assert_eq!(grouped.get("/products/7", &[]).await.x_cache(), "MISS");
    assert_eq!(grouped.get("/products/8", &[]).await.x_cache(), "MISS");
}

async fn what_is_never_stored(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    for path in [
        "/cookie",
        "/marked/vary",
        "/marked/private",
        "/marked/no-store",
    ] {
        let first = app.get(path, &[]).await;
        assert_eq!(first.x_cache(), "MISS");
        assert_eq!(first.header("etag"), "", "{path}: not the cache's");
        assert_eq!(
            app.get(path, &[]).await.x_cache(),
            "MISS",
            "{path} was not stored"
        );
    }
    assert_eq!(
        app.get("/cookie", &[]).await.header("set-cookie"),
        "session=1"
    );
    // A status cacheable by default (RFC 9110 §15.1) is stored as a `200` is.
    assert_eq!(app.get("/missing", &[]).await.x_cache(), "MISS");
    let missing = app.get("/missing", &[]).await;
    assert_eq!((missing.status, missing.x_cache()), (404, "HIT"));
    assert_eq!(app.shop.reads(), 10);
}

async fn vary_stores_a_variant_per_header_value(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let (en, fr) = ([("accept-language", "en")], [("accept-language", "fr")]);
    let get = |headers| {
        let app = &app;
        async move {
            let reply = app.get("/lang", headers).await;
            let (outcome, vary) = (reply.x_cache().to_owned(), reply.header("vary").to_owned());
            (outcome, reply.body, vary)
        }
    };
    assert_eq!(get(&en).await.0, "MISS");
    assert_eq!(get(&fr).await.0, "MISS");
    assert_eq!(
        get(&en).await,
        ("HIT".into(), "hello en".into(), "Accept-Language".into())
    );
    assert_eq!(
        get(&fr).await,
        ("HIT".into(), "hello fr".into(), "Accept-Language".into())
    );
    assert_eq!(get(&[]).await.1, "hello none");
    assert_eq!(app.shop.reads(), 3);
    // Evicting the path drops every variant.
    assert_eq!(app.send(Method::DELETE, "/lang", &[], "").await.status, 204);
    assert_eq!(get(&fr).await.0, "MISS");
    assert_eq!(get(&en).await.0, "MISS");
}

/// The stale-store race: a response loaded before a write is not stored
/// after it, on the path and on a query of it.
async fn a_response_loaded_before_a_write_is_not_stored(cache: Cache) {
    let app = Arc::new(App::start(layer(&cache)).await);
    for (id, read, write) in [
        (15, "/products/15", "/products/15"),
        (16, "/products/16?page=2", "/products/16?notify=false"),
    ] {
        let gate = Arc::new(Notify::new());
        *app.shop.gate.lock().unwrap() = Some(gate.clone());
        let reads = app.shop.reads();
        let slow_read = tokio::spawn({
            let app = app.clone();
            async move { app.get(read, &[]).await.body }
        });
        eventually(
            Duration::from_secs(5),
            "the read to reach its handler",
            || async { app.shop.reads() == reads + 1 },
        )
        .await;
        *app.shop.gate.lock().unwrap() = None;
        assert_eq!(app.send(Method::PUT, write, &[], "new").await.status, 200);
        gate.notify_one();
        assert_eq!(
            slow_read.await.unwrap(),
            format!("product {id}"),
            "loaded before the write"
        );
        let next = app.get(read, &[]).await;
        assert_eq!(
            (next.x_cache(), next.body.as_str()),
            ("MISS", "new"),
            "{read}"
        );
    }
}

async fn credentials_and_private_entries(cache: Cache) {
    let shared = App::start(layer(&cache)).await;
    shared.get("/products/10", &[]).await;
    for credential in [("authorization", "Bearer a"), ("cookie", "session=a")] {
        let reply = shared.get("/products/10", &[credential]).await;
        assert_eq!(
            reply.x_cache(),
            "BYPASS",
            "{credential:?} is never served a shared entry"
        );
    }
    assert_eq!(shared.shop.reads(), 3);

    let private = App::start(layer(&cache).private()).await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let first = private.get("/products/11", &alice).await;
    assert_eq!(first.x_cache(), "MISS");
    assert!(first
        .header("cache-control")
        .starts_with("private, max-age="));
    assert_eq!(private.get("/products/11", &alice).await.x_cache(), "HIT");
    assert_eq!(
        private.get("/products/11", &bob).await.x_cache(),
        "MISS",
        "Bob gets his own entry"
    );
    assert_eq!(private.get("/products/11", &bob).await.x_cache(), "HIT");
    // A write reaches every user's entry of the path.
    private
        .send(Method::PUT, "/products/11", &alice, "mine")
        .await;
    assert_eq!(private.get("/products/11", &bob).await.body, "mine");
}

async fn head_is_answered_from_the_get_entry(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    app.get("/products/12", &[]).await;
    let head = app.send(Method::HEAD, "/products/12", &[], "").await;
    assert_eq!(
        (head.status, head.x_cache(), head.body.as_str()),
        (200, "HIT", "")
    );
    assert_eq!(head.header("content-length"), "10");
    assert_eq!(app.shop.reads(), 1);
}

async fn concurrent_misses_run_the_handler_once(cache: Cache) {
    let app = Arc::new(App::start(layer(&cache)).await);
    *app.shop.slow.lock().unwrap() = Duration::from_millis(100);
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get("/products/13", &[]).await.body })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "product 13");
    }
    assert_eq!(app.shop.reads(), 1, "64 concurrent misses, one handler run");
}

/// An app that names its callers by a header of its own: each gets their
/// own page, never another's, on a shared and on a private layer.
async fn identity_headers_keep_users_apart(cache: Cache) {
    let shared = App::start(layer(&cache)).await;
    for user in ["alice", "bob", "alice"] {
        let reply = shared.get("/me", &[("x-api-key", user)]).await;
        assert_eq!(reply.body, format!("you are {user}"));
        assert_eq!(reply.x_cache(), "BYPASS", "{user} on a shared layer");
    }
    let private = App::start(layer(&cache).private()).await;
    let alice = private.get("/me", &[("x-api-key", "alice")]).await;
    assert_eq!(
        (alice.x_cache(), alice.body.as_str()),
        ("MISS", "you are alice")
    );
    let bob = private.get("/me", &[("x-api-key", "bob")]).await;
    assert_eq!((bob.x_cache(), bob.body.as_str()), ("MISS", "you are bob"));
    let again = private.get("/me", &[("x-api-key", "alice")]).await;
    assert_eq!(
        (again.x_cache(), again.body.as_str()),
        ("HIT", "you are alice")
    );
    for header in ["x-auth-token", "x-access-token", "proxy-authorization"] {
        let reply = shared.get("/products/1", &[(header, "secret")]).await;
        assert_eq!(reply.x_cache(), "BYPASS", "{header} identifies a caller");
    }

    // An app that names its session cookie: analytics cookies alone are
    // anonymous, and share entries.
    let session = layer(&cache).identity(|parts| {
        let cookie = parts.headers.get("cookie")?.to_str().ok()?;
        let session = cookie
            .split(';')
            .find(|c| c.trim().starts_with("session="))?;
        Some(session.trim().as_bytes().to_vec())
    });
    let app = App::start(session).await;
    let analytics = [("cookie", "_ga=1")];
    assert_eq!(app.get("/products/2", &analytics).await.x_cache(), "MISS");
    assert_eq!(
        app.get("/products/2", &[("cookie", "_ga=2")])
            .await
            .x_cache(),
        "HIT"
    );
    let signed_in = [("cookie", "_ga=1; session=alice")];
    assert_eq!(app.get("/products/2", &signed_in).await.x_cache(), "BYPASS");
}

/// A write to a path, whatever its query, refreshes every entry of the path,
/// whatever theirs, and the paths its response names.
async fn a_write_evicts_every_query_of_its_path(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let variants = [
        "/products/1",
        "/products/1?utm_source=mail",
        "/products/1?a=1&b=2",
    ];
    for path in variants.into_iter().chain(["/products/2?a=1"]) {
        assert_eq!(app.get(path, &[]).await.x_cache(), "MISS", "{path}");
        assert_eq!(app.get(path, &[]).await.x_cache(), "HIT", "{path}");
    }
    let put = app
        .send(Method::PUT, "/products/1?notify=false", &[], "kettle")
        .await;
    assert_eq!(put.status, 200);
    for path in variants {
        let reply = app.get(path, &[]).await;
        assert_eq!(
            (reply.x_cache(), reply.body.as_str()),
            ("MISS", "kettle"),
            "{path}"
        );
        assert_eq!(
            app.get(path, &[]).await.x_cache(),
            "HIT",
            "{path} is cached again"
        );
    }
    assert_eq!(
        app.get("/products/2?a=1", &[]).await.x_cache(),
        "HIT",
        "another path stays"
    );
    // Evicting the layer's group drops the query variants too.
    cache.evict_group("products").await.unwrap();
    let evicted = app.get("/products/2?a=1", &[]).await;
    assert_eq!(evicted.x_cache(), "MISS", "the group's eviction reaches it");

    // A created resource's `Location` is refreshed too.
    for path in ["/products/3", "/products/3?page=1"] {
        assert_eq!(app.get(path, &[]).await.body, "product 3");
    }
    assert_eq!(
        app.send(Method::POST, "/products", &[], "lamp")
            .await
            .status,
        201
    );
    for path in ["/products/3", "/products/3?page=1"] {
        let reply = app.get(path, &[]).await;
        assert_eq!(
            (reply.x_cache(), reply.body.as_str()),
            ("MISS", "lamp"),
            "{path}"
        );
    }

    // With write-through, the path's entry holds the response, and its query
    // variants are refreshed.
    let through = App::start(layer(&cache).write_through()).await;
    through.get("/products/4?x=1", &[]).await;
    through
        .send(Method::PUT, "/products/4?notify=false", &[], "mug")
        .await;
    let hit = through.get("/products/4", &[]).await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "mug"));
    let variant = through.get("/products/4?x=1", &[]).await;
    assert_eq!((variant.x_cache(), variant.body.as_str()), ("MISS", "mug"));
}

/// A name repeated in a query keeps its values' order in the key: a list
/// `sort=price&sort=name` is not `sort=name&sort=price`.
async fn repeated_parameters_keep_their_order(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let first = app.get("/echo?sort=price&sort=name", &[]).await;
    assert_eq!(first.body, "sort=price&sort=name");
    let other = app.get("/echo?sort=name&sort=price", &[]).await;
    assert_eq!(
        (other.x_cache(), other.body.as_str()),
        ("MISS", "sort=name&sort=price")
    );
    app.get("/echo?sort=name&x=1&sort=price", &[]).await;
    let sorted = app.get("/echo?x=1&sort=name&sort=price", &[]).await;
    assert_eq!(sorted.x_cache(), "HIT", "names are still sorted");
}

/// The handler's `Cache-Control` or `Expires` bounds how long its response
/// is stored (RFC 9111 §4.2).
async fn the_handlers_own_freshness_bounds_its_entry(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    for control in ["no-cache", "max-age=0", "s-maxage=0, max-age=60", "expired"] {
        let path = format!("/fresh/{control}");
        assert_eq!(app.get(&path, &[]).await.x_cache(), "MISS");
        let again = app.get(&path, &[]).await;
        assert_eq!(again.x_cache(), "MISS", "{control} is not stored");
    }
    for control in ["max-age=1", "s-maxage=1, max-age=60"] {
        let path = format!("/fresh/{control}");
        let first = app.get(&path, &[]).await;
        assert_eq!(
            first.header("cache-control"),
            control,
            "the handler's own is kept"
        );
        let started = Instant::now();
        eventually(Duration::from_secs(5), "the entry to expire", || async {
            app.get(&path, &[]).await.x_cache() == "MISS"
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{control}: stored for {:?}, not the layer's 60 s",
            started.elapsed()
        );
    }
}

/// One app serving several hosts keeps their pages apart.
async fn the_host_is_part_of_the_key(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let a = [("host", "shop-a.example")];
    let b = [("host", "shop-b.example")];
    assert_eq!(
        app.get("/home", &a).await.body,
        "<a href=\"https://shop-a.example/\">home</a>"
    );
    let other = app.get("/home", &b).await;
    assert_eq!(
        (other.x_cache(), other.body.as_str()),
        ("MISS", "<a href=\"https://shop-b.example/\">home</a>")
    );
    assert_eq!(
        app.get("/home", &[("host", "SHOP-A.example")])
            .await
            .x_cache(),
        "HIT"
    );
}

/// A credentialed write through a shared layer with `write_through` evicts:
/// its response, made for that caller, is never the shared entry.
async fn a_credentialed_write_is_not_written_through(cache: Cache) {
    let app = App::start(layer(&cache).write_through()).await;
    assert_eq!(app.get("/notes/1", &[]).await.body, "product 1");
    let alice = [("authorization", "Bearer alice")];
    let edited = app.send(Method::PUT, "/notes/1", &alice, "hello").await;
    assert_eq!(edited.body, "hello (your draft, Bearer alice)");
    let read = app.get("/notes/1", &[]).await;
    assert_eq!(
        (read.x_cache(), read.body.as_str()),
        ("MISS", "hello"),
        "an anonymous read gets the shared page, not alice's answer"
    );
    assert_eq!(app.get("/notes/1", &[]).await.x_cache(), "HIT");
    app.send(Method::PUT, "/notes/1", &[], "hi").await;
    let read = app.get("/notes/1", &[]).await;
    assert_eq!(
        (read.x_cache(), read.body.as_str()),
        ("HIT", "hi"),
        "an anonymous write is written through"
    );
}

/// A response that varies on a header is stored per value of it, compared
/// as bytes: values outside visible ASCII, an empty value and no value are
/// each their own variant.
async fn vary_values_are_compared_as_bytes(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    let page = |tenant: Option<&'static str>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = tenant.map(|t| ("x-tenant", t)).into_iter().collect();
            app.get("/tenant", &headers).await.body
        }
    };
    for _ in 0..2 {
        assert_eq!(page(Some("müller")).await, "page of müller");
        assert_eq!(page(Some("jürgen")).await, "page of jürgen");
        assert_eq!(page(None).await, "page of (none)");
        assert_eq!(page(Some("")).await, "page of ");
        assert_eq!(page(Some("plain")).await, "page of plain");
    }
    assert_eq!(app.shop.reads(), 5, "five variants, each stored once");
}

/// Hosts are compared as bytes too: one outside visible ASCII is its own.
async fn hosts_are_compared_as_bytes(cache: Cache) {
    let app = App::start(layer(&cache)).await;
    for _ in 0..2 {
        for host in ["shop-ä.example", "shop-ö.example", "shop.example"] {
            assert_eq!(
                app.get("/site", &[("host", host)]).await.body,
                format!("site of {host}")
            );
        }
    }
    assert_eq!(app.shop.reads(), 3);
}

/// A catalog page that reads its items through the cache.
async fn catalog(State(cache): State<Cache>) -> String {
    let mut names = Vec::new();
    for id in [1u64, 2] {
        let name: String = cache
            .get_or_load("items", &id, None, || async move { format!("item {id}") })
            .await
            .unwrap();
        names.push(name);
    }
    names.join(", ")
}

async fn a_page_depends_on_what_its_handler_read(cache: Cache) {
    let app = Router::new()
        .route("/catalog", get(catalog))
        .route_layer(CacheLayer::new("pages").cache(cache.clone()))
        .with_state(cache.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new();
    let page = || async {
        let response = client
            .get(format!("http://{addr}/catalog"))
            .send()
            .await
            .unwrap();
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
        (x_cache, response.text().await.unwrap())
    };
    assert_eq!(page().await, ("MISS".into(), "item 1, item 2".into()));
    assert_eq!(page().await.0, "HIT");
    cache
        .set("items", &3u64, &"item three", None)
        .await
        .unwrap();
    assert_eq!(
        page().await.0,
        "HIT",
        "a write of an item the page does not show"
    );
    cache.set("items", &2u64, &"item two", None).await.unwrap();
    assert_eq!(
        page().await,
        ("MISS".into(), "item 1, item two".into()),
        "a write of an item the page shows"
    );
    assert_eq!(page().await.0, "HIT");
}

on_each_backend!(
    a_credentialed_write_is_not_written_through,
    vary_values_are_compared_as_bytes,
    hosts_are_compared_as_bytes,
    a_page_depends_on_what_its_handler_read,
    identity_headers_keep_users_apart,
    a_write_evicts_every_query_of_its_path,
    repeated_parameters_keep_their_order,
    the_handlers_own_freshness_bounds_its_entry,
    the_host_is_part_of_the_key,
    a_miss_then_a_hit_with_validators,
    if_none_match_gets_304_without_the_handler,
    age_counts_seconds_since_the_response_was_made,
    request_directives,
    writes_evict_after_success_only,
    write_through_and_evict_group,
    what_is_never_stored,
    vary_stores_a_variant_per_header_value,
    a_response_loaded_before_a_write_is_not_stored,
    credentials_and_private_entries,
    head_is_answered_from_the_get_entry,
    concurrent_misses_run_the_handler_once,
);

/// A disabled cache makes the layer transparent: nothing it says would make
/// a browser or a CDN cache what the service no longer caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_cache_says_bypass_and_nothing_else() {
    let app = App::start(layer(&Cache::disabled())).await;
    for _ in 0..2 {
        let reply = app.get("/products/1", &[]).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "BYPASS"));
        assert_eq!(
            reply.header("cache-control"),
            "",
            "no max-age of the layer's"
        );
        assert_eq!(reply.header("etag"), "", "no ETag of the layer's");
    }
    assert_eq!(app.shop.reads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_still_serves_the_handler_within_the_op_timeout() {
    let server = RedisServer::reserve(); // nothing listens there
    let cache = Cache::builder()
        .redis(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let app = App::start(layer(&cache)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = app.get("/products/14", &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "product 14"));
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "served within the op timeout: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.shop.reads(), 5);
}

/// A real client: curl gets the entry's ETag, then a 304 for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_a_304_for_the_etag() {
    let app = App::start(layer(&Cache::in_memory())).await;
    let url = format!("http://{}/products/16", app.addr);
    let curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("curl")
                .args(["--silent", "--show-error", "--max-time", "10"])
                .args(&args)
                .output()
                .expect("curl runs (./scripts/test.sh installs it)");
            assert!(output.status.success(), "curl failed: {output:?}");
            String::from_utf8(output.stdout).expect("UTF-8")
        })
    };
    let head = curl(vec![
        "--dump-header".into(),
        "-".into(),
        "--output".into(),
        "/dev/null".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    let etag = head
        .lines()
        .find_map(|line| line.strip_prefix("etag: "))
        .expect("an ETag header")
        .trim()
        .to_owned();
    let status = curl(vec![
        "--header".into(),
        format!("If-None-Match: {etag}"),
        "--write-out".into(),
        "%{http_code} %{size_download}".into(),
        "--output".into(),
        "/dev/null".into(),
        url,
    ])
    .await
    .unwrap();
    assert_eq!(status, "304 0", "a 304 with no body");
    assert_eq!(app.shop.reads(), 1, "the 304 came from the cache");
}

/// A stored response costs its body's own size plus a small head, whatever
/// the body holds: JSON text, or compressed bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_costs_its_body_and_a_small_head() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let json = |len: usize| {
        let mut text = String::from("[");
        while text.len() + 40 < len {
            text.push_str(r#"{"id":12345,"name":"a \"quoted\" name"},"#);
        }
        text.push_str("{}]");
        text
    };
    let small = json(1 << 10);
    let large = json(1 << 20);
    let packed: Vec<u8> = (0..100 << 10).map(|_| fastrand::u8(..)).collect();
    let app = {
        let (small, large, packed) = (small.clone(), large.clone(), packed.clone());
        let layer = |group: &str| CacheLayer::new(group).cache(cache.clone());
        Router::new()
            .route(
                "/small",
                get(move || async move { small }).route_layer(layer("sizes_small")),
            )
            .route(
                "/large",
                get(move || async move { large }).route_layer(layer("sizes_large")),
            )
            .route(
                "/packed",
                get(move || async move {
                    (
                        [
                            ("content-encoding", "gzip"),
                            ("content-type", "application/json"),
                        ],
                        packed,
                    )
                })
                .route_layer(layer("sizes_packed")),
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new();
    let mut redis = server.client().await;
    for (path, group, body_len) in [
        ("/small", "sizes_small", small.len()),
        ("/large", "sizes_large", large.len()),
        ("/packed", "sizes_packed", packed.len()),
    ] {
        for expected in ["MISS", "HIT"] {
            let response = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["x-cache"], expected, "{path}");
            assert_eq!(response.bytes().await.unwrap().len(), body_len, "{path}");
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("cache:{{{group}}}:e:*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{path}: {keys:?}");
        let stored: usize = redis::cmd("STRLEN")
            .arg(&keys[0])
            .query_async(&mut redis)
            .await
            .unwrap();
        println!("{path}: body {body_len} B, stored {stored} B");
        assert!(
            stored <= body_len + 256,
            "{path}: a {body_len} B body is stored in {stored} B"
        );
    }
}
