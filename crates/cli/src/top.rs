//! `switchboard top URL --key KEY`: the operator page in a terminal. Reads
//! `URL/admin/api/stats` once a second and redraws a table of every node and the busiest rooms
//! with plain ANSI; `q`, Esc or Ctrl-C quits. `--once` prints one snapshot without escapes and
//! exits (for scripts).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Longest one request may take (connect, TLS, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read: a snapshot is a few KB per node.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Rows of each rooms table.
const ROOM_ROWS: usize = 10;

/// Flags of `switchboard top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (any node of a cluster).
    url: String,
    /// The admin key (`[admin] key` of the server).
    #[arg(long, env = "SWITCHBOARD_ADMIN_KEY", hide_env_values = true)]
    key: String,
    /// Print one snapshot, without escape codes, and exit.
    #[arg(long)]
    once: bool,
    /// PEM certificates to trust besides the Mozilla roots (for https:// with a private CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
}

/// `/admin/api/stats`, as far as `top` shows it (docs/admin.md).
#[derive(Debug, Deserialize)]
struct View {
    node: String,
    #[serde(default)]
    cluster_error: Option<String>,
    #[serde(default)]
    nodes: Vec<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Node {
    node: String,
    broker: String,
    uptime_s: u64,
    connections: u64,
    rooms: u64,
    room_members: u64,
    room_messages_per_s: f64,
    metrics: Option<Metrics>,
    busiest_rooms: Vec<Room>,
    largest_rooms: Vec<Room>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metrics {
    published_per_s: f64,
    deliveries_per_s: f64,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    slow_consumer_cuts_total: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Room {
    room: String,
    members: u64,
    messages_per_s: f64,
    seq: u64,
}

/// Where to ask.
struct Target {
    uri: Uri,
    authority: String,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    fn new(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let base: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}: expected http://HOST:PORT"))?;
        let (tls, default_port) = match base.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => {
                let config = crate::connect::tls_client_config(ca_file)?;
                (
                    Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
                    443,
                )
            }
            _ => bail!("unsupported URL {url:?}: expected http://HOST[:PORT] or https://…"),
        };
        let Some(authority) = base.authority() else {
            bail!("invalid URL {url:?}: no host")
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = format!(
            "{}/admin/api/stats",
            base.path().trim_end_matches('/').trim_end_matches("/admin")
        );
        let uri = Uri::builder()
            .path_and_query(path)
            .build()
            .context("building the request path")?;
        Ok(Self {
            uri,
            authority: authority.as_str().to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            host,
            tls,
        })
    }

    /// One `GET /admin/api/stats`.
    async fn fetch(&self, key: &str) -> anyhow::Result<View> {
        let request = Request::get(self.uri.clone())
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::USER_AGENT, "switchboard-top")
            .body(Empty::<Bytes>::new())
            .context("building the request")?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("cannot connect to {}", self.authority))?;
            match &self.tls {
                None => send(tcp, request).await,
                Some(tls) => {
                    let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                        .context("invalid TLS server name")?;
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .context("TLS handshake failed")?;
                    send(stream, request).await
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer within 5 s", self.authority))??;
        let (status, body) = answer;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => bail!("401: the admin key was refused"),
            StatusCode::NOT_FOUND => bail!(
                "404: the operator page is off on {} (set [admin] key or SWITCHBOARD_ADMIN_KEY)",
                self.authority
            ),
            other => bail!("unexpected answer {other}"),
        }
        serde_json::from_slice(&body).context("the answer is not the admin stats JSON")
    }
}

async fn send<I>(io: I, request: Request<Empty<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake failed")?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .context("request failed")?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| anyhow::anyhow!("reading the answer: {err}"))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

pub(crate) async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let target = Target::new(&args.url, args.ca_file.as_deref())?;
    if args.once {
        let view = target.fetch(&args.key).await?;
        print!("{}", render(&view, &args.url));
        return Ok(ExitCode::SUCCESS);
    }
    let _terminal = Terminal::enter()?;
    let mut keys = quit_keys();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = keys.recv() => return Ok(ExitCode::SUCCESS),
            _ = tick.tick() => {}
        }
        let text = match target.fetch(&args.key).await {
            Ok(view) => render(&view, &args.url),
            Err(err) => format!(
                "switchboard top: {}\n(retrying every second; q quits)\n",
                crate::errors::describe(&err)
            ),
        };
        // Home, the screen's text with each line cleared to its end, then the rest cleared.
        let mut frame = String::from("\x1b[H");
        for line in text.lines() {
            frame.push_str(line);
            frame.push_str("\x1b[K\r\n");
        }
        frame.push_str("\x1b[J");
        let mut out = std::io::stdout().lock();
        out.write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .context("writing to the terminal")?;
    }
}

/// Raw mode (keys arrive one by one, unechoed) and a hidden cursor until dropped.
struct Terminal;

impl Terminal {
    fn enter() -> anyhow::Result<Self> {
        crossterm::terminal::enable_raw_mode()
            .context("switchboard top needs a terminal (use --once in scripts)")?;
        print!("\x1b[?25l\x1b[2J");
        Ok(Self)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
        print!("\x1b[?25h\r\n");
        let _ = std::io::stdout().flush();
    }
}

/// A thread that reports `q`, Esc or Ctrl-C (raw mode turns Ctrl-C into a key, not a signal).
/// It stops when the receiver is dropped.
fn quit_keys() -> mpsc::Receiver<()> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => break,
            }
            let Ok(Event::Key(key)) = event::read() else {
                continue;
            };
            let quit = key.kind != KeyEventKind::Release
                && match key.code {
                    KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
                    KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
                    _ => false,
                };
            if quit {
                let _ = tx.blocking_send(());
                break;
            }
        }
    });
    rx
}

