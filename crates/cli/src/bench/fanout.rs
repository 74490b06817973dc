//! `bench fanout`: P publishers send stamped messages into R rooms whose N subscribers measure
//! end-to-end latency (the send time travels in the payload) and check every stream for loss,
//! duplicates and reordering.
//!
//! Streams: with S = max(R, P), stream k (0 ≤ k < S) is publisher k mod P publishing into room
//! k mod R, with its own sequence numbers from 0; the offered rate is split evenly over the
//! streams. Subscriber i is in room i mod R and expects every message of that room's streams.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_websockets::Message;

use super::client::{self, Phase, PhaseRx, Seen, SeqTracker, Stamp, Template, Ws};
use super::runner::{self, Need, Runner};
use super::stats::{self, Report, Shards};
use super::{CommonArgs, SubscribeArgs, parse_seconds};

/// Most messages one publisher sends per millisecond tick when it is behind schedule.
const MAX_BATCH: u64 = 1000;
/// Publisher tick: the schedule is caught up once per tick (tokio timers have 1 ms resolution).
const TICK: Duration = Duration::from_millis(1);

/// Arguments of `bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    subscribe: SubscribeArgs,
    /// Text frame that publishes; `{room}` → room name, `{payload}` → a JSON string with the
    /// stamp (send time, stream, sequence) padded to --size bytes.
    #[arg(
        long,
        default_value = r#"{"type":"publish","room":"{room}","data":{payload}}"#,
        value_name = "TEXT"
    )]
    publish_template: String,
    /// Subscriber connections (spread over the rooms round-robin).
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Rooms.
    #[arg(long, short, default_value_t = 1)]
    rooms: usize,
    /// Publisher connections (each also subscribes to the rooms it publishes into).
    #[arg(long, short, default_value_t = 1)]
    publishers: usize,
    /// Total offered publish rate, messages/s over all publishers; 0: as fast as possible with
    /// at most --in-flight undelivered messages per stream.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// With --rate 0: messages per stream that may be on their way at once.
    #[arg(long, short = 'w', default_value_t = 64)]
    in_flight: u64,
    /// Payload size in bytes (the `{payload}` JSON string, quotes included).
    #[arg(long, short, default_value_t = 64)]
    size: usize,
    /// Seconds of publishing.
    #[arg(long, short, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
    /// After publishing stops, keep waiting for deliveries still on their way until none has
    /// arrived for this long (what has not arrived by then is lost).
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    drain: Duration,
    /// … but never longer than this after publishing stopped.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    drain_max: Duration,
    /// Offer permessage-deflate (RFC 7692) on every connection, as browsers do, and inflate
    /// what arrives compressed.
    #[arg(long)]
    deflate: bool,
    /// Connect the publishers to this URL instead of --url: with two nodes of a cluster,
    /// every delivery crosses the broker (cross-node fan-out).
    #[arg(long, value_name = "URL")]
    publisher_url: Option<String>,
}

#[derive(Debug)]
struct Shard {
    latency: Histogram<u64>,
    delivered: u64,
}

#[derive(Debug)]
struct Shared {
    shards: Arc<Shards<Shard>>,
    /// Per stream: messages sent (final once the publisher has stopped).
    sent: Vec<AtomicU64>,
    /// Per stream: deliveries so far (only kept with --rate 0, for the in-flight window).
    delivered: Vec<AtomicU64>,
    publishers_done: AtomicUsize,
    /// Error frames the publishers received, and the first one.
    publish_errors: AtomicU64,
    first_publish_error: std::sync::Mutex<Option<String>>,
    started: std::sync::OnceLock<Instant>,
    layout: Layout,
}

/// Who publishes what where.
#[derive(Debug, Clone, Copy)]
struct Layout {
    subscribers: usize,
    rooms: usize,
    publishers: usize,
    streams: usize,
}

