// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Protocol v1 over real sockets: rooms, members, presence, sequencing, echo, acks, typing,
//! pings and binary messages (docs/protocol.md sections 3 to 5 and 7). Every test runs on both
//! engines (`protocol::memory::NAME`, `protocol::redis::NAME`: the same test against a private
//! Redis), since the single-node and the cluster path must answer alike.

use std::collections::HashMap;

use serde_json::{Value, json};
use switchboard_protocol::binary::{decode_server, encode_client};
use switchboard_server::Config;
use testkit::{Client, Engine, assert_fields, members, now_millis};

async fn messages_reach_only_the_members_of_their_room(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    let mut carol = Client::connect(&server, "carol").await;
    let mut dave = Client::connect(&server, "dave").await;

    alice.join("r1").await;
    bob.join("r1").await;
    alice.expect_presence("r1", "join", "bob").await;
    bob.join("r2").await;
    carol.join("r2").await;
    bob.expect_presence("r2", "join", "carol").await;
    dave.join("r3").await;

    // Each room has its own sequence: every first message is seq 1. An ack means the fan-out
    // is done, so whatever reached a connection is in its queue before its next pong.
    assert_eq!(alice.publish("r1", json!({"n": 1})).await, 1);
    assert_eq!(carol.publish("r2", json!({"n": 2})).await, 1);
    assert_eq!(dave.publish("r3", json!({"n": 3})).await, 1);

    let got = bob.sync_collect().await;
    assert_eq!(got.len(), 2, "bob: {got:?}");
    assert_eq!(
        (
            &got[0]["type"],
            &got[0]["room"],
            &got[0]["from"],
            &got[0]["data"],
            &got[0]["seq"]
        ),
        (
            &json!("message"),
            &json!("r1"),
            &json!("alice"),
            &json!({"n": 1}),
            &json!(1)
        ),
        "bob: {got:?}"
    );
    assert_eq!(
        (
            &got[1]["type"],
            &got[1]["room"],
            &got[1]["from"],
            &got[1]["data"],
            &got[1]["seq"]
        ),
        (
            &json!("message"),
            &json!("r2"),
            &json!("carol"),
            &json!({"n": 2}),
            &json!(1)
        ),
        "bob: {got:?}"
    );
    // Publishers do not get their own messages (no echo); nobody gets other rooms' messages.
    alice.sync().await;
    carol.sync().await;
    dave.sync().await;
}

async fn joined_lists_each_user_once_and_the_rooms_seq(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice1 = Client::connect(&server, "alice").await;
    let mut alice2 = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    let mut carol = Client::connect(&server, "carol").await;

    let joined = alice1.join("lobby").await;
    assert_eq!(members(&joined), ["alice"]);
    assert_eq!(joined["seq"], 0);
    let joined = alice2.join("lobby").await;
    assert_eq!(
        members(&joined),
        ["alice"],
        "one user, two connections: {joined}"
    );
    let joined = bob.join("lobby").await;
    assert_eq!(members(&joined), ["alice", "bob"]);
    alice1.expect_presence("lobby", "join", "bob").await;
    alice2.expect_presence("lobby", "join", "bob").await;

    assert_eq!(bob.publish("lobby", json!("one")).await, 1);
    assert_eq!(bob.publish("lobby", json!("two")).await, 2);

    let joined = carol.join("lobby").await;
    assert_eq!(members(&joined), ["alice", "bob", "carol"]);
    assert_eq!(joined["seq"], 2, "seq of the room's last message: {joined}");
    // The joiner gets no presence about itself and sees only messages after its join.
    carol.sync().await;
    for alice in [&mut alice1, &mut alice2] {
        assert_eq!(alice.expect_message("lobby", "bob", &json!("one")).await, 1);
        assert_eq!(alice.expect_message("lobby", "bob", &json!("two")).await, 2);
        alice.expect_presence("lobby", "join", "carol").await;
    }
    assert_eq!(alice1.publish("lobby", json!("three")).await, 3);
    assert_eq!(
        carol
            .expect_message("lobby", "alice", &json!("three"))
            .await,
        3
    );
}

