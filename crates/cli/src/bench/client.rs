//! Raw connection helpers shared by the scenarios: resolving the target, connecting (optionally
//! from a spread of loopback source addresses), closing, the payload stamp that carries the send
//! time and sequence number, and the run phases every connection task follows.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use http::Uri;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_websockets::{
    ClientBuilder, CloseCode, Error as WsError, Limits, Message, WebSocketStream, upgrade,
};

/// One client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// How long a graceful close may wait for the server's close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections made from one source address before moving on to the next one: well below the
/// ~28,000 ephemeral ports of one (source, destination) pair, with room for TIME_WAIT.
const CONNECTIONS_PER_SOURCE: u64 = 1000;

/// Replaced by the connection number in the URL.
const CONN_PLACEHOLDER: &str = "{conn}";

/// Where the scenario connects to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    uri: Uri,
    addr: SocketAddr,
    spread: bool,
    /// Offer permessage-deflate (RFC 7692) on every connection.
    deflate: bool,
}

impl Target {
    /// Parses and resolves `url` (only `ws://`). With `spread`, connections to a loopback IPv4
    /// address are made from source addresses spread over 127.1.0.1–127.200.249.250 (each
    /// source address has its own ephemeral port range, so tens of thousands of connections do
    /// not run out of ports); other targets ignore it.
    pub async fn resolve(url: &str, spread: bool) -> anyhow::Result<Self> {
        let uri: Uri = url
            .replace(CONN_PLACEHOLDER, "0")
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => bail!("{url}: wss:// is not supported by the load generator"),
            _ => bail!("unsupported URL {url:?}: expected ws://HOST:PORT/PATH"),
        }
        let Some(host) = uri.host() else {
            bail!("invalid URL {url:?}: no host");
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let spread = spread && matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        Ok(Self {
            url: url.to_owned(),
            uri,
            addr,
            spread,
            deflate: false,
        })
    }

    /// Offers permessage-deflate on every connection (what a browser sends); compressed
    /// messages must then go through [`plain`] before their text is read.
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// Whether connections are made from spread source addresses.
    pub fn spreads(&self) -> bool {
        self.spread
    }

    /// The request URI of connection `index`: `{conn}` in the URL becomes the index (e.g.
    /// `?user=u{conn}` gives every connection its own user name).
    fn uri_for(&self, index: u64) -> anyhow::Result<Uri> {
        if self.url.contains(CONN_PLACEHOLDER) {
            let url = self.url.replace(CONN_PLACEHOLDER, &index.to_string());
            url.parse().with_context(|| format!("invalid URL {url:?}"))
        } else {
            Ok(self.uri.clone())
        }
    }

    /// Opens connection number `index`: TCP (no Nagle), then the upgrade handshake, within
    /// `timeout`.
    pub async fn connect(&self, index: u64, timeout: Duration) -> anyhow::Result<Ws> {
        let source = self.spread.then(|| source_ip(index));
        let connecting = async {
            let socket = match self.addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }
            .context("cannot create a socket")?;
            if let Some(ip) = source {
                socket
                    .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                    .with_context(|| format!("cannot bind to source address {ip}"))?;
            }
            let stream = socket.connect(self.addr).await.context("TCP connect")?;
            stream.set_nodelay(true).context("TCP_NODELAY")?;
            let mut builder = ClientBuilder::from_uri(self.uri_for(index)?);
            if self.deflate {
                builder = builder
                    .limits(Limits::default().allow_compressed(true))
                    .add_header(
                        http::header::SEC_WEBSOCKET_EXTENSIONS,
                        http::HeaderValue::from_static(
                            "permessage-deflate; client_max_window_bits",
                        ),
                    )
                    .context("extension header")?;
            }
            match builder.connect_on(stream).await {
                Ok((ws, _response)) => Ok(ws),
                Err(WsError::Upgrade(upgrade::Error::DidNotSwitchProtocols(status))) => {
                    // The load itself is the usual cause (per-IP rate, connection limit): say
                    // which server flags lift it.
                    match crate::refusal::hint(status, "/ws", "") {
                        Some(hint) => bail!("upgrade refused: HTTP {status} ({hint})"),
                        None => bail!("upgrade refused: HTTP {status}"),
                    }
                }
                Err(err) => Err(err).context("upgrade handshake"),
            }
        };
        let from = source.map(|ip| format!(" from {ip}")).unwrap_or_default();
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(ws)) => Ok(ws),
            Ok(Err(err)) => Err(err.context(format!("cannot connect to {}{from}", self.url))),
            Err(_) => bail!(
                "cannot connect to {}{from}: timed out after {timeout:?}",
                self.url
            ),
        }
    }
}

