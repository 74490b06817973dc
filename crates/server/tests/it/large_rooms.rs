//! Large rooms (issue 11, F12 / item 6): bounded `joined`, member counts, paging with
//! `members`, and presence traffic linear in the number of joins — on the in-memory engine and
//! on the Redis engine (a Redis of the test's own, never the shared port).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::{ClusterConfig, PresenceSettings};
use testkit::RedisServer;
use testkit::{Client, TestServer, unthrottled};

/// A small list limit so that "large" is cheap to reach in a test.
fn config(max_joined_members: usize) -> Config {
    let mut config = unthrottled(Config {
        presence: PresenceSettings {
            max_joined_members,
            batch_interval: Duration::from_millis(20),
            count_interval: Duration::from_millis(200),
        },
        ..Config::default()
    });
    config.limits.connections_per_ip_per_second = 1_000_000;
    config
}

fn redis_config(max_joined_members: usize, redis: &RedisServer) -> Config {
    Config {
        cluster: ClusterConfig {
            broker: format!("redis://127.0.0.1:{}", redis.port),
            redis_prefix: format!("sbtest-rooms-{}", std::process::id()),
            presence_ttl: Duration::from_secs(30),
            presence_interval: Duration::from_secs(1),
            redis_timeout: Duration::from_secs(2),
            ..ClusterConfig::default()
        },
        ..config(max_joined_members)
    }
}

fn text_len(message: &tokio_websockets::Message) -> usize {
    message.as_text().map_or(0, str::len)
}

/// Joins `n` users (`u000`…) into `room` one after another; returns the clients and the bytes
/// each has received so far (its `joined` included).
async fn fill(server: &TestServer, room: &str, n: usize) -> (Vec<Client>, Vec<usize>) {
    let mut clients = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..n {
        let mut client = Client::connect(server, &format!("u{i:03}")).await;
        let joined = client.join(room).await;
        bytes.push(joined.to_string().len());
        clients.push(client);
    }
    (clients, bytes)
}

/// Reads each client's frames until it has been told the room holds `count` users; returns
/// the bytes read.
async fn settle(clients: &mut [Client], count: u64) -> usize {
    let mut total = 0;
    for client in clients.iter_mut() {
        loop {
            let message = client.recv().await;
            total += text_len(&message);
            let value: Value = serde_json::from_str(message.as_text().unwrap()).unwrap();
            assert_eq!(value["type"], "presence", "{value}");
            if value["member_count"] == count {
                break;
            }
        }
    }
    total
}

