//! Side-by-side benchmarks: `#[cached]` against hand-written cache-aside on
//! redis-rs, the `cached` crate's async Redis store, `redis-benchmark`, a
//! SCAN+UNLINK group deletion, moka, the HTTP layer against no layer
//! and tower-http-cache's Redis backend, and write-behind against a plain
//! `SET` and (with `DATABASE_URL=postgres://...`) a direct `UPDATE`, on one
//! `redis-server` this binary starts. Contenders run interleaved, round after round, in this process;
//! each ratio compares medians of those interleaved samples.
//!
//! ```text
//! cargo bench --bench compare              # full run, writes BENCHMARKS.md
//! cargo bench --bench compare -- --quick   # fewer rounds, under a minute
//! cargo bench --bench compare -- --throughput    # only the hit throughput cases, printed
//! cargo bench --bench compare -- --throughput --quick --tasks=16 --rounds=30   # one concurrency, more rounds
//! cargo bench --bench compare -- --miss          # only the miss case, printed
//! cargo bench --bench compare -- --in-memory     # only the in-process hit cases, printed
//! cargo bench --bench compare -- --write-behind  # only the write-behind cases, printed
//! cargo bench --bench compare -- --stampede      # only the stampede, printed
//! cargo bench --bench compare -- --dependencies  # only derived entries' costs, printed
//! cargo bench --bench compare -- --bulk          # only bulk calls (each), printed
//! cargo bench --bench compare -- --http          # only the HTTP layer's hits (1 and 64 connections), printed
//! cargo bench --bench compare -- --propagation   # only the local tier's invalidation delays, printed
//! cargo bench --bench compare -- --throughput --rtt=1ms   # every contender through a 1 ms round trip
//! cargo bench --bench compare -- --throughput --baseline-nodelay   # hand-written with TCP_NODELAY, as the cache sets it
//! cargo bench --bench compare -- --profile-hit   # only #[cached] hits (for callgrind)
//! cargo bench --bench compare -- --profile-memory-hit   # the same, in memory (--hits=N, 200k)
//! cargo bench --bench compare -- --profile-moka-hit     # moka's hit, the in-memory baseline
//! cargo bench --bench compare -- --profile-bulk=ours    # bulk reads of 100 cached ids (=hand; --hits=N calls)
//! cargo bench --bench compare -- --profile-http=ours    # GETs through one HTTP contender (=none|theirs|local|memory; --hits=N, --tasks=N)
//! cargo bench --bench compare -- --profile-concurrent=ours   # 256 tasks, 10k keys (=hand; --keys=1, --tasks=N)
//! ```

#[path = "../../tests/support/mod.rs"]
mod support;

mod bulk;
mod contenders;
mod dependencies;
mod harness;
mod hits;
mod http_layer;
mod in_process;
mod misses;
mod stampede;
mod write_behind;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::Cache;
use redis::aio::ConnectionManager;

use crate::contenders::*;
use crate::harness::*;

/// The number a `--name=N` argument gives, if any.
fn number<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .find_map(|a| a.strip_prefix(name))
        .and_then(|n| n.parse().ok())
}

/// Whether `--rtt=` asks for a delay proxy.
fn bench_rtt(args: &[String]) -> bool {
    args.iter().any(|a| a.starts_with("--rtt="))
}