async fn presence_follows_join_leave_and_every_kind_of_disconnect(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.join("room").await;

    // Join, then an explicit leave (which answers `left` with the id).
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;
    alice.expect_presence("room", "join", "bob").await;
    bob.send_json(json!({"type": "leave", "room": "room", "id": 5}))
        .await;
    let left = bob.expect("left").await;
    assert_eq!((&left["room"], &left["id"]), (&json!("room"), &json!(5)));
    alice.expect_presence("room", "leave", "bob").await;
    // Presence never goes to the connection that caused it; bob is no longer a member.
    bob.sync().await;
    bob.send_json(json!({"type": "publish", "room": "room", "data": 1, "id": 6}))
        .await;
    bob.expect_error("not_joined", Some(6)).await;

    // Abrupt disconnect: the TCP connection goes away without a close frame.
    let mut carol = Client::connect(&server, "carol").await;
    carol.join("room").await;
    alice.expect_presence("room", "join", "carol").await;
    drop(carol);
    alice.expect_presence("room", "leave", "carol").await;

    // Clean close handshake.
    let mut dave = Client::connect(&server, "dave").await;
    dave.join("room").await;
    alice.expect_presence("room", "join", "dave").await;
    dave.close().await;
    alice.expect_presence("room", "leave", "dave").await;

    alice.sync().await;
}

async fn a_user_with_two_connections_is_present_once_until_the_last_one_leaves(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;

    let mut alice1 = Client::connect(&server, "alice").await;
    alice1.join("room").await;
    bob.expect_presence("room", "join", "alice").await;
    let mut alice2 = Client::connect(&server, "alice").await;
    let joined = alice2.join("room").await;
    assert_eq!(members(&joined), ["alice", "bob"]);
    // A presence event for the second connection would have been queued for bob before
    // alice2's `joined`; bob's pong comes after it.
    bob.sync().await;
    // alice1 learns nothing about alice2 either (same user, already present).
    alice1.sync().await;

    // alice1 drops abruptly: alice is still present through alice2, so no event. No frame
    // reports the disconnect, so wait until the hub has processed it.
    drop(alice1);
    server.wait_for_sessions(2).await;
    bob.sync().await;
    assert_eq!(alice2.publish("room", json!("still here")).await, 1);
    bob.expect_message("room", "alice", &json!("still here"))
        .await;

    // The last connection leaves with a clean close: now alice leaves.
    alice2.close().await;
    bob.expect_presence("room", "leave", "alice").await;
    bob.sync().await;
}

