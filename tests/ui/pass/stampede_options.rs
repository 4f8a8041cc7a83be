use std::sync::Arc;
use std::time::Duration;

use cache_runtime::cached;

struct Db;

#[cached(group = "a", lock = false)]
async fn unlocked(id: u64) -> u64 {
    id
}

#[cached(group = "b", lock, lock_timeout = Duration::from_millis(500), early, jitter = 0.2)]
async fn early_default_beta(id: u64) -> u64 {
    id
}

#[cached(group = "c", early = 2.5, lock_timeout = 1)]
async fn early_custom_beta(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(group = "d", skip(db), ttl = 60, stale_while_revalidate = Duration::from_secs(30))]
async fn revalidated(db: Arc<Db>, id: u64) -> Result<u64, String> {
    let _ = db;
    Ok(id)
}

fn main() {}