impl Layout {
    fn subscribers_in_room(&self, room: usize) -> u64 {
        let base = self.subscribers / self.rooms;
        (base + usize::from(room < self.subscribers % self.rooms)) as u64
    }

    /// Streams of publisher `publisher`.
    fn streams_of(&self, publisher: usize) -> impl Iterator<Item = usize> + use<> {
        (publisher..self.streams).step_by(self.publishers.max(1))
    }

    /// Streams delivered into `room`.
    fn streams_into(&self, room: usize) -> impl Iterator<Item = usize> + use<> {
        (room..self.streams).step_by(self.rooms.max(1))
    }
}

/// What one subscriber found.
#[derive(Debug, Default)]
struct SubscriberResult {
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
    ended: Option<String>,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let common = &args.common;
    if args.rooms == 0 || args.publishers == 0 || args.subscribers < args.rooms {
        bail!("need at least one room, one publisher and one subscriber per room");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a non-negative number");
    }
    let target =
        Arc::new(Arc::unwrap_or_clone(common.target("/ws").await?).with_deflate(args.deflate));
    let layout = Layout {
        subscribers: args.subscribers,
        rooms: args.rooms,
        publishers: args.publishers,
        streams: args.rooms.max(args.publishers),
    };
    let shared = Arc::new(Shared {
        shards: Shards::new(|| {
            Ok(Shard {
                latency: stats::histogram()?,
                delivered: 0,
            })
        })?,
        sent: (0..layout.streams).map(|_| AtomicU64::new(0)).collect(),
        delivered: (0..layout.streams).map(|_| AtomicU64::new(0)).collect(),
        publishers_done: AtomicUsize::new(0),
        publish_errors: AtomicU64::new(0),
        first_publish_error: std::sync::Mutex::new(None),
        started: std::sync::OnceLock::new(),
        layout,
    });
    let subscribe = Arc::new(args.subscribe.clone());
    let mut run = Runner::new(common);

    let mut tasks = Vec::with_capacity(args.subscribers + args.publishers);
    for index in 0..args.subscribers {
        let (target, shared, subscribe) = (target.clone(), shared.clone(), subscribe.clone());
        let window = args.rate == 0.0;
        tasks.push(run.spawn(|connector, phase| async move {
            let room = index % layout.rooms;
            let rooms = [subscribe.room(room)];
            let ws = connector
                .connect(&target, index as u64, async |ws| {
                    subscribe.subscribe(ws, &rooms).await
                })
                .await?;
            Some(subscriber(ws, index, room, window, &shared, phase).await)
        }));
    }
    let template = Template::new(&args.publish_template);
    let publisher_target = match &args.publisher_url {
        Some(url) => Arc::new(
            client::Target::resolve(url, !common.no_spread)
                .await?
                .with_deflate(args.deflate),
        ),
        None => target.clone(),
    };
    for index in 0..args.publishers {
        let (target, shared, subscribe) =
            (publisher_target.clone(), shared.clone(), subscribe.clone());
        let streams: Vec<Stream> = layout
            .streams_of(index)
            .map(|k| {
                let (before, after) = template.for_room(&subscribe.room(k % layout.rooms));
                Stream {
                    index: k,
                    subscribers: layout.subscribers_in_room(k % layout.rooms),
                    before,
                    after,
                    seq: 0,
                }
            })
            .collect();
        let (rate, window, size) = (args.rate, args.in_flight.max(1), args.size);
        let rate = rate * streams.len() as f64 / layout.streams as f64;
        tasks.push(run.spawn(|connector, phase| async move {
            let mut rooms: Vec<String> = streams
                .iter()
                .map(|stream| subscribe.room(stream.index % layout.rooms))
                .collect();
            rooms.sort();
            rooms.dedup();
            let ws = connector
                .connect(&target, (layout.subscribers + index) as u64, async |ws| {
                    subscribe.subscribe(ws, &rooms).await
                })
                .await?;
            let plan = Plan { rate, window, size };
            Some(publisher(ws, streams, plan, &shared, phase).await)
        }));
    }
    run.set_up("subscribing", Need::All).await?;
    if args.subscribe.ready_marker.is_empty() {
        tokio::time::sleep(args.subscribe.settle).await;
    }