async fn seq_is_gapless_and_identical_for_every_member_under_concurrent_publishers(engine: Engine) {
    const PUBLISHERS: usize = 3;
    const PER_PUBLISHER: u64 = 200;
    const TOTAL: u64 = PUBLISHERS as u64 * PER_PUBLISHER;
    let server = engine.start(testkit::unthrottled(Config::default())).await;

    let mut subscribers = Vec::new();
    for name in ["sub1", "sub2"] {
        let mut sub = Client::connect(&server, name).await;
        sub.join("race").await;
        for earlier in &mut subscribers {
            Client::expect_presence(earlier, "race", "join", name).await;
        }
        subscribers.push(sub);
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let name = format!("pub{p}");
        let mut publisher = Client::connect(&server, &name).await;
        publisher.join("race").await;
        for member in subscribers.iter_mut().chain(publishers.iter_mut()) {
            member.expect_presence("race", "join", &name).await;
        }
        publishers.push(publisher);
    }

    // Subscribers read concurrently with the publishers.
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < usize::try_from(TOTAL).unwrap() {
                    let m = sub.expect("message").await;
                    seen.push((
                        m["seq"].as_u64().unwrap(),
                        m["from"].clone(),
                        m["data"].clone(),
                    ));
                }
                (sub, seen)
            })
        })
        .collect();
    let writers: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut publisher)| {
            tokio::spawn(async move {
                for n in 0..PER_PUBLISHER {
                    publisher
                        .send_json(json!({"type": "publish", "room": "race", "data": {"p": p, "n": n}, "id": n}))
                        .await;
                }
                // Collect this publisher's acks; the other publishers' messages arrive too.
                let mut acks = HashMap::new();
                let mut others = 0;
                while acks.len() < usize::try_from(PER_PUBLISHER).unwrap() {
                    let v = publisher.recv_json().await;
                    match v["type"].as_str() {
                        Some("ack") => {
                            acks.insert(v["id"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
                        }
                        Some("message") => {
                            assert_ne!(v["from"], format!("pub{p}"), "no echo by default: {v}");
                            others += 1;
                        }
                        _ => panic!("pub{p}: unexpected {v}"),
                    }
                }
                (publisher, acks, others)
            })
        })
        .collect();

    // Everyone stays connected until the end (a disconnect would send presence events).
    let mut clients = Vec::new();
    let mut acks_by_publisher = Vec::new();
    for writer in writers {
        let (publisher, acks, others) = writer.await.unwrap();
        assert!(others <= TOTAL - PER_PUBLISHER);
        acks_by_publisher.push(acks);
        clients.push(publisher);
    }
    let mut sequences = Vec::new();
    for reader in readers {
        let (mut sub, seen) = reader.await.unwrap();
        sub.sync().await;
        sequences.push(seen);
        clients.push(sub);
    }

    let first = &sequences[0];
    let seqs: Vec<u64> = first.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=TOTAL).collect::<Vec<_>>(),
        "seq must go 1, 2, 3, ... without gaps"
    );
    assert_eq!(&sequences[1], first, "both subscribers see the same order");
    // Each publisher's messages keep their order, and each got the seq its ack announced.
    let mut next = [0u64; PUBLISHERS];
    for (seq, from, data) in first {
        let p = usize::try_from(data["p"].as_u64().unwrap()).unwrap();
        let n = data["n"].as_u64().unwrap();
        assert_eq!(from, &json!(format!("pub{p}")));
        assert_eq!(n, next[p], "pub{p}'s messages out of order");
        next[p] += 1;
        assert_eq!(acks_by_publisher[p][&n], *seq, "ack seq of pub{p} #{n}");
    }
}

async fn echo_false_skips_only_the_publishing_connection(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice1 = Client::connect(&server, "alice").await;
    let mut alice2 = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice1.join("room").await;
    alice2.join("room").await;
    bob.join("room").await;
    alice1.expect_presence("room", "join", "bob").await;
    alice2.expect_presence("room", "join", "bob").await;

    // Default (no echo field) and explicit echo:false.
    alice1
        .send_json(json!({"type": "publish", "room": "room", "data": "default", "id": 1}))
        .await;
    alice1
        .send_json(
            json!({"type": "publish", "room": "room", "data": "explicit", "id": 2, "echo": false}),
        )
        .await;
    let got = alice1.sync_collect().await;
    assert_eq!(
        got.len(),
        2,
        "the publishing connection gets only its acks: {got:?}"
    );
    assert_fields(&got[0], &json!({"type": "ack", "id": 1, "seq": 1}));
    assert_fields(&got[1], &json!({"type": "ack", "id": 2, "seq": 2}));
    // The same user's other connection and other users get both.
    for client in [&mut alice2, &mut bob] {
        assert_eq!(
            client
                .expect_message("room", "alice", &json!("default"))
                .await,
            1
        );
        assert_eq!(
            client
                .expect_message("room", "alice", &json!("explicit"))
                .await,
            2
        );
        client.sync().await;
    }
}

