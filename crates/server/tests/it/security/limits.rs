//! Rate, room and connection limits.

use super::*;

#[tokio::test]
async fn a_flood_gets_rate_limited_errors_then_close_1008_while_the_room_keeps_flowing() {
    let mut config = Config::default();
    config.limits.messages_per_second = 10;
    config.limits.message_burst = 10;
    let server = TestServer::start(config).await;
    let mut carol = Client::connect(&server, "carol").await;
    let mut bob = Client::connect(&server, "bob").await;
    let mut eve = Client::connect(&server, "eve").await;
    carol.join("room").await;
    bob.join("room").await;
    carol.expect_presence("room", "join", "bob").await;
    eve.join("room").await;
    carol.expect_presence("room", "join", "eve").await;
    bob.expect_presence("room", "join", "eve").await;

    let flood: Vec<Message> = (0..50)
        .map(|i| {
            Message::text(
                json!({"type": "publish", "room": "room", "data": {"eve": i}, "id": 100 + i})
                    .to_string(),
            )
        })
        .collect();
    let eve_side = async {
        eve.send_all(flood).await;
        let (mut acked, mut errors) = (Vec::new(), 0);
        loop {
            let frame = eve.recv().await;
            if frame.is_close() {
                let (code, reason) = frame.as_close().unwrap();
                assert_eq!(
                    (u16::from(code), reason),
                    (1008, "too many protocol errors")
                );
                // Complete the close handshake (the codec answers while we read to the end).
                while let Ok(Some(Ok(_))) = timeout(RECV_TIMEOUT, eve.ws.next()).await {}
                break;
            }
            let value: Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
            match value["type"].as_str() {
                Some("ack") => acked.push(value["id"].as_u64().unwrap() - 100),
                Some("error") => {
                    assert_eq!(value["code"], "rate_limited", "{value}");
                    errors += 1;
                }
                _ => panic!("eve: unexpected {value}"),
            }
        }
        (acked, errors)
    };
    // bob, a well-behaved member, publishes at the same time (no ids: his own stream also
    // carries eve's messages; carol checks that his arrive).
    let bob_side = async {
        for i in 0..5 {
            bob.send_json(json!({"type": "publish", "room": "room", "data": {"bob": i}}))
                .await;
        }
    };
    let ((acked, errors), ()) = tokio::join!(eve_side, bob_side);
    // The 10th violation closes; the first nine did not.
    assert_eq!(errors, 10, "acked {acked:?}");
    // The burst (10, less the join) went through; the rest was dropped.
    assert!(acked.len() >= 9 && acked.len() <= 40, "acked {acked:?}");

    // carol: eve's accepted messages and all of bob's, gapless and in order, then eve leaves.
    let (mut from_eve, mut from_bob, mut last_seq, mut eve_left) =
        (Vec::new(), Vec::new(), 0, false);
    while from_eve.len() < acked.len() || from_bob.len() < 5 || !eve_left {
        let value = carol.recv_json().await;
        match value["type"].as_str() {
            Some("message") => {
                let seq = value["seq"].as_u64().unwrap();
                assert_eq!(seq, last_seq + 1, "carol: gap or reorder at {value}");
                last_seq = seq;
                match value["from"].as_str() {
                    Some("eve") => from_eve.push(value["data"]["eve"].as_u64().unwrap()),
                    Some("bob") => from_bob.push(value["data"]["bob"].as_u64().unwrap()),
                    _ => panic!("carol: {value}"),
                }
            }
            Some("presence") => {
                assert_eq!(
                    (&value["event"], &value["user"]),
                    (&json!("leave"), &json!("eve"))
                );
                eve_left = true;
            }
            _ => panic!("carol: unexpected {value}"),
        }
    }
    assert_eq!(from_eve, acked);
    assert_eq!(from_bob, [0, 1, 2, 3, 4]);
    carol.sync().await;
}

#[tokio::test]
async fn the_sixth_room_is_too_many_rooms_with_max_rooms_5() {
    let mut config = Config::default();
    config.limits.max_rooms_per_connection = 5;
    let server = TestServer::start(config).await;
    let mut alice = Client::connect(&server, "alice").await;
    for i in 0..5 {
        alice.join(&format!("room-{i}")).await;
    }
    alice
        .send_json(json!({"type": "join", "room": "room-5", "id": 50}))
        .await;
    let error = alice.expect_error("too_many_rooms", Some(50)).await;
    assert!(error["message"].as_str().unwrap().contains('5'), "{error}");
    // Re-joining a room it is in is not a new room.
    alice.join("room-0").await;
    // Leaving one makes room for another.
    alice
        .send_json(json!({"type": "leave", "room": "room-0", "id": 51}))
        .await;
    alice.expect("left").await;
    alice.join("room-5").await;
    // The limit is per connection.
    let mut again = Client::connect(&server, "alice").await;
    for i in 10..15 {
        again.join(&format!("room-{i}")).await;
    }
}

