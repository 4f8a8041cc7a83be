use cache_runtime::cached;

#[cached(group = "products{v2}")]
async fn braces(id: u64) -> u64 {
    id
}

fn main() {}
