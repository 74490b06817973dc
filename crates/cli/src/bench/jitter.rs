//! `bench jitter`: N clients in one room lose their connection every ~15 s (the TCP stream is
//! dropped, no close frame), stay away ~2 s, reconnect and recover with `join` +
//! `since:{seq,epoch}`, deduplicating by seq, while one publisher sends at a steady rate.
//! Reports the share of messages every client saw exactly once, holes, duplicates and the
//! replay latency (reconnect start → caught up with the room's seq at the re-join).
//!
//! Speaks Switchboard's protocol directly (not the `switchboard-client` SDK): the scenario
//! needs to cut connections itself and time each recovery step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::value::RawValue;
use switchboard_protocol::{ClientMessage, OwnedServerMessage, StreamPosition, owned};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_websockets::Message;

use super::client::{self, Phase, PhaseRx, Seen, SeqTracker, Stamp, Target, Ws};
use super::echo::sleep_until;
use super::runner::{self, Need, Runner};
use super::stats::{self, Report, Shards};
use super::{CommonArgs, parse_seconds};

/// Pause before reconnecting after the server ended a connection or a reconnect failed.
const RETRY: Duration = Duration::from_millis(250);
/// Longest wait for the publisher's last acks.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Arguments of `bench jitter`.
#[derive(Debug, clap::Args)]
pub struct JitterArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Clients (all in one room).
    #[arg(long, short = 'n', default_value_t = 100)]
    clients: usize,
    /// Publish rate, messages/s (one publisher). Rate × (--away + reconnect time) must stay
    /// below the server's history size (default 100) for recovery to be possible.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Payload size in bytes.
    #[arg(long, short, default_value_t = 64)]
    size: usize,
    /// Seconds of publishing (and cutting).
    #[arg(long, short, default_value = "60", value_parser = parse_seconds)]
    duration: Duration,
    /// Mean seconds between two cuts of a client's connection.
    #[arg(long, default_value = "15", value_parser = parse_seconds)]
    cut_every: Duration,
    /// Each interval is --cut-every ± up to this many seconds (uniform).
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    cut_jitter: Duration,
    /// Seconds a cut client stays away before reconnecting.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    away: Duration,
    /// Longest wait, after publishing stops, for every client to catch up.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    drain: Duration,
    /// Room name [default: jitter-PID-MILLIS, fresh for every run].
    #[arg(long)]
    room: Option<String>,
}

#[derive(Debug)]
struct Shard {
    replay: Histogram<u64>,
    live: Histogram<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    cuts: AtomicU64,
    reconnects: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    connect_failures: AtomicU64,
    server_closes: AtomicU64,
    errors: AtomicU64,
    /// `presence` frames (single, coalesced or count-only) and their bytes, every client.
    presence_frames: AtomicU64,
    presence_bytes: AtomicU64,
    /// The largest `member_count` a `joined` or `presence` frame reported.
    max_member_count: AtomicU64,
    published: AtomicU64,
    /// The room's seq of the publisher's last acknowledged message.
    last_seq: AtomicU64,
    publisher_done: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    shards: Arc<Shards<Shard>>,
    counters: Counters,
    /// Per client: every seq below this has been received.
    caught_up: Vec<AtomicU64>,
    first_problem: std::sync::Mutex<Option<String>>,
    started: std::sync::OnceLock<Instant>,
}

