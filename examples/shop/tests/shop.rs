//! The shop through HTTP: a real server on a loopback port, a real client,
//! SQLite in a temporary file (and PostgreSQL too when `DATABASE_URL` names
//! one).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cache_runtime::Cache;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use shop::Db;

/// One Prometheus recorder for this test binary.
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the only recorder of this binary")
        })
        .clone()
}

struct Running {
    base: String,
    client: Client,
    db: Db,
}

impl Running {
    /// The shop on a fresh SQLite file of its own, seeded with 200 products.
    async fn on_sqlite(name: &str, cache: Cache) -> Running {
        let path = std::env::temp_dir().join(format!("shop-test-{}-{name}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Running::on(&format!("sqlite://{}?mode=rwc", path.display()), cache).await
    }

    async fn on(url: &str, cache: Cache) -> Running {
        let db = Db::connect(url, cache).await.expect("the database");
        db.seed(200).await.expect("seeded");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = shop::app(db.clone(), metrics());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Running {
            base,
            client: Client::new(),
            db,
        }
    }

    /// Reads `path` until the HTTP layer serves it from the cache, bounded:
    /// a list page depends on its category's membership, which the first
    /// load to name it makes, so that load is not stored.
    async fn until_hit(&self, path: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.get(path).await.1 != "HIT" {
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never became a hit"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let outcome = response
            .headers()
            .get("x-cache")
            .map_or("", |v| v.to_str().unwrap())
            .to_owned();
        let body = response.text().await.unwrap();
        (
            status,
            outcome,
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    }

    async fn put(&self, path: &str, body: Value) -> StatusCode {
        let response = self
            .client
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send();
        response.await.unwrap().status()
    }
}

async fn read_your_write(shop: &Running) {
    let (status, outcome, first) = shop.get("/products/1").await;
    assert_eq!((status, outcome.as_str()), (StatusCode::OK, "MISS"));
    let version = first["version"].as_i64().unwrap();
    let changed = json!({"name": "renamed", "category": "kitchen", "price": 999});
    assert_eq!(shop.put("/products/1", changed).await, StatusCode::OK);
    let (_, outcome, after) = shop.get("/products/1").await;
    assert_eq!(outcome, "MISS", "the PUT evicted the page");
    assert_eq!(after["name"], "renamed");
    assert_eq!(after["version"].as_i64().unwrap(), version + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_read_back_through_http() {
    let shop = Running::on_sqlite("ryw", Cache::in_memory()).await;
    shop.get("/products/2").await;
    assert_eq!(shop.get("/products/2").await.1, "HIT");
    read_your_write(&shop).await;
    let queries = shop.db.read_queries();
    assert_eq!(shop.get("/products/1").await.1, "HIT");
    assert_eq!(
        shop.db.read_queries(),
        queries,
        "a hit does not reach the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refreshes_the_lists_that_show_the_product_and_no_other() {
    let shop = Running::on_sqlite("lists", Cache::in_memory()).await;
    // Product 3 is in "books" (the seed deals categories out in turn).
    let page = "/products?category=books&page=0";
    let other = "/products?category=toys&page=0";
    let (_, outcome, list) = shop.get(page).await;
    assert_eq!(outcome, "MISS");
    assert_eq!(list[0]["id"], 3);
    shop.until_hit(page).await;
    shop.until_hit(other).await;
    let changed = json!({"name": "a new title", "category": "books", "price": 500});
    assert_eq!(shop.put("/products/3", changed).await, StatusCode::OK);
    let (_, outcome, list) = shop.get(page).await;
    assert_eq!(outcome, "MISS", "the list page that shows product 3");
    assert_eq!(list[0]["name"], "a new title");
    assert_eq!(
        shop.get(other).await.1,
        "HIT",
        "a page that does not show it"
    );
    // A new product shows in the lists at once.
    let created = shop
        .client
        .post(format!("{}/products", shop.base))
        .json(&json!({"name": "new", "category": "books", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"].clone();
    // 25 seeded books (one in 8 of 200), 20 a page: the new one is on page 1.
    let (_, _, list) = shop.get("/products?category=books&page=1").await;
    assert!(
        list.as_array().unwrap().iter().any(|p| p["id"] == id),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_cache_and_the_database() {
    let shop = Running::on_sqlite("metrics", Cache::in_memory()).await;
    for _ in 0..3 {
        shop.get("/products/42").await;
    }
    let (_, _, missing) = shop.get("/products/100000").await;
    assert_eq!(missing, Value::Null, "a 404 is not JSON");
    shop.get("/products/100000").await;
    let text = shop
        .client
        .get(format!("{}/metrics", shop.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    // Other tests share this recorder: their counts only add.
    assert!(value("cache_gets_total{group=\"http_products\",result=\"hit\"}") >= 2.0);
    assert!(value("cache_gets_total{group=\"products\",result=\"miss\"}") >= 2.0);
    assert!(
        value("cache_gets_total{group=\"products\",result=\"hit\"}") >= 1.0,
        "the cached 404"
    );
    assert!(value("shop_db_queries_total{for=\"read\"}") >= 2.0);
    assert!(text.contains("cache_load_duration_seconds"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_still_serves_every_request() {
    let cache = Cache::builder()
        .redis("redis://127.0.0.1:1") // nothing listens on port 1
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let shop = Running::on_sqlite("redis-down", cache).await;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _, product) = shop.get("/products/7").await;
        assert_eq!((status, product["id"].as_i64()), (StatusCode::OK, Some(7)));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    read_your_write(&shop).await;
}

/// The same read-your-write on PostgreSQL, when `DATABASE_URL` names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_read_back_on_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set: the PostgreSQL run is skipped");
        return;
    };
    if !url.starts_with("postgres") {
        return;
    }
    let shop = Running::on(&url, Cache::in_memory()).await;
    read_your_write(&shop).await;
}