    // Publishing.
    let mut measuring = {
        let shared = shared.clone();
        let last = std::sync::Mutex::new((0u64, 0u64));
        run.measure(move |_| {
            let delivered = shared.shards.fold(0, |sum, shard| sum + shard.delivered);
            let sent: u64 = shared.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
            let mut last = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let line = format!(
                "published {}/s, delivered {}/s ({} total)",
                stats::count(sent - last.0),
                stats::count(delivered - last.1),
                stats::count(delivered)
            );
            *last = (sent, delivered);
            line
        })
    };
    let started = measuring.started;
    let _ = shared.started.set(started);
    run.phase(Phase::Run);
    tokio::time::sleep(args.duration).await;
    run.phase(Phase::Drain);
    let elapsed = started.elapsed();
    let delivered_in_time = shared.shards.fold(0, |sum, shard| sum + shard.delivered);
    let cpu_used = measuring.cpu();

    // Draining: wait for the publishers' last counts, then for the deliveries they imply, as
    // long as deliveries keep coming (a server that is behind is slow, not lossy).
    let drain_started = Instant::now();
    let hard_deadline = drain_started + args.drain_max;
    runner::wait_until(
        drain_started + args.drain.max(Duration::from_secs(5)),
        Duration::from_millis(5),
        || shared.publishers_done.load(Ordering::Acquire) >= args.publishers,
    )
    .await;
    let sent: Vec<u64> = shared
        .sent
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .collect();
    let expected_deliveries: u64 = sent
        .iter()
        .enumerate()
        .map(|(k, sent)| sent * layout.subscribers_in_room(k % layout.rooms))
        .sum();
    let (mut last_count, mut last_change) = (delivered_in_time, Instant::now());
    runner::wait_until(hard_deadline, Duration::from_millis(20), || {
        let delivered = shared.shards.fold(0, |sum, shard| sum + shard.delivered);
        let now = Instant::now();
        if delivered != last_count {
            (last_count, last_change) = (delivered, now);
        }
        delivered >= expected_deliveries || now.duration_since(last_change) >= args.drain
    })
    .await;
    let drained_after = started.elapsed().saturating_sub(elapsed);
    run.phase(Phase::Stop);
    measuring.stop_progress();

    let mut totals = SubscriberResult::default();
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    for result in runner::collect(tasks).await {
        totals.lost += result.lost;
        totals.duplicates += result.duplicates;
        totals.out_of_order += result.out_of_order;
        totals.foreign += result.foreign;
        if let Some(reason) = result.ended {
            *ended.entry(reason).or_default() += 1;
        }
    }

