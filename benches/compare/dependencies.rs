//! Derived entries: what a hit costs with 20 dependencies beside one with
//! none, what a write costs with 1 to 10,000 dependents, and what a
//! dependency costs in memory.

use std::time::Instant;

use cache_runtime::Cache;

use crate::contenders::*;
use crate::harness::*;

/// A value that reads `deps` products through the cache: it depends on
/// each of them.
async fn list(cache: &Cache, group: &str, id: u64, deps: u64) -> Vec<Small> {
    cache
        .get_or_load(group, &id, None, || async {
            let mut out = Vec::new();
            for p in 0..deps {
                let product = cache
                    .get_or_load("d_products", &p, None, || async { small(p) })
                    .await
                    .expect("a product");
                out.push(product);
            }
            out
        })
        .await
        .expect("a list")
}

/// Writes timed per size of the fan-out.
const WRITES: usize = 21;

impl Bench {
    pub(crate) async fn dependencies(&mut self) {
        let cache = self.cache.clone();
        // A hit of 20 products without dependencies, and one with them.
        let twenty = || (0..20).map(small).collect::<Vec<_>>();
        let plain = || cache.get_or_load("d_plain", &0u64, None, || async { twenty() });
        plain().await.expect("warm");
        list(&cache, "d_lists", 20, 20).await;
        list(&cache, "d_lists", 20, 20).await;
        let calls = if self.quick { 300 } else { 2000 };
        let mut samples = interleave(2, self.rounds(8), |c| {
            let cache = cache.clone();
            async move {
                sequential(calls, |_| {
                    let cache = cache.clone();
                    async move {
                        if c == 0 {
                            let v: Vec<Small> = cache
                                .get_or_load("d_plain", &0u64, None, || async {
                                    (0..20).map(small).collect()
                                })
                                .await
                                .expect("hit");
                            std::hint::black_box(v);
                        } else {
                            std::hint::black_box(list(&cache, "d_lists", 20, 20).await);
                        }
                    }
                })
                .await
            }
        })
        .await;
        rows_for(
            "hit of 20 products, 0 vs 20 dependencies",
            &[
                "no dependencies",
                "20 dependencies (one group: one more MGET)",
            ],
            &mut samples,
            &mut self.rows,
        );

        // A write of a product that 1, 100 and 10,000 entries embed.
        let sizes: &[u64] = if self.quick {
            &[1, 100, 1_000]
        } else {
            &[1, 100, 10_000]
        };
        for &size in sizes {
            let group = format!("d_dependents_{size}");
            for id in 0..size {
                list(&cache, &group, id, 1).await;
            }
            // Each write replaces the record's token, which stays: the
            // later writes cost what the first does.
            let before = server_commands(&self.conn).await;
            let mut took = Vec::new();
            for _ in 0..WRITES {
                let started = Instant::now();
                cache.delete("d_products", &0u64).await.expect("write");
                took.push(started.elapsed());
            }
            let commands = server_commands(&self.conn).await - before - 1; // the INFO
            took.sort();
            self.rows.push(Row {
                case: format!("write of a product embedded in {size} entries"),
                contender: "cache.delete".to_owned(),
                median: micros(took[WRITES / 2]),
                p99: String::new(),
                throughput: format!(
                    "1 round trip, {:.0} server commands (those its script runs included)",
                    commands as f64 / WRITES as f64
                ),
                ratio: String::new(),
            });
            // The dependents are misses now: one more load each, checked.
            let reloads = cache.stats().loads;
            list(&cache, &group, 0, 1).await;
            assert_eq!(cache.stats().loads, reloads + 2, "the dependent reloads");
        }

        // What a dependency costs: its record on the server, and its stamp
        // in each dependent's envelope.
        let mut conn = self.conn.clone();
        let record: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("cache:{d_products}:v:1")
            .query_async(&mut conn)
            .await
            .expect("MEMORY USAGE");
        let with: u64 = redis::cmd("STRLEN")
            .arg("cache:{d_lists}:e:20")
            .query_async(&mut conn)
            .await
            .expect("STRLEN");
        let list_alone = serde_json::to_vec(&(0..20).map(small).collect::<Vec<_>>())
            .map_or(0, |v| v.len() as u64)
            + 37
            + 16;
        self.rows.push(Row {
            case: "memory of a dependency".to_owned(),
            contender: "record (MEMORY USAGE) / stamp in the dependent".to_owned(),
            median: format!("{} B", record.unwrap_or(0)),
            p99: format!("{} B", with.saturating_sub(list_alone) / 20),
            throughput: String::new(),
            ratio: String::new(),
        });
    }
}