/// At most this many bytes of a server frame go into a warning.
const CLIP_BYTES: usize = 200;

/// `text` cut to one short warning line (a frame can be 75 KB: a `joined` of 5,000 members).
pub fn clip(text: &str) -> String {
    if text.len() <= CLIP_BYTES {
        return text.to_owned();
    }
    let mut end = CLIP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes)",
        text.get(..end).unwrap_or_default(),
        text.len()
    )
}

/// The message with its payload inflated if it arrived compressed (permessage-deflate); a
/// message that does not inflate becomes an empty binary one (no text to read).
pub fn plain(msg: Message) -> Message {
    use std::cell::RefCell;
    thread_local! {
        static INFLATER: RefCell<flate2::Decompress> = RefCell::new(flate2::Decompress::new(false));
    }
    if !msg.is_compressed() {
        return msg;
    }
    let inflated = INFLATER.with_borrow_mut(|inflater| {
        inflater.reset(false);
        let mut input = msg.as_payload().to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            let read = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
            let rest = input.get(read..).unwrap_or_default();
            inflater
                .decompress_vec(rest, &mut out, flate2::FlushDecompress::Sync)
                .ok()?;
            if inflater.total_in() as usize >= input.len() && out.len() < out.capacity() {
                return Some(out);
            }
            out.reserve(out.capacity());
        }
    });
    inflated
        .and_then(|bytes| msg.inflated(bytes.into()).ok())
        .unwrap_or_else(|| Message::binary(bytes::Bytes::new()))
}

/// The source address of connection `index` (see [`Target::resolve`]).
pub fn source_ip(index: u64) -> Ipv4Addr {
    let n = (index / CONNECTIONS_PER_SOURCE) % (200 * 250 * 250);
    let octet = |value: u64| u8::try_from(value).unwrap_or(u8::MAX);
    Ipv4Addr::new(
        127,
        octet(1 + n / 62_500),
        octet((n / 250) % 250),
        octet(1 + n % 250),
    )
}

/// Closes politely: a close frame (1000), then waits up to [`CLOSE_TIMEOUT`] for the server's.
pub async fn close(mut ws: Ws) {
    if ws
        .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Why a connection ended, as one short line.
pub fn describe_end(frame: Option<Result<Message, WsError>>) -> String {
    match frame {
        Some(Ok(msg)) => match msg.as_close() {
            Some((code, reason)) => format!("closed by server: {} {reason}", u16::from(code))
                .trim_end()
                .to_owned(),
            None => "unexpected frame".to_owned(),
        },
        Some(Err(err)) => format!("connection error: {err}"),
        None => "connection dropped by the server (no close frame)".to_owned(),
    }
}

/// Phases every connection task follows; the scenario's main task moves them forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Connecting and subscribing.
    Setup,
    /// Measuring.
    Run,
    /// Publishers have stopped; waiting for what is still on its way.
    Drain,
    /// Wrap up and close.
    Stop,
}

/// Receiver side of the phase.
pub type PhaseRx = watch::Receiver<Phase>;

/// Resolves once the phase is at least `phase` (or the sender is gone).
pub async fn reached(mut rx: PhaseRx, phase: Phase) {
    let _ = rx.wait_for(|current| *current >= phase).await;
}

