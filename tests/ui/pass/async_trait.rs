use async_trait::async_trait;
use cache_runtime::{cache_evict, cache_put, cached, Cache};

#[async_trait]
trait Store {
    async fn load(&self, id: u64) -> Option<String>;
    async fn save(&self, id: u64, name: String) -> Result<String, std::io::Error>;

    #[cached(ttl = 60)]
    async fn count(&self, kind: String) -> u64 {
        kind.len() as u64
    }
}

struct Pg {
    cache: Cache,
}

#[async_trait]
impl Store for Pg {
    #[cached(group = "rows", cache = &self.cache)]
    async fn load(&self, id: u64) -> Option<String> {
        Some(format!("row {id}"))
    }

    #[cache_put(group = "rows", key = id, cache = &self.cache)]
    #[cache_evict(group = "counts", all)]
    async fn save(&self, id: u64, name: String) -> Result<String, std::io::Error> {
        Ok(format!("{id}: {name}"))
    }
}

struct Traced;

#[async_trait]
impl Store for Traced {
    #[cached]
    #[tracing::instrument(skip(self))]
    async fn load(&self, id: u64) -> Option<String> {
        Some(format!("traced {id}"))
    }

    #[tracing::instrument(skip(self, name))]
    #[cache_put(group = "rows", key = id)]
    async fn save(&self, id: u64, name: String) -> Result<String, std::io::Error> {
        Ok(format!("{id}: {name}"))
    }
}

fn main() {}
