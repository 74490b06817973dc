//! `bench connect`: C workers each open a connection (TCP + upgrade), close it with the close
//! handshake and start over, for a duration: handshakes/s and handshake latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::client::{self, Target};
use super::runner::Runner;
use super::stats::{self, Report, Shards};
use super::{CommonArgs, parse_seconds};

/// Pause after a failed attempt, so that a refusing server is not hammered in a tight loop.
const BACKOFF: Duration = Duration::from_millis(10);

/// Arguments of `bench connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Handshakes in parallel.
    #[arg(long, short, default_value_t = 50)]
    connections: usize,
    /// Seconds of measurement.
    #[arg(long, short, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
}

#[derive(Debug)]
struct Shard {
    handshake: Histogram<u64>,
    failed: u64,
}

#[derive(Debug)]
struct Shared {
    shards: Arc<Shards<Shard>>,
    attempts: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let target = common.target("/ws").await?;
    let shared = Arc::new(Shared {
        shards: Shards::new(|| {
            Ok(Shard {
                handshake: stats::histogram()?,
                failed: 0,
            })
        })?,
        attempts: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let mut measuring = {
        let shared = shared.clone();
        let last = AtomicU64::new(0);
        Runner::new(common).measure(move |_| {
            let (ok, failed) = shared.shards.fold((0, 0), |(ok, failed), shard| {
                (ok + shard.handshake.len(), failed + shard.failed)
            });
            let delta = ok - last.swap(ok, Ordering::Relaxed);
            format!(
                "{} handshakes/s, {} failed",
                stats::count(delta),
                stats::count(failed)
            )
        })
    };
    let started = measuring.started;
    let deadline = started + args.duration;
    let mut workers = Vec::with_capacity(args.connections);
    for worker in 0..args.connections {
        let (target, shared) = (target.clone(), shared.clone());
        let timeout = common.connect_timeout;
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let index = shared.attempts.fetch_add(1, Ordering::Relaxed);
                attempt(&target, index, worker, timeout, &shared).await;
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed();
    let cpu_used = measuring.cpu();
    measuring.stop_progress();

    let mut handshake = stats::histogram()?;
    let failed = shared.shards.fold(0, |failed, shard| {
        stats::merge(&mut handshake, &shard.handshake);
        failed + shard.failed
    });
    let ok = handshake.len();
    let mut report = Report::new("connect", &target.url);
    report.param("connections", args.connections);
    report.param("duration_s", stats::round1(elapsed.as_secs_f64()));
    report.param("spread_sources", target.spreads());
    let per_second = ok as f64 / elapsed.as_secs_f64();
    report.metric(
        "handshakes_per_s",
        stats::round1(per_second),
        stats::rate(per_second),
    );
    report.count("handshakes", ok);
    report.count("failed", failed);
    report.latency("handshake", &handshake);
    stats::report_cpu(&mut report, cpu_used, "");
    if let Some(first) = shared
        .first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    {
        report.warn(format!("{failed} attempts failed; first error: {first}"));
    }
    report.print(common.json);
    if ok == 0 {
        anyhow::bail!("no handshake succeeded");
    }
    Ok(())
}

/// One connect → close cycle.
async fn attempt(target: &Target, index: u64, worker: usize, timeout: Duration, shared: &Shared) {
    let started = Instant::now();
    match target.connect(index, timeout).await {
        Ok(ws) => {
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared.shards.with(worker, |shard| {
                shard.handshake.saturating_record(took.max(1));
            });
            client::close(ws).await;
        }
        Err(err) => {
            shared.shards.with(worker, |shard| shard.failed += 1);
            {
                let mut first = shared
                    .first_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if first.is_none() {
                    eprintln!("error: {err:#}");
                    *first = Some(format!("{err:#}"));
                }
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
}
