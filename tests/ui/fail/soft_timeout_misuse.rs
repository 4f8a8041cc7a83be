use cache_runtime::cached;

struct Db;

#[cached(group = "g", skip(_db), fail_safe = 3600, soft_timeout = std::time::Duration::from_millis(100))]
async fn borrows(_db: &Db, id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cached(group = "g", fail_safe = 3600, soft_timeout = std::time::Duration::from_millis(100), each = ids)]
async fn bulk(ids: Vec<u64>) -> std::collections::HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id)).collect()
}

fn main() {}