#[tokio::test]
async fn ten_thousand_joins_stop_at_100_rooms_and_close_1008_at_the_tenth_refusal() {
    // Default room limit (100) and violations (10); the message rate is raised, or the joins
    // would hit the rate limit (60 burst) before the room limit.
    let server = TestServer::start(unthrottled(Config::default())).await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room-0").await;
    let mut alice = Client::connect(&server, "alice").await;
    let joins: Vec<Message> = (0..10_000)
        .map(|i| {
            Message::text(json!({"type": "join", "room": format!("room-{i}"), "id": i}).to_string())
        })
        .collect();
    alice.send_all(joins).await;
    for i in 0..100 {
        let joined = alice.expect("joined").await;
        assert_eq!(joined["id"], i, "{joined}");
    }
    // Connection survives exactly up to the 10th violation.
    for i in 100..110 {
        alice.expect_error("too_many_rooms", Some(i)).await;
    }
    assert_eq!(
        alice.expect_close().await,
        (1008, "too many protocol errors".to_owned())
    );
    // Alice came and went: bob hears her join and leave, or nothing when both fall in one
    // presence window (50 ms: coalesced presence cancels a join and a leave of one user), and
    // she is no longer a member either way. Nothing else reaches bob.
    // Nothing tells bob when the server has finished with alice's connection (her leave may
    // cancel out with her join), so ask until she is gone (bounded).
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    for id in 1.. {
        bob.send_json(json!({"type": "members", "room": "room-0", "id": id}))
            .await;
        let members = loop {
            let value = bob.recv_json().await;
            if value["type"] == "members" {
                break value;
            }
            seen.push(value);
        };
        if members["members"] == json!(["bob"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice still a member after 5 s: {members}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.extend(bob.sync_collect().await);
    for value in &seen {
        assert!(
            value["type"] == "presence" && value["room"] == "room-0" && value["user"] == "alice",
            "bob: only alice's presence may arrive: {seen:?}"
        );
    }
    assert_serves(server.addr(), "/ws?user=probe").await;
}

#[tokio::test]
async fn past_max_connections_the_upgrade_is_503_with_retry_after_until_one_closes() {
    let mut config = Config::default();
    config.limits.max_connections = 3;
    // All from one address: lift the per-address cap (a quarter of max_connections by
    // default) to test the node-wide one.
    config.limits.max_connections_per_ip = Some(100);
    let server = TestServer::start(config).await;
    let addr = server.addr();
    let first = Client::connect(&server, "c1").await;
    let _second = Client::connect(&server, "c2").await;
    let _third = Client::connect(&server, "c3").await;

    let refused = upgrade(addr, "/ws?user=c4", &[]).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(refused.body, "server at its connection limit\n");
    // Plain HTTP is not a WebSocket connection and is still served.
    assert_eq!(testkit::http_get(addr, "/healthz", &[]).await.status, 200);

    first.close().await;
    // The slot is freed once the server has finished with the connection; nothing tells the
    // client when, so retry (bounded).
    let admitted = testkit::upgrade_once_freed(addr, "/ws?user=c4", 503).await;
    // Full again.
    assert_eq!(upgrade(addr, "/ws?user=c5", &[]).await.status, 503);
    drop(admitted);
}

#[tokio::test]
async fn quick_upgrades_past_the_per_ip_burst_are_429_with_retry_after() {
    let mut config = Config::default();
    config.limits.connections_per_ip_per_second = 1;
    config.limits.connection_burst_per_ip = 3;
    let server = TestServer::start(config).await;
    let addr = server.addr();
    // Refused origins do not count (the Origin check comes first) ...
    for _ in 0..5 {
        let answer = upgrade(addr, "/ws?user=u", &[("Origin", "https://evil.example")]).await;
        assert_eq!(answer.status, 403, "{answer:?}");
    }
    // ... a request refused after the Origin check does (here 400 for an empty user name).
    assert_eq!(upgrade(addr, "/ws?user=", &[]).await.status, 400);
    let mut open = Vec::new();
    for i in 1..3 {
        let answer = upgrade(addr, &format!("/ws?user=u{i}"), &[]).await;
        assert_eq!(answer.status, 101, "upgrade {i}: {answer:?}");
        open.push(answer);
    }
    let refused = upgrade(addr, "/ws?user=u3", &[]).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.starts_with("too many new connections"));
    // Plain HTTP is not rate limited.
    assert_eq!(testkit::http_get(addr, "/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_per_ip_limit_counts_forwarded_clients() {
    let mut config = Config::default();
    config.limits.connections_per_ip_per_second = 1;
    config.limits.connection_burst_per_ip = 1;
    config.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    let server = TestServer::start(config).await;
    let addr = server.addr();
    let from = |client: &'static str| [("X-Forwarded-For", client)];
    // Two clients behind the same proxy address: one allowance each.
    let first = upgrade(addr, "/ws?user=a", &from("198.51.100.1")).await;
    assert_eq!(first.status, 101, "{first:?}");
    let second = upgrade(addr, "/ws?user=b", &from("198.51.100.2")).await;
    assert_eq!(second.status, 101, "{second:?}");
    assert_eq!(
        upgrade(addr, "/ws?user=c", &from("198.51.100.1"))
            .await
            .status,
        429
    );
    // A client cannot escape by writing its own entry left of the proxy's.
    let forged = upgrade(addr, "/ws?user=d", &from("203.0.113.50, 198.51.100.2")).await;
    assert_eq!(forged.status, 429, "{forged:?}");

    // Without trusted proxies the header is ignored: the peer address counts.
    let mut config = Config::default();
    config.limits.connections_per_ip_per_second = 1;
    config.limits.connection_burst_per_ip = 1;
    let server = TestServer::start(config).await;
    let addr = server.addr();
    assert_eq!(
        upgrade(addr, "/ws?user=a", &from("198.51.100.1"))
            .await
            .status,
        101
    );
    assert_eq!(
        upgrade(addr, "/ws?user=b", &from("198.51.100.2"))
            .await
            .status,
        429
    );
    drop((first, second));
}

#[test]
fn a_bad_trusted_proxy_is_refused_at_start() {
    let config = Config {
        trusted_proxies: vec!["10.0.0.0/40".to_owned()],
        ..Config::default()
    };
    assert!(config.validate().is_err());
}
