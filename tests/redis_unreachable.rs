//! With Redis unreachable, building succeeds and every attribute returns its
//! body's result within the body's time plus the operation timeout. (The full
//! fault matrix, killed/hung/restarted servers, is issue 4's suite.)

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cache_put, cached, Cache};

#[cached(group = "down", skip(cache), cache = cache)]
async fn read(cache: &Cache, id: u64) -> Result<u64, String> {
    Ok(id * 2)
}

#[cache_put(group = "down", skip(cache), cache = cache)]
async fn write(cache: &Cache, id: u64) -> Option<u64> {
    Some(id)
}

#[cache_evict(group = "down", skip(cache), cache = cache)]
async fn remove(cache: &Cache, id: u64) -> Result<(), String> {
    Err(format!("no row {id}"))
}

#[tokio::test]
async fn calls_return_the_body_result_when_redis_is_unreachable() {
    // a port that was free a moment ago and has nothing listening now
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let timeout = Duration::from_millis(200);
    let cache = Cache::builder()
        .redis(format!("redis://127.0.0.1:{port}/"))
        .op_timeout(timeout)
        .build()
        .await
        .expect("building does not need the server");

    let started = Instant::now();
    assert_eq!(read(&cache, 21).await, Ok(42));
    assert_eq!(write(&cache, 5).await, Some(5));
    assert_eq!(remove(&cache, 9).await, Err("no row 9".to_owned()));
    // a miss tries a lookup (and no fill without a lease); a put tries to
    // begin and then to invalidate; a failed evict sends nothing
    assert!(
        started.elapsed() < timeout * 3 + Duration::from_millis(500),
        "each failed operation is bounded by the op timeout, took {:?}",
        started.elapsed()
    );
    assert!(
        cache.get::<u64>("down", &21u64).await.is_err(),
        "the programmatic API reports the failure"
    );
}
