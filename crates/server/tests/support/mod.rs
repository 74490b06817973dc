//! Shared harness for the server's integration tests: an in-process server on an ephemeral
//! port, a WebSocket client with timeouts and protocol helpers, raw-socket helpers (HTTP
//! requests, a hand-made upgrade, masked frames) for the tests a normal client cannot do.
//!
//! Synchronisation rule: never sleep to wait for the server. Replies are ordered per
//! connection, so a `ping` with an id followed by its `pong` proves that everything the server
//! queued for this connection before it has arrived. The only time windows are
//! [`Client::assert_silent`] (asserting that nothing arrives) and the few bounded waits for a
//! server-side effect that no frame reports ([`TestServer::wait_for_sessions`]).

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

pub mod redis;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_server::{CancellationToken, Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_websockets::{ClientBuilder, CloseCode, Message, Payload, WebSocketStream};

/// How long a test waits for a frame it expects before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The WebSocket key of RFC 6455 section 1.3 and the accept value the server must answer.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// WebSocket opcodes (RFC 6455 section 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// An in-process server on `127.0.0.1:0`, running on a task of the test's runtime.
pub struct TestServer {
    addr: SocketAddr,
    token: CancellationToken,
    run: Option<JoinHandle<()>>,
    sessions: Box<dyn Fn() -> usize + Send + Sync>,
    /// The broker, for the memory counters ([`TestServer::stats`]).
    broker: std::sync::Arc<dyn switchboard_hub::Broker>,
    /// Webhook delivery counts, when webhooks are configured.
    webhooks: Option<std::sync::Arc<switchboard_server::webhooks::WebhookStats>>,
}

impl TestServer {
    /// Binds `config` (its `listen` is replaced by `127.0.0.1:0`) and spawns `run`.
    pub async fn start(config: Config) -> Self {
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config
        };
        let server = Server::bind(config).await.expect("bind the test server");
        let addr = server
            .local_addr()
            .expect("local address of the test server");
        let broker = server.broker();
        let webhooks = server.webhook_stats();
        let token = CancellationToken::new();
        let run = tokio::spawn(server.run(token.clone()));
        Self {
            addr,
            token,
            run: Some(run),
            broker: broker.clone(),
            webhooks,
            sessions: Box::new(move || broker.stats().sessions),
        }
    }

