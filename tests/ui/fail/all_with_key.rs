use cache_runtime::cache_evict;

#[cache_evict(group = "g", all, key = id)]
async fn both(_id: u64) {}

fn main() {}
