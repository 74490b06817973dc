// Tests fail loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Regression tests for the memory findings of issue 11 (F1 ping flood, F2 non-readers,
//! F3 history fillers, F10 unfinished fragmented messages): each attack runs against a real
//! server on loopback and the bound is checked with the server's own counters (the hub's
//! outbox pool and history budget), never with sleeps.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use testkit::{
    Client, RECV_TIMEOUT, TestServer, connect_small_window, masked_fragment, masked_frame, opcode,
    parse_frames, raw_upgrade, read_to_end_within, unthrottled,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const MASK: [u8; 4] = [1, 2, 3, 4];

/// Reads raw frames until the server's close frame (bounded by [`RECV_TIMEOUT`]).
async fn read_until_close(raw: &mut TcpStream) -> Vec<testkit::RawFrame> {
    let deadline = Instant::now() + RECV_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let (frames, _) = parse_frames(&buf);
        if frames.iter().any(|f| f.close().is_some()) {
            return frames;
        }
        let n = tokio::time::timeout_at(deadline, raw.read(&mut chunk))
            .await
            .expect("no close frame in time")
            .expect("read");
        assert!(n > 0, "connection ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits (bounded) for a server-side effect no frame reports, checking `ok` on the counters.
async fn wait_for(
    server: &TestServer,
    what: &str,
    ok: impl Fn(&switchboard_hub::HubStats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = server.stats();
        if ok(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// F1: one connection writes pings and never reads. Before: every ping queued a pong in the
/// codec (953 MB in 4.6 s). Now at most 16 pongs wait, pings count toward the rate limit,
/// and a flood is a violation: the connection is closed with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_ping_flood_is_bounded_and_closed_as_a_violation() {
    let server = TestServer::default_config().await;
    let mut raw = raw_upgrade(connect_small_window(server.addr()).await, "/ws?user=flood").await;
    // 20,000 pings of 125 bytes (2.6 MB) in one go, without reading anything.
    let ping = masked_frame(opcode::PING, &[b'p'; 125], MASK);
    let flood = ping.repeat(20_000);
    // The server closes the connection part way: writing the rest may fail, which is fine.
    let _ = tokio::time::timeout(RECV_TIMEOUT, raw.write_all(&flood)).await;
    let drained = read_to_end_within(&mut raw, Duration::from_secs(15)).await;
    let (frames, _) = parse_frames(&drained.bytes);
    let pongs = frames.iter().filter(|f| f.opcode == opcode::PONG).count();
    let close = frames.iter().find_map(|f| f.close());
    // The default burst is 60 and the rate 30/s: the pings within it are answered (some
    // coalesced), the rest are not.
    assert!(
        pongs <= 60 + 30 * 20,
        "{pongs} pongs for a flood of 20,000 pings"
    );
    assert_eq!(
        close.as_ref().map(|(code, _)| *code),
        Some(1008),
        "expected close 1008 after the flood, got {close:?} ({} frames)",
        frames.len()
    );
    let limited = frames
        .iter()
        .filter_map(|f| f.json())
        .filter(|v| v["code"] == "rate_limited")
        .count();
    assert!(
        limited >= 1,
        "the flood is answered with rate_limited errors"
    );
    // Nothing stays charged once the connection is gone.
    server.wait_for_sessions(0).await;
    assert_eq!(server.stats().outbox_pool_bytes, 0);
    server.shutdown().await;
}

/// F1, the attack as found: the flood does not stop when the server starts closing. The
/// close must not wait for a lull (the reader is always busy, the close's grace period must
/// still run out): the server ends the connection while the pings keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_an_endless_ping_flood_is_cut_off() {
    let server = TestServer::default_config().await;
    let raw = raw_upgrade(connect_small_window(server.addr()).await, "/ws?user=flood").await;
    let (_read, mut write) = raw.into_split();
    let ping = masked_frame(opcode::PING, &[b'p'; 125], MASK);
    let burst = ping.repeat(1_000);
    let started = Instant::now();
    loop {
        if write.write_all(&burst).await.is_err() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server still reads an endless ping flood after 30 s"
        );
    }
    server.wait_for_sessions(0).await;
    assert_eq!(server.stats().outbox_pool_bytes, 0);
    server.shutdown().await;
}

/// F1 on `/echo` (no rate limit there, for conformance suites): pongs are coalesced, so a
/// peer that pings and does not read holds at most 16 pongs in the outbox, not one per ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_ping_flood_on_echo_gets_coalesced_pongs() {
    let server = TestServer::start(Config {
        echo_endpoint: true,
        ..Config::default()
    })
    .await;
    let mut raw = raw_upgrade(connect_small_window(server.addr()).await, "/echo").await;
    let ping = masked_frame(opcode::PING, &[b'p'; 125], MASK);
    let flood = ping.repeat(20_000);
    raw.write_all(&flood).await.unwrap();
    // Then a close: everything before it has been read by the server once it answers.
    raw.write_all(&masked_frame(opcode::CLOSE, &1000u16.to_be_bytes(), MASK))
        .await
        .unwrap();
    let drained = read_to_end_within(&mut raw, Duration::from_secs(15)).await;
    let (frames, _) = parse_frames(&drained.bytes);
    let pongs = frames.iter().filter(|f| f.opcode == opcode::PONG).count();
    assert!(pongs >= 1, "the latest ping is answered");
    assert!(
        pongs < 20_000 / 2,
        "{pongs} pongs for 20,000 pings sent without reading: not coalesced"
    );
    assert_eq!(
        frames.last().and_then(|f| f.close()).map(|c| c.0),
        Some(1000)
    );
    server.shutdown().await;
}

/// A history room of `count` messages of `size` bytes, published by a client that stays.
async fn filled_room(server: &TestServer, room: &str, count: usize, size: usize) -> Client {
    let mut publisher = Client::connect(server, "filler").await;
    publisher.join(room).await;
    let data = Value::String("x".repeat(size));
    for _ in 0..count {
        publisher.publish(room, data.clone()).await;
    }
    publisher
}

/// F2: clients that ask for history and never read. Before: +823 MiB for 300 of them. Now
/// what outboxes hold beyond 16 KiB each is drawn from one server-wide pool; a connection
/// that needs more when it is spent is closed (1013), a reader is still served, and the
/// credit comes back when the non-readers go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_non_readers_are_bounded_by_the_server_wide_outbox_pool() {
    const POOL: usize = 2 * 1024 * 1024;
    let mut config = unthrottled(Config::default());
    config.outbox_bytes = 16 * 1024 * 1024;
    config.memory.outbox_pool_bytes = POOL;
    let server = TestServer::start(config).await;
    let publisher = filled_room(&server, "big", 8, 50_000).await;
    let request = masked_frame(
        opcode::TEXT,
        json!({"type": "history", "room": "big"})
            .to_string()
            .as_bytes(),
        MASK,
    );
    // 20 non-readers, 20 replies of ~400 KB each (8 MB per connection, under its own 16 MiB
    // budget; 160 MB in all against a pool of 2 MiB plus what the kernel buffers).
    let mut non_readers = Vec::new();
    for _ in 0..20 {
        let mut raw = raw_upgrade(connect_small_window(server.addr()).await, "/ws").await;
        let burst = request.repeat(20);
        raw.write_all(&burst).await.unwrap();
        non_readers.push(raw);
        let used = server.stats().outbox_pool_bytes;
        assert!(used <= POOL, "pool use {used} over its {POOL} bytes");
    }
    // The pool runs out: the connections that asked for more are closed as slow consumers.
    wait_for(&server, "non-readers closed by the pool", |s| {
        s.sessions < 21
    })
    .await;
    assert!(server.stats().outbox_pool_bytes <= POOL);
    // Others are still served.
    let mut reader = Client::connect(&server, "reader").await;
    reader.send_json(json!({"type": "ping", "id": 1})).await;
    assert_eq!(reader.expect("pong").await["id"], 1);
    // Every byte of credit comes back once the non-readers are gone.
    drop(non_readers);
    wait_for(&server, "non-readers gone", |s| s.sessions == 2).await;
    wait_for(&server, "pool credit returned", |s| {
        s.outbox_pool_bytes == 0
    })
    .await;
    reader.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// F2: a client that keeps sending (so the heartbeat is satisfied) but never reads is closed
/// by the write timeout once its socket accepts no more bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_write_timeout_closes_a_non_reader_that_keeps_sending() {
    let mut config = Config {
        ping_interval: Duration::from_secs(120),
        pong_timeout: Duration::from_secs(120),
        ..Config::default()
    };
    config.memory.write_timeout = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let publisher = filled_room(&server, "big", 8, 50_000).await;
    let mut raw = raw_upgrade(connect_small_window(server.addr()).await, "/ws").await;
    let history = masked_frame(
        opcode::TEXT,
        json!({"type": "history", "room": "big"})
            .to_string()
            .as_bytes(),
        MASK,
    );
    raw.write_all(&history).await.unwrap();
    let ping = masked_frame(opcode::TEXT, br#"{"type":"ping"}"#, MASK);
    // A ping every 100 ms (within the rate limit) until the server drops the connection.
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        if server.sessions() == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a non-reader that keeps sending was not closed by the 1 s write timeout"
        );
        if raw.write_all(&ping).await.is_err() {
            // Reset by the server.
            server.wait_for_sessions(1).await;
            break;
        }
    }
    assert_eq!(server.stats().outbox_pool_bytes, 0);
    publisher.close().await;
    server.shutdown().await;
}

