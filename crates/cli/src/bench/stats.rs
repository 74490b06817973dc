//! Measurement plumbing: latency histograms (µs), sharded counters that thousands of connection
//! tasks can update without contending, CPU and RSS readings from /proc, the once-a-second
//! progress line, and the final report (a table for people, JSON for scripts).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest latency a histogram tracks exactly (one hour, in µs); above it values are clamped.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).context("cannot create a histogram")
}

/// A fixed set of mutex-protected values; connection `i` uses shard `i % len`. With a few
/// dozen shards and a two- or four-thread runtime, two tasks rarely want the same shard at
/// once, so a lock per message costs about as much as an uncontended atomic.
#[derive(Debug)]
pub struct Shards<T> {
    shards: Vec<Mutex<T>>,
}

/// Shards per [`Shards`].
const SHARDS: usize = 32;

impl<T> Shards<T> {
    /// `SHARDS` values made by `make`.
    pub fn new(mut make: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<Arc<Self>> {
        let shards = (0..SHARDS)
            .map(|_| make().map(Mutex::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(Self { shards }))
    }

    /// Runs `f` on shard `index % SHARDS`.
    pub fn with<R>(&self, index: usize, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let shard = self.shards.get(index % SHARDS)?;
        let mut guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        Some(f(&mut guard))
    }

    /// Folds every shard into one value.
    pub fn fold<A>(&self, init: A, mut f: impl FnMut(A, &T) -> A) -> A {
        self.shards.iter().fold(init, |acc, shard| {
            let guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            f(acc, &guard)
        })
    }
}

/// Adds `from` into `into` (both 1 µs..1 h, so this cannot fail in practice).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// CPU time (user + system) of a process, in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at "state" (field 3);
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ on Linux).
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident set size of a process, in bytes, from /proc/PID/status.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Time the threads of a process spent runnable but waiting for a CPU, in seconds: the sum of
/// the second field of /proc/PID/task/*/schedstat (nanoseconds). High values mean the process
/// was held back by other processes (or its own threads) competing for the cores.
fn run_delay_seconds(pid: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += text
            .split_whitespace()
            .nth(1)
            .and_then(|delay| delay.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total as f64 / 1e9)
}

/// CPU time and run-queue delay of one process at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    cpu: Option<f64>,
    delay: Option<f64>,
}

impl CpuSample {
    fn take(pid: Option<&str>) -> Self {
        Self {
            cpu: pid.and_then(cpu_seconds),
            delay: pid.and_then(run_delay_seconds),
        }
    }
}

/// Measures the CPU share of this process and of the server (when its pid is known) over an
/// interval, and how long each waited for a CPU: how the report shows whether the load
/// generator or the server was the limit, and whether other processes got in the way.
#[derive(Debug)]
pub struct CpuMeter {
    started: Instant,
    server_pid: Option<String>,
    bench: CpuSample,
    server: CpuSample,
}

/// What [`CpuMeter::shares`] found, in % of one core (of wall time for the waits).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuShares {
    bench_cpu: Option<f64>,
    server_cpu: Option<f64>,
    bench_wait: Option<f64>,
    server_wait: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(server_pid: Option<u32>) -> Self {
        let server_pid = server_pid.map(|pid| pid.to_string());
        Self {
            started: Instant::now(),
            bench: CpuSample::take(Some("self")),
            server: CpuSample::take(server_pid.as_deref()),
            server_pid,
        }
    }

    /// Shares since the start.
    pub fn shares(&self) -> CpuShares {
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let share = |before: Option<f64>, now: Option<f64>| Some((now? - before?) / wall * 100.0);
        let bench = CpuSample::take(Some("self"));
        let server = CpuSample::take(self.server_pid.as_deref());
        CpuShares {
            bench_cpu: share(self.bench.cpu, bench.cpu),
            server_cpu: share(self.server.cpu, server.cpu),
            bench_wait: share(self.bench.delay, bench.delay),
            server_wait: share(self.server.delay, server.delay),
        }
    }
}

/// Adds the shares measured by [`CpuMeter::shares`] to the report.
pub fn report_cpu(report: &mut Report, shares: CpuShares, during: &str) {
    let rows = [
        ("bench_cpu_pct", shares.bench_cpu, "of a core"),
        ("server_cpu_pct", shares.server_cpu, "of a core"),
        (
            "bench_wait_pct",
            shares.bench_wait,
            "runnable, waiting for a CPU",
        ),
        (
            "server_wait_pct",
            shares.server_wait,
            "runnable, waiting for a CPU",
        ),
    ];
    for (key, value, what) in rows {
        if let Some(value) = value {
            report.metric(key, round1(value), format!("{value:.0} % {what}{during}"));
        }
    }
}

/// Rounds to one decimal (for JSON figures).
pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `1234567` → `1,234,567`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A rate for people: `12,345/s`.
pub fn rate(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{}/s", count(value.round() as u64))
    } else {
        format!("{value:.1}/s")
    }
}

/// A byte count for people.
pub fn bytes(value: u64) -> String {
    if value >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", value as f64 / (1024.0 * 1024.0))
    } else if value >= 1024 {
        format!("{:.1} KiB", value as f64 / 1024.0)
    } else {
        format!("{value} B")
    }
}

/// Microseconds for people.
fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.3} ms", us as f64 / 1000.0)
    }
}