/// Microseconds since the first call in this process: the clock of the payload stamps (sender
/// and receivers are in this one process, so a monotonic clock works).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The stamp carried by every measured message: `~SB|<stream>|<seq>|<send time µs>|` then
/// `x` padding. Receivers find it anywhere in a text frame, so a server may wrap the published
/// text in its own envelope (Switchboard's `message`) or forward it as is.
pub const MARKER: &str = "~SB|";

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher stream (fan-out: one per publisher and room) or connection number (echo).
    pub stream: u64,
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// Send time, [`now_us`] clock.
    pub sent_us: u64,
}

/// Appends a stamp padded to `size` bytes; `quoted` makes it a JSON string (the quotes count
/// towards `size`). A `size` smaller than the stamp gives the bare stamp.
pub fn write_stamp(out: &mut String, stamp: Stamp, size: usize, quoted: bool) {
    let start = out.len();
    if quoted {
        out.push('"');
    }
    let _ = write!(
        out,
        "{MARKER}{}|{}|{}|",
        stamp.stream, stamp.seq, stamp.sent_us
    );
    let closing = usize::from(quoted);
    let written = out.len() - start;
    let padding = size.saturating_sub(written + closing);
    out.extend(std::iter::repeat_n('x', padding));
    if quoted {
        out.push('"');
    }
}

/// Finds and decodes the stamp in a received text frame.
pub fn find_stamp(text: &str) -> Option<Stamp> {
    let at = text.find(MARKER)?;
    let rest = text.get(at + MARKER.len()..)?;
    let mut parts = rest.splitn(4, '|');
    let stream = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(Stamp {
        stream,
        seq,
        sent_us,
    })
}

/// A message template with `{room}` and `{payload}` placeholders, split once so that building
/// a message is two copies and the stamp.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
}

impl Template {
    /// Wraps a template text.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
        }
    }

    /// The template for one room: the text before and after `{payload}`.
    pub fn for_room(&self, room: &str) -> (String, String) {
        let text = self.text.replace("{room}", room);
        match text.split_once("{payload}") {
            Some((before, after)) => (before.to_owned(), after.to_owned()),
            None => (text, String::new()),
        }
    }
}

/// Per-stream sequence bookkeeping on the receiving side: detects duplicates and messages that
/// arrive after a later one (out of order), and counts distinct messages received.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// Every seq below this has been received (or given up on).
    next: u64,
    /// Received seqs above `next` (only non-empty while something is missing).
    ahead: std::collections::BTreeSet<u64>,
    /// Highest seq received so far, plus one (0: none).
    max_plus_one: u64,
    /// Distinct seqs received.
    pub unique: u64,
    /// Seqs received again.
    pub duplicates: u64,
    /// Seqs received after a higher one.
    pub out_of_order: u64,
    /// Times a seq arrived beyond a hole (a message missing at that point).
    pub holes: u64,
}

/// What [`SeqTracker::observe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time.
    New,
    /// Already received.
    Duplicate,
}

/// Beyond this many seqs held above a hole, the hole is given up on (counted as lost at the
/// end; a very late arrival then counts as a duplicate).
const MAX_AHEAD: usize = 4096;

impl SeqTracker {
    /// A tracker expecting `first` next.
    pub fn starting_at(first: u64) -> Self {
        Self {
            next: first,
            max_plus_one: first,
            ..Self::default()
        }
    }

    /// Records seq `seq`.
    pub fn observe(&mut self, seq: u64) -> Seen {
        if seq < self.next || self.ahead.contains(&seq) {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        self.unique += 1;
        if seq < self.max_plus_one {
            self.out_of_order += 1;
        } else if seq > self.max_plus_one {
            self.holes += 1;
        }
        self.max_plus_one = self.max_plus_one.max(seq + 1);
        if seq == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.ahead.insert(seq);
            if self.ahead.len() > MAX_AHEAD
                && let Some(first) = self.ahead.pop_first()
            {
                self.next = first + 1;
                while self.ahead.remove(&self.next) {
                    self.next += 1;
                }
            }
        }
        Seen::New
    }

    /// Every seq below this was received (or given up on).
    pub fn contiguous_until(&self) -> u64 {
        self.next
    }

