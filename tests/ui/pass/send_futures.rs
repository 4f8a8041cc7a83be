//! The futures of annotated functions are `Send` whenever the arguments are,
//! whatever the key: axum handlers and `tokio::spawn` need that.

use cache_runtime::{cache_evict, cache_put, cached};

fn assert_send<T: Send>(_: T) {}

#[cached(group = "send")]
async fn two_parts(category: Option<String>, page: i64) -> Vec<u64> {
    vec![page as u64; category.map_or(0, |c| c.len())]
}

#[cached(group = "send", key = (id, name.as_str()))]
async fn tuple_key(id: u64, name: String) -> String {
    format!("{id} {name}")
}

#[cache_put(group = "send", key = id)]
async fn put(id: u64, name: String) -> String {
    name
}

#[cache_evict(group = "send", key = (id, &name))]
async fn evict(id: u64, name: String) -> Result<(), String> {
    let _ = (id, name);
    Ok(())
}

fn main() {
    assert_send(two_parts(None, 1));
    assert_send(tuple_key(1, "a".into()));
    assert_send(put(1, "a".into()));
    assert_send(evict(1, "a".into()));
}
