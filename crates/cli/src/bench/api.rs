//! `bench api`: HTTP API publishes (`POST /api/v1/publish`) from C keep-alive connections
//! into one room of N WebSocket subscribers: publishes/s, request latency, and publish →
//! delivery latency (the send time travels in the payload stamp), with loss and reordering
//! checked per subscriber. Switchboard only (its HTTP API).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use http::Method;
use tokio::time::{Instant, MissedTickBehavior};

use super::client::{self, Stamp, Ws};
use super::runner::{Need, Runner};
use super::stats::{self, Report};
use super::{CommonArgs, SubscribeArgs, parse_seconds};
use crate::api_client::ApiTarget;

/// Arguments of `bench api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    subscribe: SubscribeArgs,
    /// The server's HTTP base URL.
    #[arg(
        long,
        env = "SWITCHBOARD_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// An API key with the `publish` scope.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    key: String,
    /// WebSocket subscribers in the room.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Keep-alive HTTP connections publishing, each one request at a time.
    #[arg(long, short, default_value_t = 50)]
    connections: usize,
    /// Total publish rate, requests/s over all connections; 0: as fast as they go.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Payload size in bytes (the `data` JSON string, quotes included).
    #[arg(long, short, default_value_t = 64)]
    size: usize,
    /// Seconds of publishing.
    #[arg(long, short, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
    /// After publishing stops, how long subscribers may stay silent before what has not
    /// arrived counts as lost.
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    drain: Duration,
}

/// What one publishing connection did.
#[derive(Debug)]
struct PublisherResult {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

/// What one subscriber saw.
#[derive(Debug)]
struct SubscriberResult {
    delivered: u64,
    out_of_order: u64,
    latency: Histogram<u64>,
}

#[derive(Debug, Default)]
struct Progress {
    published: AtomicU64,
    delivered: AtomicU64,
    stopped: AtomicBool,
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let common = &args.common;
    if args.connections == 0 || !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("need at least one connection and a non-negative --rate");
    }
    let api = ApiTarget::new(&args.api, &args.key)?;
    let target = common.target("/ws").await?;
    let room = args.subscribe.room(0);
    let progress = Arc::new(Progress::default());
    let mut run = Runner::new(common);
    let subscribe = Arc::new(args.subscribe.clone());
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for index in 0..args.subscribers {
        let (target, subscribe, progress, room) = (
            target.clone(),
            subscribe.clone(),
            progress.clone(),
            room.clone(),
        );
        let drain = args.drain;
        // The subscribers read until the publishers are done (`Progress::stopped`), not by
        // the runner's phases.
        subscribers.push(run.spawn(move |connector, _phase| async move {
            let rooms = [room];
            let ws = connector
                .connect(&target, index as u64, async |ws| {
                    subscribe.subscribe(ws, &rooms).await
                })
                .await?;
            let latency = stats::histogram().ok()?;
            Some(subscriber(ws, &progress, drain, latency).await)
        }));
    }
    run.set_up("subscribers", Need::All).await?;

    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(api.connect().await?);
    }
    let cpu = stats::CpuMeter::start(common.server_pid);
    let started = Instant::now();
    let until = started + args.duration;
    let per_connection = args.rate / args.connections as f64;
    let ticker = {
        let progress = progress.clone();
        stats::progress(common.quiet, move |elapsed| {
            let published = progress.published.load(Ordering::Relaxed);
            format!(
                "{} publishes ({}/s), {} deliveries",
                stats::count(published),
                stats::rate(published as f64 / elapsed.as_secs_f64().max(0.001)),
                stats::count(progress.delivered.load(Ordering::Relaxed))
            )
        })
    };
    let mut publishers = Vec::with_capacity(args.connections);
    for (stream, connection) in connections.into_iter().enumerate() {
        let (progress, room, size) = (progress.clone(), room.clone(), args.size);
        publishers.push(tokio::spawn(async move {
            publisher(
                connection,
                stream as u64,
                &room,
                size,
                per_connection,
                until,
                &progress,
            )
            .await
        }));
    }
    let mut published = PublisherResult {
        ok: 0,
        failed: 0,
        first_error: None,
        latency: stats::histogram()?,
    };
    for handle in publishers {
        let result = handle.await??;
        published.ok += result.ok;
        published.failed += result.failed;
        published.first_error = published.first_error.or(result.first_error);
        stats::merge(&mut published.latency, &result.latency);
    }
    let took = started.elapsed();
    let cpu = cpu.shares();
    progress.stopped.store(true, Ordering::Release);
    let mut delivered = SubscriberResult {
        delivered: 0,
        out_of_order: 0,
        latency: stats::histogram()?,
    };
    for handle in subscribers {
        if let Some(result) = handle.await? {
            delivered.delivered += result.delivered;
            delivered.out_of_order += result.out_of_order;
            stats::merge(&mut delivered.latency, &result.latency);
        }
    }
    stats::stop_progress(ticker);

    let mut report = Report::new("api", &args.api);
    report.param("subscribers", args.subscribers as u64);
    report.param("connections", args.connections as u64);
    report.param("rate", args.rate);
    report.param("size", args.size as u64);
    report.param("duration_s", took.as_secs_f64());
    let per_second = published.ok as f64 / took.as_secs_f64().max(0.001);
    report.metric(
        "publishes_per_s",
        stats::round1(per_second),
        stats::rate(per_second),
    );
    report.count("published", published.ok);
    report.count("failed", published.failed);
    let expected = published.ok.saturating_mul(args.subscribers as u64);
    report.count("delivered", delivered.delivered);
    report.count("lost", expected.saturating_sub(delivered.delivered));
    report.count("out_of_order", delivered.out_of_order);
    report.latency("request_latency", &published.latency);
    report.latency("delivery_latency", &delivered.latency);
    stats::report_cpu(&mut report, cpu, "");
    if let Some(err) = published.first_error {
        report.warn(format!("first failed publish: {err}"));
    }
    report.print(common.json);
    Ok(())
}

