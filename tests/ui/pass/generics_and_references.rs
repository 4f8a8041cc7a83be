use std::fmt::Debug;

use cache_runtime::{cache_evict, cached};
use serde::{de::DeserializeOwned, Serialize};

#[cached(group = "generic")]
async fn generic<T>(value: T) -> Vec<T>
where
    T: Serialize + DeserializeOwned + Clone + Debug,
{
    vec![value.clone(), value]
}

#[cached(group = "refs")]
async fn by_reference(name: &str, bytes: &[u8], id: &u64) -> usize {
    name.len() + bytes.len() + *id as usize
}

#[cached(group = "impl_arg")]
async fn impl_argument(name: impl AsRef<str> + Serialize) -> String {
    name.as_ref().to_owned()
}

#[cache_evict(group = "refs", key = (name, bytes, id))]
async fn evict_by_reference(name: &str, bytes: &[u8], id: &u64) {}

#[cached(group = "lifetimes")]
async fn lifetimes<'a>(name: &'a str) -> String {
    name.to_owned()
}

#[cached(group = "nothing")]
async fn no_arguments() -> u64 {
    42
}

#[cached(group = "tuple_key", key = (a, b.len()), skip(_c))]
async fn key_expression(a: u64, b: String, _c: std::sync::Arc<()>) -> u64 {
    a
}

fn main() {}
