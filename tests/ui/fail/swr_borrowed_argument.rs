use cache_runtime::cached;

struct Db;

#[cached(group = "g", skip(_db), stale_while_revalidate = 60)]
async fn borrows(_db: &Db, id: u64) -> u64 {
    id
}

fn main() {}
