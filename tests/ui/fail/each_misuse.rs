use cache_runtime::cache_evict;

// `each` must name a parameter...
#[cache_evict(group = "products", each = idz)]
async fn delete_products(ids: Vec<u64>) {
    let _ = ids;
}

// ...that holds keys...
#[cache_evict(group = "products", each = id)]
async fn delete_product(id: u64) {
    let _ = id;
}

// ...and names the keys alone.
#[cache_evict(group = "products", each = ids, key = ids)]
async fn delete_keyed(ids: Vec<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, all)]
async fn delete_all(ids: Vec<u64>) {
    let _ = ids;
}

fn main() {}
