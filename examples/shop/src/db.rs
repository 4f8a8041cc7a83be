//! The data layer: a `products` table on SQLite or PostgreSQL (sqlx's `Any`
//! driver), cached with the attributes. Every query is counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_runtime::{cache_evict, cache_put, cached, Cache, Dep};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Products per list page.
pub const PAGE: i64 = 20;

/// The categories the seed spreads products over.
pub const CATEGORIES: [&str; 8] = [
    "kitchen", "garden", "books", "toys", "music", "tools", "sports", "office",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub category: String,
    /// In cents.
    pub price: i64,
    /// Bumped by every write: what a client checks freshness by.
    pub version: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// What `POST` and `PUT` carry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewProduct {
    pub name: String,
    pub category: String,
    pub price: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum DbError {
    #[error("no such product")]
    NotFound,
    #[error("database error: {0}")]
    Sql(String),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => DbError::NotFound,
            other => DbError::Sql(other.to_string()),
        }
    }
}

/// The database, its query counts, and the cache the data layer uses.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    pub cache: Cache,
    /// What the TTLs are multiplied by (1.0; the load test's outage runs
    /// shorten them, so that entries expire while the database is down).
    ttl_scale: f64,
    /// How long a value is kept past its TTL to stand in for a failing
    /// query (zero: not at all).
    pub fail_safe: Duration,
    /// A simulated outage, for the load test: while on, every query fails.
    pub outage: Outage,
}

/// A simulated database outage, and the read queries tried during it, by
/// what they read.
#[derive(Clone, Default)]
pub struct Outage {
    down: Arc<AtomicBool>,
    tried: Arc<Mutex<HashMap<String, u32>>>,
}

impl Outage {
    /// Starts (`true`) or ends the outage; a new one counts afresh.
    pub fn set(&self, down: bool) {
        if down {
            self.tried.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.down.store(down, Ordering::SeqCst);
    }

    /// The read queries tried during the last outage, by what they read
    /// (`product 7`, `list kitchen 0`).
    pub fn tried(&self) -> HashMap<String, u32> {
        self.tried.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fails while the outage lasts, counting what was tried.
    fn check(&self, what: impl FnOnce() -> String) -> Result<(), DbError> {
        if !self.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        *self
            .tried
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what())
            .or_default() += 1;
        Err(DbError::Sql("the database is unavailable".to_owned()))
    }
}

const COLUMNS: &str = "id, name, category, price, version, updated_at";

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and creates the
    /// table when it is missing.
    pub async fn connect(url: &str, cache: Cache) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .connect(url)
            .await?;
        let id = if sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            "id INTEGER PRIMARY KEY AUTOINCREMENT"
        } else {
            "id BIGSERIAL PRIMARY KEY"
        };
        let table = format!(
            "CREATE TABLE IF NOT EXISTS products ({id}, name TEXT NOT NULL, \
             category TEXT NOT NULL, price BIGINT NOT NULL, version BIGINT NOT NULL, \
             updated_at BIGINT NOT NULL)"
        );
        sqlx::query(&table).execute(&pool).await?;
        sqlx::query("CREATE INDEX IF NOT EXISTS products_category ON products (category, id)")
            .execute(&pool)
            .await?;
        Ok(Db {
            pool,
            reads: Arc::default(),
            writes: Arc::default(),
            cache,
            ttl_scale: 1.0,
            fail_safe: Duration::from_secs(3600),
            outage: Outage::default(),
        })
    }

    /// Multiplies every TTL by `scale` and keeps values `fail_safe` past
    /// them (zero: not at all).
    pub fn tuned(mut self, scale: f64, fail_safe: Duration) -> Db {
        self.ttl_scale = scale;
        self.fail_safe = fail_safe;
        self
    }

    /// `secs` seconds, times the TTL scale.
    pub fn ttl(&self, secs: u64) -> Duration {
        Duration::from_secs(secs).mul_f64(self.ttl_scale)
    }

    /// Inserts products until the table holds `count` of them.
    pub async fn seed(&self, count: i64) -> Result<(), DbError> {
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM products")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if existing >= count {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for chunk in (existing..count).collect::<Vec<_>>().chunks(500) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let at = i * 5;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        at + 1,
                        at + 2,
                        at + 3,
                        at + 4,
                        at + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO products (name, category, price, version, updated_at) VALUES {}",
                rows.join(", ")
            );
            let mut insert = sqlx::query(&sql);
            for n in chunk {
                insert = insert
                    .bind(format!("product {}", n + 1))
                    .bind(CATEGORIES[(*n as usize) % CATEGORIES.len()])
                    .bind(100 + (n * 37) % 10_000)
                    .bind(1i64)
                    .bind(now);
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::info!(count = count - existing, "seeded the products table");
        Ok(())
    }

    /// Queries run for reads since start.
    pub fn read_queries(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The pool, for a query made to read `what` (counted).
    fn reading(&self, what: impl FnOnce() -> String) -> Result<&AnyPool, DbError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("shop_db_queries_total", "for" => "read").increment(1);
        self.outage.check(what)?;
        Ok(&self.pool)
    }

    /// The pool, for a query made to write (counted).
    fn writing(&self) -> Result<&AnyPool, DbError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("shop_db_queries_total", "for" => "write").increment(1);
        self.outage.check(|| "write".to_owned())?;
        Ok(&self.pool)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn product(row: AnyRow) -> Result<Product, DbError> {
    Ok(Product {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        price: row.try_get("price")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One product. An unknown id is cached too, for 30 s, so that probing
/// unknown ids does not reach the database every time. While the database
/// fails, the last good value stands in (fail-safe), unless a write
/// replaced it.
#[cached(
    ttl = db.ttl(300),
    group = "products",
    cache = &db.cache,
    skip(db),
    cache_err = |e| *e == DbError::NotFound,
    err_ttl = db.ttl(30),
    fail_safe = db.fail_safe
)]
pub async fn get_product(db: &Db, id: i64) -> Result<Product, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
    let pool = db.reading(|| format!("product {id}"))?;
    let row = sqlx::query(&sql).bind(id).fetch_one(pool).await?;
    product(row)
}

