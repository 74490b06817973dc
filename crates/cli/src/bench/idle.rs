//! `bench idle`: K connections, each subscribed to one of R rooms, held open for a while:
//! connect rate and, with `--server-pid`, the server's resident memory per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::client::{self, Phase, PhaseRx, Ws};
use super::runner::{self, Need, Runner};
use super::stats::{self, Report};
use super::{CommonArgs, SubscribeArgs, parse_seconds};

/// File descriptors kept for everything that is not a connection.
const SPARE_FDS: u64 = 64;
/// Pause between "all connected" and the RSS reading, so that set-up work (replies, presence
/// events, allocator caches) has settled.
const SETTLE: Duration = Duration::from_secs(1);
/// Longest wait for all connections to close at the end.
const CLOSE_BUDGET: Duration = Duration::from_secs(30);

/// Arguments of `bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    subscribe: SubscribeArgs,
    /// Connections.
    #[arg(long, short, default_value_t = 1000)]
    connections: usize,
    /// Rooms the connections are spread over (round-robin).
    #[arg(long, short, default_value_t = 100)]
    rooms: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    hold: Duration,
    /// Offer permessage-deflate on every connection (idle memory with deflate negotiated).
    #[arg(long)]
    deflate: bool,
}

#[derive(Debug, Default)]
struct Shared {
    alive: AtomicU64,
    dropped: AtomicU64,
    first_drop: std::sync::Mutex<Option<String>>,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let target =
        Arc::new(Arc::unwrap_or_clone(common.target("/ws").await?).with_deflate(args.deflate));
    let mut report = Report::new("idle", &target.url);
    let fd_limit = raise_fd_limit(&mut report);
    if let Some(limit) = fd_limit
        && (args.connections as u64) + SPARE_FDS > limit
    {
        report.warn(format!(
            "RLIMIT_NOFILE is {limit}: at most about {} connections can be opened",
            limit.saturating_sub(SPARE_FDS)
        ));
        eprintln!(
            "warning: RLIMIT_NOFILE is {limit}, below {} connections",
            args.connections
        );
    }
    let server_pid = common.server_pid.map(|pid| pid.to_string());
    let rss_before = server_pid.as_deref().and_then(stats::rss_bytes);
    let bench_rss_before = stats::rss_bytes("self");

    let shared = Arc::new(Shared::default());
    let subscribe = Arc::new(args.subscribe.clone());
    let rooms = args.rooms.max(1);
    let mut run = Runner::new(common);
    let mut tasks = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let (target, shared, subscribe) = (target.clone(), shared.clone(), subscribe.clone());
        tasks.push(run.spawn(|connector, phase| async move {
            let room = [subscribe.room(index % rooms)];
            let ws = connector
                .connect(&target, index as u64, async |ws| {
                    subscribe.subscribe(ws, &room).await
                })
                .await?;
            shared.alive.fetch_add(1, Ordering::Relaxed);
            hold(ws, &shared, phase).await;
            Some(())
        }));
    }
    let outcome = run.set_up("connecting", Need::Any).await?;
    if subscribe.ready_marker.is_empty() {
        tokio::time::sleep(subscribe.settle).await;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after = server_pid.as_deref().and_then(stats::rss_bytes);
    let bench_rss_after = stats::rss_bytes("self");
    let connected = outcome.ready as u64;

    let mut measuring = {
        let shared = shared.clone();
        run.measure(move |_| {
            format!(
                "{} connections open, {} dropped",
                stats::count(shared.alive.load(Ordering::Relaxed)),
                stats::count(shared.dropped.load(Ordering::Relaxed))
            )
        })
    };
    run.phase(Phase::Run);
    tokio::time::sleep(args.hold).await;
    let alive_at_end = shared.alive.load(Ordering::Relaxed);
    let cpu_used = measuring.cpu();
    let held = measuring.started.elapsed();
    measuring.stop_progress();
    run.phase(Phase::Stop);
    if !runner::join_within(tasks, CLOSE_BUDGET).await {
        report.warn(format!(
            "not every connection closed within {CLOSE_BUDGET:?}"
        ));
    }

    report.param("connections", args.connections);
    report.param("rooms", rooms);
    report.param("hold_s", stats::round1(held.as_secs_f64()));
    report.param("spread_sources", target.spreads());
    report.count("connected", connected);
    report.metric(
        "failed",
        outcome.failed,
        stats::count(outcome.failed as u64),
    );
    let setup_secs = outcome.took.as_secs_f64();
    report.metric(
        "setup_s",
        stats::round1(setup_secs),
        format!("{setup_secs:.1} s to connect and subscribe all"),
    );
    let setup_rate = connected as f64 / setup_secs.max(1e-3);
    report.metric(
        "setup_per_s",
        stats::round1(setup_rate),
        stats::rate(setup_rate),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per = after.saturating_sub(before) / connected.max(1);
        report.metric("server_rss_before", before, stats::bytes(before));
        report.metric("server_rss_after", after, stats::bytes(after));
        report.metric("server_rss_per_conn", per, stats::bytes(per));
    }
    if let (Some(before), Some(after)) = (bench_rss_before, bench_rss_after) {
        let per = after.saturating_sub(before) / connected.max(1);
        report.metric("bench_rss_per_conn", per, stats::bytes(per));
    }
    report.count("alive_at_end", alive_at_end);
    stats::report_cpu(&mut report, cpu_used, " while holding");
    if let Some(first) = outcome.first_error {
        report.warn(format!(
            "{} connections failed; first error: {first}",
            outcome.failed
        ));
    }
    let dropped = shared.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        let first = shared
            .first_drop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        report.warn(format!(
            "{dropped} connections dropped while held; first: {first}"
        ));
    }
    report.print(common.json);
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit in force.
fn raise_fd_limit(report: &mut Report) -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            report.param("fd_limit", limit);
            Some(limit)
        }
        Err(err) => {
            report.warn(format!("cannot raise RLIMIT_NOFILE: {err}"));
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Keeps the connection open (answering the server's pings) until the stop phase.
async fn hold(mut ws: Ws, shared: &Shared, phase: PhaseRx) {
    let mut stopping = std::pin::pin!(client::reached(phase, Phase::Stop));
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            frame = ws.next() => match frame {
                Some(Ok(msg)) if !msg.is_close() => {}
                other => {
                    shared.alive.fetch_sub(1, Ordering::Relaxed);
                    if shared.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        *shared
                            .first_drop
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(client::describe_end(other));
                    }
                    return;
                }
            },
        }
    }
    shared.alive.fetch_sub(1, Ordering::Relaxed);
    client::close(ws).await;
}