impl Shared {
    fn problem(&self, what: String) {
        let mut first = self
            .first_problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.is_none() {
            eprintln!("warning: {what}");
            *first = Some(what);
        }
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientResult {
    first_seq: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    holes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Cuts {
    every: Duration,
    jitter: Duration,
    away: Duration,
}

impl Cuts {
    fn next(&self, first: bool) -> Instant {
        let every = self.every.as_secs_f64();
        let jitter = self.jitter.as_secs_f64().min(every);
        let secs = if first {
            // Spread the first cuts so that clients do not all drop together.
            fastrand::f64() * (every + jitter)
        } else {
            every - jitter + fastrand::f64() * 2.0 * jitter
        };
        Instant::now() + Duration::from_secs_f64(secs.max(0.05))
    }
}

pub async fn run(args: JitterArgs) -> anyhow::Result<()> {
    let common = &args.common;
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let target = common.target("/ws").await?;
    let room = args.room.clone().unwrap_or_else(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("jitter-{}-{millis}", std::process::id())
    });
    let shared = Arc::new(Shared {
        shards: Shards::new(|| {
            Ok(Shard {
                replay: stats::histogram()?,
                live: stats::histogram()?,
            })
        })?,
        counters: Counters::default(),
        caught_up: (0..args.clients).map(|_| AtomicU64::new(0)).collect(),
        first_problem: std::sync::Mutex::new(None),
        started: std::sync::OnceLock::new(),
    });
    let room = Arc::new(room);
    let cuts = Cuts {
        every: args.cut_every,
        jitter: args.cut_jitter,
        away: args.away,
    };
    let mut run = Runner::new(common);
    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let (target, shared, room) = (target.clone(), shared.clone(), room.clone());
        let timeout = common.connect_timeout;
        clients.push(run.spawn(|connector, phase| async move {
            let mut joined = None;
            let ws = connector
                .connect(&target, index as u64, async |ws| {
                    joined = Some(join(ws, &room, None).await?);
                    Ok(())
                })
                .await?;
            let position = joined?;
            let session = Session {
                index,
                target: &target,
                timeout,
                room: &room,
                shared: &shared,
                cuts,
            };
            Some(session.run(ws, position, phase).await)
        }));
    }
    let publisher = {
        let (target, shared, room) = (target.clone(), shared.clone(), room.clone());
        let (rate, size) = (args.rate, args.size);
        let index = args.clients as u64;
        run.spawn(|connector, phase| async move {
            let ws = connector
                .connect(&target, index, async |ws| {
                    join(ws, &room, None).await.map(|_| ())
                })
                .await?;
            publish(ws, &room, rate, size, &shared, phase).await;
            Some(())
        })
    };
    run.set_up("joining", Need::All).await?;

    let mut measuring = {
        let shared = shared.clone();
        run.measure(move |_| {
            let counters = &shared.counters;
            let last = counters.last_seq.load(Ordering::Relaxed);
            let current = shared
                .caught_up
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) > last)
                .count();
            format!(
                "published {}, cuts {}, reconnects {}, {current}/{} clients up to date",
                stats::count(counters.published.load(Ordering::Relaxed)),
                stats::count(counters.cuts.load(Ordering::Relaxed)),
                stats::count(counters.reconnects.load(Ordering::Relaxed)),
                shared.caught_up.len()
            )
        })
    };
    let started = measuring.started;
    let _ = shared.started.set(started);
    run.phase(Phase::Run);
    tokio::time::sleep(args.duration).await;
    run.phase(Phase::Drain);
    let published_for = started.elapsed();
    let deadline = Instant::now() + args.drain.max(ACK_WAIT);
    runner::wait_until(deadline, Duration::from_millis(10), || {
        shared.counters.publisher_done.load(Ordering::Acquire) != 0
    })
    .await;
    let last_seq = shared.counters.last_seq.load(Ordering::Acquire);
    runner::wait_until(deadline, Duration::from_millis(20), || {
        shared
            .caught_up
            .iter()
            .all(|c| c.load(Ordering::Relaxed) > last_seq)
    })
    .await;
    let cpu_used = measuring.cpu();
    run.phase(Phase::Stop);
    measuring.stop_progress();

    let mut expected_total = 0u64;
    let mut totals = ClientResult::default();
    for result in runner::collect(clients).await {
        expected_total += last_seq.saturating_sub(result.first_seq);
        totals.unique += result.unique;
        totals.duplicates += result.duplicates;
        totals.out_of_order += result.out_of_order;
        totals.holes += result.holes;
    }
    let _ = publisher.await;

    let (mut replay, mut live) = (stats::histogram()?, stats::histogram()?);
    shared.shards.fold((), |(), shard| {
        stats::merge(&mut replay, &shard.replay);
        stats::merge(&mut live, &shard.live);
    });
    let counters = &shared.counters;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let mut report = Report::new("jitter", &target.url);
    report.param("clients", args.clients);
    report.param("rate", args.rate);
    report.param("size", args.size);
    report.param("duration_s", stats::round1(published_for.as_secs_f64()));
    report.param("cut_every_s", args.cut_every.as_secs_f64());
    report.param("cut_jitter_s", args.cut_jitter.as_secs_f64());
    report.param("away_s", args.away.as_secs_f64());
    report.param("room", room.as_str());
    report.count("published", last_seq);
    let missing = expected_total.saturating_sub(totals.unique);
    let pct = if expected_total == 0 {
        100.0
    } else {
        totals.unique as f64 * 100.0 / expected_total as f64
    };
    report.metric(
        "delivered_pct",
        (pct * 1000.0).round() / 1000.0,
        format!(
            "{pct:.3} % ({} of {})",
            stats::count(totals.unique),
            stats::count(expected_total)
        ),
    );
    report.count("missing", missing);
    report.count("gaps", totals.holes);
    report.count("duplicates", totals.duplicates);
    report.count("out_of_order", totals.out_of_order);
    report.count("cuts", load(&counters.cuts));
    report.count("reconnects", load(&counters.reconnects));
    report.count("recovered", load(&counters.recovered));
    report.count("not_recovered", load(&counters.not_recovered));
    report.count("presence_frames", load(&counters.presence_frames));
    report.count("presence_bytes", load(&counters.presence_bytes));
    report.count("max_member_count", load(&counters.max_member_count));
    report.latency("replay", &replay);
    report.latency("live_latency", &live);
    stats::report_cpu(&mut report, cpu_used, "");
    for (what, counter) in [
        ("reconnect attempts failed", &counters.connect_failures),
        (
            "connections were ended by the server",
            &counters.server_closes,
        ),
        ("error frames received", &counters.errors),
    ] {
        let count = load(counter);
        if count > 0 {
            report.warn(format!("{count} {what}"));
        }
    }
    if let Some(first) = shared
        .first_problem
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    {
        report.warn(format!("first problem: {first}"));
    }
    report.print(common.json);
    Ok(())
}

