use cache_runtime::cached;

struct PgPool;

#[cached(group = "g")]
async fn needs_skip(pool: &PgPool, id: u64) -> u64 {
    id
}

// One key argument is encoded without erasure, and still reported once.
#[cached(group = "g")]
async fn only_argument(pool: &PgPool) -> u64 {
    7
}

fn main() {}
