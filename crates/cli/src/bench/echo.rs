//! `bench echo`: C connections each keep W messages of S bytes in flight against an echo
//! endpoint; every echoed message is timed by the stamp it carries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_websockets::Message;

use super::client::{self, Phase, PhaseRx, Stamp, Ws};
use super::runner::{self, Need, Runner};
use super::stats::{self, Report, Shards};
use super::{CommonArgs, parse_seconds};

/// How long the end of the run waits for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Arguments of `bench echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Connections.
    #[arg(long, short, default_value_t = 100)]
    connections: usize,
    /// Message size in bytes (the stamp, then padding).
    #[arg(long, short, default_value_t = 32)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, short = 'w', default_value_t = 1)]
    in_flight: usize,
    /// Seconds of measurement.
    #[arg(long, short, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
}

#[derive(Debug)]
struct Shard {
    rtt: Histogram<u64>,
    received: u64,
}

#[derive(Debug)]
struct Shared {
    shards: Arc<Shards<Shard>>,
    sent: AtomicU64,
    /// Echoes that did not carry the stamp we sent (a corrupting or confused endpoint).
    mismatched: AtomicU64,
}

pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let target = common.target("/echo").await?;
    let shared = Arc::new(Shared {
        shards: Shards::new(|| {
            Ok(Shard {
                rtt: stats::histogram()?,
                received: 0,
            })
        })?,
        sent: AtomicU64::new(0),
        mismatched: AtomicU64::new(0),
    });
    let mut run = Runner::new(common);
    let mut tasks = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let (target, shared) = (target.clone(), shared.clone());
        let (size, in_flight) = (args.size, args.in_flight);
        tasks.push(run.spawn(|connector, phase| async move {
            let ws = connector
                .connect(&target, index as u64, async |_| Ok(()))
                .await?;
            connection(ws, index, size, in_flight, &shared, phase).await
        }));
    }
    run.set_up("connecting", Need::All).await?;

    let mut measuring = {
        let shared = shared.clone();
        let last = AtomicU64::new(0);
        run.measure(move |_| {
            let total = shared.shards.fold(0, |sum, shard| sum + shard.received);
            let delta = total - last.swap(total, Ordering::Relaxed);
            format!(
                "{} round trips/s, {} total",
                stats::count(delta),
                stats::count(total)
            )
        })
    };
    run.phase(Phase::Run);
    tokio::time::sleep(args.duration).await;
    let measured = shared.shards.fold(0, |sum, shard| sum + shard.received);
    let elapsed = measuring.started.elapsed();
    let cpu_used = measuring.cpu();
    run.phase(Phase::Drain);
    let ended = runner::collect(tasks).await;
    measuring.stop_progress();

    let mut rtt = stats::histogram()?;
    shared
        .shards
        .fold((), |(), shard| stats::merge(&mut rtt, &shard.rtt));
    let mut report = Report::new("echo", &target.url);
    report.param("connections", args.connections);
    report.param("size", args.size);
    report.param("in_flight", args.in_flight);
    report.param("duration_s", stats::round1(elapsed.as_secs_f64()));
    let per_second = measured as f64 / elapsed.as_secs_f64();
    report.metric(
        "msgs_per_s",
        stats::round1(per_second),
        stats::rate(per_second),
    );
    report.count("sent", shared.sent.load(Ordering::Relaxed));
    report.count("received", rtt.len());
    report.latency("rtt", &rtt);
    stats::report_cpu(&mut report, cpu_used, "");
    let mismatched = shared.mismatched.load(Ordering::Relaxed);
    if mismatched > 0 {
        report.warn(format!("{mismatched} echoes did not match what was sent"));
    }
    if !ended.is_empty() {
        report.warn(format!(
            "{} connections ended early; first: {}",
            ended.len(),
            ended.first().map_or("", String::as_str)
        ));
    }
    report.print(common.json);
    Ok(())
}

/// One connection: keep `in_flight` messages out until the run ends, then collect what is still
/// on its way and close. Returns why it ended early, if it did.
async fn connection(
    mut ws: Ws,
    index: usize,
    size: usize,
    in_flight: usize,
    shared: &Shared,
    mut phase: PhaseRx,
) -> Option<String> {
    if phase.wait_for(|p| *p >= Phase::Run).await.is_err() || *phase.borrow() >= Phase::Stop {
        client::close(ws).await;
        return None;
    }
    let mut draining = std::pin::pin!(client::reached(phase.clone(), Phase::Drain));
    let stream = index as u64;
    let mut seq = 0u64;
    let mut outstanding = 0usize;
    let send = async |ws: &mut Ws, seq: &mut u64| {
        let mut text = String::with_capacity(size.max(40));
        client::write_stamp(
            &mut text,
            Stamp {
                stream,
                seq: *seq,
                sent_us: client::now_us(),
            },
            size,
            false,
        );
        *seq += 1;
        ws.feed(Message::text(text)).await
    };
    for _ in 0..in_flight.max(1) {
        if let Err(err) = send(&mut ws, &mut seq).await {
            return Some(format!("send failed: {err}"));
        }
        outstanding += 1;
    }
    if let Err(err) = ws.flush().await {
        return Some(format!("send failed: {err}"));
    }
    let mut stopping = false;
    let mut drain_deadline = None;
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            () = &mut draining, if !stopping => {
                stopping = true;
                drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                if outstanding == 0 { break; }
                continue;
            }
            () = sleep_until(drain_deadline) => break,
        };
        let text = match &frame {
            Some(Ok(msg)) if msg.is_text() => msg.as_text().unwrap_or_default(),
            Some(Ok(msg)) if !msg.is_close() => continue,
            _ => {
                shared.sent.fetch_add(seq, Ordering::Relaxed);
                return Some(client::describe_end(frame));
            }
        };
        let now = client::now_us();
        match client::find_stamp(text) {
            Some(stamp) if stamp.stream == stream => {
                if !stopping {
                    shared.shards.with(index, |shard| {
                        shard
                            .rtt
                            .saturating_record(now.saturating_sub(stamp.sent_us).max(1));
                        shard.received += 1;
                    });
                }
            }
            _ => {
                shared.mismatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        outstanding = outstanding.saturating_sub(1);
        if stopping {
            if outstanding == 0 {
                break;
            }
        } else {
            let sent = async {
                send(&mut ws, &mut seq).await?;
                ws.flush().await
            };
            if let Err(err) = sent.await {
                shared.sent.fetch_add(seq, Ordering::Relaxed);
                return Some(format!("send failed: {err}"));
            }
            outstanding += 1;
        }
    }
    shared.sent.fetch_add(seq, Ordering::Relaxed);
    client::close(ws).await;
    None
}

/// Sleeps until the deadline; never resolves without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
