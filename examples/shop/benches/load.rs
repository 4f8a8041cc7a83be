//! The end-to-end load test: the shop binary, started twice on loopback (with
//! the cache on a `redis-server` this bench starts, and with `SHOP_CACHE=off`:
//! the same code with caching switched off), then a third time with Redis
//! killed halfway through and started again, then twice with the database
//! down for 10 s in the middle of the run (a simulated outage: every query
//! fails), with fail-safe and without, and TTLs a hundredth of the shop's
//! (so that entries expire while it is down). Each run takes HTTP load from
//! 64 concurrent clients for a fixed time: keys drawn Zipf(1.0) over the
//! 10,000 products, 85% product reads, 10% list reads, 5% writes (`PUT`).
//!
//! A read is stale when it shows a product at a version older than the
//! newest write acknowledged to any client before the read was sent.
//!
//! ```text
//! cargo bench -p shop              # 40 s a run after 5 s of warm-up; writes BENCHMARKS.md
//! cargo bench -p shop -- --quick   # 15 s a run
//! ```
//!
//! On PostgreSQL when `DATABASE_URL` names one, else on SQLite files.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;

const PRODUCTS: usize = 10_000;
const CLIENTS: usize = 64;
const CATEGORIES: [&str; 8] = [
    "kitchen", "garden", "books", "toys", "music", "tools", "sports", "office",
];

/// Product ids by Zipf(1.0): the cumulative weights, searched per draw.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Zipf(cdf.into_iter().map(|c| c / total).collect())
    }
    fn draw(&self) -> i64 {
        let u = fastrand::f64();
        self.0.partition_point(|&c| c < u) as i64 + 1
    }
}

/// What one run measured.
#[derive(Default)]
struct Run {
    name: String,
    seconds: f64,
    requests: u64,
    reads: u64,
    writes: u64,
    failed: u64,
    stale: u64,
    latencies_us: Vec<u32>,
    /// Requests completed in each second of the run.
    per_second: Vec<u64>,
    /// The HTTP layer's hit rate in each second, from `/metrics`.
    hit_rate: Vec<f64>,
    /// The hit rate of the HTTP layer's list pages over the run.
    list_rate: f64,
    /// Database queries made to read (the server counts them).
    db_reads: f64,
    hits: f64,
    misses: f64,
    /// From Redis answering again to the first cache hit, polled every
    /// 20 ms (`None`: none within 10 s).
    hits_back: Option<Duration>,
    /// Whole seconds from Redis answering again to throughput back at 80%
    /// of what it was before the kill (`None`: not within the run).
    throughput_back: Option<u64>,
    /// Of a database outage: what happened to the reads made during it.
    outage: Option<OutageSeen>,
}

/// The reads made while the database was down.
#[derive(Default)]
struct OutageSeen {
    reads: u64,
    /// Failed reads of a page the run had read before, and no write
    /// acknowledged since (a value was cached, and nothing replaced it).
    failed_known: u64,
    /// Failed reads of a page read before, with a write to it (or to a
    /// product it lists) acknowledged since: the write may have left
    /// nothing to stand in.
    failed_written: u64,
    /// Failed reads of a page never read before (nothing to stand in).
    failed_cold: u64,
    /// Values that stood in for a failing query (`cache_fail_safe_total`).
    stood_in: f64,
    /// Read queries tried, in all and at most for one page read before and
    /// not written since.
    tried: u64,
    most_tried_known: u32,
}

/// A fault injected halfway through a run.
enum Fault<'r> {
    /// Redis killed, and started again 3 s later.
    Redis(&'r mut support::RedisServer),
    /// The database down for 10 s (`/admin/database`).
    Database,
}

/// Where a read page is tracked: a product by id, a list page after them.
fn page_slot(category: usize, page: usize) -> usize {
    PRODUCTS + 1 + category * 3 + page
}

/// The products a page shows: categories are dealt out in turn, and no
/// product is created or deleted.
fn page_ids(slot: usize) -> Vec<i64> {
    if slot <= PRODUCTS {
        return vec![slot as i64];
    }
    let (category, page) = ((slot - PRODUCTS - 1) / 3, (slot - PRODUCTS - 1) % 3);
    let first = category as i64 + 1 + 8 * 20 * page as i64;
    (0..20).map(|j| first + 8 * j).collect()
}

