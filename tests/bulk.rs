//! Bulk calls, cached per element (`each = arg`), on every backend.

mod support;

use std::collections::{BTreeSet, HashSet};

use cache_runtime::{cache_evict, cached, Cache};

#[cached(group = "products", ttl = 60, skip(cache), cache = cache)]
async fn get_product(cache: &Cache, id: u64) -> u64 {
    id * 10
}

#[cache_evict(group = "products", each = ids, skip(cache), cache = cache)]
async fn delete_products(cache: &Cache, ids: Vec<u64>) -> Result<(), String> {
    let _ = ids;
    Ok(())
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_slice(cache: &Cache, ids: &[u64], reason: &str) {
    let _ = (ids, reason);
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_vec_ref(cache: &Cache, ids: &Vec<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_hash_set(cache: &Cache, ids: HashSet<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, cache = cache)]
async fn delete_btree_set(cache: &Cache, ids: BTreeSet<u64>) {
    let _ = ids;
}

#[cache_evict(group = "products", each = ids, skip(cache), cache = cache)]
async fn failing_delete(cache: &Cache, ids: Vec<u64>) -> Result<(), String> {
    let _ = ids;
    Err("the database refused".into())
}

async fn cached_ids(cache: &Cache) -> Vec<u64> {
    let mut out = Vec::new();
    for id in 1..=9u64 {
        if cache.has("products", &id).await.unwrap() {
            out.push(id);
        }
    }
    out
}

async fn a_bulk_eviction_reaches_each_element(cache: Cache) {
    for id in 1..=9 {
        get_product(&cache, id).await;
    }
    delete_products(&cache, vec![2, 4, 4]).await.unwrap();
    assert_eq!(cached_ids(&cache).await, vec![1, 3, 5, 6, 7, 8, 9]);
    delete_slice(&cache, &[1], "discontinued").await;
    delete_vec_ref(&cache, &vec![3]).await;
    delete_hash_set(&cache, HashSet::from([5, 6])).await;
    delete_btree_set(&cache, BTreeSet::from([7])).await;
    assert_eq!(cached_ids(&cache).await, vec![8, 9]);
    failing_delete(&cache, vec![8, 9]).await.unwrap_err();
    assert_eq!(
        cached_ids(&cache).await,
        vec![8, 9],
        "an Err evicts nothing"
    );
    delete_products(&cache, Vec::new()).await.unwrap();
    assert_eq!(cached_ids(&cache).await, vec![8, 9]);
    let loads = cache.stats().loads;
    assert_eq!(get_product(&cache, 2).await, 20);
    assert_eq!(
        cache.stats().loads,
        loads + 1,
        "the single-key entry was evicted"
    );
}

on_each_backend!(a_bulk_eviction_reaches_each_element);
