use cache_runtime::{cache_put, cached};

#[cached(group = "g", jitter = 1.5)]
async fn jitter_out_of_range(id: u64) -> u64 {
    id
}

#[cached(group = "g", early = 0)]
async fn early_not_positive(id: u64) -> u64 {
    id
}

#[cached(group = "g", lock = "yes")]
async fn lock_not_a_bool(id: u64) -> u64 {
    id
}

#[cache_put(group = "g", lock = false)]
async fn lock_on_a_put(id: u64) -> u64 {
    id
}

fn main() {}
