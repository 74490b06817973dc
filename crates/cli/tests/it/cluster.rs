// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Real `switchboard serve --broker redis://…` processes: a node killed with SIGKILL (its users
//! leave presence within the documented time), and three nodes behind a real nginx with the
//! shipped configuration (deploy/nginx/switchboard.conf), without sticky sessions.
//! Each test starts its own Redis and nginx on free ports (the test kit's services; they need
//! redis-server and nginx installed: `scripts/services.sh`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{Client, Nginx, RedisServer, Serve};

use crate::BIN;

fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sbtest-cli:{}:{nanos}", std::process::id())
}

/// A node on the test's Redis, with a short presence TTL so a crash shows quickly.
fn node(redis: &RedisServer, prefix: &str, ttl: &str, interval: &str) -> Serve {
    Serve::start(
        BIN,
        &[
            "--broker",
            &redis.url(),
            "--redis-prefix",
            prefix,
            "--presence-ttl",
            ttl,
            "--presence-interval",
            interval,
            "--rate-limit",
            "100000",
            "--rate-burst",
            "100000",
            "--ip-connect-rate",
            "100000",
            "--ip-connect-burst",
            "100000",
        ],
    )
}

/// Waits until the node's /readyz answers 200 (its broker is connected).
async fn ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(status) = http_status(addr, "/readyz").await
            && status == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} not ready within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_status(addr: &str, path: &str) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut head = vec![0; 64];
    let n = stream.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {line:?}")))
}

fn members(joined: &Value) -> BTreeSet<String> {
    joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_presence_within_ttl_plus_interval() {
    let redis = RedisServer::start();
    let prefix = prefix();
    let (ttl, interval) = (Duration::from_secs(2), Duration::from_millis(500));
    let doomed = node(&redis, &prefix, "2s", "500ms");
    let survivor = node(&redis, &prefix, "2s", "500ms");
    ready(&doomed.addr).await;
    ready(&survivor.addr).await;
    let room = "crash";
    let mut alice = Client::connect_to(&doomed.addr, "alice").await;
    alice.join(room).await;
    let mut watcher = Client::connect_to(&survivor.addr, "watcher").await;
    let joined = watcher.join(room).await;
    assert!(members(&joined).contains("alice"), "{joined}");

    // SIGKILL: no goodbye, no presence removal; only the TTL can clear alice.
    let mut doomed = doomed;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    let leave = loop {
        let value = watcher
            .recv_json_within(ttl + interval * 2 + Duration::from_secs(2))
            .await
            .expect("no presence leave for alice");
        if value["type"] == "presence" && value["user"] == "alice" {
            break value;
        }
    };
    let took = killed.elapsed();
    assert_eq!(leave["event"], "leave");
    assert!(
        took <= ttl + interval + Duration::from_millis(500),
        "alice left after {took:?}; documented bound is presence_ttl + presence_interval"
    );
    eprintln!(
        "presence leave of a killed node's user after {took:?} (ttl {ttl:?}, interval {interval:?})"
    );
    // A late joiner does not see her either.
    let mut late = Client::connect_to(&survivor.addr, "late").await;
    assert!(!members(&late.join(room).await).contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_nginx_serve_one_room_without_sticky_sessions() {
    let redis = RedisServer::start();
    let prefix = prefix();
    let nodes: Vec<Serve> = (0..3).map(|_| node(&redis, &prefix, "15s", "5s")).collect();
    for node in &nodes {
        ready(&node.addr).await;
    }
    let upstreams: Vec<String> = nodes.iter().map(|node| node.addr.clone()).collect();
    let nginx = Nginx::start(&upstreams);
    assert_eq!(http_status(&nginx.addr, "/readyz").await.unwrap(), 200);
    let room = "lb";
    // Nine clients through nginx: least_conn spreads them over the three nodes.
    let mut clients = Vec::new();
    for i in 0..9 {
        let mut client = Client::connect_to(&nginx.addr, &format!("user{i}")).await;
        client.join(room).await;
        clients.push(client);
    }
    let per_node: Vec<usize> = nodes
        .iter()
        .map(|node| established_to(&node.addr))
        .collect();
    assert!(
        per_node.iter().all(|&n| n >= 1),
        "nginx should spread connections over every node: {per_node:?}"
    );
    // Everyone publishes; everyone sees everyone else's messages, in one order.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .send_json(json!({"type": "publish", "room": room, "data": {"from": i}, "echo": false}))
            .await;
    }
    let mut orders = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while seen.len() < 8 {
            let message = client.expect_past_presence("message").await;
            assert_ne!(message["data"]["from"], i, "no echo was asked");
            seen.push((
                message["seq"].as_u64().unwrap(),
                message["data"]["from"].as_u64().unwrap(),
            ));
        }
        orders.push(seen);
    }
    let all: BTreeSet<(u64, u64)> = orders.iter().flatten().copied().collect();
    assert_eq!(
        all.len(),
        9,
        "each seq names one message for everyone: {all:?}"
    );
    // A client that reconnects through nginx (to whichever node) recovers what it missed.
    let quitter = clients.pop().unwrap();
    let (last_seq, epoch) = {
        // Everything so far, its own message included (its ack told it that seq).
        let last = all.iter().map(|(seq, _)| *seq).max().unwrap();
        let mut probe = Client::connect_to(&nginx.addr, "probe").await;
        let joined = probe.join(room).await;
        (last, joined["epoch"].as_str().unwrap().to_owned())
    };
    quitter.close().await;
    let missed = clients[0]
        .publish_without_echo(room, json!({"from": 0, "missed": true}))
        .await;
    let mut back = Client::connect_to(&nginx.addr, "user8").await;
    back.send_json(
        json!({"type": "join", "room": room, "id": 5, "since": {"seq": last_seq, "epoch": epoch}}),
    )
    .await;
    let joined = back.expect_past_presence("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let replayed = back.expect_past_presence("message").await;
    assert_eq!(replayed["seq"], missed);
    assert_eq!(replayed["data"]["missed"], true);
    drop(nginx);
}

/// How many established TCP connections have `addr` (a node's `IP:PORT`) as their local end:
/// the WebSockets nginx opened to that node.
fn established_to(addr: &str) -> usize {
    let port = addr.rsplit(':').next().unwrap();
    let port = u16::from_str_radix(&format!("{:04X}", port.parse::<u16>().unwrap()), 16).unwrap();
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, state is field 3 (01 = ESTABLISHED).
            fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "01"
        })
        .count()
}
