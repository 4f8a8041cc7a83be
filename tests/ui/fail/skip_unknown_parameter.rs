use cache_runtime::cached;

#[cached(group = "g", skip(db))]
async fn no_db(id: u64) -> u64 {
    id
}

fn main() {}
