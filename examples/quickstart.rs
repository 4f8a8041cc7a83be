//! Quickstart: a slow fake database behind the three attributes.
//!
//! ```text
//! cargo run --example quickstart                                  # in memory
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example quickstart # on Redis
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct NotFound;

/// A database that takes 200 ms per query.
struct Db {
    rows: Mutex<HashMap<u64, Product>>,
}

impl Db {
    async fn query(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cached(ttl = 300, group = "products", skip(db))]
async fn get_product(db: &Db, id: u64) -> Result<Product, NotFound> {
    db.query().await;
    db.rows.lock().unwrap().get(&id).cloned().ok_or(NotFound)
}

#[cache_put(ttl = 300, group = "products", key = id, skip(db))]
async fn rename_product(db: &Db, id: u64, name: String) -> Result<Product, NotFound> {
    db.query().await;
    let mut rows = db.rows.lock().unwrap();
    let product = rows.get_mut(&id).ok_or(NotFound)?;
    product.name = name;
    Ok(product.clone())
}

#[cache_evict(group = "products", skip(db))]
async fn delete_product(db: &Db, id: u64) -> Result<(), NotFound> {
    db.query().await;
    db.rows
        .lock()
        .unwrap()
        .remove(&id)
        .map(drop)
        .ok_or(NotFound)
}

async fn timed<T: std::fmt::Debug>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let value = call.await;
    println!(
        "{what:<34} {:>7.1} ms  {value:?}",
        started.elapsed().as_secs_f64() * 1e3
    );
    value
}

#[tokio::main]
async fn main() -> Result<(), cache_runtime::Error> {
    let cache = Cache::from_env().await?;
    println!("cache: {cache:?}\n");
    cache.install();

    let db = Db {
        rows: Mutex::new(HashMap::from([(
            7,
            Product {
                id: 7,
                name: "teapot".into(),
            },
        )])),
    };
    // a clean slate when the example runs again on a persistent Redis
    cache.evict_group("products").await?;

    timed("get_product(7)     miss", get_product(&db, 7))
        .await
        .ok();
    timed("get_product(7)     hit", get_product(&db, 7))
        .await
        .ok();
    timed(
        "rename_product(7)  write-through",
        rename_product(&db, 7, "kettle".into()),
    )
    .await
    .ok();
    timed("get_product(7)     hit, new name", get_product(&db, 7))
        .await
        .ok();
    timed("delete_product(7)  evict", delete_product(&db, 7))
        .await
        .ok();
    timed("get_product(7)     miss, gone", get_product(&db, 7))
        .await
        .ok();
    Ok(())
}