/// What a scenario found: parameters, figures and warnings, printed as a table and/or JSON.
#[derive(Debug)]
pub struct Report {
    scenario: &'static str,
    url: String,
    params: Map<String, Value>,
    param_rows: Vec<String>,
    results: Map<String, Value>,
    rows: Vec<(String, String)>,
    warnings: Vec<String>,
}

impl Report {
    /// An empty report for `scenario` against `url`.
    pub fn new(scenario: &'static str, url: &str) -> Self {
        Self {
            scenario,
            url: url.to_owned(),
            params: Map::new(),
            param_rows: Vec::new(),
            results: Map::new(),
            rows: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A parameter of the run.
    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        let shown = match &value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        self.param_rows.push(format!("{key}={shown}"));
        self.params.insert(key.to_owned(), value);
    }

    /// A figure: `key` and `value` in JSON, `shown` in the table.
    pub fn metric(&mut self, key: &str, value: impl Into<Value>, shown: String) {
        self.results.insert(key.to_owned(), value.into());
        self.rows.push((key.to_owned(), shown));
    }

    /// A count, shown with thousands separators.
    pub fn count(&mut self, key: &str, value: u64) {
        self.metric(key, value, count(value));
    }

    /// A latency distribution: `{key: {count, mean_us, p50_us, p99_us, p999_us, max_us}}`.
    pub fn latency(&mut self, key: &str, hist: &Histogram<u64>) {
        if hist.is_empty() {
            self.results.insert(key.to_owned(), Value::Null);
            self.rows.push((key.to_owned(), "no samples".to_owned()));
            return;
        }
        let p50 = hist.value_at_quantile(0.5);
        let p99 = hist.value_at_quantile(0.99);
        let p999 = hist.value_at_quantile(0.999);
        let max = hist.max();
        self.results.insert(
            key.to_owned(),
            json!({
                "count": hist.len(),
                "mean_us": round1(hist.mean()),
                "p50_us": p50,
                "p99_us": p99,
                "p999_us": p999,
                "max_us": max,
            }),
        );
        self.rows.push((
            key.to_owned(),
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}",
                micros(p50),
                micros(p99),
                micros(p999),
                micros(max)
            ),
        ));
    }

    /// Something that went wrong but did not stop the run (shown after the table, listed in
    /// JSON under `warnings`).
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Prints the table (stdout, or stderr with `json`) and the JSON object (stdout).
    pub fn print(&self, json: bool) {
        let table = self.table();
        if json {
            eprint!("{table}");
            let value = json!({
                "scenario": self.scenario,
                "url": self.url,
                "params": self.params,
                "results": self.results,
                "warnings": self.warnings,
            });
            println!("{value}");
        } else {
            print!("{table}");
        }
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{} against {}", self.scenario, self.url);
        let _ = writeln!(out, "  {}", self.param_rows.join("  "));
        let width = self
            .rows
            .iter()
            .map(|(key, _)| key.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "  {:-<width$}-+-{:-<40}", "", "");
        for (key, shown) in &self.rows {
            let _ = writeln!(out, "  {key:<width$} | {shown}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        out
    }
}

/// Prints `line(elapsed)` to stderr every second until the handle is aborted (nothing when
/// `quiet`).
pub fn progress(
    quiet: bool,
    line: impl Fn(Duration) -> String + Send + 'static,
) -> Option<JoinHandle<()>> {
    if quiet {
        return None;
    }
    let started = Instant::now();
    Some(tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
        loop {
            tick.tick().await;
            let elapsed = started.elapsed();
            eprintln!("[{:>4.0}s] {}", elapsed.as_secs_f64(), line(elapsed));
        }
    }))
}

/// Stops a progress printer.
pub fn stop_progress(handle: Option<JoinHandle<()>>) {
    if let Some(handle) = handle {
        handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(12.34), "12.3/s");
        assert_eq!(rate(123_456.7), "123,457/s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(20 * 1024), "20.0 KiB");
        assert_eq!(micros(1234), "1.234 ms");
        assert_eq!(micros(123_456), "123.5 ms");
    }

    #[test]
    fn own_cpu_and_rss_are_readable() {
        assert!(cpu_seconds("self").is_some());
        assert!(run_delay_seconds("self").is_some());
        assert!(rss_bytes("self").unwrap() > 0);
    }

    #[test]
    fn report_json_has_latency_percentiles() {
        let mut hist = histogram().unwrap();
        for us in 1..=1000 {
            hist.record(us).unwrap();
        }
        let mut report = Report::new("echo", "ws://x/echo");
        report.param("connections", 2);
        report.latency("rtt", &hist);
        report.metric("msgs_per_s", 10.0, rate(10.0));
        let table = report.table();
        assert!(table.contains("connections=2"));
        assert!(table.contains("rtt"));
        let rtt = report.results.get("rtt").unwrap();
        assert_eq!(rtt["count"], 1000);
        assert!(rtt["p50_us"].as_u64().unwrap().abs_diff(500) <= 1);
    }

    #[test]
    fn shards_fold() {
        let shards = Shards::new(|| Ok(0u64)).unwrap();
        for i in 0..100 {
            shards.with(i, |value| *value += 1);
        }
        assert_eq!(shards.fold(0, |acc, value| acc + value), 100);
    }
}
