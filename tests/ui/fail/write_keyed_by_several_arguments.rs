use cache_runtime::{cache_evict, cache_put};

// The reader is keyed by `id`; a write keyed by `(id, price)` would miss it.
#[cache_evict(group = "prices")]
async fn set_price(id: u64, price: u32) -> Result<(), String> {
    let _ = (id, price);
    Ok(())
}

#[cache_put(group = "prices")]
async fn rename(id: u64, name: String) -> Result<String, String> {
    let _ = id;
    Ok(name)
}

// Named, either key is fine.
#[cache_evict(group = "prices", key = id)]
async fn set_price_keyed(id: u64, price: u32) -> Result<(), String> {
    let _ = (id, price);
    Ok(())
}

#[cache_put(group = "pairs", key = (id, name.clone()))]
async fn pair(id: u64, name: String) -> Result<String, String> {
    let _ = id;
    Ok(name)
}

fn main() {}