async fn echo_true_delivers_to_the_publisher_too(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    alice.expect_presence("room", "join", "bob").await;

    alice
        .send_json(
            json!({"type": "publish", "room": "room", "data": {"hi": true}, "id": 9, "echo": true}),
        )
        .await;
    // Both the ack and the message arrive, in no promised order. Over Redis the message
    // comes back through the room's channel, so it may follow a later ping's pong: wait for
    // the two frames, then check that nothing else came.
    let mut got = vec![alice.recv_json().await, alice.recv_json().await];
    alice.sync().await;
    got.sort_by_key(|v| v["type"].as_str().unwrap().to_owned());
    assert_eq!(got.len(), 2, "alice: {got:?}");
    assert_fields(&got[0], &json!({"type": "ack", "id": 9, "seq": 1}));
    assert_eq!(
        (
            &got[1]["type"],
            &got[1]["from"],
            &got[1]["data"],
            &got[1]["seq"]
        ),
        (
            &json!("message"),
            &json!("alice"),
            &json!({"hi": true}),
            &json!(1)
        )
    );
    assert_eq!(
        bob.expect_message("room", "alice", &json!({"hi": true}))
            .await,
        1
    );

    // Without an id there is no ack, only the echoed message.
    alice
        .send_json(json!({"type": "publish", "room": "room", "data": 2, "echo": true}))
        .await;
    assert_eq!(alice.expect_message("room", "alice", &json!(2)).await, 2);
    alice.sync().await;
}

async fn ack_carries_the_id_and_seq_and_the_message_is_complete(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    alice.expect_presence("room", "join", "bob").await;

    let before = now_millis();
    for (id, seq) in [(0_u64, 1_u64), (42, 2), (u64::MAX, 3)] {
        alice
            .send_json(json!({"type": "publish", "room": "room", "data": null, "id": id}))
            .await;
        let ack = alice.expect("ack").await;
        assert_fields(&ack, &json!({"type": "ack", "id": id, "seq": seq}));
    }
    // A publish without id gets no ack but still takes a seq.
    alice
        .send_json(json!({"type": "publish", "room": "room", "data": "no id"}))
        .await;
    alice.sync().await;
    let after = now_millis();

    for seq in 1..=3 {
        let m = bob.expect("message").await;
        assert_eq!(m["data"], Value::Null, "null is a valid payload: {m}");
        assert_eq!(m["seq"], seq);
        let ts = m["ts"].as_u64().unwrap_or_else(|| panic!("ts: {m}"));
        assert!(
            ts + 5_000 >= before && ts <= after + 5_000,
            "ts {ts} is not the server clock (test clock {before}..{after})"
        );
    }
    assert_eq!(
        bob.expect_message("room", "alice", &json!("no id")).await,
        4
    );
}

async fn data_is_relayed_byte_for_byte(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    alice.expect_presence("room", "join", "bob").await;

    // Whitespace, a trailing zero and escapes would all change if the server re-encoded it.
    let data = r#"{ "a" : [1, 2.50, "x\u0041\n"],"b":{} }"#;
    alice
        .send_text(&format!(
            r#"{{"type":"publish","room":"room","data":{data},"id":1}}"#
        ))
        .await;
    alice.expect("ack").await;
    let frame = bob.recv().await;
    let text = frame.as_text().expect("a text frame");
    assert!(text.contains(data), "data not byte-identical in {text}");
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(parsed["data"], serde_json::from_str::<Value>(data).unwrap());
}

async fn typing_goes_to_the_others_not_to_self(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice1 = Client::connect(&server, "alice").await;
    let mut alice2 = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice1.join("room").await;
    alice2.join("room").await;
    bob.join("room").await;
    alice1.expect_presence("room", "join", "bob").await;
    alice2.expect_presence("room", "join", "bob").await;

    alice1
        .send_json(json!({"type": "typing", "room": "room"}))
        .await;
    // No reply and no echo to the typing connection.
    alice1.sync().await;
    for client in [&mut alice2, &mut bob] {
        let typing = client.expect("typing").await;
        assert_fields(
            &typing,
            &json!({"type": "typing", "room": "room", "from": "alice"}),
        );
    }
    // Typing takes no seq: the next message is still seq 1.
    assert_eq!(bob.publish("room", json!("x")).await, 1);
}

