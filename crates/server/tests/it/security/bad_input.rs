//! Bad input at the framing and JSON level beyond tests/it/bad_input.rs and lifecycle.rs.

use super::*;
// Sec-WebSocket-Version 8, no request head at all, 1 MiB room names, data nested > 64, ids
// out of range).
// =============================================================================================

#[tokio::test]
async fn a_ping_with_a_126_byte_payload_closes_with_1002() {
    let server = TestServer::default_config().await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;

    // 125 bytes is the most a control frame may carry: answered.
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = testkit::raw_upgrade(tcp, "/ws?user=pinger").await;
    raw.write_all(&masked_frame(opcode::PING, &[7; 125], [1, 2, 3, 4]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let pong = loop {
        let (frames, _) = testkit::parse_frames(&buf);
        if let Some(frame) = frames.into_iter().next() {
            break frame;
        }
        let mut chunk = [0; 1024];
        let n = timeout(RECV_TIMEOUT, raw.read(&mut chunk))
            .await
            .expect("no pong")
            .unwrap();
        assert_ne!(n, 0, "closed instead of a pong");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!((pong.opcode, pong.payload.len()), (opcode::PONG, 125));

    // 126 bytes (16-bit length form): a protocol error.
    let frame = masked_fragment(true, opcode::PING, &[7; 126], [1, 2, 3, 4]);
    assert_eq!(frame[1] & 0x7F, 126, "uses the extended length form");
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = testkit::raw_upgrade(tcp, "/ws?user=pinger").await;
    raw.write_all(&frame).await.unwrap();
    let frames = read_until_close(&mut raw, RECV_TIMEOUT).await;
    let close = frames.iter().find_map(testkit::RawFrame::close);
    assert_eq!(close.map(|c| c.0), Some(1002), "{frames:?}");
    read_to_end_within(&mut raw, RECV_TIMEOUT).await;

    bob.sync().await;
    assert_serves(server.addr(), "/ws?user=probe").await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start(Config {
        handshake_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;

    // Half a head, then nothing.
    let started = Instant::now();
    let mut half = TcpStream::connect(server.addr()).await.unwrap();
    half.write_all(b"GET /ws?user=slow HTTP/1.1\r\nHost: x\r\nUpgrade: webs")
        .await
        .unwrap();
    let drained = read_to_end_within(&mut half, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the 500 ms handshake timeout ({drained:?})"
    );

    // A head trickled one byte every 100 ms (slowloris) is cut off too: the timeout covers
    // the whole head, not the gap between bytes.
    let started = Instant::now();
    let mut trickle = TcpStream::connect(server.addr()).await.unwrap();
    let head =
        b"GET /ws?user=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut closed = false;
    for byte in head {
        tick.tick().await;
        if trickle.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0; 64];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::ZERO, trickle.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        closed,
        "a head trickled over {took:?} was still open (handshake timeout 500 ms)"
    );

    bob.sync().await;
    assert_serves(server.addr(), "/ws?user=probe").await;
}

/// A server with bob in "room"; each case runs on a fresh connection of eve, also in "room".
struct Matrix {
    server: TestServer,
    bob: Client,
}

impl Matrix {
    async fn new() -> Self {
        let server = TestServer::default_config().await;
        let mut bob = Client::connect(&server, "bob").await;
        bob.join("room").await;
        Self { server, bob }
    }

    async fn eve(&mut self) -> Client {
        let mut eve = Client::connect(&self.server, "eve").await;
        eve.join("room").await;
        self.bob.expect_presence("room", "join", "eve").await;
        eve
    }

    /// Afterwards: eve still works, bob got nothing from it, a new client is served.
    async fn still_fine(&mut self, mut eve: Client) {
        eve.sync().await;
        eve.close().await;
        self.bob.expect_presence("room", "leave", "eve").await;
        self.bob.sync().await;
        assert_serves(self.server.addr(), "/ws?user=probe").await;
    }
}

#[tokio::test]
async fn huge_numbers_get_the_documented_answers_and_harm_no_one() {
    let mut matrix = Matrix::new().await;
    let digits = "9".repeat(10_000);
    // (frame, expected reply type, error code, id). docs/protocol.md section 3: `id` and
    // `limit` must be integers from 0 to 2^64−1 ("too large" → invalid_message, no id for a
    // bad id); unknown fields are ignored.
    let cases: Vec<(String, &str, Option<&str>, Option<u64>)> = vec![
        (
            r#"{"type":"ping","id":1e400}"#.to_owned(),
            "error",
            Some("invalid_message"),
            None,
        ),
        (
            format!(r#"{{"type":"ping","id":{digits}}}"#),
            "error",
            Some("invalid_message"),
            None,
        ),
        (
            r#"{"type":"history","room":"room","limit":18446744073709551616,"id":3}"#.to_owned(),
            "error",
            Some("invalid_message"),
            Some(3),
        ),
        (
            r#"{"type":"history","room":"room","limit":1e400,"id":4}"#.to_owned(),
            "error",
            Some("invalid_message"),
            Some(4),
        ),
        (
            format!(
                r#"{{"type":"join","room":"other","since":{{"seq":{digits},"epoch":"x"}},"id":5}}"#
            ),
            "error",
            Some("invalid_message"),
            Some(5),
        ),
        (
            r#"{"type":"ping","id":6,"x":1e400}"#.to_owned(),
            "pong",
            None,
            Some(6),
        ),
        (
            format!(r#"{{"type":"ping","id":7,"x":{digits}}}"#),
            "pong",
            None,
            Some(7),
        ),
        (
            format!(r#"{{"type":"ping","id":8,"x":-{digits}.{digits}e-99999}}"#),
            "pong",
            None,
            Some(8),
        ),
    ];
    let mut failures = Vec::new();
    for (frame, kind, code, id) in cases {
        let mut eve = matrix.eve().await;
        eve.send_text(&frame).await;
        let reply = eve.recv_json().await;
        let got = (
            reply["type"].as_str().map(str::to_owned),
            reply["code"].as_str().map(str::to_owned),
            reply["id"].as_u64(),
        );
        let want = (Some(kind.to_owned()), code.map(str::to_owned), id);
        if got != want {
            failures.push(format!(
                "{}…: expected {want:?}, got {reply}",
                &frame[..frame.len().min(60)]
            ));
        }
        matrix.still_fine(eve).await;
    }
    // Numbers in `data` beyond the f64 range are refused (`bad_json`, with the id): the server
    // relays `data` byte for byte and accepts only what every receiver can parse. A large but
    // representable number is relayed verbatim.
    let mut eve = matrix.eve().await;
    for data in ["1e400".to_owned(), digits.clone()] {
        eve.send_text(&format!(
            r#"{{"type":"publish","room":"room","data":{data},"id":9}}"#
        ))
        .await;
        let reply = eve.expect("error").await;
        assert_eq!(
            (reply["code"].as_str(), reply["id"].as_u64()),
            (Some("bad_json"), Some(9))
        );
    }
    let big = format!("1{}", "0".repeat(300));
    eve.send_text(&format!(
        r#"{{"type":"publish","room":"room","data":{big},"id":10}}"#
    ))
    .await;
    eve.expect("ack").await;
    let frame = matrix.bob.recv().await;
    let text = frame.as_text().expect("a text frame");
    assert!(
        text.contains(&format!(r#""data":{big}"#)),
        "{}",
        &text[..100]
    );
    matrix.still_fine(eve).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn deeply_nested_json_is_refused_or_ignored_never_a_crash() {
    let mut matrix = Matrix::new().await;
    let arrays = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    // (what, frame, expected reply type, error code). docs/protocol.md: a frame that is not an
    // object is `invalid_message` (checked after JSON syntax); unknown fields are ignored;
    // `data` deeper than 64 levels is `bad_json`.
    let cases = [
        (
            "a 30,000-deep array as the whole frame",
            arrays(30_000),
            "error",
            Some("invalid_message"),
        ),
        (
            "a 30,000-deep array in an unknown field",
            format!(r#"{{"type":"ping","id":1,"x":{}}}"#, arrays(30_000)),
            "pong",
            None,
        ),
        (
            "10,000-deep objects in an unknown field",
            format!(r#"{{"type":"ping","id":2,"x":{}}}"#, objects(10_000)),
            "pong",
            None,
        ),
        (
            "a 30,000-deep array as data",
            format!(
                r#"{{"type":"publish","room":"room","id":3,"data":{}}}"#,
                arrays(30_000)
            ),
            "error",
            Some("bad_json"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, frame, kind, code) in cases {
        assert!(frame.len() < 64 * 1024, "{what} fits the message limit");
        let mut eve = matrix.eve().await;
        eve.send_text(&frame).await;
        let reply = eve.recv_json().await;
        if reply["type"] != kind || reply["code"].as_str() != code {
            failures.push(format!("{what}: expected {kind} {code:?}, got {reply}"));
        }
        matrix.still_fine(eve).await;
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