    /// A server with the default configuration.
    pub async fn default_config() -> Self {
        Self::start(Config::default()).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR{path}` (path includes the query, e.g. `/ws?user=alice`).
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Cancels `run` and waits (at most `limit`) for it to return; panics if it does not.
    pub async fn shutdown_within(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.token.cancel();
        let run = self.run.take().expect("server is running");
        timeout(limit, run)
            .await
            .unwrap_or_else(|_| panic!("Server::run did not return within {limit:?} of cancel"))
            .expect("Server::run panicked");
        started.elapsed()
    }

    /// Cancels `run` and waits for it (10 s at most).
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(10)).await;
    }

    /// Sessions the hub currently counts. A session is unregistered after it has left all its
    /// rooms, so this tells when a disconnect that sends no frame has been fully processed.
    pub fn sessions(&self) -> usize {
        (self.sessions)()
    }

    /// Webhook delivery counts (`None` without webhook endpoints).
    pub fn webhooks(&self) -> Option<std::sync::Arc<switchboard_server::webhooks::WebhookStats>> {
        self.webhooks.clone()
    }

    /// The hub's counters: sessions, rooms and the server-wide memory budgets' use.
    pub fn stats(&self) -> switchboard_hub::HubStats {
        self.broker.stats()
    }

    /// Waits until the hub counts exactly `n` sessions (bounded by [`RECV_TIMEOUT`]). Only for
    /// server-side effects no frame reports (an abrupt disconnect that must send nothing).
    pub async fn wait_for_sessions(&self, n: usize) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while self.sessions() != n {
            assert!(
                Instant::now() < deadline,
                "hub still counts {} sessions after {RECV_TIMEOUT:?}, expected {n}",
                self.sessions()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------

pub type Ws = WebSocketStream<TcpStream>;

static NEXT_SYNC_ID: AtomicU64 = AtomicU64::new(1_000_000);

/// A protocol client. Every receive is bounded by [`RECV_TIMEOUT`] and fails with a message
/// naming the client; ping/pong control frames are skipped (the codec answers pings).
pub struct Client {
    pub ws: Ws,
    pub name: String,
}

/// Opens a WebSocket to `url` over a fresh TCP connection to `addr`.
pub async fn ws_connect(addr: SocketAddr, url: &str) -> Result<Ws, tokio_websockets::Error> {
    let tcp = TcpStream::connect(addr).await?;
    // Like the server: no Nagle delay for small frames (a ping after a batch would otherwise
    // wait for the peer's delayed ACK).
    tcp.set_nodelay(true)?;
    let builder = ClientBuilder::new()
        .uri(url)
        .unwrap_or_else(|err| panic!("bad test URL {url}: {err}"));
    let (ws, _response) = builder.connect_on(tcp).await?;
    Ok(ws)
}

impl Client {
    /// Connects to `/ws?user={user}` (user names in tests need no percent-encoding).
    pub async fn connect(server: &TestServer, user: &str) -> Self {
        Self::connect_path(server, &format!("/ws?user={user}"), user).await
    }

    /// Connects to any path; `name` labels the client in failure messages.
    pub async fn connect_path(server: &TestServer, path: &str, name: &str) -> Self {
        let url = server.url(path);
        let ws = timeout(RECV_TIMEOUT, ws_connect(server.addr(), &url))
            .await
            .unwrap_or_else(|_| panic!("{name}: connecting to {url} timed out"))
            .unwrap_or_else(|err| panic!("{name}: connecting to {url} failed: {err}"));
        Self {
            ws,
            name: name.to_owned(),
        }
    }

    pub async fn send(&mut self, message: Message) {
        timeout(RECV_TIMEOUT, self.ws.send(message))
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.name))
            .unwrap_or_else(|err| panic!("{}: send failed: {err}", self.name));
    }

    /// Sends several frames with one flush (they typically arrive in one TCP segment).
    pub async fn send_all(&mut self, messages: Vec<Message>) {
        let fut = async {
            for message in messages {
                self.ws.feed(message).await?;
            }
            self.ws.flush().await
        };
        timeout(RECV_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.name))
            .unwrap_or_else(|err| panic!("{}: send failed: {err}", self.name));
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_owned())).await;
    }

    pub async fn send_binary(&mut self, bytes: impl Into<Bytes>) {
        self.send(Message::binary(Payload::from(bytes.into())))
            .await;
    }

    /// The next frame that is not a ping or pong, waiting at most `limit`. `None` on timeout.
    /// Panics if the connection ends or fails.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Message> {
        let deadline = Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(message)) if message.is_ping() || message.is_pong() => {}
                Some(Ok(message)) => return Some(message),
                Some(Err(err)) => panic!("{}: connection failed while reading: {err}", self.name),
                None => panic!("{}: connection ended while a frame was expected", self.name),
            }
        }
    }

    /// The next frame that is not a ping or pong (close frames included).
    pub async fn recv(&mut self) -> Message {
        match self.recv_within(RECV_TIMEOUT).await {
            Some(message) => message,
            None => panic!("{}: no frame within {RECV_TIMEOUT:?}", self.name),
        }
    }

    /// The next frame, which must be a JSON text frame. Skips nothing but pings and pongs.
    pub async fn recv_json(&mut self) -> Value {
        let message = self.recv().await;
        let Some(text) = message.as_text() else {
            panic!("{}: expected a JSON text frame, got {message:?}", self.name);
        };
        serde_json::from_str(text)
            .unwrap_or_else(|err| panic!("{}: server sent invalid JSON {text:?}: {err}", self.name))
    }

    /// The next frame, which must be a JSON message of type `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let value = self.recv_json().await;
        assert_eq!(
            value["type"], kind,
            "{}: expected a `{kind}` message, got {value}",
            self.name
        );
        value
    }

    /// The next frame, which must be a binary frame.
    pub async fn expect_binary(&mut self) -> Bytes {
        let message = self.recv().await;
        assert!(
            message.is_binary(),
            "{}: expected a binary frame, got {message:?}",
            self.name
        );
        message.into_payload().into()
    }

