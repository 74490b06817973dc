// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Several nodes sharing rooms through a real Redis: one order for everyone, presence from
//! every node, recovery on another node, and Redis outages. Nodes are in-process servers on
//! ephemeral ports; every test starts its own `redis-server` on a free port (the kit's
//! [`RedisServer`]), never the machine's.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::ClusterConfig;
use testkit::RedisServer;
use testkit::service as redis;
use testkit::{Client, TestServer, http_get, members, unthrottled};
use tokio::time::Instant;
use tokio_websockets::Message;

static NEXT_PREFIX: AtomicU64 = AtomicU64::new(0);

/// A key prefix no other test (or test run) uses.
fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "sbtest:{}:{nanos}:{}",
        std::process::id(),
        NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
    )
}

fn node_config(url: &str, prefix: &str) -> Config {
    unthrottled(Config {
        cluster: ClusterConfig {
            broker: url.to_owned(),
            redis_prefix: prefix.to_owned(),
            // Long enough that a leave seen within the tests' 5 s receive timeout was written
            // by the node, not reaped after the TTL (the node-crash test in crates/cli uses
            // a short TTL).
            presence_ttl: Duration::from_secs(30),
            presence_interval: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(500),
            ..ClusterConfig::default()
        },
        ..Config::default()
    })
}

async fn nodes(count: usize, url: &str) -> Vec<TestServer> {
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for _ in 0..count {
        let node = TestServer::start(node_config(url, &prefix)).await;
        wait_ready(&node, true).await;
        nodes.push(node);
    }
    nodes
}

