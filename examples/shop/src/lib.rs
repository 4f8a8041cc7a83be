//! An example shop: axum routes over a `products` table (SQLite, or
//! PostgreSQL with `DATABASE_URL`), cached in the data layer by the
//! attributes and at the routes by the HTTP layer, in one cache (in memory,
//! or Redis with `REDIS_URL`). `GET /metrics` shows both in Prometheus text.

pub mod db;
mod routes;

pub use db::{Db, DbError, NewProduct, Product};
pub use routes::{app, app_with_faults};
