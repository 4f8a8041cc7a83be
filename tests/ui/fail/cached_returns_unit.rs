use cache_runtime::cached;

#[cached(group = "g")]
async fn send_mail(_id: u64) {}

#[cached(group = "g")]
async fn explicit_unit(_id: u64) -> () {}

fn main() {}
