use cache_runtime::cached;

#[cached(group = "g", tll = 300)]
async fn typo(id: u64) -> u64 {
    id
}

fn main() {}