/// Joins `room` (with `since` when recovering) and returns the room's position at the join.
async fn join(
    ws: &mut Ws,
    room: &str,
    since: Option<StreamPosition<&str>>,
) -> anyhow::Result<StreamPosition> {
    send_join(ws, room, since).await?;
    loop {
        let frame = ws.next().await;
        let text = match &frame {
            Some(Ok(msg)) if msg.is_text() => msg.as_text().unwrap_or_default(),
            Some(Ok(msg)) if !msg.is_close() => continue,
            _ => bail!("while joining: {}", client::describe_end(frame)),
        };
        match owned::decode(text).context("unreadable reply to join")? {
            OwnedServerMessage::Joined { seq, epoch, .. } => {
                let epoch = epoch.context("`joined` without an epoch")?;
                return Ok(StreamPosition { seq, epoch });
            }
            OwnedServerMessage::Error { .. } => bail!("join refused: {}", client::clip(text)),
            _ => {}
        }
    }
}

async fn send_join(
    ws: &mut Ws,
    room: &str,
    since: Option<StreamPosition<&str>>,
) -> anyhow::Result<()> {
    let join = ClientMessage::Join {
        room: room.into(),
        id: None,
        since: since.map(Into::into),
    };
    ws.send(Message::text(join.encode())).await?;
    Ok(())
}

/// A reconnect waiting to catch up: when it started, and the seq to reach (the re-join's).
#[derive(Debug, Clone, Copy)]
struct Catchup {
    started: Instant,
    target: Option<u64>,
}

/// One client's life: receive, get cut, stay away, reconnect, recover.
struct Session<'a> {
    index: usize,
    target: &'a Target,
    timeout: Duration,
    room: &'a str,
    shared: &'a Shared,
    cuts: Cuts,
}

