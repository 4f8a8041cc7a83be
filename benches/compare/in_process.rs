//! In-process hits (the in-memory backend and the local tier, against moka)
//! and how fast a write reaches another process's local tier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::Cache;

use crate::contenders::*;
use crate::harness::*;
use crate::support;

impl Bench {
    pub(crate) async fn in_memory_hit(&mut self) {
        let cache = Cache::in_memory();
        let local = Cache::builder()
            .redis(self.url.clone())
            .local(10_000, Duration::from_secs(60))
            .build()
            .await
            .expect("cache with a local tier");
        support::local_tier_ready(&local).await;
        let moka: moka::future::Cache<u64, Arc<Small>> = moka::future::Cache::new(10_000);
        for id in 0..100 {
            ours_small(&cache, id).await;
            ours_small(&local, id).await;
            ours_small(&local, id).await; // a Redis hit: now kept locally
            moka.insert(id, Arc::new(small(id))).await;
        }
        let calls = if self.quick { 20_000 } else { 100_000 };
        let mut samples = interleave(3, self.rounds(8), |c| {
            let (cache, local, moka) = (cache.clone(), local.clone(), moka.clone());
            async move {
                sequential(calls, |i| {
                    let (cache, local, moka) = (cache.clone(), local.clone(), moka.clone());
                    async move {
                        match c {
                            0 => drop(std::hint::black_box(moka.get(&(i % 100)).await)),
                            1 => drop(std::hint::black_box(ours_small(&cache, i % 100).await)),
                            _ => drop(std::hint::black_box(ours_small(&local, i % 100).await)),
                        }
                    }
                })
                .await
            }
        })
        .await;
        rows_for(
            "in-process hit, 100 B",
            &[
                "moka::future::Cache::get",
                "#[cached] in memory",
                "#[cached] local tier over Redis",
            ],
            &mut samples,
            &mut self.rows,
        );
    }

    /// How long a second cache (its own connections, as another process
    /// would have) keeps serving a local copy after a write returns.
    pub(crate) async fn propagation(&mut self) {
        let writer = Cache::builder()
            .redis(self.url.clone())
            .build()
            .await
            .expect("writer");
        let reader = Cache::builder()
            .redis(self.url.clone())
            .local(1000, Duration::from_secs(60))
            .build()
            .await
            .expect("reader with a local tier");
        support::local_tier_ready(&reader).await;
        let rounds = if self.quick { 50 } else { 300 };
        let mut sample = Sample::default();
        for round in 0..rounds {
            let id = 9_000_000 + round;
            ours_small(&reader, id).await; // miss
            ours_small(&reader, id).await; // Redis hit, kept locally
            writer.delete("b_small", &id).await.expect("delete");
            let written = Instant::now();
            loop {
                let local_hits = reader.stats().local_hits;
                ours_small(&reader, id).await;
                if reader.stats().local_hits == local_hits {
                    break; // no longer served locally
                }
                tokio::task::yield_now().await;
            }
            sample.latencies.push(written.elapsed());
            sample.calls += 1;
        }
        self.rows.push(Row {
            case: "local tier: write to invalidation in another cache".to_owned(),
            contender: "client tracking, two caches with their own connections (one process)"
                .to_owned(),
            median: micros(sample.median()),
            p99: micros(sample.percentile(0.99)),
            throughput: "".to_owned(),
            ratio: "".to_owned(),
        });

        // A writer that is not this library: an `UNLINK` of the entry on a
        // plain connection, timed from its reply to the copy being gone.
        let mut conn = self.conn.clone();
        let mut sample = Sample::default();
        for round in 0..rounds {
            let id = 9_500_000 + round;
            ours_small(&reader, id).await; // miss
            ours_small(&reader, id).await; // Redis hit, kept locally
            while {
                let local_hits = reader.stats().local_hits;
                ours_small(&reader, id).await;
                reader.stats().local_hits == local_hits
            } {} // until served locally (the fill's own push has passed)
            let _: i64 = redis::cmd("UNLINK")
                .arg(format!("cache:{{b_small}}:e:{id}"))
                .query_async(&mut conn)
                .await
                .expect("UNLINK");
            let written = Instant::now();
            loop {
                let local_hits = reader.stats().local_hits;
                ours_small(&reader, id).await;
                if reader.stats().local_hits == local_hits {
                    break;
                }
                tokio::task::yield_now().await;
            }
            sample.latencies.push(written.elapsed());
            sample.calls += 1;
        }
        self.rows.push(Row {
            case: "local tier: a foreign UNLINK's reply to the copy gone".to_owned(),
            contender: "client tracking".to_owned(),
            median: micros(sample.median()),
            p99: micros(sample.percentile(0.99)),
            throughput: "".to_owned(),
            ratio: "".to_owned(),
        });
    }
}
