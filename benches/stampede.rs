//! Stampede: 1,000 concurrent callers on a cold key with a 20 ms loader,
//! stampede protection on and off, interleaved in one process, on the
//! in-memory backend and on a `redis-server` started for the run.
//!
//! `cargo bench --bench stampede` (`-- --quick` for fewer rounds).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{cached, Cache};

const CALLERS: usize = 1000;
const LOADER: Duration = Duration::from_millis(20);

#[cached(group = "bench_on", skip(cache, calls), cache = cache, lock = true)]
async fn protected(cache: &Cache, calls: &AtomicUsize, round: u64) -> u64 {
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(LOADER).await;
    round
}

#[cached(group = "bench_off", skip(cache, calls), cache = cache, lock = false)]
async fn unprotected(cache: &Cache, calls: &AtomicUsize, round: u64) -> u64 {
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(LOADER).await;
    round
}

#[derive(Default)]
struct Sample {
    loader_calls: Vec<usize>,
    latencies: Vec<Duration>,
}

async fn round(cache: &Cache, protection: bool, round: u64, sample: &mut Sample) {
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let value = if protection {
                    protected(&cache, &calls, round).await
                } else {
                    unprotected(&cache, &calls, round).await
                };
                assert_eq!(value, round);
                started.elapsed()
            })
        })
        .collect();
    for task in tasks {
        sample
            .latencies
            .push(task.await.expect("a caller panicked"));
    }
    sample.loader_calls.push(calls.load(Ordering::Relaxed));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn row(backend: &str, protection: &str, mut sample: Sample) -> String {
    sample.latencies.sort();
    let calls = &sample.loader_calls;
    let mean_calls = calls.iter().sum::<usize>() as f64 / calls.len() as f64;
    format!(
        "| {backend} | {protection} | {mean_calls:.1} (min {}, max {}) | {:.1} | {:.1} |",
        calls.iter().min().copied().unwrap_or(0),
        calls.iter().max().copied().unwrap_or(0),
        percentile(&sample.latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&sample.latencies, 0.99).as_secs_f64() * 1e3,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        10
    };
    let server = support::RedisServer::start();
    let backends = [
        ("memory", Cache::in_memory()),
        ("redis", server.cache().await),
    ];
    println!("{CALLERS} concurrent callers on a cold key, {LOADER:?} loader, {rounds} rounds each, on and off interleaved\n");
    println!("| backend | protection | loader calls per round | p50 ms | p99 ms |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, cache) in backends {
        let (mut on, mut off) = (Sample::default(), Sample::default());
        for r in 0..rounds {
            round(&cache, true, r, &mut on).await;
            round(&cache, false, r, &mut off).await;
        }
        println!("{}", row(name, "on", on));
        println!("{}", row(name, "off", off));
    }
}