impl Session<'_> {
    async fn run(&self, ws: Ws, joined: StreamPosition, phase: PhaseRx) -> ClientResult {
        let shared = self.shared;
        let counters = &shared.counters;
        let first_seq = joined.seq;
        let mut tracker = SeqTracker::starting_at(first_seq + 1);
        let mut epoch = joined.epoch;
        let mut ws = Some(ws);
        let mut catchup: Option<Catchup> = None;
        let mut reconnect_at: Option<Instant> = None;
        self.publish_progress(&tracker);
        let mut running = phase.clone();
        let _ = running.wait_for(|p| *p >= Phase::Run).await;
        let mut stopping = std::pin::pin!(client::reached(phase.clone(), Phase::Stop));
        let mut cut_at = self.cuts.next(true);
        loop {
            let cutting = *phase.borrow() == Phase::Run;
            match ws.as_mut() {
                Some(conn) => {
                    tokio::select! {
                        biased;
                        () = &mut stopping => break,
                        () = tokio::time::sleep_until(cut_at), if cutting => {
                            // Drop the TCP stream: no close frame, like a lost network.
                            ws = None;
                            catchup = None;
                            counters.cuts.fetch_add(1, Ordering::Relaxed);
                            reconnect_at = Some(Instant::now() + self.cuts.away);
                        }
                        frame = conn.next() => {
                            let text = match &frame {
                                Some(Ok(msg)) if msg.is_text() => msg.as_text().unwrap_or_default(),
                                Some(Ok(msg)) if !msg.is_close() => continue,
                                _ => {
                                    counters.server_closes.fetch_add(1, Ordering::Relaxed);
                                    shared.problem(format!("client {}: {}", self.index, client::describe_end(frame)));
                                    ws = None;
                                    catchup = None;
                                    reconnect_at = Some(Instant::now() + RETRY);
                                    continue;
                                }
                            };
                            self.on_text(text, &mut tracker, &mut epoch, &mut catchup);
                        }
                    }
                }
                None => {
                    tokio::select! {
                        biased;
                        () = &mut stopping => break,
                        () = sleep_until(reconnect_at) => {
                            let started = Instant::now();
                            let last = tracker.contiguous_until().saturating_sub(1);
                            match self.reconnect(last, &epoch).await {
                                Ok(conn) => {
                                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                                    ws = Some(conn);
                                    catchup = Some(Catchup { started, target: None });
                                    reconnect_at = None;
                                    cut_at = self.cuts.next(false);
                                }
                                Err(err) => {
                                    counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                                    shared.problem(format!("client {} reconnect: {err:#}", self.index));
                                    reconnect_at = Some(Instant::now() + RETRY);
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(conn) = ws {
            client::close(conn).await;
        }
        ClientResult {
            first_seq,
            unique: tracker.unique,
            duplicates: tracker.duplicates,
            out_of_order: tracker.out_of_order,
            holes: tracker.holes,
        }
    }

    async fn reconnect(&self, last: u64, epoch: &str) -> anyhow::Result<Ws> {
        let mut ws = self.target.connect(self.index as u64, self.timeout).await?;
        let since = StreamPosition { seq: last, epoch };
        send_join(&mut ws, self.room, Some(since)).await?;
        Ok(ws)
    }

    fn on_text(
        &self,
        text: &str,
        tracker: &mut SeqTracker,
        epoch: &mut String,
        catchup: &mut Option<Catchup>,
    ) {
        let shared = self.shared;
        let counters = &shared.counters;
        let Ok(frame) = owned::decode(text) else {
            shared.problem(format!("unreadable frame: {}", client::clip(text)));
            return;
        };
        match frame {
            OwnedServerMessage::Presence { member_count, .. } => {
                self.saw_member_count(member_count);
                counters.presence_frames.fetch_add(1, Ordering::Relaxed);
                counters
                    .presence_bytes
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
            }
            OwnedServerMessage::Message { seq, .. } => {
                let first_time = tracker.observe(seq) == Seen::New;
                if first_time && catchup.is_none() {
                    let now = client::now_us();
                    if let Some(stamp) = client::find_stamp(text) {
                        shared.shards.with(self.index, |shard| {
                            shard
                                .live
                                .saturating_record(now.saturating_sub(stamp.sent_us).max(1));
                        });
                    }
                }
            }
            OwnedServerMessage::Joined {
                seq,
                epoch: new_epoch,
                recovered,
                members,
                member_count,
                ..
            } => {
                self.saw_member_count(member_count);
                if recovered == Some(true) {
                    counters.recovered.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.not_recovered.fetch_add(1, Ordering::Relaxed);
                    // The `joined` itself can be large (every member's name): count, don't copy.
                    shared.problem(format!(
                        "client {}: re-join could not recover (joined at seq {seq}, epoch {}, {} members)",
                        self.index,
                        new_epoch.as_deref().unwrap_or("-"),
                        members.len(),
                    ));
                    tracker.skip_to(seq + 1);
                }
                if let Some(new_epoch) = new_epoch {
                    *epoch = new_epoch;
                }
                if let Some(catchup) = catchup.as_mut() {
                    catchup.target = Some(seq);
                }
            }
            OwnedServerMessage::Error { .. } => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                shared.problem(format!("client {}: {}", self.index, client::clip(text)));
            }
            _ => {}
        }
        if let Some(Catchup {
            started,
            target: Some(target),
        }) = *catchup
            && tracker.contiguous_until() > target
        {
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared.shards.with(self.index, |shard| {
                shard.replay.saturating_record(took.max(1));
            });
            *catchup = None;
        }
        self.publish_progress(tracker);
    }

    /// Keeps the largest member count a `joined` or `presence` frame reported.
    fn saw_member_count(&self, count: Option<u64>) {
        if let Some(count) = count {
            self.shared
                .counters
                .max_member_count
                .fetch_max(count, Ordering::Relaxed);
        }
    }

    fn publish_progress(&self, tracker: &SeqTracker) {
        if let Some(progress) = self.shared.caught_up.get(self.index) {
            progress.store(tracker.contiguous_until(), Ordering::Relaxed);
        }
    }
}

/// The publisher: one message every 1/rate s with an `id`, acks give the room's seq. Stops at
/// the drain phase, waits for the last acks, stays connected until the end.
async fn publish(mut ws: Ws, room: &str, rate: f64, size: usize, shared: &Shared, phase: PhaseRx) {
    let counters = &shared.counters;
    let mut running = phase.clone();
    let _ = running.wait_for(|p| *p >= Phase::Run).await;
    let started = shared.started.get().copied().unwrap_or_else(Instant::now);
    let mut draining = std::pin::pin!(client::reached(phase.clone(), Phase::Drain));
    let mut stopping = std::pin::pin!(client::reached(phase.clone(), Phase::Stop));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut ack_deadline = None;
    let mut ok = true;
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            () = &mut draining, if ack_deadline.is_none() => {
                ack_deadline = Some(Instant::now() + ACK_WAIT);
                if acked >= sent { counters.publisher_done.store(1, Ordering::Release); }
            }
            () = sleep_until(ack_deadline), if counters.publisher_done.load(Ordering::Relaxed) == 0 => {
                shared.problem(format!("publisher: {} of {sent} publishes not acknowledged", sent - acked));
                counters.publisher_done.store(1, Ordering::Release);
            }
            _ = tick.tick(), if ack_deadline.is_none() => {
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    let mut stamp = String::with_capacity(size + 2);
                    client::write_stamp(&mut stamp, Stamp { stream: 0, seq: sent, sent_us: client::now_us() }, size, true);
                    let Ok(data) = RawValue::from_string(stamp) else {
                        ok = false;
                        break;
                    };
                    let publish = ClientMessage::Publish {
                        room: room.into(),
                        data: &data,
                        id: Some(sent),
                        echo: false,
                        msg_id: None,
                    };
                    if ws.feed(Message::text(publish.encode())).await.is_err() {
                        ok = false;
                        break;
                    }
                    sent += 1;
                }
                if !ok || ws.flush().await.is_err() {
                    shared.problem("publisher: connection lost".to_owned());
                    counters.publisher_done.store(1, Ordering::Release);
                    return;
                }
                counters.published.store(sent, Ordering::Relaxed);
            }
            frame = ws.next() => {
                let text = match &frame {
                    Some(Ok(msg)) if msg.is_text() => msg.as_text().unwrap_or_default(),
                    Some(Ok(msg)) if !msg.is_close() => continue,
                    _ => {
                        shared.problem(format!("publisher: {}", client::describe_end(frame)));
                        counters.publisher_done.store(1, Ordering::Release);
                        return;
                    }
                };
                if let Ok(parsed) = owned::decode(text) {
                    match parsed {
                        OwnedServerMessage::Ack { seq, .. } => {
                            acked += 1;
                            counters.last_seq.fetch_max(seq.unwrap_or(0), Ordering::AcqRel);
                            if ack_deadline.is_some() && acked >= sent {
                                counters.publisher_done.store(1, Ordering::Release);
                            }
                        }
                        OwnedServerMessage::Error { .. } => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            shared.problem(format!("publisher: {text}"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    client::close(ws).await;
}
