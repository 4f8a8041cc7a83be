//! The shared harness: interleaved rounds, samples and their medians,
//! paired ratios, the report's rows and plot, and the server's own figures.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use cache_runtime::Cache;
use redis::aio::ConnectionManager;

use crate::support;

#[derive(Default, Clone)]
pub(crate) struct Sample {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) calls: u64,
    pub(crate) busy: Duration,
}

impl Sample {
    pub(crate) fn median(&mut self) -> Duration {
        self.percentile(0.5)
    }
    pub(crate) fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[at]
    }
    /// A throughput sample: `calls` made in `busy`, their mean as its one
    /// latency.
    pub(crate) fn of_throughput(calls: u64, busy: Duration) -> Sample {
        Sample {
            latencies: vec![busy / calls.max(1) as u32],
            calls,
            busy,
        }
    }
    pub(crate) fn throughput(&self) -> f64 {
        self.calls as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

pub(crate) struct Row {
    pub(crate) case: String,
    pub(crate) contender: String,
    pub(crate) median: String,
    pub(crate) p99: String,
    pub(crate) throughput: String,
    pub(crate) ratio: String,
}

pub(crate) fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Runs `batch` for each contender in turn, `rounds` times, and returns the
/// samples in contender order.
pub(crate) async fn interleave<F, Fut>(
    contenders: usize,
    rounds: usize,
    mut batch: F,
) -> Vec<Sample>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    let mut samples = vec![Sample::default(); contenders];
    for _ in 0..rounds {
        for (contender, sample) in samples.iter_mut().enumerate() {
            let batch = batch(contender).await;
            sample.latencies.extend(batch.latencies);
            sample.calls += batch.calls;
            sample.busy += batch.busy;
        }
    }
    samples
}

/// A contender's throughput over the baseline's: the median over rounds of
/// the baseline's time per call over the contender's in the same round.
/// A round's runs are adjacent in time, so a slow spell of the machine
/// spoils a pair rather than one side of the ratio, and the median drops
/// the pairs it spoiled.
pub(crate) fn paired_ratio(baseline: &Sample, sample: &Sample) -> f64 {
    let mut ratios: Vec<f64> = baseline
        .latencies
        .iter()
        .zip(&sample.latencies)
        .map(|(b, s)| b.as_secs_f64() / s.as_secs_f64().max(1e-12))
        .collect();
    ratios.sort_by(f64::total_cmp);
    match ratios.len() {
        0 => 0.0,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    }
}

/// Times `calls` sequential calls of `call(i)`.
pub(crate) async fn sequential<F, Fut>(calls: u64, mut call: F) -> Sample
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sample = Sample::default();
    let started = Instant::now();
    for i in 0..calls {
        let one = Instant::now();
        call(i).await;
        sample.latencies.push(one.elapsed());
    }
    sample.busy = started.elapsed();
    sample.calls = calls;
    sample
}

pub(crate) fn rows_for(case: &str, names: &[&str], samples: &mut [Sample], rows: &mut Vec<Row>) {
    let baseline = samples[0].median();
    for (name, sample) in names.iter().zip(samples.iter_mut()) {
        let median = sample.median();
        rows.push(Row {
            case: case.to_owned(),
            contender: (*name).to_owned(),
            median: micros(median),
            p99: micros(sample.percentile(0.99)),
            throughput: format!("{:.0}/s", sample.throughput()),
            ratio: format!(
                "{:.2}x",
                median.as_secs_f64() / baseline.as_secs_f64().max(1e-12)
            ),
        });
    }
}

/// The concurrency levels of the throughput cases.
pub(crate) const TASKS: [usize; 4] = [1, 16, 64, 256];

pub(crate) struct Bench {
    pub(crate) quick: bool,
    /// `--rounds=N`: every case runs N rounds (more than `--quick`'s to
    /// rank a small change on a noisy machine).
    pub(crate) fixed_rounds: Option<usize>,
    /// `--throughput --tasks=N`: the throughput cases run at N tasks only.
    pub(crate) only_tasks: Option<usize>,
    /// `--throughput`: only the throughput cases, printed, nothing written.
    pub(crate) throughput_only: bool,
    /// The server, and with `--rtt=` the delay proxy every contender reaches
    /// it through: kept for the run.
    pub(crate) _redis: (support::RedisServer, Option<support::Proxy>),
    /// Where the contenders reach Redis: the server, or the proxy.
    pub(crate) url: String,
    pub(crate) cache: Cache,
    pub(crate) conn: ConnectionManager,
    pub(crate) rows: Vec<Row>,
    pub(crate) plot: Vec<(String, Vec<(usize, f64)>)>,
}

/// Keys 0..n drawn with probability proportional to 1 / (rank + 1)^s.
pub(crate) struct Zipf {
    pub(crate) cumulative: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub(crate) fn sample(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = fastrand::f64() * total;
        self.cumulative.partition_point(|&c| c < u)
    }
}

/// `redis-benchmark -t get` at this concurrency: the server's own ceiling.
pub(crate) fn redis_benchmark(url: &str, clients: usize, pipeline: usize, requests: u64) -> f64 {
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("6379")
        .to_owned();
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port,
            "-t",
            "get",
            "-q",
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .output()
        .expect("redis-benchmark comes with redis-server");
    let text = String::from_utf8_lossy(&output.stdout);
    // "GET: 123456.79 requests per second, p50=0.191 msec"
    text.rsplit("GET: ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|rps| rps.parse().ok())
        .unwrap_or(0.0)
}

/// Commands the server has run, by `INFO commandstats`.
pub(crate) async fn server_commands(conn: &ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn.clone())
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

pub(crate) fn svg(lines: &[(String, Vec<(usize, f64)>)]) -> String {
    let (w, h, left, bottom) = (640.0, 400.0, 80.0, 50.0);
    let max = lines
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |tasks: usize| {
        left + (TASKS.iter().position(|&t| t == tasks).unwrap_or(0) as f64) * (w - left - 40.0)
            / (TASKS.len() - 1) as f64
    };
    let y = |v: f64| h - bottom - v / max * (h - bottom - 30.0);
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">Hit throughput (GET/s) vs concurrent tasks</text>"#,
        w / 2.0
    );
    let _ = write!(
        out,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="30" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - 30.0,
        h - bottom,
        h - bottom
    );
    for t in TASKS {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#,
            x(t),
            h - bottom + 18.0
        );
    }
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}k</text>"#,
            left - 6.0,
            y(v) + 4.0,
            v / 1000.0
        );
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(t, v) in points {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(t),
                y(v)
            );
        }
        let _ = write!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{name}</text>"#,
            left + 10.0,
            40.0 + i as f64 * 16.0,
            left + 28.0,
            44.0 + i as f64 * 16.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrent tasks</text></svg>"#,
        w / 2.0,
        h - 10.0
    );
    out
}

impl Bench {
    pub(crate) fn rounds(&self, full: usize) -> usize {
        if let Some(rounds) = self.fixed_rounds {
            rounds.max(1)
        } else if self.quick {
            (full / 4).max(2)
        } else {
            full
        }
    }
}