async fn publisher(
    mut connection: crate::api_client::ApiConnection,
    stream: u64,
    room: &str,
    size: usize,
    rate: f64,
    until: Instant,
    progress: &Progress,
) -> anyhow::Result<PublisherResult> {
    let mut result = PublisherResult {
        ok: 0,
        failed: 0,
        first_error: None,
        latency: stats::histogram()?,
    };
    let mut tick = (rate > 0.0).then(|| {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        tick
    });
    let mut body = String::with_capacity(size + 64);
    let mut seq = 0;
    while Instant::now() < until {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        body.clear();
        body.push_str(r#"{"room":""#);
        body.push_str(room);
        body.push_str(r#"","data":"#);
        let sent_us = client::now_us();
        client::write_stamp(
            &mut body,
            Stamp {
                stream,
                seq,
                sent_us,
            },
            size,
            true,
        );
        body.push('}');
        let sent = Instant::now();
        let answer = connection
            .call(
                Method::POST,
                "/api/v1/publish",
                Some(Bytes::from(body.clone())),
                &[],
            )
            .await;
        match answer {
            Ok((status, _)) if status.is_success() => {
                result.ok += 1;
                seq += 1;
                progress.published.fetch_add(1, Ordering::Relaxed);
                let _ = result
                    .latency
                    .record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Ok((status, body)) => {
                result.failed += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(err) => {
                result.failed += 1;
                result.first_error.get_or_insert_with(|| format!("{err:#}"));
                break;
            }
        }
    }
    Ok(result)
}

async fn subscriber(
    mut ws: Ws,
    progress: &Progress,
    drain: Duration,
    latency: Histogram<u64>,
) -> SubscriberResult {
    let mut result = SubscriberResult {
        delivered: 0,
        out_of_order: 0,
        latency,
    };
    // Per publishing connection: the next seq expected.
    let mut next: Vec<u64> = Vec::new();
    loop {
        let frame = tokio::time::timeout(drain, ws.next()).await;
        let msg = match frame {
            Ok(Some(Ok(msg))) => client::plain(msg),
            Ok(_) => break,
            Err(_) if progress.stopped.load(Ordering::Acquire) => break,
            Err(_) => continue,
        };
        let Some(stamp) = msg.as_text().and_then(client::find_stamp) else {
            continue;
        };
        let now = client::now_us();
        let _ = result
            .latency
            .record(now.saturating_sub(stamp.sent_us).max(1));
        result.delivered += 1;
        progress.delivered.fetch_add(1, Ordering::Relaxed);
        let stream = usize::try_from(stamp.stream).unwrap_or(usize::MAX);
        if next.len() <= stream && stream < 1_000_000 {
            next.resize(stream + 1, 0);
        }
        if let Some(expected) = next.get_mut(stream) {
            if stamp.seq != *expected {
                result.out_of_order += 1;
            }
            *expected = stamp.seq + 1;
        }
    }
    result
}