    /// The next frame must be `error` with `code`, carrying exactly `id` (absent for `None`).
    pub async fn expect_error(&mut self, code: &str, id: Option<u64>) -> Value {
        let value = self.expect("error").await;
        assert_eq!(
            value["code"], code,
            "{}: wrong error code in {value}",
            self.name
        );
        assert_eq!(
            value.get("id").and_then(Value::as_u64),
            id,
            "{}: wrong id in {value}",
            self.name
        );
        if id.is_none() {
            assert!(
                value.get("id").is_none(),
                "{}: unexpected id in {value}",
                self.name
            );
        }
        assert!(
            value["message"].is_string(),
            "{}: error without a message text: {value}",
            self.name
        );
        value
    }

    /// The next frame must be a close frame; returns its code and reason after completing the
    /// close handshake (the codec answers the close; we read until the stream ends).
    pub async fn expect_close(&mut self) -> (u16, String) {
        let message = self.recv().await;
        let Some((code, reason)) = message.as_close() else {
            panic!("{}: expected a close frame, got {message:?}", self.name);
        };
        let closed = (u16::from(code), reason.to_owned());
        self.finish_close().await;
        closed
    }

    /// Reads until the stream ends (flushing our close reply), tolerating IO errors once the
    /// server has dropped the connection.
    async fn finish_close(&mut self) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("{}: the stream did not end after the close", self.name),
                Ok(None | Some(Err(_))) => return,
                Ok(Some(Ok(message))) => assert!(
                    message.is_ping() || message.is_pong(),
                    "{}: frame after the close: {message:?}",
                    self.name
                ),
            }
        }
    }

    /// Asserts that no frame (other than ping/pong) arrives for `ms` milliseconds, reading all
    /// the while (so pings are answered). Returns how many pings arrived meanwhile.
    pub async fn assert_silent(&mut self, ms: u64) -> usize {
        let deadline = Instant::now() + Duration::from_millis(ms);
        let mut pings = 0;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return pings,
                Ok(Some(Ok(message))) if message.is_ping() => pings += 1,
                Ok(Some(Ok(message))) if message.is_pong() => {}
                Ok(other) => panic!("{}: expected silence, got {other:?}", self.name),
            }
        }
    }

    /// Sends a `ping` with a fresh id and returns every frame received before its `pong`.
    /// Replies are ordered per connection, so this is everything the server had queued for
    /// this connection when it handled the ping.
    pub async fn sync_collect(&mut self) -> Vec<Value> {
        let id = NEXT_SYNC_ID.fetch_add(1, Ordering::Relaxed);
        self.send_json(json!({"type": "ping", "id": id})).await;
        let mut before = Vec::new();
        loop {
            let value = self.recv_json().await;
            if value["type"] == "pong" && value["id"] == id {
                return before;
            }
            before.push(value);
        }
    }

    /// Round-trips a `ping`, asserting that nothing else was queued before its `pong`.
    pub async fn sync(&mut self) {
        let before = self.sync_collect().await;
        assert!(
            before.is_empty(),
            "{}: unexpected frames before the pong: {before:?}",
            self.name
        );
    }

    /// Joins `room` and returns the `joined` reply.
    pub async fn join(&mut self, room: &str) -> Value {
        let id = NEXT_SYNC_ID.fetch_add(1, Ordering::Relaxed);
        self.send_json(json!({"type": "join", "room": room, "id": id}))
            .await;
        let joined = self.expect("joined").await;
        assert_eq!(joined["room"], room, "{}: {joined}", self.name);
        assert_eq!(joined["id"], id, "{}: {joined}", self.name);
        joined
    }

    /// Publishes `data` with an id and returns the `seq` from the `ack`.
    pub async fn publish(&mut self, room: &str, data: Value) -> u64 {
        let id = NEXT_SYNC_ID.fetch_add(1, Ordering::Relaxed);
        self.send_json(json!({"type": "publish", "room": room, "data": data, "id": id}))
            .await;
        let ack = self.expect("ack").await;
        assert_eq!(ack["id"], id, "{}: {ack}", self.name);
        ack["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: ack without seq: {ack}", self.name))
    }

    /// The next frame must be a `message` in `room` from `from` with `data`; returns its seq.
    pub async fn expect_message(&mut self, room: &str, from: &str, data: &Value) -> u64 {
        let message = self.expect("message").await;
        assert_eq!(message["room"], room, "{}: {message}", self.name);
        assert_eq!(message["from"], from, "{}: {message}", self.name);
        assert_eq!(&message["data"], data, "{}: {message}", self.name);
        message["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: message without seq: {message}", self.name))
    }

    /// The next frame must be a presence `event` about `user` in `room`.
    pub async fn expect_presence(&mut self, room: &str, event: &str, user: &str) {
        let presence = self.expect("presence").await;
        assert_eq!(
            (&presence["room"], &presence["event"], &presence["user"]),
            (&json!(room), &json!(event), &json!(user)),
            "{}: {presence}",
            self.name
        );
    }

    /// The next presence frames must tell `event` of exactly `users` in `room`, in the single
    /// form or coalesced (`joins`/`leaves`, several changes in one frame).
    pub async fn expect_presence_of(&mut self, room: &str, event: &str, users: &[&str]) {
        let field = if event == "join" { "joins" } else { "leaves" };
        let mut told: Vec<String> = Vec::new();
        while told.len() < users.len() {
            let presence = self.expect("presence").await;
            assert_eq!(presence["room"], room, "{}: {presence}", self.name);
            match presence["user"].as_str() {
                Some(user) => {
                    assert_eq!(presence["event"], event, "{}: {presence}", self.name);
                    told.push(user.to_owned());
                }
                None => told.extend(
                    presence[field]
                        .as_array()
                        .unwrap_or_else(|| panic!("{}: {presence}", self.name))
                        .iter()
                        .filter_map(|u| u.as_str().map(str::to_owned)),
                ),
            }
        }
        told.sort();
        let mut expected: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        expected.sort();
        assert_eq!(told, expected, "{}", self.name);
    }

    /// Starts a clean close (1000) and completes the handshake.
    pub async fn close(mut self) {
        self.send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
            .await;
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("{}: no close reply from the server", self.name),
                Ok(None | Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The `members` of a `joined` reply, sorted.
pub fn members(joined: &Value) -> Vec<String> {
    let mut members: Vec<String> = joined["members"]
        .as_array()
        .unwrap_or_else(|| panic!("joined without members: {joined}"))
        .iter()
        .map(|m| m.as_str().expect("member names are strings").to_owned())
        .collect();
    members.sort();
    members
}

/// Milliseconds since the Unix epoch, by the test's clock.
pub fn now_millis() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("millis fit u64")
}

// ---------------------------------------------------------------------------------------------
// Raw sockets: HTTP requests, hand-made upgrades and frames
// ---------------------------------------------------------------------------------------------

/// An HTTP response as read off the socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed), from a plain
/// or a TLS stream.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.unwrap_or_else(|err| {
            panic!(
                "connection ended inside the HTTP response head ({err}): {:?}",
                String::from_utf8_lossy(&head)
            )
        });
        head.push(byte);
        assert!(head.len() < 16 * 1024, "HTTP response head too long");
    }
    let head = String::from_utf8(head).expect("HTTP head is UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Sends a `GET {path}` with `headers` on a new connection and reads the response (head and
/// Content-Length body).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    http_get_on(&mut stream, path, headers).await
}