    let mut latency = stats::histogram()?;
    let delivered = shared.shards.fold(0, |sum, shard| {
        stats::merge(&mut latency, &shard.latency);
        sum + shard.delivered
    });
    let total_sent: u64 = sent.iter().sum();
    let secs = elapsed.as_secs_f64();
    let mut report = Report::new("fanout", &target.url);
    report.param("subscribers", args.subscribers);
    report.param("rooms", args.rooms);
    report.param("publishers", args.publishers);
    report.param("rate", args.rate);
    report.param("size", args.size);
    report.param("duration_s", stats::round1(secs));
    let sent_rate = total_sent as f64 / secs;
    report.count("sent", total_sent);
    report.metric(
        "sent_per_s",
        stats::round1(sent_rate),
        stats::rate(sent_rate),
    );
    let delivery_rate = delivered_in_time as f64 / secs;
    report.metric(
        "deliveries_per_s",
        stats::round1(delivery_rate),
        stats::rate(delivery_rate),
    );
    report.count("delivered", delivered);
    report.count("expected", expected_deliveries);
    report.latency("latency", &latency);
    report.count("lost", totals.lost);
    report.count("duplicated", totals.duplicates);
    report.count("out_of_order", totals.out_of_order);
    report.metric(
        "drain_s",
        stats::round1(drained_after.as_secs_f64()),
        format!(
            "{:.1} s after publishing stopped",
            drained_after.as_secs_f64()
        ),
    );
    stats::report_cpu(&mut report, cpu_used, "");
    if totals.foreign > 0 {
        report.warn(format!(
            "{} stamped messages arrived in a room they were not published into",
            totals.foreign
        ));
    }
    let errors = shared.publish_errors.load(Ordering::Relaxed);
    if errors > 0 {
        let first = shared
            .first_publish_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        // The usual cause under load is the server's per-connection message rate: name its flags.
        let hint = if first.contains("rate_limited") {
            " (the server's per-connection message rate: raise it with `switchboard serve \
             --rate-limit N --rate-burst N`)"
        } else {
            ""
        };
        report.warn(format!(
            "publishers received {errors} error frames; first: {first}{hint}"
        ));
    }
    for (reason, connections) in ended {
        report.warn(format!("{connections} connections ended early: {reason}"));
    }
    report.print(common.json);
    Ok(())
}

/// One stream of a publisher.
#[derive(Debug)]
struct Stream {
    index: usize,
    subscribers: u64,
    before: String,
    after: String,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    rate: f64,
    window: u64,
    size: usize,
}

/// Publishes on schedule (or as fast as the window allows) until the drain phase, then waits
/// for the end and closes.
async fn publisher(
    mut ws: Ws,
    mut streams: Vec<Stream>,
    plan: Plan,
    shared: &Shared,
    mut phase: PhaseRx,
) -> SubscriberResult {
    let mut result = SubscriberResult::default();
    if phase.wait_for(|p| *p >= Phase::Run).await.is_err() || *phase.borrow() >= Phase::Drain {
        shared.publishers_done.fetch_add(1, Ordering::Release);
        client::close(ws).await;
        return result;
    }
    let started = shared.started.get().copied().unwrap_or_else(Instant::now);
    let mut draining = std::pin::pin!(client::reached(phase.clone(), Phase::Drain));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut next_stream = 0usize;
    let mut failed = None;
    loop {
        tokio::select! {
            biased;
            () = &mut draining => break,
            frame = ws.next() => match frame {
                Some(Ok(msg)) if msg.is_close() => { failed = Some(client::describe_end(Some(Ok(msg)))); break; }
                Some(Ok(msg)) => note_error(&client::plain(msg), shared),
                other => { failed = Some(client::describe_end(other)); break; }
            },
            _ = tick.tick() => {
                let batch = if plan.rate > 0.0 {
                    let due = (started.elapsed().as_secs_f64() * plan.rate) as u64;
                    due.saturating_sub(sent).min(MAX_BATCH)
                } else {
                    MAX_BATCH
                };
                let mut in_batch = 0;
                let mut blocked = 0;
                while in_batch < batch && blocked < streams.len() {
                    next_stream = (next_stream + 1) % streams.len().max(1);
                    let Some(stream) = streams.get_mut(next_stream) else { break };
                    if plan.rate == 0.0 {
                        let delivered = shared
                            .delivered
                            .get(stream.index)
                            .map_or(0, |d| d.load(Ordering::Relaxed));
                        if stream.seq >= plan.window + delivered / stream.subscribers.max(1) {
                            blocked += 1;
                            continue;
                        }
                    }
                    blocked = 0;
                    let mut text =
                        String::with_capacity(stream.before.len() + plan.size + stream.after.len() + 8);
                    text.push_str(&stream.before);
                    client::write_stamp(
                        &mut text,
                        Stamp { stream: stream.index as u64, seq: stream.seq, sent_us: client::now_us() },
                        plan.size,
                        true,
                    );
                    text.push_str(&stream.after);
                    if let Err(err) = ws.feed(Message::text(text)).await {
                        failed = Some(format!("publish failed: {err}"));
                        break;
                    }
                    stream.seq += 1;
                    if let Some(counter) = shared.sent.get(stream.index) {
                        counter.store(stream.seq, Ordering::Release);
                    }
                    in_batch += 1;
                    sent += 1;
                }
                if failed.is_some() {
                    break;
                }
                if in_batch > 0
                    && let Err(err) = ws.flush().await
                {
                    failed = Some(format!("publish failed: {err}"));
                    break;
                }
            }
        }
    }
    shared.publishers_done.fetch_add(1, Ordering::Release);
    // Keep the connection (and so the room membership) until the end: leaving early would
    // send presence events into the rooms while the last deliveries are measured.
    if failed.is_none() {
        let mut stopping = std::pin::pin!(client::reached(phase.clone(), Phase::Stop));
        loop {
            tokio::select! {
                () = &mut stopping => break,
                frame = ws.next() => match frame {
                    Some(Ok(msg)) if !msg.is_close() => note_error(&client::plain(msg), shared),
                    other => { failed = Some(client::describe_end(other)); break; }
                },
            }
        }
    }
    match failed {
        Some(reason) => result.ended = Some(format!("publisher: {reason}")),
        None => client::close(ws).await,
    }
    result
}

