use cache_runtime::cache_put;

#[cache_put(group = "g")]
async fn nothing_to_put(_id: u64) {}

fn main() {}