    /// Gives up on everything below `seq` (e.g. after a join that could not replay).
    pub fn skip_to(&mut self, seq: u64) {
        if seq > self.next {
            self.holes += 1;
            self.next = seq;
            while self.ahead.first().is_some_and(|&first| first < self.next) {
                self.ahead.pop_first();
            }
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
            self.max_plus_one = self.max_plus_one.max(self.next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let stamp = Stamp {
            stream: 3,
            seq: 42,
            sent_us: 123_456,
        };
        let mut out = String::new();
        write_stamp(&mut out, stamp, 64, true);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with("\"~SB|3|42|123456|x"));
        assert!(out.ends_with("x\""));
        let frame = format!(r#"{{"type":"message","room":"r","data":{out},"seq":1}}"#);
        assert_eq!(find_stamp(&frame), Some(stamp));

        let mut bare = String::new();
        write_stamp(&mut bare, stamp, 32, false);
        assert_eq!(bare.len(), 32);
        assert_eq!(find_stamp(&bare), Some(stamp));

        let mut small = String::new();
        write_stamp(&mut small, stamp, 4, true);
        assert_eq!(small, "\"~SB|3|42|123456|\"");
        assert_eq!(find_stamp(&small), Some(stamp));
        assert_eq!(find_stamp("no stamp"), None);
        assert_eq!(find_stamp("~SB|1|2|"), None);
    }

    #[test]
    fn templates_split_on_payload() {
        let template = Template::new(r#"{"type":"publish","room":"{room}","data":{payload}}"#);
        let (before, after) = template.for_room("r-1");
        assert_eq!(before, r#"{"type":"publish","room":"r-1","data":"#);
        assert_eq!(after, "}");
        let (before, after) = Template::new(r#"{"join":"{room}"}"#).for_room("a");
        assert_eq!((before.as_str(), after.as_str()), (r#"{"join":"a"}"#, ""));
    }

    #[test]
    fn warnings_clip_long_frames_to_one_short_line() {
        assert_eq!(clip("short"), "short");
        let joined = format!(
            r#"{{"type":"joined","members":[{}]}}"#,
            vec![r#""user-0000""#; 5000].join(",")
        );
        let line = clip(&joined);
        assert!(line.len() < 250, "{line}");
        assert!(
            line.ends_with(&format!("… ({} bytes)", joined.len())),
            "{line}"
        );
        // Never cut inside a character.
        assert!(clip(&"é".repeat(300)).starts_with('é'));
    }

    #[test]
    fn source_addresses_are_loopback_and_spread() {
        assert_eq!(source_ip(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_ip(999), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_ip(1000), Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(source_ip(250_000), Ipv4Addr::new(127, 1, 1, 1));
        for index in [0, 1_000_000, 62_500_000, 9_999_999_999] {
            let ip = source_ip(index);
            assert!(ip.is_loopback(), "{ip}");
            assert_ne!(ip.octets()[3], 0);
        }
    }

    #[test]
    fn seq_tracker_counts_duplicates_reordering_and_holes() {
        let mut tracker = SeqTracker::starting_at(0);
        for seq in [0, 1, 2] {
            assert_eq!(tracker.observe(seq), Seen::New);
        }
        assert_eq!(tracker.observe(1), Seen::Duplicate);
        assert_eq!(tracker.observe(4), Seen::New);
        assert_eq!(tracker.holes, 1);
        assert_eq!(tracker.observe(3), Seen::New);
        assert_eq!(tracker.out_of_order, 1);
        assert_eq!(tracker.contiguous_until(), 5);
        assert_eq!(tracker.observe(4), Seen::Duplicate);
        assert_eq!((tracker.unique, tracker.duplicates), (5, 2));

        tracker.skip_to(10);
        assert_eq!(tracker.contiguous_until(), 10);
        assert_eq!(tracker.holes, 2);
        assert_eq!(tracker.observe(9), Seen::Duplicate);
        assert_eq!(tracker.observe(10), Seen::New);
        assert_eq!(tracker.contiguous_until(), 11);
    }
}
