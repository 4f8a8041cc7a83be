//! Which cache an attribute uses when it names none: the task's scoped cache,
//! else the installed one, else a process-wide in-memory cache.

use std::future::Future;

use once_cell::sync::Lazy;
use parking_lot::RwLock;

use crate::Cache;

tokio::task_local! {
    static SCOPED: Cache;
}

static INSTALLED: RwLock<Option<Cache>> = RwLock::new(None);

static FALLBACK: Lazy<Cache> = Lazy::new(|| {
    tracing::info!("no cache installed: the cache attributes use an in-memory cache");
    Cache::in_memory()
});

pub(crate) fn install(cache: Cache) {
    *INSTALLED.write() = Some(cache);
}

pub(crate) async fn scope<F: Future>(cache: Cache, future: F) -> F::Output {
    SCOPED.scope(cache, future).await
}

/// The cache for an attribute without `cache = ...`.
pub(crate) fn current() -> Cache {
    if let Ok(cache) = SCOPED.try_with(Cache::clone) {
        return cache;
    }
    if let Some(cache) = INSTALLED.read().as_ref() {
        return cache.clone();
    }
    FALLBACK.clone()
}
