use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached};

#[derive(Debug)]
struct MyError;

impl From<std::num::ParseIntError> for MyError {
    fn from(_: std::num::ParseIntError) -> Self {
        MyError
    }
}

type MyResult<T> = Result<T, MyError>;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// An alias is read by its type: only `Ok` is cached, with no option needed,
/// and the error type needs nothing.
#[cached(group = "alias_by_type")]
async fn alias_by_type(id: u64) -> MyResult<u64> {
    Ok(id)
}

#[cached(group = "not_found", cache_err = |e| matches!(e, ApiError), err_ttl = 5)]
async fn negative(id: u64) -> ApiResult<u64> {
    Err(ApiError)
}

/// A generic function: each instantiation has its own entries.
#[cached]
async fn parse<T: std::str::FromStr + serde::Serialize + serde::de::DeserializeOwned>(
    text: String,
) -> Option<T> {
    text.parse().ok()
}

#[cached(group = "io")]
async fn io_result(id: u64) -> std::io::Result<u64> {
    Ok(id)
}

#[cached(group = "alias", result)]
async fn alias(id: String) -> MyResult<u64> {
    let parsed: u64 = id.parse()?; // `?` converts into the function's error type
    if parsed == 0 {
        return Err(MyError); // an early return leaves the body, as written
    }
    Ok(parsed)
}

#[cached(group = "opt", cache_none, none_ttl = 5)]
async fn optional(id: u64) -> Option<u64> {
    (id > 3).then_some(id)
}

#[cached(group = "plain", ttl = Duration::from_millis(1500), plain)]
async fn plain(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(group = "conditional", unless = |v| *v > 100, ttl_fn = |v| Duration::from_secs(*v))]
async fn conditional(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

#[cache_put(group = "opt", ttl = 30, unless = |v| *v == 0)]
async fn put_option(id: u64) -> Option<u64> {
    Some(id)
}

#[cache_evict(group = "opt", before)]
#[cache_evict(group = "io", key = id)]
#[cache_put(group = "plain", key = id, plain)]
async fn stacked(id: u64) -> Option<u64> {
    Some(id)
}

#[cache_evict(group = "alias", all)]
async fn evict_everything() -> MyResult<()> {
    Ok(())
}

fn main() {}