/// Like [`http_get`], on an open connection (which HTTP/1.1 keeps alive afterwards).
pub async fn http_get_on(
    stream: &mut TcpStream,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let addr = stream.peer_addr().expect("peer address");
    let fut = async {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let (status, headers) = read_head(stream).await;
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.expect("read body");
        HttpResponse {
            status,
            headers,
            body,
        }
    };
    timeout(RECV_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
}

/// The headers of a valid WebSocket upgrade request.
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", WS_KEY),
    ("Sec-WebSocket-Version", "13"),
];

/// Performs the WebSocket upgrade by hand on `stream`; afterwards the caller speaks raw
/// frames (see [`masked_frame`] and [`parse_frames`]).
pub async fn raw_upgrade(mut stream: TcpStream, path: &str) -> TcpStream {
    let addr = stream.peer_addr().expect("peer address");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in UPGRADE_HEADERS {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let fut = async {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write upgrade request");
        let (status, headers) = read_head(&mut stream).await;
        assert_eq!(status, 101, "upgrade refused: {headers:?}");
        let accept = headers
            .iter()
            .find(|(n, _)| n == "sec-websocket-accept")
            .map(|(_, v)| v.as_str());
        assert_eq!(accept, Some(WS_ACCEPT));
    };
    timeout(RECV_TIMEOUT, fut)
        .await
        .expect("raw upgrade timed out");
    stream
}

/// A final (FIN) client frame, masked with `mask` (RFC 6455 section 5.2).
pub fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    masked_fragment(true, opcode, payload, mask)
}

