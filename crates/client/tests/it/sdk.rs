// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The SDK against the real server, in-process. Connections that must break do so through the
//! TCP proxy of the test kit (cut, silenced, refused), so nothing here sleeps to synchronise.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use switchboard_client::{Backoff, Body, Client, Error, Event, PresenceEvent};
use switchboard_server::Config;
use switchboard_server::auth::mint_hs256;
use switchboard_server::config::AuthConfig;
use testkit::TestServer;
use testkit::sdk::*;

/// Polls a request future once, so that its command reaches the client, and checks that it
/// is waiting for its reply.
async fn start<F: Future>(fut: &mut Pin<Box<F>>) {
    let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
    assert!(polled, "the request should wait for its reply");
}

#[tokio::test]
async fn two_clients_join_publish_and_receive() {
    let server = TestServer::default_config().await;
    let (alice, mut alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, mut bob_events) = connect(builder(&server.url("/ws"), "bob")).await;

    let joined = alice.join("lobby").await.unwrap();
    assert_eq!(
        (joined.room.as_str(), joined.members.clone(), joined.seq),
        ("lobby", vec!["alice".to_owned()], 0)
    );
    assert_eq!(wait_joined(&mut alice_events, "lobby").await.0, 0);
    let mut members = bob.join("lobby").await.unwrap().members;
    members.sort();
    assert_eq!(members, ["alice", "bob"]);

    // JSON: the ack's seq is the message's seq.
    let seq = alice
        .publish("lobby", json!({"text": "hi bob"}))
        .await
        .unwrap();
    assert_eq!(seq, 1);
    let (from, data, got) = wait_message(&mut bob_events, "lobby").await;
    assert_eq!(
        (from.as_str(), data, got),
        ("alice", json!({"text": "hi bob"}), 1)
    );

    // Binary shares the sequence.
    alice
        .publish_binary("lobby", Bytes::from_static(b"\x00\x9f\x92\x96\xff"))
        .await
        .unwrap();
    let binary = wait_for(&mut bob_events, "a binary message", |e| match e {
        Event::Binary {
            from, payload, seq, ..
        } => Some((from.clone(), payload.clone(), *seq)),
        _ => None,
    })
    .await;
    assert_eq!(
        binary,
        (
            "alice".to_owned(),
            Bytes::from_static(b"\x00\x9f\x92\x96\xff"),
            2
        )
    );

    // The other way round; the publisher does not get its own message.
    assert_eq!(bob.publish("lobby", json!(null)).await.unwrap(), 3);
    let events = collect_until(&mut alice_events, "bob's message", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    assert_eq!(message_seqs(&events), [3]);
    assert!(
        matches!(events.last(), Some(Event::Message { from, data, .. }) if from == "bob" && data.is_null()),
        "{events:?}"
    );

    bob.typing("lobby").await.unwrap();
    let typing = wait_for(&mut alice_events, "typing", |e| match e {
        Event::Typing { room, from } => Some((room.clone(), from.clone())),
        _ => None,
    })
    .await;
    assert_eq!(typing, ("lobby".to_owned(), "bob".to_owned()));

    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn presence_join_and_leave() {
    let server = TestServer::default_config().await;
    let (alice, mut alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, _bob_events) = connect(builder(&server.url("/ws"), "bob")).await;
    let (carol, _carol_events) = connect(builder(&server.url("/ws"), "carol")).await;
    alice.join("room").await.unwrap();

    let presence = |e: &Event| match e {
        Event::Presence { room, event, user } => Some((room.clone(), *event, user.clone())),
        _ => None,
    };
    bob.join("room").await.unwrap();
    assert_eq!(
        wait_for(&mut alice_events, "bob's join", presence).await,
        ("room".to_owned(), PresenceEvent::Join, "bob".to_owned())
    );
    bob.leave("room").await.unwrap();
    assert_eq!(
        wait_for(&mut alice_events, "bob's leave", presence).await,
        ("room".to_owned(), PresenceEvent::Leave, "bob".to_owned())
    );
    // Closing the connection leaves the rooms too.
    carol.join("room").await.unwrap();
    assert_eq!(
        wait_for(&mut alice_events, "carol's join", presence)
            .await
            .1,
        PresenceEvent::Join
    );
    carol.close().await;
    assert_eq!(
        wait_for(&mut alice_events, "carol's leave", presence).await,
        ("room".to_owned(), PresenceEvent::Leave, "carol".to_owned())
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn request_errors() {
    let server = TestServer::default_config().await;
    let (alice, mut events) =
        connect(builder(&server.url("/ws"), "alice").max_message_size(1024)).await;

    // Checked before sending.
    assert!(matches!(
        alice.join("no spaces").await,
        Err(Error::InvalidRoom { .. })
    ));
    assert!(matches!(
        alice.publish("", json!(1)).await,
        Err(Error::InvalidRoom { .. })
    ));
    alice.join("r").await.unwrap();
    assert!(matches!(
        alice.publish("r", json!("x".repeat(2000))).await,
        Err(Error::TooLarge { max: 1024, .. })
    ));
    assert!(matches!(
        alice.publish_binary("r", vec![0u8; 2000]).await,
        Err(Error::TooLarge { .. })
    ));

    // Refused by the server: the request fails with the server's code.
    let err = alice.publish("elsewhere", json!(1)).await.unwrap_err();
    assert_eq!(err.server_code(), Some("not_joined"), "{err}");
    let err = alice.leave("elsewhere").await.unwrap_err();
    assert_eq!(err.server_code(), Some("not_joined"), "{err}");

    // Errors nobody waits for (typing has no id) are events.
    alice.typing("elsewhere").await.unwrap();
    let (id, code) = wait_for(&mut events, "an error event", |e| match e {
        Event::Error { id, code, .. } => Some((*id, code.clone())),
        _ => None,
    })
    .await;
    assert_eq!((id, code.as_str()), (None, "not_joined"));
    alice.close().await;
}

#[tokio::test]
async fn first_connection_failure_is_returned() {
    let server = TestServer::default_config().await;
    let wrong_path = format!("ws://{}/nope", server.addr());
    let err = Client::builder(wrong_path).connect().await.unwrap_err();
    assert!(matches!(err, Error::Refused { status: 404 }), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::builder(format!("ws://{closed_port}/ws"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
}

#[tokio::test]
async fn reconnects_and_rejoins_after_the_connection_is_cut() {
    let server = TestServer::default_config().await;
    let proxy = Proxy::start(server.addr()).await;
    let (alice, mut alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob")).await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    bob.join("side").await.unwrap();
    wait_joined(&mut bob_events, "side").await;

    proxy.cut_all();
    let events = collect_until(&mut bob_events, "the re-joins", {
        let mut rooms = Vec::new();
        move |e| {
            if let Event::Joined { room, .. } = e {
                rooms.push(room.clone());
            }
            rooms.len() == 2
        }
    })
    .await;
    assert!(
        matches!(events.first(), Some(Event::Disconnected { code: None, .. })),
        "{events:#?}"
    );
    assert!(
        matches!(events.get(1), Some(Event::Reconnecting { attempt: 1, .. })),
        "{events:#?}"
    );
    assert!(events.contains(&Event::Connected), "{events:#?}");
    let mut rejoined: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Joined { room, .. } => Some(room.as_str()),
            _ => None,
        })
        .collect();
    rejoined.sort();
    assert_eq!(rejoined, ["lobby", "side"]);

    // Bob is back in the room: he gets new messages.
    let seq = alice.publish("lobby", json!("welcome back")).await.unwrap();
    let (_, data, got) = wait_message(&mut bob_events, "lobby").await;
    assert_eq!((data, got), (json!("welcome back"), seq));
    // And his requests work on the new connection.
    assert_eq!(
        bob.publish("lobby", json!("thanks")).await.unwrap(),
        seq + 1
    );
    assert_eq!(wait_message(&mut alice_events, "lobby").await.2, seq + 1);
    assert_eq!(proxy.accepted(), 2);
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn no_reconnect_after_close() {
    let server = TestServer::default_config().await;
    let proxy = Proxy::start(server.addr()).await;
    let (bob, mut events) = connect(builder(&proxy.url(), "bob")).await;
    bob.join("lobby").await.unwrap();
    let clone = bob.clone();

    bob.close().await;
    let rest = collect_until(&mut events, "Closed", |e| *e == Event::Closed).await;
    assert!(
        rest.iter().any(|e| matches!(
            e,
            Event::Disconnected {
                code: Some(1000),
                ..
            }
        )),
        "{rest:#?}"
    );
    assert!(
        !rest.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{rest:#?}"
    );
    // The task has ended: the stream is over and requests fail.
    assert_eq!(events.next().await, None);
    assert!(clone.is_closed());
    assert!(matches!(
        clone.publish("lobby", json!(1)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(clone.join("lobby").await, Err(Error::Closed)));
    clone.close().await;
    assert_eq!(proxy.accepted(), 1);
}

#[tokio::test]
async fn dropping_every_handle_closes_the_client() {
    let server = TestServer::default_config().await;
    let (bob, mut events) = connect(builder(&server.url("/ws"), "bob")).await;
    drop(bob);
    let rest = collect_until(&mut events, "Closed", |e| *e == Event::Closed).await;
    assert!(
        matches!(
            rest.first(),
            Some(Event::Disconnected {
                code: Some(1000),
                ..
            })
        ),
        "{rest:#?}"
    );
    assert_eq!(events.next().await, None);
}

#[tokio::test]
async fn policy_close_stops_reconnecting() {
    let server = TestServer::start(Config {
        max_violations: 3,
        ..Config::default()
    })
    .await;
    let proxy = Proxy::start(server.addr()).await;
    let (bob, mut events) = connect(builder(&proxy.url(), "bob")).await;
    for _ in 0..2 {
        let err = bob.leave("never-joined").await.unwrap_err();
        assert_eq!(err.server_code(), Some("not_joined"));
    }
    // The third violation makes the server close with 1008.
    let _ = bob.leave("never-joined").await;
    let rest = collect_until(&mut events, "Closed", |e| *e == Event::Closed).await;
    assert!(
        matches!(
            rest.as_slice(),
            [
                ..,
                Event::Disconnected {
                    code: Some(1008),
                    ..
                },
                Event::Closed
            ]
        ),
        "{rest:#?}"
    );
    assert!(
        !rest.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{rest:#?}"
    );
    assert!(bob.is_closed());
    assert_eq!(proxy.accepted(), 1);
}

#[tokio::test]
async fn backoff_delays_grow_with_full_jitter() {
    let server = TestServer::default_config().await;
    let proxy = Proxy::start(server.addr()).await;
    let backoff = Backoff {
        base: Duration::from_millis(5),
        factor: 2.0,
        cap: Duration::from_millis(40),
    };
    let (bob, mut events) = connect(builder(&proxy.url(), "bob").backoff(backoff)).await;
    bob.join("lobby").await.unwrap();
    wait_joined(&mut events, "lobby").await;

    proxy.set_refusing(true);
    proxy.cut_all();
    let mut delays = Vec::new();
    while delays.len() < 10 {
        let (attempt, delay) = wait_for(&mut events, "Reconnecting", |e| match e {
            Event::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
            _ => None,
        })
        .await;
        assert_eq!(
            attempt as usize,
            delays.len() + 1,
            "attempts count up by one"
        );
        assert!(
            delay <= backoff.max_delay(attempt),
            "attempt {attempt}: {delay:?}"
        );
        delays.push(delay);
    }
    // Later attempts may wait longer than the first bound (all 7 staying below it by chance
    // has a probability of 8^-7).
    assert!(delays[3..].iter().any(|d| *d > backoff.base), "{delays:?}");

    // Once the server is reachable again, the client comes back and re-joins.
    proxy.set_refusing(false);
    wait_joined(&mut events, "lobby").await;
    bob.close().await;
}

#[tokio::test]
async fn publishes_buffered_while_disconnected_are_sent_after_reconnect() {
    let server = TestServer::default_config().await;
    let proxy = Proxy::start(server.addr()).await;
    let (alice, mut alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob").send_buffer(3)).await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();

    proxy.set_refusing(true);
    proxy.cut_all();
    wait_for(&mut bob_events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;

    let mut p1 = Box::pin(bob.publish("lobby", json!({"n": 1})));
    let mut p2 = Box::pin(bob.publish("lobby", json!({"n": 2})));
    let mut p3 = Box::pin(bob.publish("lobby", json!({"n": 3})));
    start(&mut p1).await;
    start(&mut p2).await;
    start(&mut p3).await;
    // The buffer holds three.
    assert!(matches!(
        bob.publish("lobby", json!({"n": 4})).await,
        Err(Error::BufferFull)
    ));

    proxy.set_refusing(false);
    let seqs = [p1.await.unwrap(), p2.await.unwrap(), p3.await.unwrap()];
    assert_eq!(seqs, [1, 2, 3]);
    for n in 1..=3u64 {
        let (from, data, seq) = wait_message(&mut alice_events, "lobby").await;
        assert_eq!((from.as_str(), data, seq), ("bob", json!({ "n": n }), n));
    }
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn heartbeat_timeout_drops_a_silent_connection() {
    let server = TestServer::start(Config {
        ping_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let proxy = Proxy::start(server.addr()).await;
    let builder = builder(&proxy.url(), "bob").heartbeat_timeout(Duration::from_millis(800));
    let (bob, mut events) = connect(builder).await;
    bob.join("lobby").await.unwrap();
    wait_joined(&mut events, "lobby").await;

    // The server's frames stop arriving, but the TCP connection stays open.
    proxy.hold_downstream();
    let reason = wait_for(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { code, reason } => Some((*code, reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!(reason.0, None);
    assert!(reason.1.contains("heartbeat"), "{reason:?}");
    wait_joined(&mut events, "lobby").await;
    bob.close().await;
}

#[tokio::test]
async fn server_shutdown_1001_reconnects_and_resyncs() {
    let first = TestServer::default_config().await;
    let second = TestServer::default_config().await;
    let proxy = Proxy::start(first.addr()).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob")).await;
    bob.join("lobby").await.unwrap();
    let (alice, _alice_events) = connect(builder(&first.url("/ws"), "alice")).await;
    alice.join("lobby").await.unwrap();
    alice.publish("lobby", json!(1)).await.unwrap();
    alice.publish("lobby", json!(2)).await.unwrap();
    assert_eq!(wait_message(&mut bob_events, "lobby").await.2, 1);
    assert_eq!(wait_message(&mut bob_events, "lobby").await.2, 2);

    // "Restart": new connections go to the second server, the first shuts down (1001).
    proxy.set_target(second.addr());
    first.shutdown().await;
    let events = collect_until(&mut bob_events, "Resync", |e| {
        matches!(e, Event::Resync { .. })
    })
    .await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Disconnected {
                code: Some(1001),
                ..
            }
        )),
        "{events:#?}"
    );
    assert!(events.contains(&Event::Connected), "{events:#?}");
    assert!(
        matches!(events.last(), Some(Event::Resync { room, seq: 0, .. }) if room == "lobby"),
        "{events:#?}"
    );

    // The new server's seq 1 is a new message, not a duplicate of the old seq 1.
    let (carol, _carol_events) = connect(builder(&second.url("/ws"), "carol")).await;
    carol.join("lobby").await.unwrap();
    assert_eq!(carol.publish("lobby", json!("new")).await.unwrap(), 1);
    let (from, data, seq) = wait_message(&mut bob_events, "lobby").await;
    assert_eq!((from.as_str(), data, seq), ("carol", json!("new"), 1));
    bob.close().await;
    alice.close().await;
    carol.close().await;
}

#[tokio::test]
async fn token_is_sent_and_an_expired_token_stops_the_client() {
    let secret = "0123456789abcdef0123456789abcdef";
    let server = TestServer::start(Config {
        auth: AuthConfig {
            hmac_secret: Some(secret.to_owned()),
            leeway: Duration::ZERO,
            ..AuthConfig::default()
        },
        ..Config::default()
    })
    .await;
    let err = Client::builder(server.url("/ws"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { status: 401 }), "{err}");

    // The user is the token's subject.
    let token = mint_hs256(secret.as_bytes(), "alice", None, Duration::from_secs(3600)).unwrap();
    let (alice, _alice_events) = connect(Client::builder(server.url("/ws")).token(&token)).await;
    assert_eq!(alice.join("lobby").await.unwrap().members, ["alice"]);

    // A token that expires within a second: the server closes with 4001, the client stops.
    let short = mint_hs256(secret.as_bytes(), "bob", None, Duration::from_secs(1)).unwrap();
    let (bob, mut events) = connect(
        Client::builder(server.url("/ws"))
            .token(&short)
            .backoff(FAST_BACKOFF),
    )
    .await;
    let rest = collect_until(&mut events, "Closed", |e| *e == Event::Closed).await;
    assert!(
        matches!(
            rest.as_slice(),
            [
                ..,
                Event::Disconnected {
                    code: Some(4001),
                    ..
                },
                Event::Closed
            ]
        ),
        "{rest:#?}"
    );
    assert!(
        !rest.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{rest:#?}"
    );
    assert!(bob.is_closed());
    alice.close().await;
}

#[tokio::test]
async fn replay_too_large_for_the_outbound_queue_means_resync() {
    // 4 × 30 KB missed: more than the server replays into a 64 KiB outbound queue, so it
    // answers `recovered:false` under the same epoch, and the app must re-sync.
    let server = TestServer::start(Config {
        outbox_bytes: 64 * 1024,
        max_message_size: 32 * 1024,
        ..Config::default()
    })
    .await;
    let proxy = Proxy::start(server.addr()).await;
    let (alice, _alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob")).await;
    alice.join("lobby").await.unwrap();
    let epoch = bob.join("lobby").await.unwrap().epoch;
    assert!(epoch.is_some());

    proxy.set_refusing(true);
    proxy.cut_all();
    wait_for(&mut bob_events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;
    for _ in 0..4 {
        alice
            .publish("lobby", json!("x".repeat(30_000)))
            .await
            .unwrap();
    }
    proxy.set_refusing(false);

    let events = collect_until(&mut bob_events, "Resync", |e| {
        matches!(e, Event::Resync { .. })
    })
    .await;
    assert_eq!(message_seqs(&events), Vec::<u64>::new(), "nothing replayed");
    assert!(
        matches!(
            events.as_slice(),
            [
                ..,
                Event::Joined {
                    seq: 4,
                    recovered: Some(false),
                    ..
                },
                Event::Resync { .. }
            ]
        ),
        "{events:#?}"
    );
    assert_eq!(
        events.last(),
        Some(&Event::Resync {
            room: "lobby".to_owned(),
            seq: 4,
            epoch
        })
    );
    // Counting goes on from the new position.
    assert_eq!(alice.publish("lobby", json!("small")).await.unwrap(), 5);
    let (_, data, seq) = wait_message(&mut bob_events, "lobby").await;
    assert_eq!((data, seq), (json!("small"), 5));
    alice.close().await;
    bob.close().await;
}

// ---------------------------------------------------------------------------------------------
// Recovery (server-side `since` / `epoch`, `msg_id`, `history`)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missed_messages_arrive_exactly_once_in_order_after_reconnect() {
    let server = TestServer::default_config().await;
    let proxy = Proxy::start(server.addr()).await;
    let (alice, _alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob")).await;
    alice.join("lobby").await.unwrap();
    let (_, epoch, _) = {
        bob.join("lobby").await.unwrap();
        wait_joined(&mut bob_events, "lobby").await
    };
    assert!(epoch.is_some(), "the server sends epochs");
    alice.publish("lobby", json!(1)).await.unwrap();
    assert_eq!(wait_message(&mut bob_events, "lobby").await.2, 1);

    proxy.set_refusing(true);
    proxy.cut_all();
    wait_for(&mut bob_events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;
    for n in 2..=5 {
        assert_eq!(alice.publish("lobby", json!(n)).await.unwrap(), n);
    }
    proxy.set_refusing(false);

    let events = collect_until(&mut bob_events, "the re-join", |e| {
        matches!(e, Event::Joined { .. })
    })
    .await;
    assert!(
        matches!(
            events.last(),
            Some(Event::Joined {
                seq: 5,
                recovered: Some(true),
                ..
            })
        ),
        "{events:#?}"
    );
    alice.publish("lobby", json!(6)).await.unwrap();
    let after = collect_until(&mut bob_events, "message 6", |e| {
        matches!(e, Event::Message { seq: 6, .. })
    })
    .await;
    assert_eq!(message_seqs(&after), [2, 3, 4, 5, 6], "{after:#?}");
    assert!(
        !after.iter().any(|e| matches!(e, Event::Resync { .. })),
        "{after:#?}"
    );
    for event in &after {
        if let Event::Message { data, seq, .. } = event {
            assert_eq!(*data, json!(seq));
        }
    }
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn resync_after_server_restart_with_a_new_epoch() {
    let first = TestServer::default_config().await;
    let second = TestServer::default_config().await;
    let proxy = Proxy::start(first.addr()).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob")).await;
    bob.join("lobby").await.unwrap();
    let (_, old_epoch, _) = wait_joined(&mut bob_events, "lobby").await;
    let old_epoch = old_epoch.expect("the server sends epochs");
    bob.publish("lobby", json!(1)).await.unwrap();

    proxy.set_target(second.addr());
    first.shutdown().await;
    let events = collect_until(&mut bob_events, "Resync", |e| {
        matches!(e, Event::Resync { .. })
    })
    .await;
    let joined = events.iter().rev().find_map(|e| match e {
        Event::Joined {
            seq,
            epoch,
            recovered,
            ..
        } => Some((*seq, epoch.clone(), *recovered)),
        _ => None,
    });
    let (seq, epoch, recovered) = joined.expect("a re-join before the resync");
    let epoch = epoch.expect("an epoch");
    assert_eq!((seq, recovered), (0, Some(false)));
    assert_ne!(epoch, old_epoch);
    assert_eq!(
        events.last(),
        Some(&Event::Resync {
            room: "lobby".to_owned(),
            seq: 0,
            epoch: Some(epoch)
        })
    );
    bob.close().await;
}

#[tokio::test]
async fn publish_whose_ack_was_lost_is_delivered_once() {
    let server = TestServer::default_config().await;
    let proxy = Proxy::start(server.addr()).await;
    let (alice, mut alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, mut bob_events) = connect(builder(&proxy.url(), "bob")).await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_joined(&mut bob_events, "lobby").await;

    // The publish reaches the server, its ack is lost with the connection.
    proxy.hold_downstream();
    let mut first = Box::pin(bob.publish("lobby", json!("once")));
    start(&mut first).await;
    let (_, data, seq) = wait_message(&mut alice_events, "lobby").await;
    assert_eq!((data, seq), (json!("once"), 1));
    proxy.cut_all();

    // Re-sent after the reconnect with the same msg_id: acked with the original seq.
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(bob.publish("lobby", json!("twice?")).await.unwrap(), 2);
    let (_, data, seq) = wait_message(&mut alice_events, "lobby").await;
    assert_eq!(
        (data, seq),
        (json!("twice?"), 2),
        "no duplicate of the first publish"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn history_returns_json_and_binary_messages() {
    let server = TestServer::default_config().await;
    let (alice, _alice_events) = connect(builder(&server.url("/ws"), "alice")).await;
    let (bob, _bob_events) = connect(builder(&server.url("/ws"), "bob")).await;
    alice.join("lobby").await.unwrap();
    alice.publish("lobby", json!({"n": 1})).await.unwrap();
    alice
        .publish_binary("lobby", Bytes::from_static(b"\x01\x02"))
        .await
        .unwrap();
    alice.publish("lobby", json!(null)).await.unwrap();

    // Bob need not be a member.
    let history = bob.history("lobby", 10).await.unwrap();
    assert_eq!((history.room.as_str(), history.seq), ("lobby", 3));
    assert_eq!(history.epoch.len(), 16);
    let bodies: Vec<(u64, &str, &Body)> = history
        .messages
        .iter()
        .map(|m| (m.seq, m.from.as_str(), &m.body))
        .collect();
    assert_eq!(
        bodies,
        [
            (1, "alice", &Body::Json(json!({"n": 1}))),
            (2, "alice", &Body::Binary(Bytes::from_static(b"\x01\x02"))),
            (3, "alice", &Body::Json(json!(null))),
        ]
    );
    let latest = bob.history("lobby", 1).await.unwrap();
    assert_eq!(
        latest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [3]
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn wss_with_an_added_root_certificate() {
    let dir = std::env::temp_dir().join(format!("sb-sdk-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start(Config {
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        ..Config::default()
    })
    .await;
    let url = format!("wss://localhost:{}/ws", server.addr().port());

    let untrusted = Client::builder(url.as_str()).user("eve").connect().await;
    assert!(untrusted.is_err(), "an unknown CA is refused");

    let (client, mut events) =
        connect(builder(&url, "alice").add_root_certificates_pem(cert.cert.pem())).await;
    client.join("secure").await.unwrap();
    wait_joined(&mut events, "secure").await;
    assert_eq!(client.publish("secure", json!("hi")).await.unwrap(), 1);
    client.close().await;
    server.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn refresh_outlives_the_first_token_and_is_used_to_reconnect() {
    let secret = "0123456789abcdef0123456789abcdef";
    let server = TestServer::start(Config {
        auth: AuthConfig {
            hmac_secret: Some(secret.to_owned()),
            leeway: Duration::ZERO,
            ..AuthConfig::default()
        },
        ..Config::default()
    })
    .await;
    let proxy = Proxy::start(server.addr()).await;
    let short = mint_hs256(secret.as_bytes(), "carol", None, Duration::from_secs(2)).unwrap();
    let (carol, mut events) = connect(
        Client::builder(proxy.url())
            .token(&short)
            .backoff(FAST_BACKOFF),
    )
    .await;
    carol.join("lobby").await.unwrap();
    let long = mint_hs256(secret.as_bytes(), "carol", None, Duration::from_secs(3600)).unwrap();
    let exp = carol.refresh(&long).await.unwrap();
    assert!(
        exp > switchboard_server::auth::unix_now() + 3000,
        "the new expiry: {exp}"
    );

    // Past the first token's expiry: no 4001 (the connection runs on the new token).
    let quiet = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match events.next().await {
                Some(Event::Disconnected { code, .. }) => return code,
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "disconnected after the refresh: {quiet:?}");

    // A reconnection presents the new token (the first one has expired by now).
    proxy.cut_all();
    let (seq, _, _) = wait_joined(&mut events, "lobby").await;
    assert_eq!(seq, 0);
    // A refused refresh leaves the working token in place for the next reconnection.
    assert!(matches!(
        carol.refresh("not a token").await,
        Err(Error::Server { code, .. }) if code == "invalid_token"
    ));
    proxy.cut_all();
    wait_joined(&mut events, "lobby").await;
    carol.close().await;
}
