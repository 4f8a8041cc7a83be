//! Every Rust block of README.md compiles, against a prelude of the names
//! its snippets take as given (`Db`, `Product`, `DbError`, the handlers of
//! the `Router` snippet): a snippet that drifts from the API fails here. A
//! body left out as `{ ... }` reads as `{ todo!() }`; a block of statements
//! is the body of an `async fn` returning `Result<(), Box<dyn Error>>`; a
//! block with its own `main` is a whole program, compiled as it stands
//! (trybuild runs each block: that `main` is renamed, and not called).

use std::path::PathBuf;

/// The names the README's snippets take as given. Glob-imported, so a block
/// that defines one of them (its own `get_product`) shadows it.
const PRELUDE: &str = r#"#![allow(dead_code, unused_imports, unused_variables, unreachable_code)]

mod prelude {
    pub use std::collections::HashMap;
    pub use std::time::Duration;

    pub use axum::extract::Path;
    pub use axum::routing::get;
    pub use axum::Router;
    pub use cache_runtime::{cache_evict, cache_put, cached, Cache, Dep};

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Product {
        pub id: u64,
        pub name: String,
    }

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub enum DbError {
        NotFound,
    }

    impl std::fmt::Display for DbError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not found")
        }
    }

    impl std::error::Error for DbError {}

    pub struct Db;

    impl Db {
        pub async fn load(&self, id: u64) -> Result<Product, DbError> {
            todo!()
        }
        pub async fn load_many(&self, ids: &[u64]) -> Result<HashMap<u64, Product>, DbError> {
            todo!()
        }
        pub async fn rename(&self, id: u64, name: String) -> Result<Product, DbError> {
            todo!()
        }
        pub async fn delete(&self, id: u64) -> Result<(), DbError> {
            todo!()
        }
        pub async fn ids_in(&self, category: &str, page: u32) -> Result<Vec<u64>, DbError> {
            todo!()
        }
        pub async fn count(&self) -> Result<u64, DbError> {
            todo!()
        }
    }

    #[cached(group = "products", ttl = 300, skip(db))]
    pub async fn get_product(db: &Db, id: u64) -> Result<Product, DbError> {
        db.load(id).await
    }

    pub async fn show(Path(id): Path<u64>) -> String {
        todo!()
    }
    pub async fn replace(Path(id): Path<u64>) -> String {
        todo!()
    }
    pub async fn remove(Path(id): Path<u64>) -> String {
        todo!()
    }
}

use prelude::*;
"#;

/// The Rust blocks of `markdown`, in order.
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in markdown.lines() {
        match (&mut open, line.trim_end()) {
            (None, "```rust") => open = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                open = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A block as a program that compiles when the block does.
fn program(block: &str) -> String {
    let block = block.replace("{ ... }", "{ todo!() }");
    if block.contains("fn main(") {
        // Compiled as it stands; trybuild runs what it compiles, so its
        // `main` (a server) becomes a function never called.
        let block = block.replace("fn main(", "fn program(");
        return format!("{PRELUDE}\n{block}\nfn main() {{}}\n");
    }
    let statements = block.lines().any(|line| line.starts_with("let "));
    if statements {
        format!(
            "{PRELUDE}\nasync fn snippet() -> Result<(), Box<dyn std::error::Error>> {{\n{block}\nOk(())\n}}\n\nfn main() {{}}\n"
        )
    } else {
        format!("{PRELUDE}\n{block}\nfn main() {{}}\n")
    }
}

#[test]
fn every_rust_block_of_the_readme_compiles() {
    let readme = include_str!("../../README.md");
    let blocks = rust_blocks(readme);
    assert!(blocks.len() >= 5, "found {} Rust blocks", blocks.len());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readme");
    std::fs::create_dir_all(&dir).expect("a directory for the README's blocks");
    let cases = trybuild::TestCases::new();
    for (n, block) in blocks.iter().enumerate() {
        let path = dir.join(format!("readme_block_{n:02}.rs"));
        std::fs::write(&path, program(block)).expect("write a README block");
        cases.pass(&path);
    }
}
