mod facade {
    pub use cache_runtime as cache;
}

use cache_runtime::cached;

#[cached(group = "reexported", crate = "facade::cache")]
async fn through_a_reexport(id: u64) -> u64 {
    id
}

fn main() {}
