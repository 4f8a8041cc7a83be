//! Bulk calls with 100 ids, 0%, 50% and 100% of them cached: `each`
//! against a loop over the single-key function and hand-written `MGET` +
//! one bulk load + a pipelined `SET EX`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cache_runtime::{cached, Cache};
use redis::aio::ConnectionManager;

use crate::contenders::*;
use crate::harness::*;

/// Ids per call.
const IDS: u64 = 100;

/// The bulk load every contender calls for its missing ids: one query.
async fn load_many(ids: &[u64]) -> HashMap<u64, Small> {
    ids.iter().map(|id| (*id, small(*id))).collect()
}

#[cached(group = "b_bulk", skip(cache), cache = cache, ttl = 3600)]
async fn one(cache: &Cache, id: u64) -> Small {
    small(id)
}

#[cached(group = "b_bulk", each = ids, skip(cache), cache = cache, ttl = 3600)]
async fn many(cache: &Cache, ids: &[u64]) -> HashMap<u64, Small> {
    load_many(ids).await
}

#[cached(group = "b_loop", skip(cache), cache = cache, ttl = 3600)]
async fn looped(cache: &Cache, id: u64) -> Small {
    small(id)
}

/// Hand-written: `MGET`, one load of the missing ids, a pipelined `SET EX`.
async fn by_hand_many(conn: &ConnectionManager, ids: &[u64]) -> HashMap<u64, Small> {
    let mut conn = conn.clone();
    let keys: Vec<String> = ids.iter().map(|id| format!("hand:b:{id}")).collect();
    let found: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let mut out = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    for (id, bytes) in ids.iter().zip(found) {
        match bytes.and_then(|b| serde_json::from_slice::<Small>(&b).ok()) {
            Some(value) => {
                out.insert(*id, value);
            }
            None => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        let loaded = load_many(&missing).await;
        let mut pipe = redis::pipe();
        for (id, value) in &loaded {
            let bytes = serde_json::to_vec(value).unwrap_or_default();
            pipe.cmd("SET")
                .arg(format!("hand:b:{id}"))
                .arg(bytes)
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        out.extend(loaded);
    }
    out
}

/// `--profile-bulk=ours|hand`: `calls` bulk reads of 100 cached ids (for
/// callgrind, minus a run with `--hits=0`).
pub(crate) async fn profile(who: &str, cache: &Cache, conn: &ConnectionManager, calls: u64) {
    let ids: Vec<u64> = (0..IDS).collect();
    let read = || async {
        match who {
            "hand" => by_hand_many(conn, &ids).await,
            _ => many(cache, &ids).await,
        }
    };
    read().await; // fills every entry
    while who != "hand" && cache.stats().stores < IDS {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for _ in 0..calls {
        assert_eq!(std::hint::black_box(read().await).len(), IDS as usize);
    }
}

impl Bench {
    pub(crate) async fn bulk(&mut self) {
        let calls = if self.quick { 20 } else { 60 };
        let next = AtomicU64::new(10_000_000);
        for cached_pct in [0u64, 50, 100] {
            let mut samples = vec![Sample::default(); 3];
            for _ in 0..self.rounds(6) {
                for (c, sample) in samples.iter_mut().enumerate() {
                    let started = Instant::now();
                    for _ in 0..calls {
                        let base = next.fetch_add(IDS, Ordering::Relaxed);
                        let ids: Vec<u64> = (base..base + IDS).collect();
                        let warm = &ids[..(IDS * cached_pct / 100) as usize];
                        match c {
                            0 => {
                                by_hand_many(&self.conn, warm).await;
                            }
                            1 => {
                                for id in warm {
                                    one(&self.cache, *id).await;
                                }
                            }
                            _ => {
                                for id in warm {
                                    looped(&self.cache, *id).await;
                                }
                            }
                        }
                        let one_call = Instant::now();
                        let got = match c {
                            0 => by_hand_many(&self.conn, &ids).await,
                            1 => many(&self.cache, &ids).await,
                            _ => {
                                let mut out = HashMap::with_capacity(ids.len());
                                for id in &ids {
                                    out.insert(*id, looped(&self.cache, *id).await);
                                }
                                out
                            }
                        };
                        sample.latencies.push(one_call.elapsed());
                        assert_eq!(got.len(), IDS as usize);
                    }
                    sample.calls += calls;
                    sample.busy += started.elapsed();
                }
            }
            rows_for(
                &format!("bulk read of 100 ids, {cached_pct}% cached"),
                &[
                    "hand-written MGET + one load + pipelined SET EX",
                    "#[cached(each = ids)]",
                    "a loop over the single-key #[cached]",
                ],
                &mut samples,
                &mut self.rows,
            );
        }
    }
}
