use cache_runtime::cached;

#[cached(group = "g")]
async fn handler(id: u64) -> impl std::fmt::Display {
    id
}

fn main() {}