/// Waits until the node's `/readyz` says `ready` (or, with `false`, `unavailable`).
async fn wait_ready(node: &TestServer, ready: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = http_get(node.addr(), "/readyz", &[]).await;
        let body = String::from_utf8_lossy(&response.body).into_owned();
        if (response.status == 200) == ready {
            assert!(body.contains("broker=redis"), "{body}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readyz still {} ({body}) after 15 s",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next frame of `client` that is not a presence event.
async fn next_non_presence(client: &mut Client) -> Value {
    loop {
        let value = client.recv_json().await;
        if value["type"] != "presence" {
            return value;
        }
    }
}

/// Publishes `data` without echo and returns the seq of its `ack` (skipping whatever else
/// the publisher receives meanwhile: presence, others' messages).
async fn publish(client: &mut Client, room: &str, data: Value) -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    client
        .send_json(json!({"type": "publish", "room": room, "data": data, "id": id, "echo": false}))
        .await;
    loop {
        let value = client.recv_json().await;
        match value["type"].as_str() {
            Some("presence" | "message") => {}
            Some("ack") if value["id"] == id => return value["seq"].as_u64().unwrap(),
            _ => panic!("{}: expected the ack of {id}, got {value}", client.name),
        }
    }
}

/// Collects `count` messages (skipping presence events), returning `(seq, data)` pairs.
async fn collect_messages(client: &mut Client, count: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let value = next_non_presence(client).await;
        assert_eq!(value["type"], "message", "{}: {value}", client.name);
        out.push((value["seq"].as_u64().unwrap(), value["data"].clone()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_in_one_order() {
    let redis = RedisServer::start();
    let nodes = nodes(3, &redis.url()).await;
    let room = "cluster:order";
    let mut subscribers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let mut client = Client::connect(node, &format!("sub{i}{j}")).await;
            client.join(room).await;
            subscribers.push(client);
        }
    }
    const PER_PUBLISHER: u64 = 200;
    let mut publishers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut publisher = Client::connect(node, &format!("pub{i}")).await;
        publisher.join(room).await;
        publishers.push(publisher);
    }
    // All three publish at once, each in one burst of frames.
    for (i, publisher) in publishers.iter_mut().enumerate() {
        let frames = (0..PER_PUBLISHER)
            .map(|n| {
                Message::text(
                    json!({"type": "publish", "room": room, "data": {"p": i, "n": n}, "echo": false})
                        .to_string(),
                )
            })
            .collect();
        publisher.send_all(frames).await;
    }
    let total = usize::try_from(3 * PER_PUBLISHER).unwrap();
    let mut orders = Vec::new();
    for subscriber in &mut subscribers {
        let messages = collect_messages(subscriber, total).await;
        let seqs: Vec<u64> = messages.iter().map(|(seq, _)| *seq).collect();
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..first + 3 * PER_PUBLISHER).collect::<Vec<_>>(),
            "{}: seqs must be contiguous, each once",
            subscriber.name
        );
        for p in 0..3 {
            let ns: Vec<u64> = messages
                .iter()
                .filter(|(_, data)| data["p"] == p)
                .map(|(_, data)| data["n"].as_u64().unwrap())
                .collect();
            assert_eq!(
                ns,
                (0..PER_PUBLISHER).collect::<Vec<_>>(),
                "publisher {p}'s order"
            );
        }
        // Nothing more: no message twice. Presence may still arrive (coalesced, and the
        // publishers' joins reach each node when its stream delivers them).
        let late: Vec<Value> = subscriber
            .sync_collect()
            .await
            .into_iter()
            .filter(|value| value["type"] != "presence")
            .collect();
        assert!(
            late.is_empty(),
            "{}: frames after the last message: {late:?}",
            subscriber.name
        );
        orders.push(messages);
    }
    for order in &orders[1..] {
        assert_eq!(
            order, &orders[0],
            "every client sees the same order with the same seqs"
        );
    }
    // Publishers without echo get everyone's messages but their own.
    for (i, publisher) in publishers.iter_mut().enumerate() {
        let messages =
            collect_messages(publisher, usize::try_from(2 * PER_PUBLISHER).unwrap()).await;
        assert!(messages.iter().all(|(_, data)| data["p"] != i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_keep_their_order_and_their_acks_come_in_order() {
    let redis = RedisServer::start();
    let nodes = nodes(2, &redis.url()).await;
    let room = "cluster:pipeline";
    let mut subscriber = Client::connect(&nodes[1], "sub").await;
    subscriber.join(room).await;
    let mut publisher = Client::connect(&nodes[0], "pub").await;
    publisher.join(room).await;
    // 200 publishes in one burst (more than the 64 a connection pipelines), then a ping.
    let mut frames: Vec<Message> = (1..=200u64)
        .map(|id| {
            Message::text(
                json!({"type": "publish", "room": room, "data": id, "id": id, "echo": false})
                    .to_string(),
            )
        })
        .collect();
    frames.push(Message::text(
        json!({"type": "ping", "id": 999}).to_string(),
    ));
    publisher.send_all(frames).await;
    let mut seqs = Vec::new();
    loop {
        let reply = next_non_presence(&mut publisher).await;
        if reply["type"] == "pong" {
            break;
        }
        assert_eq!(reply["type"], "ack", "{reply}");
        assert_eq!(reply["id"], seqs.len() as u64 + 1, "acks in request order");
        seqs.push(reply["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs.len(), 200, "every ack before the pong");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let received = collect_messages(&mut subscriber, 200).await;
    let expected: Vec<(u64, Value)> = seqs
        .iter()
        .zip(1..=200u64)
        .map(|(s, n)| (*s, json!(n)))
        .collect();
    assert_eq!(received, expected, "published order = seq order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_the_same_from_every_node() {
    let redis = RedisServer::start();
    let nodes = nodes(3, &redis.url()).await;
    let room = "cluster:presence";
    let mut users = Vec::new();
    for (node, name) in nodes.iter().zip(["alice", "bob", "carol"]) {
        let mut client = Client::connect(node, name).await;
        client.join(room).await;
        users.push(client);
    }
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("watcher{i}");
        let mut watcher = Client::connect(node, &name).await;
        let joined = watcher.join(room).await;
        let listed: BTreeSet<String> = members(&joined).into_iter().collect();
        for expected in ["alice", "bob", "carol", name.as_str()] {
            assert!(listed.contains(expected), "{name} on node {i}: {listed:?}");
        }
        watchers.push(watcher);
    }
    // Let each watcher see the later watchers arrive, so only the leaves remain to read
    // (arrivals close together may be told in one coalesced frame).
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let later: Vec<String> = (i + 1..3).map(|n| format!("watcher{n}")).collect();
        let later: Vec<&str> = later.iter().map(String::as_str).collect();
        watcher.expect_presence_of(room, "join", &later).await;
    }
    // bob (node 1) leaves with a request, carol (node 2) by closing her connection.
    let mut bob = users.remove(1);
    bob.send_json(json!({"type": "leave", "room": room, "id": 1}))
        .await;
    assert_eq!(next_non_presence(&mut bob).await["type"], "left");
    for watcher in &mut watchers {
        watcher.expect_presence(room, "leave", "bob").await;
    }
    let carol = users.remove(1);
    carol.close().await;
    for watcher in &mut watchers {
        watcher.expect_presence(room, "leave", "carol").await;
    }
    // A late joiner on any node sees the same members.
    for (i, node) in nodes.iter().enumerate() {
        let mut late = Client::connect(node, &format!("late{i}")).await;
        let listed: BTreeSet<String> = members(&late.join(room).await).into_iter().collect();
        assert!(listed.contains("alice") && !listed.contains("bob") && !listed.contains("carol"));
        late.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moved_to_another_node_recovers_from_its_last_seq() {
    let redis = RedisServer::start();
    let nodes = nodes(3, &redis.url()).await;
    let room = "cluster:recovery";
    let mut publisher = Client::connect(&nodes[2], "pub").await;
    publisher.join(room).await;
    let mut subscriber = Client::connect(&nodes[0], "sub").await;
    let joined = subscriber.join(room).await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    for n in 0..5 {
        publish(&mut publisher, room, json!(n)).await;
    }
    let seen = collect_messages(&mut subscriber, 5).await;
    let last = seen.last().unwrap().0;
    subscriber.close().await;
    let mut missed = Vec::new();
    for n in 5..12 {
        missed.push(publish(&mut publisher, room, json!(n)).await);
    }
    // Back on another node, from where it left off.
    let mut back = Client::connect(&nodes[1], "sub").await;
    back.send_json(
        json!({"type": "join", "room": room, "id": 9, "since": {"seq": last, "epoch": epoch}}),
    )
    .await;
    let joined = back.expect("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["epoch"], epoch.as_str());
    assert_eq!(joined["seq"], *missed.last().unwrap());
    let replayed = collect_messages(&mut back, missed.len()).await;
    assert_eq!(
        replayed.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        missed
    );
    assert_eq!(replayed[0].1, json!(5));
    // The live stream continues after the replay, without a duplicate.
    let next = publish(&mut publisher, room, json!(12)).await;
    assert_eq!(
        collect_messages(&mut back, 1).await,
        vec![(next, json!(12))]
    );
    back.sync().await;
    // A position in an epoch the room does not have cannot be recovered.
    let mut stranger = Client::connect(&nodes[0], "stranger").await;
    stranger
        .send_json(
            json!({"type": "join", "room": room, "since": {"seq": 1, "epoch": "0000000000000000"}}),
        )
        .await;
    assert_eq!(stranger.expect("joined").await["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publishes_and_history_work_across_nodes() {
    let redis = RedisServer::start();
    let nodes = nodes(2, &redis.url()).await;
    let room = "cluster:history";
    let mut first = Client::connect(&nodes[0], "alice").await;
    first.join(room).await;
    first
        .send_json(
            json!({"type": "publish", "room": room, "data": "once", "id": 1, "msg_id": "m1"}),
        )
        .await;
    let ack = first.expect("ack").await;
    assert_ne!(ack["duplicate"], true);
    // The same user retries through another node: the same seq, not delivered again.
    let mut retry = Client::connect(&nodes[1], "alice").await;
    retry.join(room).await;
    retry
        .send_json(
            json!({"type": "publish", "room": room, "data": "once", "id": 2, "msg_id": "m1"}),
        )
        .await;
    let again = next_non_presence(&mut retry).await;
    assert_eq!(again["type"], "ack");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], ack["seq"]);
    let binary = switchboard_protocol::binary::encode_client(room, b"\x00\x01raw");
    retry.send_binary(binary).await;
    // Binary messages are delivered across nodes, byte for byte (a binary publish has no
    // ack: its delivery is what shows it was sequenced).
    let frame = first.recv().await;
    assert!(frame.is_binary(), "{frame:?}");
    let decoded = switchboard_protocol::binary::decode_server(frame.as_payload()).unwrap();
    assert_eq!(decoded.payload, b"\x00\x01raw");
    assert_eq!(decoded.from, "alice");
    // History, read on the other node, has both, in order, the binary one base64-encoded.
    let mut reader = Client::connect(&nodes[0], "reader").await;
    reader
        .send_json(json!({"type": "history", "room": room, "id": 3}))
        .await;
    let history = reader.expect("history").await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[0]["data"], "once");
    assert_eq!(messages[1]["seq"], ack["seq"].as_u64().unwrap() + 1);
    assert_eq!(history["seq"], ack["seq"].as_u64().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_clients_connected_and_answers_unavailable() {
    let mut redis = RedisServer::start();
    let nodes = nodes(2, &redis.url()).await;
    let room = "cluster:outage";
    let mut subscriber = Client::connect(&nodes[0], "sub").await;
    subscriber.join(room).await;
    let mut publisher = Client::connect(&nodes[1], "pub").await;
    publisher.join(room).await;
    let seq = publish(&mut publisher, room, json!("before")).await;
    assert_eq!(
        collect_messages(&mut subscriber, 1).await,
        vec![(seq, json!("before"))]
    );

    redis = tokio::task::spawn_blocking(move || {
        redis.kill();
        redis
    })
    .await
    .unwrap();
    for node in &nodes {
        wait_ready(node, false).await;
    }
    // Connections stay; room operations are refused with a clear error, not dropped.
    publisher
        .send_json(json!({"type": "publish", "room": room, "data": "during", "id": 7}))
        .await;
    let error = next_non_presence(&mut publisher).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "unavailable");
    assert_eq!(error["id"], 7);
    // An outage is not the client's fault: retries do not count as violations (the 10th
    // violation within a minute would close the connection with 1008).
    for id in 100..115 {
        publisher
            .send_json(json!({"type": "publish", "room": room, "data": "retry", "id": id}))
            .await;
        let error = next_non_presence(&mut publisher).await;
        assert_eq!(
            (error["code"].as_str(), error["id"].as_u64()),
            (Some("unavailable"), Some(id))
        );
    }
    publisher.sync().await;
    let mut newcomer = Client::connect(&nodes[0], "newcomer").await;
    newcomer
        .send_json(json!({"type": "join", "room": room, "id": 8}))
        .await;
    let refused = newcomer.expect("error").await;
    assert_eq!(refused["code"], "unavailable");
    subscriber.sync().await;

    redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    for node in &nodes {
        wait_ready(node, true).await;
    }
    // This Redis kept nothing: the room starts a new epoch, and members are told that what
    // they had cannot be continued (recovered: false), then the stream goes on.
    let notice = next_non_presence(&mut subscriber).await;
    assert_eq!(notice["type"], "joined", "{notice}");
    assert_eq!(notice["recovered"], false);
    let notice = next_non_presence(&mut publisher).await;
    assert_eq!(notice["type"], "joined", "{notice}");
    let seq = publish(&mut publisher, room, json!("after")).await;
    assert_eq!(
        collect_messages(&mut subscriber, 1).await,
        vec![(seq, json!("after"))]
    );
    newcomer.join(room).await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_is_filled_from_history() {
    let redis = RedisServer::start();
    let nodes = nodes(2, &redis.url()).await;
    let room = "cluster:gap";
    let mut subscriber = Client::connect(&nodes[0], "sub").await;
    subscriber.join(room).await;
    let mut publisher = Client::connect(&nodes[1], "pub").await;
    publisher.join(room).await;
    const TOTAL: u64 = 300;
    let port = redis.port;
    let publishing = tokio::spawn(async move {
        for n in 0..TOTAL {
            publish(&mut publisher, room, json!(n)).await;
            if n == TOTAL / 3 {
                // Every node's Pub/Sub connection drops; messages keep being sequenced.
                let reply = tokio::task::spawn_blocking(move || {
                    redis::command(port, &["CLIENT", "KILL", "TYPE", "pubsub"])
                })
                .await
                .unwrap();
                assert!(reply.starts_with(':'), "{reply}");
            }
        }
        publisher
    });
    let messages = collect_messages(&mut subscriber, usize::try_from(TOTAL).unwrap()).await;
    let data: Vec<Value> = messages.iter().map(|(_, data)| data.clone()).collect();
    assert_eq!(data, (0..TOTAL).map(|n| json!(n)).collect::<Vec<_>>());
    let first = messages[0].0;
    assert_eq!(
        messages.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (first..first + TOTAL).collect::<Vec<_>>()
    );
    subscriber.sync().await;
    publishing.await.unwrap();
}