/// Milliseconds since `started`, plus one (zero: never).
fn stamp(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64 + 1
}

impl Run {
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let at = ((self.latencies_us.len().max(1) - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us.get(at).copied().unwrap_or(0)) / 1000.0
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// The shop as a child process.
struct Shop {
    child: Child,
    base: String,
}

impl Shop {
    async fn start(database: &str, cache: Option<&str>, env: &[(&str, &str)]) -> Shop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
        command
            .env("DATABASE_URL", database)
            .env("SHOP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        match cache {
            Some(url) => command.env("REDIS_URL", url).env_remove("SHOP_CACHE"),
            None => command.env("SHOP_CACHE", "off").env_remove("REDIS_URL"),
        };
        let child = command.spawn().expect("the shop binary starts");
        let shop = Shop {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let up = client.get(format!("{}/products/1", shop.base)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return shop;
            }
            assert!(
                Instant::now() < deadline,
                "the shop did not answer within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self, client: &Client) -> String {
        let response = client.get(format!("{}/metrics", self.base)).send().await;
        match response {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the series of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How long after now the shop's cache serves its first hit, by
/// `cache_gets_total{result="hit"}` polled every 20 ms; `None` when none
/// comes within 10 s.
async fn first_hit(client: Client, base: String) -> Option<Duration> {
    let since = Instant::now();
    let hits = |text: &str| metric(text, "cache_gets_total", &["result=\"hit\""]);
    let url = format!("{base}/metrics");
    let fetch = || async { client.get(&url).send().await.ok()?.text().await.ok() };
    let at_start = hits(&fetch().await.unwrap_or_default());
    while since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if fetch().await.is_some_and(|text| hits(&text) > at_start) {
            return Some(since.elapsed());
        }
    }
    None
}

fn http_hits(text: &str) -> (f64, f64) {
    group_hits(text, &["http_products", "http_lists"])
}

/// Hits and misses of the HTTP layer's list pages.
fn list_hits(text: &str) -> (f64, f64) {
    group_hits(text, &["http_lists"])
}

/// Hits and misses in `groups`, from `/metrics`.
fn group_hits(text: &str, groups: &[&str]) -> (f64, f64) {
    let count = |result| {
        groups
            .iter()
            .map(|group| {
                let group = format!("group=\"{group}\"");
                metric(text, "cache_gets_total", &[&group, result])
            })
            .sum::<f64>()
    };
    (count("result=\"hit\""), count("result=\"miss\""))
}

/// Drives one run, with `fault` injected halfway.
async fn drive(
    name: &str,
    shop: &Shop,
    zipf: &Arc<Zipf>,
    length: Duration,
    mut fault: Option<Fault<'_>>,
) -> Run {
    let client = Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("a client");
    let acked: Arc<Vec<AtomicI64>> = Arc::new((0..=PRODUCTS).map(|_| AtomicI64::new(0)).collect());
    let seconds = length.as_secs() as usize + 1;
    let per_second: Arc<Vec<AtomicU64>> =
        Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    // Reads, writes, failed requests, stale products shown; during a
    // database outage: reads, and failed reads of pages read before (not
    // written since, written since), and of pages never read.
    let counts: Arc<[AtomicU64; 8]> = Arc::new(Default::default());
    // When each page (products by id, then list pages) was last read, when
    // each product's last write was acknowledged, and whether the database
    // is down now.
    let read_at: Arc<Vec<AtomicU64>> = Arc::new(
        (0..page_slot(CATEGORIES.len(), 0))
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let written_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..=PRODUCTS).map(|_| AtomicU64::new(0)).collect());
    let written_since = {
        let (read_at, written_at) = (read_at.clone(), written_at.clone());
        move |slot: usize| {
            let read = read_at[slot].load(Ordering::SeqCst);
            page_ids(slot)
                .iter()
                .any(|id| written_at[*id as usize].load(Ordering::SeqCst) > read)
        }
    };
    let down = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let before = shop.metrics(&client).await;
    let started = Instant::now();
    let deadline = started + length;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|worker| {
            let (client, base, zipf) = (client.clone(), shop.base.clone(), zipf.clone());
            let (acked, per_second, counts, latencies) = (
                acked.clone(),
                per_second.clone(),
                counts.clone(),
                latencies.clone(),
            );
            let (read_at, written_at, down) = (read_at.clone(), written_at.clone(), down.clone());
            let written_since = written_since.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut writes = 0u64;
                while Instant::now() < deadline {
                    let roll = fastrand::f64();
                    let sent = Instant::now();
                    let ok = if roll < 0.05 {
                        let id = zipf.draw();
                        writes += 1;
                        let body = serde_json::json!({
                            "name": format!("w{worker}-{writes}"),
                            "category": CATEGORIES[(id as usize - 1) % CATEGORIES.len()],
                            "price": 100 + writes as i64,
                        });
                        let url = format!("{base}/products/{id}");
                        match client.put(url).json(&body).send().await {
                            Ok(r) if r.status().is_success() => {
                                let product: Value = r.json().await.unwrap_or_default();
                                let version = product["version"].as_i64().unwrap_or(0);
                                acked[id as usize].fetch_max(version, Ordering::SeqCst);
                                written_at[id as usize].fetch_max(stamp(started), Ordering::SeqCst);
                                counts[1].fetch_add(1, Ordering::Relaxed);
                                true
                            }
                            _ => false,
                        }
                    } else {
                        // The ids the response may show, with the newest
                        // version acknowledged for each, as of now. A list
                        // page is known in advance: categories are dealt out
                        // in turn, and no product is created or deleted.
                        let (url, ids, slot): (String, Vec<i64>, usize) = if roll < 0.15 {
                            let category = fastrand::usize(..CATEGORIES.len());
                            let page = fastrand::usize(..3);
                            let url = format!(
                                "{base}/products?category={}&page={page}",
                                CATEGORIES[category]
                            );
                            let first = category as i64 + 1 + 8 * 20 * page as i64;
                            let ids = (0..20).map(|j| first + 8 * j).collect();
                            (url, ids, page_slot(category, page))
                        } else {
                            let id = zipf.draw();
                            (format!("{base}/products/{id}"), vec![id], id as usize)
                        };
                        let outage = down.load(Ordering::SeqCst);
                        let sent_at = stamp(started);
                        if outage {
                            counts[4].fetch_add(1, Ordering::Relaxed);
                        }
                        let floors: Vec<(i64, i64)> = ids
                            .into_iter()
                            .map(|id| (id, acked[id as usize].load(Ordering::SeqCst)))
                            .collect();
                        match client.get(url).send().await {
                            Ok(r) if r.status().is_success() => {
                                let body: Value = r.json().await.unwrap_or_default();
                                let shown: Vec<&Value> = match body.as_array() {
                                    Some(list) => list.iter().collect(),
                                    None => vec![&body],
                                };
                                for product in shown {
                                    let id = product["id"].as_i64().unwrap_or(0);
                                    let version = product["version"].as_i64().unwrap_or(0);
                                    let floor = floors
                                        .iter()
                                        .find(|(shown, _)| *shown == id)
                                        .map_or(0, |(_, floor)| *floor);
                                    if version < floor {
                                        counts[3].fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                counts[0].fetch_add(1, Ordering::Relaxed);
                                read_at[slot].fetch_max(sent_at, Ordering::SeqCst);
                                true
                            }
                            _ => {
                                if outage {
                                    let at = match read_at[slot].load(Ordering::SeqCst) {
                                        0 => 7,
                                        _ if written_since(slot) => 6,
                                        _ => 5,
                                    };
                                    counts[at].fetch_add(1, Ordering::Relaxed);
                                }
                                false
                            }
                        }
                    };
                    if !ok {
                        counts[2].fetch_add(1, Ordering::Relaxed);
                    }
                    mine.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    let second = started.elapsed().as_secs() as usize;
                    if let Some(bucket) = per_second.get(second) {
                        bucket.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    // Once a second: the HTTP layer's hit rate; halfway, the fault.
    let mut hit_rate = Vec::new();
    let mut last = http_hits(&before);
    let mut returned = None;
    let mut hits_back = None;
    let half = length.as_secs() / 2;
    let mut tried = None;
    let admin = format!("{}/admin/database", shop.base);
    for second in 1..=length.as_secs() {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let now = http_hits(&shop.metrics(&client).await);
        let (hits, misses) = (now.0 - last.0, now.1 - last.1);
        hit_rate.push(if hits + misses > 0.0 {
            hits / (hits + misses)
        } else {
            0.0
        });
        last = now;
        match fault.as_mut() {
            Some(Fault::Redis(server)) if second == half => server.kill(),
            Some(Fault::Redis(server)) if second == half + 3 => {
                server.restart();
                returned = Some(second as usize);
                hits_back = Some(tokio::spawn(first_hit(client.clone(), shop.base.clone())));
            }
            Some(Fault::Database) if second == half.saturating_sub(5) => {
                let sent = client.put(&admin).body("down").send().await;
                assert!(sent.is_ok_and(|r| r.status().is_success()), "outage on");
                down.store(true, Ordering::SeqCst);
            }
            Some(Fault::Database) if second == half + 5 => {
                // The pages read before, and not written since, as the
                // outage ends.
                let kept: Vec<bool> = (0..read_at.len())
                    .map(|at| read_at[at].load(Ordering::SeqCst) > 0 && !written_since(at))
                    .collect();
                let sent = client.put(&admin).body("up").send().await;
                assert!(sent.is_ok_and(|r| r.status().is_success()), "outage off");
                down.store(false, Ordering::SeqCst);
                let report = client.get(&admin).send().await.expect("the outage report");
                let counts: std::collections::HashMap<String, u32> =
                    report.json().await.expect("the outage report as JSON");
                tried = Some((counts, kept));
            }
            _ => {}
        }
    }
    for worker in workers {
        worker.await.expect("a client task");
    }
    let after = shop.metrics(&client).await;
    let per_second: Vec<u64> = per_second
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let throughput_back = returned.and_then(|at| {
        let before_kill = &per_second[1..per_second.len() / 2 - 1];
        let normal = before_kill.iter().sum::<u64>() as f64 / before_kill.len().max(1) as f64;
        // Whole seconds of the run only: the last bucket may be cut short.
        let whole = &per_second[at..length.as_secs() as usize];
        let late = whole.iter().position(|&n| n as f64 >= 0.8 * normal)?;
        u64::try_from(late).ok()
    });
    let hits_back = match hits_back {
        Some(task) => task.await.expect("the hit watcher"),
        None => None,
    };
    let (hits, misses) = {
        let (h1, m1) = http_hits(&before);
        let (h2, m2) = http_hits(&after);
        (h2 - h1, m2 - m1)
    };
    let list_rate = {
        let (h1, m1) = list_hits(&before);
        let (h2, m2) = list_hits(&after);
        (h2 - h1) / (h2 - h1 + m2 - m1).max(1.0)
    };
    let outage = tried.map(|(tried, kept)| {
        // What a query read, as the slot of the page it read for.
        let slot = |what: &str| -> Option<usize> {
            let mut words = what.split(' ');
            match (words.next()?, words.next()?, words.next()) {
                ("product", id, None) => id.parse().ok(),
                ("list", category, Some(page)) => {
                    let category = CATEGORIES.iter().position(|c| *c == category)?;
                    Some(page_slot(category, page.parse().ok()?))
                }
                _ => None,
            }
        };
        let stood = |text: &str| metric(text, "cache_fail_safe_total", &[]);
        OutageSeen {
            reads: counts[4].load(Ordering::Relaxed),
            failed_known: counts[5].load(Ordering::Relaxed),
            failed_written: counts[6].load(Ordering::Relaxed),
            failed_cold: counts[7].load(Ordering::Relaxed),
            stood_in: stood(&after) - stood(&before),
            tried: tried.values().map(|n| u64::from(*n)).sum(),
            most_tried_known: tried
                .iter()
                .filter(|(what, _)| slot(what).is_some_and(|at| kept[at]))
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0),
        }
    });
    let latencies_us = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    Run {
        name: name.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        requests: latencies_us.len() as u64,
        reads: counts[0].load(Ordering::Relaxed),
        writes: counts[1].load(Ordering::Relaxed),
        failed: counts[2].load(Ordering::Relaxed),
        stale: counts[3].load(Ordering::Relaxed),
        latencies_us,
        per_second: per_second[..length.as_secs() as usize].to_vec(),
        hit_rate,
        db_reads: metric(&after, "shop_db_queries_total", &["for=\"read\""])
            - metric(&before, "shop_db_queries_total", &["for=\"read\""]),
        hits,
        misses,
        list_rate,
        hits_back,
        throughput_back,
        outage,
    }
}

fn svg(runs: &[Run]) -> String {
    let (width, height, pad) = (720.0, 220.0, 40.0);
    let seconds = runs
        .iter()
        .map(|r| r.per_second.len())
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let top = runs
        .iter()
        .flat_map(|r| r.per_second.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let colours = ["#1f77b4", "#d62728", "#2ca02c"];
    let x = |s: f64| pad + s / (seconds - 1.0) * (width - 2.0 * pad);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        2.0 * height + 20.0
    );
    for (panel, (title, max)) in [("requests per second", top), ("HTTP layer hit rate", 1.0)]
        .iter()
        .enumerate()
    {
        let y0 = panel as f64 * (height + 20.0);
        let y = |v: f64| y0 + height - pad / 2.0 - v / max * (height - pad);
        let _ = writeln!(
            out,
            "<text x=\"{pad}\" y=\"{}\">{title} (max {max:.0})</text>",
            y0 + 14.0
        );
        let _ = writeln!(
            out,
            "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
            y(0.0),
            width - pad,
            y(0.0)
        );
        for (run, colour) in runs.iter().zip(colours) {
            let points: Vec<String> = match panel {
                0 => run
                    .per_second
                    .iter()
                    .enumerate()
                    .map(|(s, &n)| format!("{:.1},{:.1}", x(s as f64), y(n as f64)))
                    .collect(),
                _ => run
                    .hit_rate
                    .iter()
                    .enumerate()
                    .map(|(s, &h)| format!("{:.1},{:.1}", x(s as f64), y(h)))
                    .collect(),
            };
            if points.len() > 1 {
                let _ = writeln!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    points.join(" ")
                );
            }
        }
    }
    for (i, (run, colour)) in runs.iter().zip(colours).enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            pad + 230.0 * i as f64,
            2.0 * height + 12.0,
            run.name
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Replaces the shop section of BENCHMARKS.md (between its markers), or
/// appends it.
fn write_report(section: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = ("<!-- shop:start -->", "<!-- shop:end -->");
    let block = format!("{start}\n{section}{end}\n");
    let report = match (existing.find(start), existing.find(end)) {
        (Some(a), Some(b)) if a < b => format!(
            "{}{block}{}",
            &existing[..a],
            &existing[b + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n{block}", existing.trim_end()),
    };
    std::fs::write(&path, report).expect("write BENCHMARKS.md");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let length = Duration::from_secs(if quick { 15 } else { 40 });
    let postgres = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"));
    let database = |run: &str| match &postgres {
        Some(url) => url.clone(),
        None => {
            let path =
                std::env::temp_dir().join(format!("shop-load-{}-{run}.db", std::process::id()));
            let _ = std::fs::remove_file(&path);
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let engine = if postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let zipf = Arc::new(Zipf::new(PRODUCTS, 1.0));
    let mut redis = support::RedisServer::start();
    let mut runs = Vec::new();
    // Each run is measured after 5 s of the same load, unreported: the
    // steady state, whichever run comes first.
    let warm_up = Duration::from_secs(5);
    for (name, cached) in [("cached", true), ("uncached", false)] {
        let url = redis.url();
        let shop = Shop::start(&database(name), cached.then_some(url.as_str()), &[]).await;
        drive("warm-up", &shop, &zipf, warm_up, None).await;
        runs.push(drive(name, &shop, &zipf, length, None).await);
    }
    let url = redis.url();
    let shop = Shop::start(&database("outage"), Some(&url), &[]).await;
    drive("warm-up", &shop, &zipf, warm_up, None).await;
    runs.push(
        drive(
            "cached, Redis killed halfway for 3 s",
            &shop,
            &zipf,
            length,
            Some(Fault::Redis(&mut redis)),
        )
        .await,
    );
    drop(shop);
    // The database down for 10 s, with TTLs a hundredth of the shop's.
    let mut outages = Vec::new();
    for (name, fail_safe) in [("fail-safe", "on"), ("no fail-safe", "off")] {
        let url = redis.url();
        let env = [
            ("SHOP_FAULTS", "on"),
            ("SHOP_TTL_SCALE", "0.01"),
            ("SHOP_FAIL_SAFE", fail_safe),
        ];
        let shop = Shop::start(&database(name), Some(&url), &env).await;
        drive("warm-up", &shop, &zipf, warm_up, None).await;
        let name = format!("database down 10 s, {name}");
        outages.push(drive(&name, &shop, &zipf, length, Some(Fault::Database)).await);
    }

    let mut table = String::from(
        "| run | req/s | p50 ms | p99 ms | requests | of them writes | failed | stale reads | DB queries per read | HTTP hit rate | list pages' hit rate |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for run in &mut runs {
        let per_read = run.db_reads / run.reads.max(1) as f64;
        let rate = run.hits / (run.hits + run.misses).max(1.0);
        let (p50, p99) = (run.percentile(0.5), run.percentile(0.99));
        let _ = writeln!(
            table,
            "| {} | {:.0} | {p50:.2} | {p99:.2} | {} | {} | {} | {} | {per_read:.3} | {:.1}% | {:.1}% |",
            run.name,
            run.rps(),
            run.requests,
            run.writes,
            run.failed,
            run.stale,
            100.0 * rate,
            100.0 * run.list_rate
        );
    }
    let speedup = runs[0].rps() / runs[1].rps().max(1e-9);
    let remaining = length.as_secs() - (length.as_secs() / 2 + 3);
    let hits_back = runs[2]
        .hits_back
        .map_or("no hit within 10 s".to_owned(), |took| {
            format!("the first cache hit {:.2} s", took.as_secs_f64())
        });
    let throughput_back = runs[2].throughput_back.map_or(
        format!("not within the run's last {remaining} s (the cache refills from an empty Redis)"),
        |s| format!("within {s} s"),
    );
    let recovery =
        format!("{hits_back} after Redis answered again; throughput back at 80% {throughput_back}");
    let mut outage_table = String::from(
        "| run | req/s | reads during the outage | failed, page read before and not written since | failed, page read before and written since | failed, page never read | values that stood in | stale reads (whole run) | read queries tried during the outage | most for one page read before and not written since |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for run in &outages {
        let Some(seen) = &run.outage else { continue };
        let _ = writeln!(
            outage_table,
            "| {} | {:.0} | {} | {} ({:.2}%) | {} | {} | {:.0} | {} | {} | {} |",
            run.name,
            run.rps(),
            seen.reads,
            seen.failed_known,
            100.0 * seen.failed_known as f64 / seen.reads.max(1) as f64,
            seen.failed_written,
            seen.failed_cold,
            seen.stood_in,
            run.stale,
            seen.tried,
            seen.most_tried_known,
        );
    }
    let section = format!(
        "## The shop under load\n\n`cargo bench -p shop{}`: the shop binary on {engine}, 64 concurrent clients for {} s a run, \
         Zipf(1.0) keys over 10,000 products, 85% product reads, 10% list reads, 5% PUTs; the uncached run is the same \
         binary with `SHOP_CACHE=off`; each run is measured after 5 s of warm-up. Cached/uncached throughput: **{speedup:.1}x**. With Redis killed for 3 s: \
         **{recovery}**.\n\n{table}\n![shop throughput and hit rate](benchmarks/shop.svg)\n\n\
         ### When the database fails\n\nThe same load, the shop's TTLs a hundredth of its own (product entries 3 s, \
         list entries 0.6 s, HTTP pages 0.6 s and 0.3 s), and the database down for 10 s in the middle of the run \
         (every query fails), with `fail_safe` on the data layer (kept 1 h, throttle 30 s) and without. \
         A page read before, and not written since, had a value cached that nothing replaced (the goal: none of \
         its reads fails); a write since may have left nothing (fail-safe never undoes one); a page never read \
         had nothing to stand in.\n\n{outage_table}\n",
        if quick { " -- --quick" } else { "" },
        length.as_secs()
    );
    println!("{section}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::create_dir_all(root.join("benchmarks")).expect("benchmarks/");
    std::fs::write(root.join("benchmarks/shop.svg"), svg(&runs)).expect("write the plot");
    write_report(&section);
}
