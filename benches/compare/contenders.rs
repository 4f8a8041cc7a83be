//! The contenders: `#[cached]`, hand-written cache-aside on redis-rs, and
//! the `cached` crate's Redis store, with the values they serve.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use cache_runtime::{cached, Cache};
use redis::aio::ConnectionManager;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// About 100 bytes of JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Small {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) price_cents: u32,
    pub(crate) in_stock: bool,
    pub(crate) category: String,
}

/// About 10 KB of JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Large {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) readings: Vec<u32>,
}

pub(crate) fn small(id: u64) -> Small {
    Small {
        id,
        name: format!("stainless steel teapot {id}"),
        price_cents: 4999,
        in_stock: true,
        category: "kitchen/tea".to_owned(),
    }
}

pub(crate) fn large(id: u64) -> Large {
    Large {
        id,
        name: format!("sensor {id}"),
        readings: (0..1100).map(|i| 1_000_000 + i * 7).collect(),
    }
}

#[cached(group = "b_small", skip(cache), cache = cache, ttl = 3600)]
pub(crate) async fn ours_small(cache: &Cache, id: u64) -> Small {
    small(id)
}

#[cached(group = "b_large", skip(cache), cache = cache, ttl = 3600)]
pub(crate) async fn ours_large(cache: &Cache, id: u64) -> Large {
    large(id)
}

/// Cache-aside as one writes it by hand: GET, decode; on a miss compute and SET EX.
pub(crate) async fn by_hand<T: Serialize + DeserializeOwned>(
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

pub(crate) static URL: OnceLock<String> = OnceLock::new();

#[derive(Debug, Clone)]
pub(crate) struct BenchError;

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
pub(crate) async fn crate_small(id: u64) -> Result<Small, BenchError> {
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
pub(crate) async fn crate_large(id: u64) -> Result<Large, BenchError> {
    Ok(large(id))
}

#[cached(group = "b_stampede", skip(cache, runs), cache = cache, ttl = 3600)]
pub(crate) async fn stampede_ours(cache: &Cache, runs: &AtomicUsize, id: u64) -> Small {
    runs.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    small(id)
}

/// Body runs of the `cached` crate's stampede contender (its macro takes
/// only the key's arguments).
pub(crate) static CRATE_STAMPEDE_RUNS: AtomicUsize = AtomicUsize::new(0);

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
pub(crate) async fn stampede_crate(id: u64) -> Result<Small, BenchError> {
    CRATE_STAMPEDE_RUNS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(small(id))
}

/// One hit by contender 0 (hand-written), 1 (`#[cached]`) or 2 (the `cached`
/// crate), of the 100 B value or, when `big`, the 10 KB one.
pub(crate) async fn hit_once(
    contender: usize,
    big: bool,
    cache: &Cache,
    conn: &ConnectionManager,
    id: u64,
) {
    match (contender, big) {
        (0, false) => drop(by_hand(conn, format!("hand:s:{id}"), async { small(0) }).await),
        (0, true) => drop(by_hand(conn, format!("hand:l:{id}"), async { large(0) }).await),
        (1, false) => drop(ours_small(cache, id).await),
        (1, true) => drop(ours_large(cache, id).await),
        (_, false) => drop(crate_small(id).await),
        (_, true) => drop(crate_large(id).await),
    }
}
