use std::collections::HashMap;

use cache_runtime::{cache_evict, cached};

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

// A bulk read returns its elements by key...
#[cached(group = "products", each = ids)]
async fn get_products(ids: Vec<u64>) -> Vec<u64> {
    ids
}

// ...and stores each one as the single-key function does.
#[cached(group = "products", each = ids, cache_none)]
async fn find_products(ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id)).collect()
}

fn main() {}
