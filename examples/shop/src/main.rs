//! `cargo run -p shop`: the shop on an embedded SQLite database and the
//! in-memory cache; `DATABASE_URL=postgres://...` for PostgreSQL,
//! `REDIS_URL=redis://...` for Redis, `SHOP_ADDR` for the address (default
//! 127.0.0.1:3000), `SHOP_CACHE=off` to run the same code with caching
//! switched off (`Cache::disabled`). For the load test: `SHOP_TTL_SCALE`
//! multiplies every TTL, `SHOP_FAIL_SAFE=off` keeps no value past its TTL,
//! `SHOP_FAULTS=on` adds `/admin/database` (a simulated outage).

use std::time::Duration;

use cache_runtime::Cache;
use metrics_exporter_prometheus::PrometheusBuilder;
use shop::Db;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let path = std::env::temp_dir().join("cache-runtime-shop.db");
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let cache = match std::env::var("SHOP_CACHE").as_deref() {
        Ok("off") => Cache::disabled(),
        _ => Cache::from_env().await?,
    };
    let scale = std::env::var("SHOP_TTL_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1.0);
    let fail_safe = match std::env::var("SHOP_FAIL_SAFE").as_deref() {
        Ok("off") => Duration::ZERO,
        _ => Duration::from_secs(3600),
    };
    let db = Db::connect(&url, cache).await?.tuned(scale, fail_safe);
    db.seed(10_000).await?;
    let addr = std::env::var("SHOP_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, database = url.split(':').next().unwrap_or("?"), "shop listening");
    let app = match std::env::var("SHOP_FAULTS").as_deref() {
        Ok("on") => shop::app_with_faults(db, metrics),
        _ => shop::app(db, metrics),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
