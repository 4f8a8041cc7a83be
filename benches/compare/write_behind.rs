//! Write-behind against a plain `SET` and, with `DATABASE_URL`, a direct
//! `UPDATE`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::Cache;

use crate::harness::*;

/// A PostgreSQL pool with the bench's table, when `DATABASE_URL` names one.
pub(crate) async fn postgres() -> Option<sqlx::PgPool> {
    let url = std::env::var("DATABASE_URL").ok()?;
    if !url.starts_with("postgres") {
        return None;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await
        .expect("DATABASE_URL's PostgreSQL");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_views (id BIGINT PRIMARY KEY, views BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the bench table");
    sqlx::query("INSERT INTO bench_views SELECT g, 0 FROM generate_series(0, 9999) g ON CONFLICT DO NOTHING")
        .execute(&pool)
        .await
        .expect("the bench rows");
    Some(pool)
}

pub(crate) async fn update(pool: &sqlx::PgPool, id: u64, views: u64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE bench_views SET views = $2 WHERE id = $1")
        .bind(id as i64)
        .bind(views as i64)
        .execute(pool)
        .await
        .map(drop)
}

impl Bench {
    /// Write-behind `write` against a plain `SET` of the same JSON and, when
    /// `DATABASE_URL` names a PostgreSQL, a direct `UPDATE`; keys drawn from
    /// a Zipf distribution (s = 1) over 10,000 ids, as page views are. The
    /// handler makes the same `UPDATE` (or, without PostgreSQL, counts).
    /// Each write-behind round is flushed after its timing, so that its
    /// consumer does not run during the others' rounds.
    pub(crate) async fn write_behind(&mut self) {
        const KEYS: usize = 10_000;
        let zipf = Arc::new(Zipf::new(KEYS, 1.0));
        let pg = postgres().await;
        let db_calls = Arc::new(AtomicU64::new(0));
        let cache = Cache::builder()
            .redis(self.url.clone())
            .build()
            .await
            .expect("a write-behind cache");
        let writer = {
            let (pg, db_calls) = (pg.clone(), db_calls.clone());
            cache
                .write_behind("b_views", move |id: u64, views: u64| {
                    let (pg, db_calls) = (pg.clone(), db_calls.clone());
                    async move {
                        db_calls.fetch_add(1, Ordering::Relaxed);
                        match &pg {
                            Some(pg) => update(pg, id, views).await,
                            None => Ok(()),
                        }
                    }
                })
                .delay(Duration::from_millis(100))
                .batch(200)
                .start()
        };
        let mut names = vec!["plain SET (redis-rs)", "write-behind write"];
        if pg.is_some() {
            names.push("PostgreSQL UPDATE (sqlx)");
        }
        let flushed = Arc::new(Mutex::new(Sample::default()));
        let write = {
            let (conn, writer, pg) = (self.conn.clone(), writer.clone(), pg.clone());
            move |contender: usize, id: u64, views: u64| {
                let (mut conn, writer, pg) = (conn.clone(), writer.clone(), pg.clone());
                async move {
                    match contender {
                        0 => {
                            let json = serde_json::to_vec(&views).unwrap_or_default();
                            let _: Result<(), _> = redis::cmd("SET")
                                .arg(format!("b_set:{id}"))
                                .arg(json)
                                .query_async(&mut conn)
                                .await;
                        }
                        1 => writer.write(&id, &views).await.expect("a durable write"),
                        _ => {
                            if let Some(pg) = &pg {
                                update(pg, id, views).await.expect("an UPDATE");
                            }
                        }
                    }
                }
            }
        };
        // Flushes after a write-behind round, timing the flush apart.
        let settle = |contender: usize, sample: Sample| {
            let (writer, flushed) = (writer.clone(), flushed.clone());
            async move {
                if contender == 1 {
                    let started = Instant::now();
                    writer.flush().await.expect("flush");
                    let mut flushed = flushed.lock().unwrap_or_else(|e| e.into_inner());
                    flushed.latencies.push(started.elapsed());
                }
                sample
            }
        };
        let views = Arc::new(AtomicU64::new(1));
        let calls = if self.quick { 300 } else { 1500 };
        let mut samples = interleave(names.len(), self.rounds(8), |c| {
            let (write, zipf, views, settle) =
                (write.clone(), zipf.clone(), views.clone(), &settle);
            async move {
                let sample = sequential(calls, |_| {
                    let id = zipf.sample() as u64;
                    write(c, id, views.fetch_add(1, Ordering::Relaxed))
                })
                .await;
                settle(c, sample).await
            }
        })
        .await;
        rows_for(
            "write, 1 task, Zipf keys",
            &names,
            &mut samples,
            &mut self.rows,
        );
        let total: u64 = if self.quick { 20_000 } else { 64_000 };
        let tasks = 64u64;
        let before = cache.stats();
        let calls_before = db_calls.load(Ordering::Relaxed);
        let samples = interleave(names.len(), self.rounds(4), |c| {
            let (write, zipf, views, settle) =
                (write.clone(), zipf.clone(), views.clone(), &settle);
            async move {
                let started = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let (write, zipf, views) = (write.clone(), zipf.clone(), views.clone());
                        tokio::spawn(async move {
                            for _ in 0..total / tasks {
                                let id = zipf.sample() as u64;
                                write(c, id, views.fetch_add(1, Ordering::Relaxed)).await;
                            }
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.expect("a bench task panicked");
                }
                let calls = total / tasks * tasks;
                settle(c, Sample::of_throughput(calls, started.elapsed())).await
            }
        })
        .await;
        let set = samples[0].throughput();
        for (name, sample) in names.iter().zip(&samples) {
            self.rows.push(Row {
                case: format!("write throughput, {tasks} tasks, Zipf keys"),
                contender: (*name).to_owned(),
                median: micros(sample.busy / sample.calls.max(1) as u32),
                p99: "".to_owned(),
                throughput: format!("{:.0}/s", sample.throughput()),
                ratio: format!("{:.2}x throughput", sample.throughput() / set),
            });
        }
        let after = cache.stats();
        let settled = after.behind_settled - before.behind_settled;
        let batches = (after.behind_batches - before.behind_batches).max(1);
        let db = db_calls.load(Ordering::Relaxed) - calls_before;
        let mut flushed = flushed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.rows.push(Row {
            case: format!("write-behind consumer, {tasks} tasks, Zipf keys"),
            contender: format!(
                "{} entries per batch; {db} database writes for {settled} writes ({:.0}% saved by coalescing)",
                settled / batches,
                100.0 * (1.0 - db as f64 / settled.max(1) as f64)
            ),
            median: micros(flushed.median()),
            p99: micros(flushed.percentile(0.99)),
            throughput: "".to_owned(),
            ratio: "median and p99: flush after a round".to_owned(),
        });
    }
}
