use cache_runtime::{cache_evict, cache_put, cached, Cache};

struct Service {
    cache: Cache,
    calls: u32,
}

impl Service {
    #[cached(group = "svc", cache = &self.cache)]
    async fn get(&self, id: u64) -> Result<String, std::io::Error> {
        Ok(format!("{id}"))
    }

    #[cached(group = "svc_counted", cache = &self.cache)]
    async fn get_counted(&mut self, id: u64) -> u64 {
        self.calls += 1;
        id
    }

    #[cache_put(group = "svc", key = id, cache = &self.cache)]
    async fn rename(&mut self, id: u64, name: String) -> Result<String, std::io::Error> {
        self.calls += 1;
        Ok(name)
    }

    #[cache_evict(group = "svc", cache = &self.cache)]
    async fn delete(self: &Self, id: u64) -> Result<(), std::io::Error> {
        Ok(())
    }

    #[cached(group = "svc_self")]
    async fn owned(self, id: u64) -> u64 {
        id + u64::from(self.calls)
    }
}

fn main() {}