/// A client frame with the FIN bit as given (`opcode` 0 for a continuation), masked.
pub fn masked_fragment(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | (opcode & 0x0F)];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | u8::try_from(len).expect("len < 126"));
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&u64::try_from(len).expect("len fits u64").to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(byte, key)| byte ^ key),
    );
    frame
}

/// A server frame (servers never mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The code and reason of a close frame.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != opcode::CLOSE || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }

    pub fn json(&self) -> Option<Value> {
        (self.opcode == opcode::TEXT)
            .then(|| serde_json::from_slice(&self.payload).ok())
            .flatten()
    }
}

/// Splits the complete (unmasked) frames off the front of `buf`; returns them and how many
/// bytes they used. A trailing partial frame is left.
pub fn parse_frames(buf: &[u8]) -> (Vec<RawFrame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            break;
        }
        let fin = rest[0] & 0x80 != 0;
        let opcode = rest[0] & 0x0F;
        assert_eq!(rest[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match rest[1] & 0x7F {
            126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut len = [0; 8];
                len.copy_from_slice(&rest[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(len)).expect("length"),
                    10,
                )
            }
            126 | 127 => break,
            len => (usize::from(len), 2),
        };
        if rest.len() < header + len {
            break;
        }
        frames.push(RawFrame {
            fin,
            opcode,
            payload: rest[header..header + len].to_vec(),
        });
        at += header + len;
    }
    (frames, at)
}

/// How a raw connection ended when read to the end.
#[derive(Debug)]
pub struct Drained {
    pub bytes: Vec<u8>,
    /// The read error that ended it, if not a clean EOF (e.g. connection reset).
    pub error: Option<std::io::Error>,
}

/// Reads `stream` until EOF or an error, at most `limit`; panics if it is still open then.
pub async fn read_to_end_within(stream: &mut TcpStream, limit: Duration) -> Drained {
    let deadline = Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "the server did not close the connection within {limit:?} ({} bytes read)",
                bytes.len()
            ),
            Ok(Ok(0)) => return Drained { bytes, error: None },
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => {
                return Drained {
                    bytes,
                    error: Some(err),
                };
            }
        }
    }
}

/// Asserts that `actual` has every field of the object `expected`, with the same value.
/// Other fields are ignored: clients must ignore fields they do not know (protocol section 1).
#[track_caller]
pub fn assert_fields(actual: &Value, expected: &Value) {
    let expected = expected.as_object().expect("expected fields as an object");
    for (key, value) in expected {
        assert_eq!(
            actual.get(key),
            Some(value),
            "field `{key}` of {actual} (expected {value})"
        );
    }
}

/// Connects with a small TCP segment size and receive buffer, so that little data sits in
/// the kernel's buffers (on either side) when this client stops reading: the server's
/// send buffer is sized from the segment size. For slow-consumer tests.
pub async fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_tcp_mss(1024).expect("TCP_MAXSEG");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    // Loopback: the blocking connect completes at once.
    socket.connect(&addr.into()).expect("connect");
    socket.set_nonblocking(true).expect("non-blocking");
    TcpStream::from_std(socket.into()).expect("tokio stream")
}

/// `config` without the per-connection message rate limit: for tests that publish thousands
/// of messages to test something else (ordering, slow consumers).
pub fn unthrottled(mut config: Config) -> Config {
    config.limits.messages_per_second = 1_000_000;
    config.limits.message_burst = 1_000_000;
    config
}
