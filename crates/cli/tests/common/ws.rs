//! A small protocol client for the end-to-end tests: JSON in, JSON out, every wait bounded.

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Ws {
    pub name: String,
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects to `ws://{addr}/ws?user={user}`.
    pub async fn connect(addr: &str, user: &str) -> Self {
        let url = format!("ws://{addr}/ws?user={user}");
        let uri = url.parse().expect("test URL");
        let (stream, _) =
            tokio::time::timeout(RECV_TIMEOUT, ClientBuilder::from_uri(uri).connect())
                .await
                .unwrap_or_else(|_| panic!("{user}: connecting to {url} timed out"))
                .unwrap_or_else(|err| panic!("{user}: connecting to {url} failed: {err}"));
        Self {
            name: user.to_owned(),
            stream,
        }
    }

    pub async fn send(&mut self, value: Value) {
        tokio::time::timeout(
            RECV_TIMEOUT,
            self.stream.send(Message::text(value.to_string())),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: send timed out", self.name))
        .unwrap_or_else(|err| panic!("{}: send failed: {err}", self.name));
    }

    /// The next JSON frame within `limit` (pings and pongs skipped); `None` on timeout.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match next {
                Some(Ok(message)) if message.is_ping() || message.is_pong() => {}
                Some(Ok(message)) => {
                    let text = message
                        .as_text()
                        .unwrap_or_else(|| panic!("{}: not a text frame: {message:?}", self.name));
                    return Some(serde_json::from_str(text).expect("server JSON"));
                }
                Some(Err(err)) => panic!("{}: connection failed: {err}", self.name),
                None => panic!("{}: connection ended", self.name),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        match self.recv_within(RECV_TIMEOUT).await {
            Some(value) => value,
            None => panic!("{}: nothing within {RECV_TIMEOUT:?}", self.name),
        }
    }

    /// The next frame of type `kind`, skipping presence events (and nothing else).
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let value = self.recv().await;
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

    /// Joins `room`; returns `joined`.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "id": 1}))
            .await;
        self.expect("joined").await
    }

    /// Publishes without echo; returns the acked seq.
    pub async fn publish(&mut self, room: &str, data: Value) -> u64 {
        self.send(json!({"type": "publish", "room": room, "data": data, "id": 2, "echo": false}))
            .await;
        loop {
            let value = self.recv().await;
            match value["type"].as_str() {
                Some("ack") => return value["seq"].as_u64().expect("ack seq"),
                Some("presence" | "message") => {}
                _ => panic!("{}: expected an ack, got {value}", self.name),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close().await;
    }
}
