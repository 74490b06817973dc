// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Admission under attack (issue 11, F7 and F8), over real sockets against the real server:
//! connections that never finish their upgrade are capped before `accept`, and per address;
//! one address cannot hold every WebSocket slot.
//!
//! Synchronisation: no sleeps for ordering. The silence windows (a connection past the cap is
//! not answered while the cap is full) are the only time windows, plus one bounded retry loop
//! for a server-side effect no frame reports (a freed slot after a close).

use std::time::Duration;

use switchboard_server::Config;
use testkit::upgrade;
use testkit::{Client, RECV_TIMEOUT, TestServer, UPGRADE_HEADERS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How long a connection past a full cap must stay unanswered.
const SILENCE: Duration = Duration::from_millis(400);

/// An upgrade request for `/ws?user={user}` on an open connection.
async fn send_upgrade(stream: &mut TcpStream, user: &str) {
    let addr = stream.peer_addr().unwrap();
    let mut request = format!("GET /ws?user={user} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in UPGRADE_HEADERS {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Opens `n` TCP connections that send nothing (the "idle sockets" attack) from 127.0.0.1.
async fn idle_sockets(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(TcpStream::connect(addr).await.unwrap());
    }
    sockets
}

/// Like [`idle_sockets`], each from its own loopback address (127.0.9.1, 127.0.9.2, …), as
/// an attacker with many addresses would: per-address caps do not stop them.
async fn idle_sockets_spread(addr: std::net::SocketAddr, n: u8) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n.into());
    for i in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 9, i + 1], 0)))
            .unwrap();
        sockets.push(socket.connect(addr).await.unwrap());
    }
    sockets
}

#[tokio::test]
async fn f7_idle_sockets_are_capped_before_accept_and_established_clients_keep_working() {
    let mut config = Config::default();
    config.limits.max_pending_connections = 8;
    let server = TestServer::start(config).await;
    let addr = server.addr();
    // An established WebSocket, connected before the attack.
    let mut established = Client::connect(&server, "established").await;
    established.join("room").await;

    // Fill the pending cap with sockets that never send a byte (from 8 addresses: one address
    // may hold at most half the cap), then one more that asks for
    // an upgrade: the kernel completes its TCP handshake (listen backlog), but the server does
    // not accept it while the cap is full, so it gets no answer...
    let mut idle = idle_sockets_spread(addr, 8).await;
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    send_upgrade(&mut waiting, "waiting").await;
    let mut byte = [0u8; 1];
    assert!(
        timeout(SILENCE, waiting.read(&mut byte)).await.is_err(),
        "a connection past max_pending_connections was served while the cap was full"
    );
    // ... while the established client is served as before.
    established.sync().await;
    // One idle socket goes: the waiting connection is accepted and upgraded.
    drop(idle.pop());
    let (status, _) = timeout(RECV_TIMEOUT, testkit::read_head(&mut waiting))
        .await
        .expect("the waiting upgrade is answered once a pending slot frees");
    assert_eq!(status, 101);
    established.sync().await;
}

#[tokio::test]
async fn f7_one_address_cannot_hold_every_pending_slot() {
    let mut config = Config::default();
    config.limits.max_pending_connections = 64;
    config.limits.max_pending_per_ip = 4;
    let server = TestServer::start(config).await;
    let addr = server.addr();
    // Four idle sockets from 127.0.0.1 hold its share; the server proves it has accepted all
    // four by closing the fifth at once (EOF), instead of leaving it in the backlog.
    let idle = idle_sockets(addr, 4).await;
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = timeout(RECV_TIMEOUT, fifth.read(&mut buf))
        .await
        .expect("the fifth pending connection from one address is closed at accept");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF or reset, got {read:?}"
    );
    // Once the idle ones go, the address may connect again.
    drop(idle);
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        send_upgrade(&mut stream, "after").await;
        let mut first = [0u8; 12];
        match timeout(RECV_TIMEOUT, stream.read_exact(&mut first)).await {
            Ok(Ok(_)) => {
                assert_eq!(&first, b"HTTP/1.1 101");
                break;
            }
            // Still closed at accept: the server has not yet seen the idle ones go.
            _ => assert!(
                Instant::now() < deadline,
                "pending slots of closed sockets were not freed within {RECV_TIMEOUT:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn f8_one_address_cannot_take_every_connection_slot() {
    let mut config = Config::default();
    config.limits.max_connections = 12;
    // The default per-address cap is a quarter of max_connections: 3 here.
    let server = TestServer::start(config).await;
    let addr = server.addr();
    let first = Client::connect(&server, "c1").await;
    let _second = Client::connect(&server, "c2").await;
    let _third = Client::connect(&server, "c3").await;
    let refused = upgrade(addr, "/ws?user=c4", &[]).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(
        refused.body,
        "too many open connections from this address\n"
    );
    // A closed connection gives its address's slot back.
    first.close().await;
    let admitted = testkit::upgrade_once_freed(addr, "/ws?user=c4", 429).await;
    assert_eq!(upgrade(addr, "/ws?user=c5", &[]).await.status, 429);
    drop(admitted);
}

#[tokio::test]
async fn f8_the_per_address_cap_is_configurable_and_validated() {
    let mut config = Config::default();
    config.limits.max_connections_per_ip = Some(0);
    assert!(config.validate().is_err());
    config.limits.max_connections_per_ip = Some(2);
    let server = TestServer::start(config).await;
    let _a = Client::connect(&server, "a").await;
    let _b = Client::connect(&server, "b").await;
    assert_eq!(upgrade(server.addr(), "/ws?user=c", &[]).await.status, 429);
}

#[tokio::test]
async fn f7_listen_backlog_holds_a_reconnect_storm_beyond_128() {
    // One pending slot, taken by an idle socket: from then on the server accepts nothing, so
    // every further connection must wait in the kernel's accept queue — the listen backlog.
    let storm = |backlog| {
        let mut config = Config::default();
        config.limits.max_pending_connections = 1;
        config.limits.listen_backlog = backlog;
        config
    };
    let server = TestServer::start(storm(300)).await;
    let addr = server.addr();
    let _idle = TcpStream::connect(addr).await.unwrap();
    // std's backlog of 128 drops the SYNs past it (each a 1 s retransmit for the client);
    // with 300, 200 connections all complete their TCP handshake at once.
    let mut queued = Vec::new();
    for i in 0..200 {
        let stream = timeout(Duration::from_millis(900), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connection {i} was not queued (SYN dropped)"))
            .unwrap();
        queued.push(stream);
    }
    drop(queued);

    // The setting is what decides: with a backlog of 8 the queue is full after a few.
    let server = TestServer::start(storm(8)).await;
    let addr = server.addr();
    let _idle = TcpStream::connect(addr).await.unwrap();
    let mut queued = Vec::new();
    let mut dropped = 0;
    for _ in 0..24 {
        match timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => dropped += 1,
        }
    }
    assert!(
        dropped > 0 && queued.len() <= 12,
        "a backlog of 8 queued {} connections",
        queued.len()
    );
}