/// A display cell: the number, or `–` when unknown.
fn number(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// Control characters replaced: names come from the network and must not drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The screen: nodes, then the busiest and the largest rooms across nodes.
fn render(view: &View, url: &str) -> String {
    let mut out = String::new();
    let nodes = view.nodes.len();
    let _ = writeln!(
        out,
        "switchboard top  {}  {} node{}, answered by {}",
        printable(url),
        nodes,
        if nodes == 1 { "" } else { "s" },
        printable(&view.node)
    );
    if let Some(err) = &view.cluster_error {
        let _ = writeln!(out, "cluster view incomplete: {}", printable(err));
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<7} {:>7} {:>7} {:>6} {:>8} {:>9} {:>8} {:>7} {:>7} {:>9}",
        "NODE",
        "BROKER",
        "UP",
        "CONN",
        "ROOMS",
        "MEMBERS",
        "MSG IN/S",
        "DELIV/S",
        "P50 MS",
        "P99 MS",
        "SLOW CUTS"
    );
    for node in &view.nodes {
        let metrics = node.metrics.as_ref();
        let _ = writeln!(
            out,
            "{:<24} {:<7} {:>7} {:>7} {:>6} {:>8} {:>9} {:>8} {:>7} {:>7} {:>9}",
            printable(&node.node),
            printable(&node.broker),
            format!("{}s", node.uptime_s),
            node.connections,
            node.rooms,
            node.room_members,
            number(Some(
                metrics.map_or(node.room_messages_per_s, |m| m.published_per_s)
            )),
            number(metrics.map(|m| m.deliveries_per_s)),
            number(metrics.and_then(|m| m.latency_p50_ms)),
            number(metrics.and_then(|m| m.latency_p99_ms)),
            number(metrics.map(|m| m.slow_consumer_cuts_total as f64)),
        );
    }
    if view.nodes.iter().all(|node| node.metrics.is_none()) {
        let _ = writeln!(
            out,
            "(no traffic counters from the nodes: MSG IN/S counts messages sequenced in their rooms)"
        );
    }
    for (title, busiest) in [("BUSIEST ROOMS", true), ("LARGEST ROOMS", false)] {
        let mut rows: Vec<(&Room, &str)> = view
            .nodes
            .iter()
            .flat_map(|node| {
                let rooms = if busiest {
                    &node.busiest_rooms
                } else {
                    &node.largest_rooms
                };
                rooms.iter().map(move |room| (room, node.node.as_str()))
            })
            .collect();
        if busiest {
            rows.sort_by(|a, b| {
                b.0.messages_per_s
                    .total_cmp(&a.0.messages_per_s)
                    .then(b.0.members.cmp(&a.0.members))
            });
        } else {
            rows.sort_by_key(|row| std::cmp::Reverse(row.0.members));
        }
        let _ = writeln!(
            out,
            "\n{title:<32} {:<24} {:>8} {:>9} {:>10}",
            "NODE", "MEMBERS", "MSG/S", "SEQ"
        );
        if rows.is_empty() {
            let _ = writeln!(out, "(none)");
        }
        for (room, node) in rows.into_iter().take(ROOM_ROWS) {
            let _ = writeln!(
                out,
                "{:<32} {:<24} {:>8} {:>9} {:>10}",
                printable(&room.room),
                printable(node),
                room.members,
                number(Some(room.messages_per_s)),
                room.seq
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_node_and_the_busiest_rooms_first() {
        let view: View = serde_json::from_str(
            r#"{"node":"a:1","interval_ms":1000,"nodes":[
              {"node":"a:1","broker":"redis","uptime_s":5,"connections":3,"sessions":3,"rooms":2,
               "room_members":4,"room_messages_per_s":1.5,"metrics":null,
               "busiest_rooms":[{"room":"slow","members":1,"messages_per_s":0.5,"seq":9}],
               "largest_rooms":[]},
              {"node":"b:2","broker":"redis","uptime_s":7,"connections":1,"sessions":1,"rooms":1,
               "room_members":1,"room_messages_per_s":0,"metrics":{"published_per_s":12,
               "deliveries_per_s":240,"latency_p50_ms":0.8,"latency_p99_ms":4.2,
               "slow_consumer_cuts_total":2},
               "busiest_rooms":[{"room":"hot\u001b[2J","members":2,"messages_per_s":12,"seq":99}],
               "largest_rooms":[]}]}"#,
        )
        .unwrap();
        let text = render(&view, "http://a:1");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("2 nodes, answered by a:1"), "{text}");
        let b = lines.iter().find(|line| line.starts_with("b:2")).unwrap();
        for cell in ["240", "0.8", "4.2", "12"] {
            assert!(b.contains(cell), "{b}");
        }
        let a = lines.iter().find(|line| line.starts_with("a:1")).unwrap();
        assert!(a.contains("1.5") && a.contains('–'), "{a}");
        let busiest = lines
            .iter()
            .position(|line| line.starts_with("BUSIEST ROOMS"))
            .unwrap();
        assert!(lines[busiest + 1].starts_with("hot?[2J"), "{text}");
        assert!(lines[busiest + 2].starts_with("slow"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn the_stats_path_is_under_the_base_url() {
        for (url, path) in [
            ("http://127.0.0.1:8080", "/admin/api/stats"),
            ("http://127.0.0.1:8080/", "/admin/api/stats"),
            ("http://h/admin", "/admin/api/stats"),
            ("https://h/sb/", "/sb/admin/api/stats"),
        ] {
            let target = Target::new(url, None).unwrap();
            assert_eq!(target.uri.path(), path, "{url}");
        }
        assert_eq!(Target::new("https://h", None).unwrap().port, 443);
        assert!(Target::new("ws://h", None).is_err());
    }
}