async fn ping_is_answered_with_pong_with_and_without_id(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.send_json(json!({"type": "ping"})).await;
    let pong = alice.expect("pong").await;
    assert!(
        pong.get("id").is_none(),
        "no id field when the ping had none: {pong}"
    );
    alice.send_json(json!({"type": "ping", "id": 3})).await;
    assert_eq!(alice.expect("pong").await["id"], 3);
    // Unknown fields are ignored; a null id counts as absent.
    alice
        .send_json(json!({"type": "ping", "id": 4, "future": {"x": [1]}}))
        .await;
    assert_eq!(alice.expect("pong").await["id"], 4);
    alice.send_json(json!({"type": "ping", "id": null})).await;
    let pong = alice.expect("pong").await;
    assert!(pong.get("id").is_none(), "null id counts as absent: {pong}");
}

async fn rejoining_is_idempotent(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice.join("room").await;
    bob.join("room").await;
    alice.expect_presence("room", "join", "bob").await;
    assert_eq!(alice.publish("room", json!(1)).await, 1);
    assert_eq!(bob.expect_message("room", "alice", &json!(1)).await, 1);

    let again = bob.join("room").await;
    assert_eq!(members(&again), ["alice", "bob"]);
    assert_eq!(again["seq"], 1);
    // No presence event for the re-join: alice's next frame is bob's next message.
    assert_eq!(bob.publish("room", json!(2)).await, 2);
    assert_eq!(alice.expect_message("room", "bob", &json!(2)).await, 2);
    // Still a single membership: one leave makes bob leave.
    bob.send_json(json!({"type": "leave", "room": "room", "id": 8}))
        .await;
    assert_fields(&bob.expect("left").await, &json!({"room": "room", "id": 8}));
    alice.expect_presence("room", "leave", "bob").await;
    bob.send_json(json!({"type": "leave", "room": "room"}))
        .await;
    bob.expect_error("not_joined", None).await;
}

/// Memory engine only: on Redis an emptied room keeps its `seq` until its keys expire
/// (`P:{R}:meta`, docs/scaling.md), so it starts again from 0 later, not at once.
#[tokio::test]
async fn an_emptied_room_without_history_starts_again_from_seq_0() {
    let engine = Engine::memory();
    // docs/protocol.md 5.1: the room and its sequence go with the last member. (History,
    // on by default, keeps an empty room until its messages expire; without it the room goes.)
    let mut config = Config::default();
    config.history.size = 0;
    let server = engine.start(config).await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.join("room").await;
    assert_eq!(alice.publish("room", json!(1)).await, 1);
    alice
        .send_json(json!({"type": "leave", "room": "room"}))
        .await;
    let left = alice.expect("left").await;
    assert_fields(&left, &json!({"room": "room"}));
    assert!(left.get("id").is_none(), "{left}");
    let joined = alice.join("room").await;
    assert_eq!(
        joined["seq"], 0,
        "the room was dropped with its last member: {joined}"
    );
    assert_eq!(alice.publish("room", json!(1)).await, 1);
}

async fn binary_publish_is_delivered_byte_for_byte_in_the_rooms_sequence(engine: Engine) {
    let server = engine.start(Config::default()).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    alice.join("files").await;
    bob.join("files").await;
    alice.expect_presence("files", "join", "bob").await;

    assert_eq!(alice.publish("files", json!("before")).await, 1);
    assert_eq!(
        bob.expect_message("files", "alice", &json!("before")).await,
        1
    );

    let payload: Vec<u8> = (0..=255).collect();
    let before = now_millis();
    alice.send_binary(encode_client("files", &payload)).await;
    let frame = bob.expect_binary().await;
    let delivered = decode_server(&frame).expect("a valid server envelope");
    assert_eq!(delivered.room, "files");
    assert_eq!(delivered.from, "alice");
    assert_eq!(
        delivered.seq, 2,
        "binary continues the room's JSON sequence"
    );
    assert_eq!(delivered.payload, &payload[..], "payload byte-for-byte");
    assert!(delivered.ts + 5_000 >= before && delivered.ts <= now_millis() + 5_000);

    // An empty payload is allowed too.
    alice.send_binary(encode_client("files", b"")).await;
    let frame = bob.expect_binary().await;
    let delivered = decode_server(&frame).unwrap();
    assert_eq!((delivered.seq, delivered.payload), (3, &b""[..]));

    // Never echoed to the sender, no ack; the JSON sequence continues after it.
    alice.sync().await;
    assert_eq!(alice.publish("files", json!("after")).await, 4);
    assert_eq!(
        bob.expect_message("files", "alice", &json!("after")).await,
        4
    );
}

