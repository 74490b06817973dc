// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Connection lifecycle over real sockets: the HTTP answers before the upgrade, the message
//! size limit, invalid UTF-8, the heartbeat, slow consumers and graceful shutdown
//! (docs/protocol.md sections 2 and 8).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_server::Config;
use testkit::{
    Client, TestServer, UPGRADE_HEADERS, http_get, masked_fragment, masked_frame, opcode,
    parse_frames, raw_upgrade, read_to_end_within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_websockets::{Message, Payload};

fn upgrade_headers_with(name: &str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    UPGRADE_HEADERS
        .iter()
        .map(|&(n, v)| if n == name { (n, value) } else { (n, v) })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP before the upgrade
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_ws_without_upgrade_headers_is_400() {
    // docs/protocol.md section 2: "GET /ws that is not a WebSocket upgrade → 400 Bad Request".
    let server = TestServer::default_config().await;
    let response = http_get(server.addr(), "/ws?user=alice", &[]).await;
    assert_eq!(
        response.status,
        400,
        "a plain GET /ws: {:?}",
        String::from_utf8_lossy(&response.body)
    );
}

#[tokio::test]
async fn unsupported_websocket_version_is_426() {
    let server = TestServer::default_config().await;
    let headers = upgrade_headers_with("Sec-WebSocket-Version", "8");
    let response = http_get(server.addr(), "/ws?user=alice", &headers).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(
        response.header("sec-websocket-version"),
        Some("13"),
        "RFC 6455 section 4.4: a 426 names the supported version"
    );
    // A missing version is not 13 either.
    let headers: Vec<_> = UPGRADE_HEADERS
        .into_iter()
        .filter(|(n, _)| *n != "Sec-WebSocket-Version")
        .collect();
    let response = http_get(server.addr(), "/ws?user=alice", &headers).await;
    assert_eq!(response.status, 426, "{response:?}");
}

#[tokio::test]
async fn invalid_user_names_are_400_before_the_upgrade() {
    let server = TestServer::default_config().await;
    let too_long = format!("/ws?user={}", "x".repeat(65));
    for path in [
        "/ws?user=%0A",
        "/ws?user=a%00b",
        "/ws?user=a%7Fb",
        "/ws?user=%C2%85",
        "/ws?user=",
        too_long.as_str(),
    ] {
        let response = http_get(server.addr(), path, &UPGRADE_HEADERS).await;
        assert_eq!(response.status, 400, "{path}: {response:?}");
        assert!(response.header("sec-websocket-accept").is_none());
    }
}

#[tokio::test]
async fn user_names_are_taken_as_given_or_generated() {
    let server = TestServer::default_config().await;
    // 64 bytes of UTF-8 (32 × "é"), percent-encoded, is the longest valid name.
    let long = "\u{e9}".repeat(32);
    let path = format!("/ws?user={}", "%C3%A9".repeat(32));
    let mut named = Client::connect_path(&server, &path, "long").await;
    named.join("room").await;
    named
        .send_json(json!({"type": "publish", "room": "room", "data": 1, "echo": true}))
        .await;
    assert_eq!(named.expect("message").await["from"], long.as_str());
    // ...and as the 64-byte `from` of a binary envelope.
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;
    named.expect_presence("room", "join", "bob").await;
    named
        .send_binary(switchboard_protocol::binary::encode_client(
            "room",
            b"\x00\x01",
        ))
        .await;
    let frame = bob.expect_binary().await;
    let delivered = switchboard_protocol::binary::decode_server(&frame).unwrap();
    assert_eq!(
        (delivered.from, delivered.payload),
        (long.as_str(), &b"\x00\x01"[..])
    );

    // Without `user`, the server makes up `anon-` + 8 hex digits.
    let mut anon = Client::connect_path(&server, "/ws", "anon").await;
    anon.join("room2").await;
    anon.send_json(json!({"type": "publish", "room": "room2", "data": 1, "echo": true}))
        .await;
    let from = anon.expect("message").await["from"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = from
        .strip_prefix("anon-")
        .unwrap_or_else(|| panic!("{from}"));
    assert!(
        hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "generated name {from}"
    );
}

#[tokio::test]
async fn healthz_is_200_ok_and_unknown_paths_are_404() {
    let server = TestServer::default_config().await;
    let response = http_get(server.addr(), "/healthz", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(String::from_utf8_lossy(&response.body).trim(), "ok");
    let response = http_get(server.addr(), "/nope", &[]).await;
    assert_eq!(response.status, 404);
    // The demo page and its assets.
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let response = http_get(server.addr(), path, &[]).await;
        assert_eq!(response.status, 200, "{path}");
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(!response.body.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn echo_endpoint_is_404_when_disabled() {
    let server = TestServer::default_config().await;
    let response = http_get(server.addr(), "/echo", &UPGRADE_HEADERS).await;
    assert_eq!(response.status, 404, "{response:?}");
}

#[tokio::test]
async fn echo_endpoint_echoes_text_and_binary_when_enabled() {
    let server = TestServer::start(Config {
        echo_endpoint: true,
        ..Config::default()
    })
    .await;
    let mut echo = Client::connect_path(&server, "/echo", "echo").await;
    echo.send_text("not even JSON \u{1F600}").await;
    let message = echo.recv().await;
    assert_eq!(message.as_text(), Some("not even JSON \u{1F600}"));
    let bytes: Vec<u8> = (0..=255).rev().collect();
    echo.send_binary(bytes.clone()).await;
    assert_eq!(&echo.expect_binary().await[..], &bytes[..]);
    // Larger than /ws's limit: /echo has its own.
    let big = "e".repeat(100 * 1024);
    echo.send_text(&big).await;
    assert_eq!(echo.recv().await.as_text(), Some(big.as_str()));
    echo.close().await;
}

// ---------------------------------------------------------------------------------------------
// Size limit and invalid frames
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn message_over_max_message_size_closes_with_1009() {
    let server = TestServer::start(Config {
        max_message_size: 1024,
        outbox_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    alice.expect_presence("room", "join", "bob").await;

    // Exactly at the limit is fine.
    let frame = |len: usize| {
        let head = r#"{"type":"publish","room":"room","id":1,"data":""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
    };
    alice.send_text(&frame(1024)).await;
    assert_eq!(alice.expect("ack").await["seq"], 1);
    bob.expect("message").await;

    alice.send_text(&frame(1025)).await;
    let (code, _reason) = alice.expect_close().await;
    assert_eq!(code, 1009);
    bob.expect_presence("room", "leave", "alice").await;
}

#[tokio::test]
async fn a_one_mebibyte_room_name_closes_with_1009() {
    let server = TestServer::default_config().await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.join("room").await;
    bob.expect_presence("room", "join", "alice").await;
    let room = "a".repeat(1024 * 1024);
    alice
        .send_json(json!({"type": "join", "room": room, "id": 1}))
        .await;
    let (code, _reason) = alice.expect_close().await;
    assert_eq!(code, 1009);
    bob.expect_presence("room", "leave", "alice").await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::default_config().await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.join("room").await;
    bob.expect_presence("room", "join", "alice").await;
    // Message::text does not validate a Payload built from bytes.
    let invalid = Bytes::from_static(b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}");
    alice.send(Message::text(Payload::from(invalid))).await;
    let (code, _reason) = alice.expect_close().await;
    assert_eq!(code, 1007);
    bob.expect_presence("room", "leave", "alice").await;
}

#[tokio::test]
async fn fragments_are_reassembled_and_the_limit_counts_all_of_them() {
    let server = TestServer::start(Config {
        max_message_size: 1024,
        outbox_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut raw, rest) = raw_join(tcp, "frag", "room").await;
    assert!(rest.is_empty(), "{rest:?}");
    bob.expect_presence("room", "join", "frag").await;
    let mask = [1, 2, 3, 4];

    // 1,000 bytes in three fragments: one message.
    let (head, tail) = (r#"{"type":"publish","room":"room","data":""#, r#""}"#);
    let text = "f".repeat(1000 - head.len() - tail.len());
    let publish = format!("{head}{text}{tail}");
    assert_eq!(publish.len(), 1000);
    let (a, rest) = publish.as_bytes().split_at(400);
    let (b, c) = rest.split_at(400);
    let mut frames = masked_fragment(false, opcode::TEXT, a, mask);
    frames.extend(masked_fragment(false, opcode::CONTINUATION, b, mask));
    frames.extend(masked_fragment(true, opcode::CONTINUATION, c, mask));
    raw.write_all(&frames).await.unwrap();
    let message = bob.expect("message").await;
    assert_eq!(message["data"], text.as_str());

    // Two fragments of 600 bytes: each is under the limit, the message is not.
    let mut frames = masked_fragment(false, opcode::TEXT, &[b' '; 600], mask);
    frames.extend(masked_fragment(
        true,
        opcode::CONTINUATION,
        &[b' '; 600],
        mask,
    ));
    raw.write_all(&frames).await.unwrap();
    let mut buf = Vec::new();
    let close = loop {
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout(testkit::RECV_TIMEOUT, raw.read(&mut chunk))
            .await
            .expect("no close frame")
            .unwrap();
        assert_ne!(n, 0, "connection closed without a close frame: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let (frames, _) = parse_frames(&buf);
        if let Some(close) = frames.iter().find_map(testkit::RawFrame::close) {
            break close;
        }
    };
    assert_eq!(close.0, 1009, "{close:?}");
    // Answer the close; the server then ends the connection.
    raw.write_all(&masked_frame(opcode::CLOSE, &1009_u16.to_be_bytes(), mask))
        .await
        .unwrap();
    read_to_end_within(&mut raw, Duration::from_secs(3)).await;
    bob.expect_presence("room", "leave", "frag").await;
}

#[tokio::test]
async fn client_websocket_pings_get_pongs_and_a_client_close_is_answered() {
    let server = TestServer::default_config().await;
    let mut alice = Client::connect(&server, "alice").await;
    alice
        .send(Message::ping(Bytes::from_static(b"are you there")))
        .await;
    let pong = tokio::time::timeout(
        testkit::RECV_TIMEOUT,
        futures_util::StreamExt::next(&mut alice.ws),
    )
    .await
    .expect("no pong")
    .expect("stream ended")
    .expect("read failed");
    assert!(pong.is_pong(), "{pong:?}");
    assert_eq!(&pong.as_payload()[..], b"are you there");

    // A normal close is answered with a close frame carrying the same code.
    alice
        .send(Message::close(
            Some(tokio_websockets::CloseCode::NORMAL_CLOSURE),
            "bye",
        ))
        .await;
    let reply = alice.recv().await;
    let (code, _) = reply.as_close().unwrap_or_else(|| panic!("{reply:?}"));
    assert_eq!(u16::from(code), 1000);
}

#[tokio::test]
async fn a_connection_that_sends_no_request_head_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start(Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr()).await.unwrap();
    let drained = read_to_end_within(&mut idle, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "dropped after {took:?} with a 300 ms handshake timeout ({drained:?})"
    );
    // Slow but in time is fine.
    let response = http_get(server.addr(), "/healthz", &[]).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn framing_errors_close_with_1002() {
    let server = TestServer::default_config().await;
    let mask = [5, 6, 7, 8];
    let ping = json!({"type": "ping"}).to_string();
    let mut unmasked = vec![0x81, u8::try_from(ping.len()).unwrap()];
    unmasked.extend_from_slice(ping.as_bytes());
    let mut reserved_bits = masked_frame(opcode::TEXT, ping.as_bytes(), mask);
    reserved_bits[0] |= 0x40;
    let cases: [(&str, Vec<u8>); 4] = [
        ("unmasked client frame", unmasked),
        ("reserved bit set", reserved_bits),
        ("unknown opcode", masked_frame(0x3, b"", mask)),
        (
            "fragmented control frame",
            masked_fragment(false, opcode::PING, b"", mask),
        ),
    ];
    for (what, frame) in cases {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let mut raw = raw_upgrade(tcp, "/ws?user=framer").await;
        raw.write_all(&frame).await.unwrap();
        // The close frame, then the end of the connection (we never answer).
        let drained = read_to_end_within(&mut raw, Duration::from_secs(10)).await;
        let (frames, _) = parse_frames(&drained.bytes);
        let close = frames.iter().find_map(testkit::RawFrame::close);
        assert_eq!(close.map(|c| c.0), Some(1002), "{what}: {frames:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

fn short_heartbeat() -> Config {
    Config {
        ping_interval: Duration::from_millis(200),
        pong_timeout: Duration::from_millis(300),
        ..Config::default()
    }
}

/// Connects a raw client, upgrades by hand, joins `room` and reads frames until `joined`.
/// Returns the socket and any bytes read past the `joined` frame.
async fn raw_join(stream: TcpStream, user: &str, room: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = raw_upgrade(stream, &format!("/ws?user={user}")).await;
    let join = json!({"type": "join", "room": room, "id": 1}).to_string();
    stream
        .write_all(&masked_frame(
            opcode::TEXT,
            join.as_bytes(),
            [0x12, 0x34, 0x56, 0x78],
        ))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + testkit::RECV_TIMEOUT;
    loop {
        let (frames, _) = parse_frames(&buf);
        if let Some(at) = frames.iter().position(|f| {
            f.json()
                .is_some_and(|v| v["type"] == "joined" && v["id"] == 1)
        }) {
            let consumed: usize = frames.iter().take(at + 1).map(frame_len).sum();
            return (stream, buf.split_off(consumed));
        }
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("no joined reply on the raw connection")
            .unwrap();
        assert_ne!(n, 0, "raw connection closed before joined");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The encoded length of an unmasked server frame.
fn frame_len(frame: &testkit::RawFrame) -> usize {
    let len = frame.payload.len();
    len + match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_pong_timeout() {
    let server = TestServer::start(short_heartbeat()).await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;
    // bob keeps reading (so it answers the server's pings) while the silent client times out.
    let watcher = tokio::spawn(async move {
        bob.expect_presence("room", "join", "silent").await;
        bob.expect_presence("room", "leave", "silent").await;
        bob
    });

    let started = Instant::now();
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let (mut silent, rest) = raw_join(tcp, "silent", "room").await;
    // From here on the client neither reads nor writes. bob sees it leave...
    let mut bob = watcher.await.unwrap();
    // ...and the server has dropped the TCP connection: what is buffered, then EOF.
    let drained = read_to_end_within(&mut silent, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let mut bytes = rest;
    bytes.extend_from_slice(&drained.bytes);
    let (frames, _) = parse_frames(&bytes);
    assert!(
        frames.iter().any(|f| f.opcode == opcode::PING),
        "the server pinged before giving up: {frames:?}"
    );
    let close = frames.iter().find_map(testkit::RawFrame::close);
    assert_eq!(close, Some((1008, "ping timeout".to_owned())), "{frames:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?} with a 200 ms interval and a 300 ms timeout"
    );
    bob.sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_connected() {
    let server = TestServer::start(short_heartbeat()).await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.join("room").await;
    // Several intervals and timeouts pass; the codec answers each ping while we read.
    let pings = alice.assert_silent(1_500).await;
    assert!(
        pings >= 3,
        "expected a ping every 200 ms, got {pings} in 1.5 s"
    );
    alice.sync().await;
    assert_eq!(alice.publish("room", json!("alive")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_frame_counts_as_a_sign_of_life() {
    let server = TestServer::start(short_heartbeat()).await;
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut raw, mut buf) = raw_join(tcp, "busy", "room").await;
    // This client never answers WebSocket pings, but sends a JSON ping every 100 ms (the
    // behaviour under test, not a synchronisation) for 1.5 s: several ping timeouts long.
    let mut pongs = 0;
    let mut pings = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    for id in 0..15 {
        ticker.tick().await;
        let ping = json!({"type": "ping", "id": id}).to_string();
        raw.write_all(&masked_frame(opcode::TEXT, ping.as_bytes(), [9, 8, 7, 6]))
            .await
            .unwrap();
        // Read whatever has arrived: pongs, and the server's pings (left unanswered).
        loop {
            let (frames, used) = parse_frames(&buf);
            for frame in &frames {
                match frame.opcode {
                    opcode::PING => pings += 1,
                    opcode::TEXT => {
                        assert_eq!(frame.json().unwrap()["type"], "pong", "{frame:?}");
                        pongs += 1;
                    }
                    _ => panic!("unexpected frame {frame:?} after {pongs} pongs"),
                }
            }
            buf.drain(..used);
            if pongs > id {
                break;
            }
            let mut chunk = [0; 4096];
            let n = tokio::time::timeout(testkit::RECV_TIMEOUT, raw.read(&mut chunk))
                .await
                .expect("no pong")
                .unwrap();
            assert_ne!(
                n, 0,
                "the server closed a connection that kept sending frames"
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    assert_eq!(pongs, 15);
    assert!(pings >= 1, "the server should have pinged in 1.5 s");
}

// ---------------------------------------------------------------------------------------------
// Slow consumer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_does_not_slow_the_others() {
    const SUBSCRIBERS: usize = 20;
    const BATCH: usize = 20;
    const MIN_MESSAGES: u64 = 2_000;
    const MAX_MESSAGES: usize = 20_000;
    let server = TestServer::start(testkit::unthrottled(Config {
        outbox_bytes: 64 * 1024,
        max_message_size: 16 * 1024,
        ..Config::default()
    }))
    .await;

    let mut members: Vec<Client> = Vec::new();
    for i in 0..=SUBSCRIBERS {
        let name = if i == 0 {
            "pub".to_owned()
        } else {
            format!("sub{i}")
        };
        let mut client = Client::connect(&server, &name).await;
        client.join("room").await;
        for member in &mut members {
            member.expect_presence("room", "join", &name).await;
        }
        members.push(client);
    }

    // The slow client: small TCP segments and receive buffer, a hand-made upgrade and join,
    // then no reads.
    let tcp = testkit::connect_small_window(server.addr()).await;
    let (mut slow, rest) = raw_join(tcp, "slow", "room").await;
    for member in &mut members {
        member.expect_presence("room", "join", "slow").await;
    }

    let mut publisher = members.remove(0);
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut numbers = Vec::new();
                let mut last_seq = 0;
                let mut saw_leave = false;
                loop {
                    let v = sub.recv_json().await;
                    if v["type"] == "presence" {
                        assert_eq!(
                            (&v["event"], &v["user"]),
                            (&json!("leave"), &json!("slow")),
                            "{}: {v}",
                            sub.name
                        );
                        assert!(!saw_leave, "{}: two leave events", sub.name);
                        saw_leave = true;
                        continue;
                    }
                    assert_eq!(v["type"], "message", "{}: {v}", sub.name);
                    let seq = v["seq"].as_u64().unwrap();
                    assert_eq!(seq, last_seq + 1, "{}: gap in seq", sub.name);
                    last_seq = seq;
                    if v["data"]["done"] == true {
                        return (sub, numbers, saw_leave);
                    }
                    numbers.push(v["data"]["n"].as_u64().unwrap());
                }
            })
        })
        .collect();

    // Publish 1 KiB messages in small batches (a pong after each batch paces the publisher
    // so that the readers keep up): at least MIN_MESSAGES, and until the slow client has been
    // closed plus two more batches.
    let padding = "p".repeat(1000);
    let mut sent = 0_u64;
    let mut closed_at = None;
    let mut extra_batches = 0;
    while extra_batches < 2 || sent < MIN_MESSAGES {
        let mut batch = Vec::new();
        for _ in 0..BATCH {
            let publish =
                json!({"type": "publish", "room": "room", "data": {"n": sent, "pad": padding}});
            batch.push(Message::text(publish.to_string()));
            sent += 1;
        }
        publisher.send_all(batch).await;
        for v in publisher.sync_collect().await {
            testkit::assert_fields(
                &v,
                &json!({"type": "presence", "room": "room", "event": "leave", "user": "slow"}),
            );
            assert!(closed_at.is_none(), "two leave events");
            closed_at = Some(sent);
        }
        if closed_at.is_some() {
            extra_batches += 1;
        }
        assert!(
            usize::try_from(sent).unwrap() < MAX_MESSAGES,
            "the slow consumer was not closed after {sent} messages of 1 KiB"
        );
    }
    publisher
        .send_json(json!({"type": "publish", "room": "room", "data": {"done": true}}))
        .await;
    publisher.sync().await;

    // Every normal subscriber got every message, in order, and the leave event.
    let mut subscribers = Vec::new();
    for reader in readers {
        let (sub, numbers, saw_leave) = reader.await.unwrap();
        assert_eq!(
            numbers,
            (0..sent).collect::<Vec<_>>(),
            "{} missed messages",
            sub.name
        );
        assert!(
            saw_leave,
            "{}: no presence leave for the slow client",
            sub.name
        );
        subscribers.push(sub);
    }
    // Nothing else happened to them (they stay connected until the end of the test).
    for sub in &mut subscribers {
        sub.sync().await;
    }

    // The slow client's connection is gone: after what the kernel buffered comes EOF or reset.
    let drained = read_to_end_within(&mut slow, Duration::from_secs(10)).await;
    let mut bytes = rest;
    bytes.extend_from_slice(&drained.bytes);
    let (frames, _) = parse_frames(&bytes);
    // What it did receive is a gap-free prefix of the room's messages.
    let seqs: Vec<u64> = frames
        .iter()
        .filter_map(testkit::RawFrame::json)
        .filter(|v| v["type"] == "message")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        (seqs.len() as u64) < sent,
        "the slow client cannot have had everything"
    );
    if let Some(close) = frames.iter().find_map(testkit::RawFrame::close) {
        assert_eq!(close, (1013, "slow consumer".to_owned()));
    }
    eprintln!(
        "slow consumer closed after {} messages; {sent} sent; it received {} ({} bytes, {:?})",
        closed_at.unwrap_or_default(),
        seqs.len(),
        bytes.len(),
        drained.error.map(|e| e.kind())
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_with_1001_and_run_returns() {
    let server = TestServer::start(Config {
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    let mut clients = Vec::new();
    for (i, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
        let mut client = Client::connect(&server, user).await;
        if i < 2 {
            client.join("room").await;
        }
        clients.push(client);
    }
    clients[0].expect_presence("room", "join", "bob").await;
    // Plain HTTP connections must not hold the shutdown up either: one kept alive after a
    // request, one that has not sent its request yet.
    let mut keep_alive = TcpStream::connect(addr).await.unwrap();
    let response = testkit::http_get_on(&mut keep_alive, "/healthz", &[]).await;
    assert_eq!(response.status, 200);
    let mut no_request = TcpStream::connect(addr).await.unwrap();
    let closers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                // Presence leave events may come first: the other member is closing too.
                loop {
                    let message = client.recv().await;
                    if let Some((code, reason)) = message.as_close() {
                        let closed = (u16::from(code), reason.to_owned());
                        // Complete the handshake: the codec answers while we read to the end.
                        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut client.ws).await
                        {
                        }
                        return closed;
                    }
                    let v: Value = serde_json::from_str(message.as_text().unwrap()).unwrap();
                    assert_eq!(v["type"], "presence", "{}: {v}", client.name);
                }
            })
        })
        .collect();

    let took = server.shutdown_within(Duration::from_secs(4)).await;
    for closer in closers {
        assert_eq!(
            closer.await.unwrap(),
            (1001, "server shutting down".to_owned())
        );
    }
    assert!(
        took < Duration::from_secs(3),
        "clients completed the close handshake, yet run took {took:?}"
    );
    // No longer accepting, and the HTTP connections were closed.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
    read_to_end_within(&mut keep_alive, Duration::from_secs(1)).await;
    read_to_end_within(&mut no_request, Duration::from_secs(1)).await;
}

/// Small frames that queue up while the reader is stalled are written in runs (several frames
/// copied into one buffer, vendor/tokio-websockets/PATCHED.md) and, with a tiny receive window,
/// through many partial writes; frames over the run limit go out from their own buffers in
/// between. Every message must arrive whole, once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frames_written_in_runs_arrive_whole_and_in_order_through_partial_writes() {
    const MESSAGES: u64 = 3_000;
    let server = TestServer::start(testkit::unthrottled(Config {
        outbox_bytes: 16 * 1024 * 1024,
        ..Config::default()
    }))
    .await;
    let tcp = testkit::connect_small_window(server.addr()).await;
    let (mut reader, mut buf) = raw_join(tcp, "reader", "room").await;
    let mut publisher = Client::connect(&server, "pub").await;
    publisher.join("room").await;

    // Payload sizes straddle the 512-byte run limit: runs, frames of their own, runs again.
    let pads = [0usize, 40, 200, 470, 600, 90, 1500, 5];
    let messages = (1..=MESSAGES)
        .map(|i| {
            let pad = "x".repeat(pads[i as usize % pads.len()]);
            let publish = json!({"type": "publish", "room": "room", "data": {"i": i, "pad": pad}});
            Message::text(publish.to_string())
        })
        .collect();
    publisher.send_all(messages).await;
    publisher.sync().await;

    let deadline = Instant::now() + testkit::RECV_TIMEOUT;
    let mut next = 1;
    while next <= MESSAGES {
        let (frames, consumed) = testkit::parse_frames(&buf);
        for frame in &frames {
            let v = frame.json().expect("a whole JSON text frame");
            if v["type"] == "presence" {
                continue;
            }
            assert_eq!(v["type"], "message", "{v}");
            assert_eq!(v["data"]["i"], next, "message {next} out of order or lost");
            assert_eq!(v["seq"], next);
            let pad = pads[next as usize % pads.len()];
            assert_eq!(v["data"]["pad"].as_str().map(str::len), Some(pad));
            next += 1;
        }
        buf.drain(..consumed);
        if next > MESSAGES {
            break;
        }
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout_at(deadline, reader.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("stalled after {} messages", next - 1))
            .unwrap();
        assert_ne!(n, 0, "connection closed after {} messages", next - 1);
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The JavaScript SDK and the ticker demo are served from the binary (clients/js/dist, web/).
#[tokio::test]
async fn sdk_bundle_and_ticker_page_are_served() {
    let server = TestServer::default_config().await;
    for (path, kind, marker) in [
        (
            "/sdk/switchboard.js",
            "text/javascript",
            "var Client = class",
        ),
        ("/sdk/switchboard.min.js", "text/javascript", "export{"),
        ("/ticker.html", "text/html", "ticker.js"),
        ("/ticker.js", "text/javascript", "/sdk/switchboard.min.js"),
    ] {
        let response = http_get(server.addr(), path, &[]).await;
        assert_eq!(response.status, 200, "{path}");
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let body = String::from_utf8_lossy(&response.body);
        assert!(body.contains(marker), "{path} lacks {marker:?}");
    }
}

/// Regression: a close frame arriving right behind a message used to cut off that message's
/// reply (the codec answered the close before the driver's outbox drained, and later sends
/// failed). Now the close reply goes out behind the queued replies: a join's `joined`, and a
/// pipelined publish's `ack`, both sent in the same write as the close.
#[tokio::test]
async fn a_close_right_behind_a_message_does_not_drop_that_messages_reply() {
    let server = TestServer::default_config().await;
    let mask = [1, 2, 3, 4];
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = raw_upgrade(tcp, "/ws?user=closer").await;
    let mut burst = masked_frame(opcode::TEXT, br#"{"type":"join","room":"r","id":1}"#, mask);
    burst.extend(masked_frame(
        opcode::TEXT,
        br#"{"type":"publish","room":"r","data":{"n":1},"id":2}"#,
        mask,
    ));
    burst.extend(masked_frame(opcode::CLOSE, &1000_u16.to_be_bytes(), mask));
    raw.write_all(&burst).await.unwrap();
    let drained = read_to_end_within(&mut raw, Duration::from_secs(5)).await;
    let (frames, _) = parse_frames(&drained.bytes);
    let json: Vec<Value> = frames.iter().filter_map(testkit::RawFrame::json).collect();
    let joined = json.iter().find(|v| v["type"] == "joined");
    assert!(
        joined.is_some_and(|v| v["id"] == 1),
        "no joined: {frames:?}"
    );
    let ack = json.iter().find(|v| v["type"] == "ack");
    assert!(ack.is_some_and(|v| v["id"] == 2), "no ack: {frames:?}");
    let last = frames.last().and_then(testkit::RawFrame::close);
    assert_eq!(last.map(|(code, _)| code), Some(1000), "{frames:?}");
}