/// A page of products, of one category or all. It reads its products
/// through [`get_product`], so it depends on each of them: a write of one
/// makes the pages that show it misses, and only those. Which products a
/// page shows changes when one joins or leaves its category (or the
/// unfiltered list); `memberships_changed` marks that.
#[cached(group = "lists", ttl = db.ttl(60), cache = &db.cache, skip(db), fail_safe = db.fail_safe)]
pub async fn list_products(
    db: &Db,
    category: Option<String>,
    page: i64,
) -> Result<Vec<Product>, DbError> {
    cache_runtime::depend(Dep::key("memberships", &category));
    let offset = page.max(0) * PAGE;
    let pool = db.reading(|| format!("list {} {page}", category.as_deref().unwrap_or("all")))?;
    let rows = match &category {
        Some(category) => {
            let sql = "SELECT id FROM products WHERE category = $1 ORDER BY id LIMIT $2 OFFSET $3";
            sqlx::query(sql)
                .bind(category)
                .bind(PAGE)
                .bind(offset)
                .fetch_all(pool)
                .await?
        }
        None => {
            let sql = "SELECT id FROM products ORDER BY id LIMIT $1 OFFSET $2";
            sqlx::query(sql)
                .bind(PAGE)
                .bind(offset)
                .fetch_all(pool)
                .await?
        }
    };
    let ids = rows
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // Concurrently, in this task: reads of the cache from spawned tasks
    // would not be this page's dependencies.
    futures_util::future::try_join_all(ids.into_iter().map(|id| get_product(db, id))).await
}

/// Products joined or left `category` (and so the unfiltered list): the
/// pages that list it are misses on their next read.
async fn memberships_changed(db: &Db, category: &str) {
    for list in [Some(category.to_owned()), None] {
        if let Err(error) = db.cache.delete("memberships", &list).await {
            tracing::warn!(%error, ?list, "could not mark a category's pages");
        }
    }
}

/// Creates a product: it joins its category's pages.
pub async fn create_product(db: &Db, input: NewProduct) -> Result<Product, DbError> {
    let sql = format!(
        "INSERT INTO products (name, category, price, version, updated_at) \
         VALUES ($1, $2, $3, 1, $4) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&input.name)
        .bind(&input.category)
        .bind(input.price)
        .bind(now_ms())
        .fetch_one(db.writing()?)
        .await?;
    let created = product(row)?;
    memberships_changed(db, &created.category).await;
    // Its id may have been looked up (and its absence cached) before.
    if let Err(error) = db.cache.delete("products", &created.id).await {
        tracing::warn!(%error, id = created.id, "could not drop a cached absence");
    }
    Ok(created)
}

/// Replaces a product: the entry gets the new value (write-through), and
/// every page that shows it is a miss on its next read. A product that
/// changes category leaves one and joins another.
#[cache_put(ttl = db.ttl(300), group = "products", cache = &db.cache, key = id, fail_safe = db.fail_safe)]
pub async fn update_product(db: &Db, id: i64, input: NewProduct) -> Result<Product, DbError> {
    let before: String = sqlx::query("SELECT category FROM products WHERE id = $1")
        .bind(id)
        .fetch_one(db.writing()?)
        .await?
        .try_get(0)?;
    let sql = format!(
        "UPDATE products SET name = $1, category = $2, price = $3, version = version + 1, \
         updated_at = $4 WHERE id = $5 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&input.name)
        .bind(&input.category)
        .bind(input.price)
        .bind(now_ms())
        .bind(id)
        .fetch_one(db.writing()?)
        .await?;
    let updated = product(row)?;
    if updated.category != before {
        memberships_changed(db, &before).await;
        memberships_changed(db, &updated.category).await;
    }
    Ok(updated)
}

/// Deletes a product: it leaves its entry and its category's pages.
#[cache_evict(group = "products", cache = &db.cache, skip(db))]
pub async fn delete_product(db: &Db, id: i64) -> Result<(), DbError> {
    let sql = "DELETE FROM products WHERE id = $1 RETURNING category";
    let row = sqlx::query(sql).bind(id).fetch_one(db.writing()?).await?;
    let category: String = row.try_get(0)?;
    memberships_changed(db, &category).await;
    Ok(())
}
