use cache_runtime::cached;

struct Product;

#[derive(Debug)]
struct DbError;

#[cached(group = "g")]
async fn load(_id: u64) -> Result<Product, DbError> {
    Ok(Product)
}

/// As axum's: a response, not data.
struct Json<T>(T);

#[cached(group = "g")]
async fn handler(id: u64) -> Json<u64> {
    Json(id)
}

fn main() {}
