//! A protocol client over a real WebSocket: JSON in, JSON out, every wait bounded by
//! [`RECV_TIMEOUT`], with the protocol's requests (join, publish, ping round trips) as
//! methods.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_websockets::{ClientBuilder, CloseCode, Message, Payload, WebSocketStream};

use crate::{RECV_TIMEOUT, TestServer};

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

    /// Connects to `ws://{addr}/ws?user={user}`, `addr` being `IP:PORT` (a `switchboard serve`
    /// process, or nginx in front of several).
    pub async fn connect_to(addr: &str, user: &str) -> Self {
        let socket: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("{user}: bad address {addr}: {err}"));
        let url = format!("ws://{addr}/ws?user={user}");
        let ws = timeout(RECV_TIMEOUT, ws_connect(socket, &url))
            .await
            .unwrap_or_else(|_| panic!("{user}: connecting to {url} timed out"))
            .unwrap_or_else(|err| panic!("{user}: connecting to {url} failed: {err}"));
        Self {
            ws,
            name: user.to_owned(),
        }
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

    /// The next frame, which must be JSON, waiting at most `limit` (pings and pongs skipped).
    /// `None` on timeout.
    pub async fn recv_json_within(&mut self, limit: Duration) -> Option<Value> {
        let message = self.recv_within(limit).await?;
        let Some(text) = message.as_text() else {
            panic!("{}: expected a JSON text frame, got {message:?}", self.name);
        };
        Some(serde_json::from_str(text).unwrap_or_else(|err| {
            panic!("{}: server sent invalid JSON {text:?}: {err}", self.name)
        }))
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

    /// The next frame of type `kind`, skipping presence events (and nothing else): for tests
    /// where other members come and go meanwhile (through a load balancer, across nodes).
    pub async fn expect_past_presence(&mut self, kind: &str) -> Value {
        loop {
            let value = self.recv_json().await;
            if value["type"] == kind {
                return value;
            }
            assert_eq!(
                value["type"], "presence",
                "{}: expected `{kind}`, got {value}",
                self.name
            );
        }
    }

    /// Publishes `data` without echo and returns the `seq` from its `ack`, skipping presence
    /// events and others' messages that arrive first.
    pub async fn publish_without_echo(&mut self, room: &str, data: Value) -> u64 {
        let id = NEXT_SYNC_ID.fetch_add(1, Ordering::Relaxed);
        self.send_json(
            json!({"type": "publish", "room": room, "data": data, "id": id, "echo": false}),
        )
        .await;
        loop {
            let value = self.recv_json().await;
            match value["type"].as_str() {
                Some("ack") if value["id"] == id => {
                    return value["seq"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{}: ack without seq: {value}", self.name));
                }
                Some("presence" | "message") => {}
                _ => panic!("{}: expected the ack of {id}, got {value}", self.name),
            }
        }
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
