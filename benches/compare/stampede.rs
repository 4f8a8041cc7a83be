//! A stampede: concurrent callers of one cold key.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contenders::*;
use crate::harness::*;

impl Bench {
    pub(crate) async fn stampede(&mut self) {
        const CALLERS: usize = 1000;
        let rounds = if self.quick { 2 } else { 5 };
        let round = Arc::new(AtomicU64::new(0));
        let runs: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let (cache, conn) = (self.cache.clone(), self.conn.clone());
        let mut samples = interleave(3, rounds, |c| {
            let (cache, conn, runs, round) =
                (cache.clone(), conn.clone(), runs.clone(), round.clone());
            async move {
                let key = 5_000_000 + round.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let (cache, conn, runs) = (cache.clone(), conn.clone(), runs.clone());
                        tokio::spawn(async move {
                            let one = Instant::now();
                            let slow = async {
                                runs[0].fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                small(key)
                            };
                            match c {
                                0 => drop(by_hand(&conn, format!("hand:s:{key}"), slow).await),
                                1 => drop(stampede_ours(&cache, &runs[1], key).await),
                                _ => drop(stampede_crate(key).await),
                            }
                            one.elapsed()
                        })
                    })
                    .collect();
                let mut sample = Sample::default();
                for task in tasks {
                    sample
                        .latencies
                        .push(task.await.expect("a caller panicked"));
                }
                sample.busy = started.elapsed();
                sample.calls = CALLERS as u64;
                sample
            }
        })
        .await;
        let names = ["hand-written redis-rs", "#[cached]", "cached crate"];
        for (i, (name, sample)) in names.iter().zip(samples.iter_mut()).enumerate() {
            let runs = if i == 2 {
                CRATE_STAMPEDE_RUNS.load(Ordering::Relaxed)
            } else {
                runs[i].load(Ordering::Relaxed)
            };
            let body_runs = runs as f64 / rounds as f64;
            self.rows.push(Row {
                case: format!("stampede: {CALLERS} callers, cold key, 20 ms body"),
                contender: format!("{name} ({body_runs:.0} body runs per key)"),
                median: micros(sample.median()),
                p99: micros(sample.percentile(0.99)),
                throughput: "".to_owned(),
                ratio: "".to_owned(),
            });
        }
    }
}