/// The round trip of a `PING` on `conn`: median and p99 of 200, in order.
async fn round_trip(conn: &ConnectionManager) -> String {
    let mut conn = conn.clone();
    let mut took = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        let _: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        took.push(started.elapsed());
    }
    took.sort();
    format!("median {:?}, p99 {:?} (200 PINGs)", took[100], took[197])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let server = support::RedisServer::start();
    // `--rtt=1ms`: every contender reaches Redis through a proxy that delays
    // each byte by half that, each way.
    let proxy = args
        .iter()
        .find_map(|a| a.strip_prefix("--rtt="))
        .and_then(|rtt| rtt.trim_end_matches("ms").parse::<f64>().ok())
        .map(|ms| support::Proxy::delayed(server.port(), Duration::from_secs_f64(ms / 2000.0)));
    let url = proxy
        .as_ref()
        .map_or_else(|| server.url(), |proxy| proxy.url());
    let _ = URL.set(url.clone());
    let cache = Cache::builder()
        .redis(url.clone())
        .build()
        .await
        .expect("cache");
    // The hand-written baseline keeps redis-rs's defaults, as a user's code
    // does; `--baseline-nodelay` sets TCP_NODELAY on it, as the cache does.
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).expect("url");
    let info = if args.iter().any(|a| a == "--baseline-nodelay") {
        info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
    } else {
        info
    };
    let conn = ConnectionManager::new(redis::Client::open(info).expect("url"))
        .await
        .expect("connection");
    // Every contender starts connected: the hand-written connection above,
    // the cache once its first contact found the server serving.
    support::first_contact(&cache).await;

    if args.iter().any(|a| a == "--profile-hit") {
        ours_small(&cache, 1).await;
        for _ in 0..20_000 {
            std::hint::black_box(ours_small(&cache, 1).await);
        }
        return;
    }
    if let Some(who) = args
        .iter()
        .find_map(|a| a.strip_prefix("--profile-concurrent="))
    {
        // 256 tasks (`--tasks=N`) reading warm keys (`--keys=1`: one hot
        // key), `ours` or `hand`; prints the server's commands per read.
        let arg = |name: &str, default: u64| number(&args, name).unwrap_or(default);
        let (keys, reads) = (arg("--keys=", 10_000), arg("--reads=", 200));
        let tasks = arg("--tasks=", 256);
        for id in 0..keys {
            ours_small(&cache, id).await;
            by_hand(&conn, format!("hand:s:{id}"), async { small(id) }).await;
        }
        // A miss returns before its fill's reply: let the warm-up's land,
        // so that the reads alone are measured.
        while cache.stats().stores < keys {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let hand = who == "hand";
        let before = server_commands(&conn).await;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (cache, conn) = (cache.clone(), conn.clone());
                tokio::spawn(async move {
                    for i in 0..reads {
                        let id = (i * 7919 + t * 104_729) % keys;
                        if hand {
                            by_hand(&conn, format!("hand:s:{id}"), async { small(0) }).await;
                        } else {
                            std::hint::black_box(ours_small(&cache, id).await);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a profile task panicked");
        }
        let commands = server_commands(&conn).await - before - 1; // the INFO itself
        println!(
            "{who}: {:.3} server commands per read",
            commands as f64 / (tasks * reads).max(1) as f64
        );
        return;
    }
    let hits = number(&args, "--hits=").unwrap_or(200_000);
    if args.iter().any(|a| a == "--profile-memory-hit") {
        let cache = Cache::in_memory();
        ours_small(&cache, 1).await;
        for _ in 0..hits {
            std::hint::black_box(ours_small(&cache, 1).await);
        }
        return;
    }
    if args.iter().any(|a| a == "--profile-moka-hit") {
        let moka: moka::future::Cache<u64, Arc<Small>> = moka::future::Cache::new(10_000);
        moka.insert(1, Arc::new(small(1))).await;
        for _ in 0..hits {
            std::hint::black_box(moka.get(&1).await);
        }
        return;
    }

    if let Some(who) = args.iter().find_map(|a| a.strip_prefix("--profile-bulk=")) {
        bulk::profile(who, &cache, &conn, hits).await;
        return;
    }
    if let Some(who) = args.iter().find_map(|a| a.strip_prefix("--profile-http=")) {
        let tasks = number(&args, "--tasks=").unwrap_or(1);
        http_layer::profile(who, &url, conn, hits, tasks).await;
        return;
    }

    if bench_rtt(&args) {
        println!("round trip to Redis: {}", round_trip(&conn).await);
    }
    let started = Instant::now();
    let throughput_only = args.iter().any(|a| a == "--throughput");
    let mut bench = Bench {
        quick,
        fixed_rounds: number(&args, "--rounds="),
        only_tasks: number(&args, "--tasks=").filter(|_| throughput_only),
        throughput_only,
        _redis: (server, proxy),
        url,
        cache,
        conn,
        rows: Vec::new(),
        plot: Vec::new(),
    };
    // One case alone, its rows printed and nothing written.
    let only = [
        "--throughput",
        "--miss",
        "--in-memory",
        "--write-behind",
        "--stampede",
        "--dependencies",
        "--bulk",
        "--http",
        "--propagation",
    ]
    .into_iter()
    .find(|flag| args.iter().any(|a| a == flag));
    if let Some(flag) = only {
        match flag {
            "--throughput" => bench.hit_throughput().await,
            "--miss" => bench.miss_path().await,
            "--in-memory" => bench.in_memory_hit().await,
            "--stampede" => bench.stampede().await,
            "--dependencies" => bench.dependencies().await,
            "--bulk" => bench.bulk().await,
            "--http" => bench.http_hit().await,
            "--propagation" => bench.propagation().await,
            _ => bench.write_behind().await,
        }
        for r in &bench.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.case, r.contender, r.median, r.p99, r.throughput, r.ratio
            );
        }
        return;
    }
    bench.hit_latency().await;
    bench.hit_throughput().await;
    bench.miss_path().await;
    bench.group_eviction().await;
    bench.stampede().await;
    bench.in_memory_hit().await;
    bench.propagation().await;
    bench.http_hit().await;
    bench.write_behind().await;
    bench.dependencies().await;
    bench.bulk().await;

    let mut conn = bench.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut table = String::from("| case | contender | median | p99 | throughput | ratio |\n| --- | --- | --- | --- | --- | --- |\n");
    for r in &bench.rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            r.case, r.contender, r.median, r.p99, r.throughput, r.ratio
        );
    }
    println!("{table}");
    println!(
        "{} cores, Redis {version}, {:?}{}",
        cores,
        started.elapsed(),
        if quick { " (--quick)" } else { "" }
    );
    let report = format!(
        "# Benchmarks\n\nMeasured by `cargo bench --bench compare{}` on {cores} cores against Redis {version} on loopback, \
         all contenders in one process, interleaved round by round; ratios compare medians (first row of each case is \
         the baseline unless the ratio column says otherwise); a throughput ratio is the median over rounds of the \
         ratio within a round.\n\n{table}\n![hit throughput vs concurrency](benchmarks/throughput.svg)\n",
        if quick { " -- --quick" } else { "" }
    );
    // At the workspace root, wherever cargo runs this from.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::create_dir_all(root.join("benchmarks")).expect("benchmarks/");
    std::fs::write(root.join("benchmarks/throughput.svg"), svg(&bench.plot))
        .expect("write the plot");
    // The shop's load test (`cargo bench -p shop`) keeps its own section.
    let path = root.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let shop = existing
        .find("<!-- shop:start -->")
        .map_or("", |at| &existing[at..]);
    let report = format!("{report}\n{shop}");
    std::fs::write(path, report.trim_end().to_owned() + "\n").expect("write BENCHMARKS.md");
}