async fn joiners_and_leavers_see_exactly_the_messages_between_their_join_and_leave(engine: Engine) {
    const TOTAL: u64 = 2_000;
    const JOINERS: usize = 4;
    let server = engine.start(testkit::unthrottled(Config::default())).await;
    let mut publisher = Client::connect(&server, "pub").await;
    publisher.join("flood").await;
    let mut clients = Vec::new();
    for i in 0..JOINERS {
        clients.push(Client::connect(&server, &format!("joiner{i}")).await);
    }

    // Flood the room while the others join (and one leaves again) concurrently.
    let flood = tokio::spawn(async move {
        for n in 0..TOTAL {
            publisher
                .send_json(json!({"type": "publish", "room": "flood", "data": n}))
                .await;
        }
        // Stay connected; presence events for the joiners arrive meanwhile.
        let _ = publisher.sync_collect().await;
        publisher
    });
    let joiners: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                let leaver = i == JOINERS - 1;
                let joined = client.join("flood").await;
                let mut expected = joined["seq"].as_u64().unwrap() + 1;
                let mut received = 0;
                // The first message after `joined` is joined.seq + 1, then no gaps.
                while expected <= TOTAL && !(leaver && received == 10) {
                    let v = client.recv_json().await;
                    if v["type"] == "presence" {
                        continue;
                    }
                    assert_eq!(v["type"], "message", "{}: {v}", client.name);
                    assert_eq!(v["seq"], expected, "{}: joined at {joined}", client.name);
                    assert_eq!(v["data"], expected - 1, "{}", client.name);
                    expected += 1;
                    received += 1;
                }
                if leaver {
                    // Leave mid-flood: messages up to `left` stay gap-free, none after it.
                    client
                        .send_json(json!({"type": "leave", "room": "flood", "id": 77}))
                        .await;
                    loop {
                        let v = client.recv_json().await;
                        if v["type"] == "left" {
                            assert_eq!(v["id"], 77);
                            break;
                        }
                        if v["type"] == "message" {
                            assert_eq!(v["seq"], expected, "{}: gap before left", client.name);
                            expected += 1;
                        }
                    }
                    for v in client.sync_collect().await {
                        assert_ne!(v["type"], "message", "{}: after left: {v}", client.name);
                    }
                }
                (client, joined["seq"].as_u64().unwrap())
            })
        })
        .collect();
    let _publisher = flood.await.unwrap();
    // The joiners join at various points of the flood; all stay connected until the end.
    let mut still_connected = Vec::new();
    for joiner in joiners {
        let (client, _joined_at) = joiner.await.unwrap();
        still_connected.push(client);
    }
}

testkit::on_both_engines! {
    current: [
        messages_reach_only_the_members_of_their_room,
        joined_lists_each_user_once_and_the_rooms_seq,
        presence_follows_join_leave_and_every_kind_of_disconnect,
        a_user_with_two_connections_is_present_once_until_the_last_one_leaves,
        echo_false_skips_only_the_publishing_connection,
        echo_true_delivers_to_the_publisher_too,
        ack_carries_the_id_and_seq_and_the_message_is_complete,
        data_is_relayed_byte_for_byte,
        typing_goes_to_the_others_not_to_self,
        ping_is_answered_with_pong_with_and_without_id,
        rejoining_is_idempotent,
        binary_publish_is_delivered_byte_for_byte_in_the_rooms_sequence,
    ],
    multi_thread: [
        seq_is_gapless_and_identical_for_every_member_under_concurrent_publishers,
        joiners_and_leavers_see_exactly_the_messages_between_their_join_and_leave,
    ],
}