/// F3: history fillers. Before: +727 MiB in 20 s, kept with nobody connected. Now history
/// is bounded server-wide; the oldest entries (of any room, empty rooms included) go first
/// and a recovery that needed them answers `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_history_is_bounded_server_wide_oldest_first() {
    const BUDGET: usize = 1024 * 1024;
    let mut config = unthrottled(Config::default());
    config.memory.history_bytes = BUDGET;
    let server = TestServer::start(config).await;
    // The first room, then left empty: its history is the oldest.
    let mut filler = Client::connect(&server, "filler").await;
    let joined = filler.join("old").await;
    let old_epoch = joined["epoch"].as_str().unwrap().to_owned();
    let data = Value::String("x".repeat(10_000));
    for _ in 0..50 {
        filler.publish("old", data.clone()).await;
    }
    filler
        .send_json(json!({"type": "leave", "room": "old"}))
        .await;
    filler.expect("left").await;
    assert!(server.stats().history_bytes > 400_000);
    // 10 more rooms, 50 × 10 kB each: 5 MB against a budget of 1 MiB.
    let mut last = (String::new(), 0);
    for room in 0..10 {
        let room = format!("new{room}");
        let joined = filler.join(&room).await;
        let epoch = joined["epoch"].as_str().unwrap().to_owned();
        let mut seq = 0;
        for _ in 0..50 {
            seq = filler.publish(&room, data.clone()).await;
        }
        let kept = server.stats().history_bytes;
        assert!(
            kept <= BUDGET + 11_000,
            "history holds {kept} bytes, budget {BUDGET}"
        );
        last = (epoch, seq);
    }
    // The oldest room's messages went first: recovering from its start fails.
    let mut back = Client::connect(&server, "back").await;
    back.send_json(json!({"type": "join", "room": "old", "since": {"seq": 0, "epoch": old_epoch}}))
        .await;
    assert_eq!(back.expect("joined").await["recovered"], false);
    // The newest room's latest messages are kept: a recent position recovers.
    back.send_json(
        json!({"type": "join", "room": "new9", "since": {"seq": last.1 - 3, "epoch": last.0}}),
    )
    .await;
    assert_eq!(back.expect("joined").await["recovered"], true);
    back.close().await;
    filler.close().await;
    server.shutdown().await;
}

/// F10: a fragmented message never finished was held forever. Now it must be completed
/// within `fragment_timeout`, pings in between or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f10_an_unfinished_fragmented_message_is_closed_in_time() {
    let mut config = Config::default();
    config.memory.fragment_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut raw = raw_upgrade(TcpStream::connect(server.addr()).await.unwrap(), "/ws").await;
    let mut bytes = masked_fragment(false, opcode::TEXT, &[b' '; 60_000], MASK);
    // A ping proves the peer alive, but does not extend the message's time.
    bytes.extend(masked_frame(opcode::PING, b"alive", MASK));
    raw.write_all(&bytes).await.unwrap();
    let started = Instant::now();
    let frames = read_until_close(&mut raw).await;
    assert!(frames.iter().any(|f| f.opcode == opcode::PONG));
    let close = frames.iter().find_map(|f| f.close());
    assert_eq!(close.map(|c| c.0), Some(1008), "{frames:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(raw);
    server.wait_for_sessions(0).await;
    server.shutdown().await;
}
