//! Hits on Redis: latency (100 B and 10 KB values) and throughput by
//! concurrency, one hot key and many.

use std::time::Instant;

use crate::contenders::*;
use crate::harness::*;

impl Bench {
    pub(crate) async fn hit_latency(&mut self) {
        const KEYS: u64 = 100;
        for id in 0..KEYS {
            ours_small(&self.cache, id).await;
            ours_large(&self.cache, id).await;
            by_hand(&self.conn, format!("hand:s:{id}"), async { small(id) }).await;
            by_hand(&self.conn, format!("hand:l:{id}"), async { large(id) }).await;
            crate_small(id).await.ok();
            crate_large(id).await.ok();
        }
        let calls = if self.quick { 500 } else { 2000 };
        let rounds = self.rounds(8);
        let (cache, conn) = (self.cache.clone(), self.conn.clone());
        for (case, big) in [("hit, 100 B, 1 task", false), ("hit, 10 KB, 1 task", true)] {
            let mut samples = interleave(3, rounds, |contender| {
                let (cache, conn) = (cache.clone(), conn.clone());
                async move {
                    sequential(calls, |i| {
                        let (cache, conn) = (cache.clone(), conn.clone());
                        async move { hit_once(contender, big, &cache, &conn, i % KEYS).await }
                    })
                    .await
                }
            })
            .await;
            rows_for(
                case,
                &["hand-written redis-rs", "#[cached]", "cached crate"],
                &mut samples,
                &mut self.rows,
            );
        }
    }

    /// Hits from many tasks at once, on one hot key and spread over 10,000
    /// keys: hand-written redis-rs, `#[cached]` and the `cached` crate.
    pub(crate) async fn hit_throughput(&mut self) {
        let total: u64 = if self.quick { 20_000 } else { 100_000 };
        let names = ["hand-written redis-rs", "#[cached]", "cached crate"];
        let mut lines: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
        for (shape, keys) in [("one hot key", 1u64), ("10k keys", 10_000)] {
            for id in 0..keys {
                ours_small(&self.cache, id).await;
                by_hand(&self.conn, format!("hand:s:{id}"), async { small(id) }).await;
                crate_small(id).await.ok();
            }
            let only = self.only_tasks;
            for tasks in TASKS.into_iter().filter(|&t| only.is_none_or(|n| n == t)) {
                // One task makes its calls one round trip at a time: fewer.
                let per_task = (total / tasks as u64).min(5_000);
                let (cache, conn) = (self.cache.clone(), self.conn.clone());
                let samples = interleave(names.len(), self.rounds(8), |c| {
                    let (cache, conn) = (cache.clone(), conn.clone());
                    async move {
                        let started = Instant::now();
                        let handles: Vec<_> = (0..tasks)
                            .map(|t| {
                                let (cache, conn) = (cache.clone(), conn.clone());
                                tokio::spawn(async move {
                                    for i in 0..per_task {
                                        let id = (i * 7919 + t as u64 * 104_729) % keys;
                                        match c {
                                            0 => {
                                                by_hand(&conn, format!("hand:s:{id}"), async {
                                                    small(0)
                                                })
                                                .await;
                                            }
                                            1 => {
                                                ours_small(&cache, id).await;
                                            }
                                            _ => {
                                                let _ = crate_small(id).await;
                                            }
                                        }
                                    }
                                })
                            })
                            .collect();
                        for handle in handles {
                            handle.await.expect("a bench task panicked");
                        }
                        Sample::of_throughput(per_task * tasks as u64, started.elapsed())
                    }
                })
                .await;
                let case = format!("hit throughput, {shape}, {tasks} tasks");
                for (name, sample) in names.iter().zip(&samples) {
                    let label = format!("{name}, {shape}");
                    match lines.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, line)) => line.push((tasks, sample.throughput())),
                        None => lines.push((label, vec![(tasks, sample.throughput())])),
                    }
                    self.rows.push(Row {
                        case: case.clone(),
                        contender: (*name).to_owned(),
                        median: micros(sample.busy / sample.calls.max(1) as u32),
                        p99: "".to_owned(),
                        throughput: format!("{:.0}/s", sample.throughput()),
                        ratio: format!("{:.2}x throughput", paired_ratio(&samples[0], sample)),
                    });
                }
                if keys > 1 && !self.throughput_only {
                    let rps = redis_benchmark(
                        &self.url,
                        tasks,
                        1,
                        if self.quick { 50_000 } else { 200_000 },
                    );
                    self.rows.push(Row {
                        case: case.clone(),
                        contender: format!("redis-benchmark -t get -c {tasks}"),
                        median: "".to_owned(),
                        p99: "".to_owned(),
                        throughput: format!("{rps:.0}/s"),
                        ratio: format!("{:.2}x (#[cached] / this)", samples[1].throughput() / rps),
                    });
                }
            }
        }
        self.plot = lines
            .into_iter()
            .filter(|(label, _)| !label.starts_with("cached crate"))
            .collect();
    }
}
