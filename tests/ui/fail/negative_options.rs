use cache_runtime::cached;

#[derive(Debug)]
enum DbError {
    NotFound,
}

#[cached(group = "g", cache_err = |e| matches!(e, DbError::NotFound))]
async fn error_not_serialize(id: u64) -> Result<u64, DbError> {
    Ok(id)
}

#[cached(group = "g", cache_err = |_| true)]
async fn not_a_result(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(group = "g", cache_none)]
async fn not_an_option(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cached(group = "g", err_ttl = 5)]
async fn err_ttl_alone(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
