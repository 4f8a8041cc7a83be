use cache_runtime::cached;

#[cached(group = "g", ttl = "300")]
async fn string_ttl(id: u64) -> u64 {
    id
}

fn main() {}
