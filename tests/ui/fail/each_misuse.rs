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

// ...and stores no errors: an `Err` is the whole call's, not an element's.
#[cached(group = "products", each = ids, cache_err = |_| true)]
async fn find_products(ids: Vec<u64>) -> Result<HashMap<u64, u64>, String> {
    Ok(ids.into_iter().map(|id| (id, id)).collect())
}

// ...and has no lock to turn off, nor values to refresh early: every
// element is loaded under its own lease.
#[cached(group = "products", each = ids, lock = false)]
async fn get_unlocked(ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id)).collect()
}

#[cached(group = "products", each = ids, early)]
async fn get_early(ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id)).collect()
}

fn main() {}
