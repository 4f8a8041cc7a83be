use cache_runtime::cached;

#[cached(group = "g")]
fn not_async(id: u64) -> u64 {
    id
}

fn main() {}
