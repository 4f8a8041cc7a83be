//! Misses (the body runs, the value is stored) and group eviction against
//! SCAN + UNLINK.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::contenders::*;
use crate::harness::*;

impl Bench {
    pub(crate) async fn miss_path(&mut self) {
        let calls = if self.quick { 300 } else { 1500 };
        let next = Arc::new(AtomicU64::new(1_000_000));
        let (cache, conn) = (self.cache.clone(), self.conn.clone());
        let mut samples = interleave(2, self.rounds(8), |c| {
            let (cache, conn, next) = (cache.clone(), conn.clone(), next.clone());
            async move {
                sequential(calls, |_| {
                    let (cache, conn) = (cache.clone(), conn.clone());
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    async move {
                        if c == 0 {
                            by_hand(&conn, format!("hand:s:{id}"), async { small(id) }).await;
                        } else {
                            ours_small(&cache, id).await;
                        }
                    }
                })
                .await
            }
        })
        .await;
        rows_for(
            "miss (lookup, body, store), 100 B",
            &["hand-written GET + SET EX", "#[cached]"],
            &mut samples,
            &mut self.rows,
        );
    }

    pub(crate) async fn group_eviction(&mut self) {
        let sizes: &[u64] = if self.quick {
            &[10, 1_000, 100_000]
        } else {
            &[10, 1_000, 100_000, 1_000_000]
        };
        let mut conn = self.conn.clone();
        for &size in sizes {
            let group = format!("ev{size}");
            self.cache
                .set(&group, &0u64, &small(0), None)
                .await
                .expect("seed the group");
            let gen: Vec<u8> = redis::cmd("GET")
                .arg(format!("cache:{{{group}}}:gen"))
                .query_async(&mut conn)
                .await
                .expect("gen");
            let value = serde_json::to_vec(&small(0)).unwrap_or_default();
            for start in (1..size).step_by(10_000) {
                let mut pipe = redis::pipe();
                for i in start..(start + 10_000).min(size) {
                    pipe.cmd("SET")
                        .arg(format!("cache:{{{group}}}:e:{i}"))
                        .arg([gen.as_slice(), value.as_slice()].concat())
                        .ignore();
                    pipe.cmd("SET")
                        .arg(format!("scan:{size}:{i}"))
                        .arg(&value)
                        .ignore();
                }
                let _: () = pipe.query_async(&mut conn).await.expect("fill");
            }
            let started = Instant::now();
            self.cache.evict_group(&group).await.expect("evict group");
            let ours = started.elapsed();
            let started = Instant::now();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("scan:{size}:*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("scan");
                if !keys.is_empty() {
                    let _: () = redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .expect("unlink");
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            let scan = started.elapsed();
            for (name, took, ratio) in [
                ("SCAN + UNLINK", scan, 1.0),
                (
                    "#[cache_evict(all)]",
                    ours,
                    ours.as_secs_f64() / scan.as_secs_f64(),
                ),
            ] {
                self.rows.push(Row {
                    case: format!("evict a group of {size} keys"),
                    contender: name.to_owned(),
                    median: micros(took),
                    p99: "".to_owned(),
                    throughput: "".to_owned(),
                    ratio: format!("{ratio:.5}x"),
                });
            }
            let _: () = redis::cmd("FLUSHDB")
                .arg("ASYNC")
                .query_async(&mut conn)
                .await
                .expect("flush");
        }
    }
}
