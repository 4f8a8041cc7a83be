use cache_runtime::cached;

struct PgPool;

#[cached(group = "g")]
async fn needs_skip(pool: &PgPool, id: u64) -> u64 {
    id
}

fn main() {}