/// Bytes of presence and `joined` that `n` joins into one room cause, all members counted.
async fn traffic_of(server: &TestServer, room: &str, n: usize) -> usize {
    let (mut clients, bytes) = fill(server, room, n).await;
    let joined: usize = bytes.iter().sum();
    // The last joiner was told the count in its `joined`.
    let last = clients.pop().unwrap();
    let presence = settle(&mut clients, n as u64).await;
    drop(last);
    joined + presence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_presence_traffic_is_linear_in_joins() {
    let server = TestServer::start(config(20)).await;
    let small = traffic_of(&server, "linear-a", 100).await;
    let large = traffic_of(&server, "linear-b", 300).await;
    eprintln!("presence + joined bytes: 100 joins {small}, 300 joins {large}");
    // One presence frame per join per member (the old behaviour) would be O(N²): 9× for 3×
    // the joins (about 2.7 MB for 300). Bounded lists and coalesced, count-only presence keep
    // it near 3×.
    assert!(
        large < small * 5,
        "100 joins: {small} bytes, 300 joins: {large} bytes"
    );
    assert!(large < 300 * 2_000, "{large} bytes for 300 joins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_joined_is_bounded_with_member_count() {
    let server = TestServer::start(config(10)).await;
    let (mut clients, _) = fill(&server, "big", 30).await;
    let mut last = clients.pop().unwrap();
    // A re-join answers from the same bounded list: no amplification.
    let again = last.join("big").await;
    assert_eq!(again["members"].as_array().unwrap().len(), 10, "{again}");
    assert_eq!(again["members_truncated"], true);
    assert_eq!(again["member_count"], 30);
    let first: Vec<&str> = again["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("u{i:03}")).collect();
    assert_eq!(first, expected, "the first in byte order");
    // A small room: the whole list, no flag.
    let mut alone = Client::connect(&server, "solo").await;
    let joined = alone.join("small").await;
    assert_eq!(joined["members"], json!(["solo"]));
    assert_eq!(joined["member_count"], 1);
    assert!(joined.get("members_truncated").is_none(), "{joined}");
}

async fn page_through(client: &mut Client, room: &str, limit: u64) -> (Vec<String>, u64) {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    let mut count = 0;
    for id in 1.. {
        let mut request = json!({"type": "members", "room": room, "id": id, "limit": limit});
        if let Some(after) = &after {
            request["after"] = json!(after);
        }
        client.send_json(request).await;
        let page = loop {
            let frame = client.recv_json().await;
            if frame["type"] == "members" {
                break frame;
            }
            assert_eq!(frame["type"], "presence", "{frame}");
        };
        assert_eq!(page["id"], id);
        count = page["member_count"].as_u64().unwrap();
        let names = page["members"].as_array().unwrap();
        assert!(names.len() as u64 <= limit);
        all.extend(names.iter().map(|m| m.as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    (all, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_request_pages_through_a_large_room() {
    let server = TestServer::start(config(10)).await;
    let (_clients, _) = fill(&server, "paged", 45).await;
    // Not a member: the presence right is enough.
    let mut reader = Client::connect(&server, "reader").await;
    let (all, count) = page_through(&mut reader, "paged", 7).await;
    let expected: Vec<String> = (0..45).map(|i| format!("u{i:03}")).collect();
    assert_eq!((all, count), (expected, 45));
    // A room nobody is in: empty, count 0.
    reader
        .send_json(json!({"type": "members", "room": "nobody", "id": 99}))
        .await;
    let empty = reader.expect("members").await;
    assert_eq!(
        empty,
        json!({"type":"members","room":"nobody","id":99,"members":[],"member_count":0})
    );
    // Bad limits get a clear answer, and the connection stays.
    reader
        .send_json(json!({"type": "members", "room": "paged", "id": 100, "limit": 1001}))
        .await;
    reader.expect_error("invalid_message", Some(100)).await;
    reader.sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_a_burst_of_joins_is_told_in_coalesced_frames() {
    let server = TestServer::start(config(1_000)).await;
    let mut watcher = Client::connect(&server, "watcher").await;
    watcher.join("burst").await;
    let (_clients, _) = fill(&server, "burst", 60).await;
    // Every join is told exactly once, in fewer frames than joins.
    let mut told = Vec::new();
    let mut frames = 0;
    while told.len() < 60 {
        let frame = watcher.expect("presence").await;
        frames += 1;
        match frame["user"].as_str() {
            Some(user) => told.push(user.to_owned()),
            None => told.extend(
                frame["joins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u.as_str().unwrap().to_owned()),
            ),
        }
        assert!(frame.get("leaves").is_none(), "{frame}");
    }
    told.sort();
    let expected: Vec<String> = (0..60).map(|i| format!("u{i:03}")).collect();
    assert_eq!(told, expected);
    assert!(frames <= 60, "{frames} frames");
    watcher.sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_redis_engine_bounds_joined_pages_members_and_coalesces_presence() {
    let redis = RedisServer::start();
    let node = TestServer::start(redis_config(10, &redis)).await;
    let mut watcher = Client::connect(&node, "a-watcher").await;
    watcher.join("big").await;
    let (mut clients, _) = fill(&node, "big", 30).await;
    let last = clients.last_mut().unwrap();
    let again = last.join("big").await;
    assert_eq!(again["members"].as_array().unwrap().len(), 10, "{again}");
    assert_eq!(again["members_truncated"], true);
    assert_eq!(again["member_count"], 31);
    // Over the list limit the watcher is told the count (and nothing per join beyond it).
    let mut frames = 0;
    loop {
        let frame = watcher.expect("presence").await;
        frames += 1;
        if frame["member_count"] == 31 {
            break;
        }
    }
    assert!(frames < 30, "{frames} presence frames for 30 joins");
    let mut reader = Client::connect(&node, "reader").await;
    let (all, count) = page_through(&mut reader, "big", 8).await;
    let mut expected: Vec<String> = (0..30).map(|i| format!("u{i:03}")).collect();
    expected.insert(0, "a-watcher".to_owned());
    assert_eq!((all, count), (expected, 31));
    drop((clients, watcher, reader));
    node.shutdown_within(Duration::from_secs(15)).await;
}
