//! `switchboard bench <scenario>`: the load generator.
//!
//! Each scenario opens its connections (one tokio task per connection, nothing else per
//! connection), runs for a bounded time, closes what it opened and prints a table, or with
//! `--json` one JSON object on stdout (the table then goes to stderr). The steps they share
//! (set-up, progress line, phases, drain, collecting results) are in [`runner`]. Progress goes to stderr
//! once a second. Templates and the payload stamp (`client::MARKER`) let the same tool drive
//! other servers: a delivered message is recognised by the stamp anywhere in a text frame.

mod client;
mod connect;
mod echo;
mod fanout;
mod idle;
mod jitter;
mod runner;
mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_websockets::Message;

use client::{Target, Ws};

/// Arguments of `switchboard bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Round trips against an echo endpoint (`serve --echo-endpoint`'s /echo): msgs/s, RTT.
    Echo(echo::EchoArgs),
    /// Publishers → rooms → subscribers: deliveries/s, end-to-end latency, loss, duplicates,
    /// reordering.
    Fanout(fanout::FanoutArgs),
    /// Many idle connections joined to rooms: connect rate, server RSS per connection.
    Idle(idle::IdleArgs),
    /// Handshakes per second (connect, upgrade, close) with C in parallel.
    Connect(connect::ConnectArgs),
    /// Clients cut off every ~15 s that reconnect and recover (`join` with `since`):
    /// delivered %, gaps, duplicates, replay latency. Switchboard only.
    Jitter(jitter::JitterArgs),
}

/// Flags every scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// WebSocket URL of the endpoint [default: ws://127.0.0.1:8080/ws, /echo for `echo`].
    #[arg(long)]
    url: Option<String>,
    /// Print the result as one JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// The server's process id: its CPU share (and for `idle` its RSS) are reported.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Longest wait for one connection (TCP + upgrade), seconds.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    connect_timeout: Duration,
    /// Longest time for setting up all connections (connect and subscribe); past it the
    /// run fails (`idle` goes on with what is connected).
    #[arg(long, default_value = "120", value_name = "SECS", value_parser = parse_seconds)]
    setup_timeout: Duration,
    /// Connections being opened at once during set-up.
    #[arg(long, default_value_t = 200, value_name = "N")]
    connect_concurrency: usize,
    /// Connect from the target's usual source address instead of spreading connections over
    /// 127.1.0.1–127.200.249.250 (spreading only applies to loopback IPv4 targets).
    #[arg(long)]
    pub(crate) no_spread: bool,
}

impl CommonArgs {
    /// The URL, or `default_path` on the default host.
    fn url(&self, default_path: &str) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("ws://127.0.0.1:8080{default_path}"))
    }

    async fn target(&self, default_path: &str) -> anyhow::Result<Arc<Target>> {
        Ok(Arc::new(
            Target::resolve(&self.url(default_path), !self.no_spread).await?,
        ))
    }
}

/// How subscribing looks on the server under test.
#[derive(Debug, Clone, clap::Args)]
pub struct SubscribeArgs {
    /// Text frame that subscribes to a room; `{room}` is replaced by the room name.
    #[arg(
        long,
        default_value = r#"{"type":"join","room":"{room}"}"#,
        value_name = "TEXT"
    )]
    subscribe_template: String,
    /// Text in the server's reply that confirms a subscription (each subscribe waits for a
    /// frame containing it); empty: do not wait, sleep --settle after subscribing instead.
    #[arg(long, default_value = r#""type":"joined""#, value_name = "TEXT")]
    ready_marker: String,
    /// With an empty --ready-marker: seconds to wait after the last subscribe.
    #[arg(long, default_value = "0.5", value_name = "SECS", value_parser = parse_seconds)]
    settle: Duration,
    /// Room names are PREFIX-0, PREFIX-1, …
    #[arg(long, default_value = "bench", value_name = "PREFIX")]
    room_prefix: String,
}

impl SubscribeArgs {
    fn room(&self, index: usize) -> String {
        format!("{}-{index}", self.room_prefix)
    }

    /// Sends the subscribe frames for `rooms` and, with a ready marker, waits for one
    /// confirming frame per room.
    async fn subscribe(&self, ws: &mut Ws, rooms: &[String]) -> anyhow::Result<()> {
        for room in rooms {
            let frame = self.subscribe_template.replace("{room}", room);
            ws.feed(Message::text(frame)).await?;
        }
        ws.flush().await?;
        if self.ready_marker.is_empty() {
            return Ok(());
        }
        let mut confirmed = 0;
        let waiting = async {
            while confirmed < rooms.len() {
                match ws.next().await {
                    Some(Ok(msg)) if msg.is_close() => {
                        bail!("while subscribing: {}", client::describe_end(Some(Ok(msg))))
                    }
                    Some(Ok(msg)) => {
                        let msg = client::plain(msg);
                        let text = msg.as_text().unwrap_or_default();
                        if text.contains(&self.ready_marker) {
                            confirmed += 1;
                        } else if text.contains(r#""type":"error""#) {
                            bail!("subscribe refused: {text}");
                        }
                    }
                    other => bail!("while subscribing: {}", client::describe_end(other)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), waiting).await {
            Ok(result) => result,
            Err(_) => bail!(
                "no reply containing {:?} to the subscribe frame within 10 s \
                 (see --ready-marker)",
                self.ready_marker
            ),
        }
    }
}

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.scenario {
        Scenario::Echo(args) => echo::run(args).await,
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Idle(args) => idle::run(args).await,
        Scenario::Connect(args) => connect::run(args).await,
        Scenario::Jitter(args) => jitter::run(args).await,
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Parses a non-negative number of seconds, fractions allowed.
fn parse_seconds(secs: &str) -> Result<Duration, String> {
    let secs: f64 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("invalid duration: {err}"))
}
