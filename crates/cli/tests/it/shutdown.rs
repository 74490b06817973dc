// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Graceful shutdown of the real `switchboard serve` process on SIGTERM: clients get close
//! 1001 "server shutting down", and the process exits 0 once they have answered, or once
//! `--shutdown-timeout` has passed for a client that never answers (docs/protocol.md 8.4).

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use testkit::Serve;

use crate::BIN;
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits for the process to exit, at most `limit`.
async fn wait_exit(server: &mut Serve, limit: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "switchboard serve still running {limit:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(addr: &str, user: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{addr}/ws?user={user}"))
        .unwrap()
        .connect_on(tcp)
        .await
        .unwrap();
    ws
}

/// The next text frame as JSON (pings and pongs skipped).
async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("read failed");
        if let Some(text) = message.as_text() {
            return serde_json::from_str(text).unwrap();
        }
        assert!(message.is_ping() || message.is_pong(), "{message:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut server = Serve::start(BIN, &["--log", "warn", "--shutdown-timeout", "5s"]);
    let mut clients = Vec::new();
    for user in ["alice", "bob"] {
        let mut ws = connect(&server.addr, user).await;
        let join = serde_json::json!({"type": "join", "room": "room", "id": 1});
        ws.send(Message::text(join.to_string())).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "joined");
        clients.push(ws);
    }
    assert_eq!(next_json(&mut clients[0]).await["type"], "presence");

    server.sigterm();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut close = None;
                // Read to the end: the codec answers the close, completing the handshake.
                loop {
                    let next = tokio::time::timeout(RECV_TIMEOUT, ws.next())
                        .await
                        .expect("connection not closed in time");
                    match next {
                        None => break,
                        Some(Err(err)) => panic!("read failed before the close completed: {err}"),
                        Some(Ok(message)) => {
                            if let Some((code, reason)) = message.as_close() {
                                close = Some((u16::from(code), reason.to_owned()));
                            }
                        }
                    }
                }
                close
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            Some((1001, "server shutting down".to_owned()))
        );
    }
    let (status, took) = wait_exit(&mut server, Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(3),
        "clients answered the close, yet the process took {took:?} to exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_within_the_shutdown_timeout_when_a_client_ignores_the_close() {
    let mut server = Serve::start(BIN, &["--log", "warn", "--shutdown-timeout", "1s"]);
    // A raw client that completes the upgrade and then ignores everything.
    let mut raw = TcpStream::connect(&server.addr).await.unwrap();
    let request = format!(
        "GET /ws?user=deaf HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(raw.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A normal client too, to be sure the server is serving WebSockets when it is told to stop.
    let mut ws = connect(&server.addr, "alice").await;
    ws.send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    server.sigterm();
    // alice answers the close while reading to the end; the raw client never does.
    let alice = tokio::spawn(async move {
        let mut close = None;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(RECV_TIMEOUT, ws.next()).await {
            if let Some((code, _)) = message.as_close() {
                close = Some(u16::from(code));
            }
        }
        close
    });
    let (status, took) = wait_exit(&mut server, Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(3),
        "--shutdown-timeout 1s, yet the process took {took:?} to exit"
    );
    assert_eq!(alice.await.unwrap(), Some(1001));
    // The deaf client was sent the close too (it sits unread in its socket), then dropped.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(RECV_TIMEOUT, raw.read_to_end(&mut rest)).await;
    assert!(
        rest.windows(2).any(|w| w == [0x88, 22]) && rest.ends_with(b"server shutting down"),
        "no close frame 1001 for the deaf client: {rest:?}"
    );
}