/// Counts `error` frames a publisher receives (rate limits, refused publishes).
fn note_error(msg: &Message, shared: &Shared) {
    if let Some(text) = msg.as_text()
        && text.contains(r#""type":"error""#)
        && shared.publish_errors.fetch_add(1, Ordering::Relaxed) == 0
    {
        let mut first = shared
            .first_publish_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *first = Some(text.chars().take(200).collect());
    }
}

/// Receives and checks until the stop phase, then counts what never came and closes.
async fn subscriber(
    mut ws: Ws,
    index: usize,
    room: usize,
    window: bool,
    shared: &Shared,
    phase: PhaseRx,
) -> SubscriberResult {
    let layout = shared.layout;
    let mut trackers: Vec<SeqTracker> = layout
        .streams_into(room)
        .map(|_| SeqTracker::starting_at(0))
        .collect();
    let mut result = SubscriberResult::default();
    let mut stopping = std::pin::pin!(client::reached(phase, Phase::Stop));
    let mut open = true;
    loop {
        let frame = tokio::select! {
            biased;
            () = &mut stopping => break,
            frame = ws.next(), if open => frame,
        };
        let msg = match frame {
            Some(Ok(msg)) if msg.is_text() => client::plain(msg),
            Some(Ok(msg)) if !msg.is_close() => continue,
            other => {
                result.ended = Some(client::describe_end(other));
                open = false;
                continue;
            }
        };
        let Some(stamp) = msg.as_text().and_then(client::find_stamp) else {
            continue;
        };
        let now = client::now_us();
        let stream = usize::try_from(stamp.stream).unwrap_or(usize::MAX);
        let tracker = if stream % layout.rooms == room {
            trackers.get_mut(stream / layout.rooms)
        } else {
            None
        };
        let Some(tracker) = tracker else {
            result.foreign += 1;
            continue;
        };
        if tracker.observe(stamp.seq) == Seen::New {
            shared.shards.with(index, |shard| {
                shard
                    .latency
                    .saturating_record(now.saturating_sub(stamp.sent_us).max(1));
                shard.delivered += 1;
            });
            if window && let Some(delivered) = shared.delivered.get(stream) {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for (tracker, stream) in trackers.iter().zip(layout.streams_into(room)) {
        let sent = shared
            .sent
            .get(stream)
            .map_or(0, |s| s.load(Ordering::Acquire));
        result.lost += sent.saturating_sub(tracker.unique);
        result.duplicates += tracker.duplicates;
        result.out_of_order += tracker.out_of_order;
    }
    if open {
        client::close(ws).await;
    }
    result
}
