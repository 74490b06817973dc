// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Webhooks end to end: a real HTTP receiver (in the test) that refuses the first attempts
//! of every event and verifies every signature; one node on the memory engine, three nodes on
//! a private Redis (once per cluster); and a full queue that counts its drops.
//!
//! Delivery is at least once: a receiver may see an event again (same `id`) after a lost
//! answer. Here no answer is lost (the receiver answers every request), so each event must be
//! accepted exactly once, and the test counts attempts per id to see the retries.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::{ClusterConfig, WebhookEndpoint, WebhooksConfig};
use switchboard_server::webhooks::{SIGNATURE_HEADER, verify};
use testkit::{Client, RedisServer, TestServer, http_get, now_millis, unthrottled};
use tokio::net::TcpListener;
use tokio::time::Instant;

const SECRET: &str = "whsec_0123456789abcdef";
/// The receiver's tolerance window for the signature's timestamp (the documented default).
const TOLERANCE_S: u64 = 300;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Attempt {
    body: Value,
    /// What the receiver answered.
    accepted: bool,
}

/// A webhook receiver on 127.0.0.1: answers 503 to the first `refuse` attempts of each
/// event id, then 200; checks every request's signature (a bad one fails the test).
struct Receiver {
    addr: SocketAddr,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    bad_signatures: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let bad_signatures = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (log, bad) = (attempts.clone(), bad_signatures.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, bad, seen) = (log.clone(), bad.clone(), seen.clone());
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (log, bad, seen) = (log.clone(), bad.clone(), seen.clone());
                    async move {
                        let signature = request
                            .headers()
                            .get(SIGNATURE_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let raw = request.into_body().collect().await.unwrap().to_bytes();
                        let now = now_millis() / 1000;
                        if !verify(SECRET.as_bytes(), &signature, &raw, now, TOLERANCE_S) {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                        let body: Value = serde_json::from_slice(&raw).unwrap();
                        let id = body["id"].as_str().unwrap().to_owned();
                        let accepted = {
                            let mut seen = seen.lock();
                            let count = seen.entry(id).or_insert(0);
                            *count += 1;
                            *count > refuse
                        };
                        log.lock().push(Attempt { body, accepted });
                        let status = if accepted { 200 } else { 503 };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            attempts,
            bad_signatures,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The bodies accepted (answered 200), in the order they arrived.
    fn accepted(&self) -> Vec<Value> {
        self.attempts
            .lock()
            .iter()
            .filter(|a| a.accepted)
            .map(|a| a.body.clone())
            .collect()
    }

    /// Waits (bounded) until `n` events were accepted.
    async fn wait_accepted(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events accepted after 15 s: {accepted:#?}",
                accepted.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Attempts per event id.
    fn attempts_per_id(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for attempt in self.attempts.lock().iter() {
            *counts
                .entry(attempt.body["id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        counts
    }
}

fn webhooks(url: &str, events: &[&str]) -> WebhooksConfig {
    WebhooksConfig {
        // Fast retries: the test waits for them.
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        concurrency: 4,
        endpoints: vec![WebhookEndpoint {
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            ..WebhookEndpoint::new(url, SECRET)
        }],
        ..WebhooksConfig::default()
    }
}

const ALL_EVENTS: &[&str] = &[
    "room.occupied",
    "room.vacated",
    "member.joined",
    "member.left",
    "message.published",
];

/// Sends `request` with a fresh id and returns the reply carrying that id (other frames,
/// presence and messages, are skipped).
async fn request(client: &mut Client, mut request: Value) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    request["id"] = json!(id);
    client.send_json(request).await;
    loop {
        let reply = client.recv_json().await;
        if reply["id"] == id {
            assert_ne!(reply["type"], "error", "{}: {reply}", client.name);
            return reply;
        }
    }
}

async fn join(client: &mut Client, room: &str) {
    request(client, json!({"type": "join", "room": room})).await;
}

async fn leave(client: &mut Client, room: &str) {
    request(client, json!({"type": "leave", "room": room})).await;
}

/// `(type, user)` of the events of `room`, in the order they were accepted.
fn story(events: &[Value], room: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["room"] == room)
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["user"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, u)| ((*t).to_owned(), (*u).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_signed_retried_and_delivered_once_in_order_per_room() {
    let receiver = Receiver::start(2).await;
    let server = TestServer::start(Config {
        webhooks: webhooks(&receiver.url(), ALL_EVENTS),
        ..Config::default()
    })
    .await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut alice_again = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    let mut carol = Client::connect(&server, "carol").await;
    join(&mut alice, "room-a").await;
    join(&mut bob, "room-a").await;
    join(&mut alice_again, "room-a").await; // a second connection: no event
    join(&mut carol, "room-b").await;
    let seq = request(
        &mut alice,
        json!({"type": "publish", "room": "room-a", "data": {"text": "hi"}}),
    )
    .await["seq"]
        .as_u64()
        .unwrap();
    leave(&mut bob, "room-a").await;
    leave(&mut alice, "room-a").await; // alice is still there on her other connection
    alice_again.close().await;
    leave(&mut carol, "room-b").await;
    let accepted = receiver.wait_accepted(11).await;
    assert_eq!(
        story(&accepted, "room-a"),
        pairs(&[
            ("room.occupied", ""),
            ("member.joined", "alice"),
            ("member.joined", "bob"),
            ("message.published", "alice"),
            ("member.left", "bob"),
            ("member.left", "alice"),
            ("room.vacated", ""),
        ]),
        "{accepted:#?}"
    );
    assert_eq!(
        story(&accepted, "room-b"),
        pairs(&[
            ("room.occupied", ""),
            ("member.joined", "carol"),
            ("member.left", "carol"),
            ("room.vacated", ""),
        ])
    );
    let message = accepted
        .iter()
        .find(|e| e["type"] == "message.published")
        .unwrap();
    assert_eq!(message["seq"], seq);
    assert_eq!(message["data"], json!({"text": "hi"}));
    // Presence versions increase along each room's story.
    for room in ["room-a", "room-b"] {
        let versions: Vec<u64> = accepted
            .iter()
            .filter(|e| e["room"] == room && e["version"].is_u64())
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    }
    // Every event was refused twice and accepted on its third attempt: once each.
    let attempts = receiver.attempts_per_id();
    assert_eq!(attempts.len(), 11, "{attempts:?}");
    assert!(attempts.values().all(|n| *n == 3), "{attempts:?}");
    assert_eq!(receiver.bad_signatures.load(Ordering::Relaxed), 0);
    let stats = server.webhooks().unwrap();
    assert_eq!(
        (stats.delivered(), stats.retried(), stats.dropped()),
        (11, 22, 0)
    );
    drop((alice, bob, carol));
    server.shutdown().await;
    // Shutdown drained everything: nothing more arrived.
    assert_eq!(receiver.accepted().len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_the_events_that_do_not_fit() {
    // Refuses every attempt: the first event holds its lane, retrying.
    let receiver = Receiver::start(usize::MAX).await;
    let mut settings = webhooks(&receiver.url(), &["room.occupied", "member.joined"]);
    settings.queue_size = 2;
    settings.concurrency = 1;
    settings.retry_initial = Duration::from_secs(30);
    settings.retry_max = Duration::from_secs(30);
    settings.drain_timeout = Duration::from_millis(100);
    let server = TestServer::start(Config {
        webhooks: settings,
        ..Config::default()
    })
    .await;
    let mut clients = Vec::new();
    for n in 0..5 {
        let mut client = Client::connect(&server, &format!("u{n}")).await;
        join(&mut client, "busy").await;
        clients.push(client);
    }
    // 6 events (occupied + 5 joins): 2 fit (one in delivery, one waiting), 4 are dropped.
    let stats = server.webhooks().unwrap();
    assert_eq!(stats.dropped(), 4);
    assert_eq!(stats.delivered(), 0);
    // Shutdown: the 2 still queued are dropped at the drain deadline, counted too.
    drop(clients);
    server.shutdown().await;
    assert_eq!(stats.dropped(), 6);
    assert!(receiver.accepted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_the_leaves_of_the_connections_it_closes() {
    let receiver = Receiver::start(1).await;
    let server = TestServer::start(Config {
        webhooks: webhooks(&receiver.url(), &["member.left", "room.vacated"]),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    })
    .await;
    let mut dave = Client::connect(&server, "dave").await;
    join(&mut dave, "late").await;
    // Dave is still in the room when the server stops: his leave and the vacancy are queued
    // as his connection closes, and delivered (after a refused first attempt) before `run`
    // returns.
    let stats = server.webhooks().unwrap();
    let closing = tokio::spawn(async move { dave.expect_close().await });
    server.shutdown().await;
    assert_eq!(closing.await.unwrap().0, 1001);
    assert_eq!(
        story(&receiver.accepted(), "late"),
        pairs(&[("member.left", "dave"), ("room.vacated", "")])
    );
    assert_eq!((stats.delivered(), stats.dropped()), (2, 0));
}

fn node_config(redis: &RedisServer, prefix: &str, url: &str) -> Config {
    unthrottled(Config {
        cluster: ClusterConfig {
            broker: redis.url(),
            redis_prefix: prefix.to_owned(),
            presence_ttl: Duration::from_secs(30),
            presence_interval: Duration::from_secs(1),
            redis_timeout: Duration::from_secs(2),
            ..ClusterConfig::default()
        },
        webhooks: webhooks(url, ALL_EVENTS),
        ..Config::default()
    })
}

/// Waits until the node's `/readyz` answers 200 (its Redis link is up).
async fn wait_ready(node: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(node.addr(), "/readyz", &[]).await.status != 200 {
        assert!(Instant::now() < deadline, "node not ready after 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_send_each_event_once_per_cluster() {
    let redis = RedisServer::start();
    let receiver = Receiver::start(1).await;
    let prefix = format!("sbwh:{}", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = TestServer::start(node_config(&redis, &prefix, &receiver.url())).await;
        wait_ready(&node).await;
        nodes.push(node);
    }
    let mut alice0 = Client::connect(&nodes[0], "alice").await;
    let mut alice1 = Client::connect(&nodes[1], "alice").await;
    let mut bob2 = Client::connect(&nodes[2], "bob").await;
    join(&mut alice0, "lobby").await;
    join(&mut alice1, "lobby").await; // alice on a second node: no event
    join(&mut bob2, "lobby").await;
    let seq = request(
        &mut bob2,
        json!({"type": "publish", "room": "lobby", "data": 42}),
    )
    .await["seq"]
        .as_u64()
        .unwrap();
    // Alice leaves on both nodes (whichever removal Redis runs last reports her leave).
    leave(&mut alice0, "lobby").await;
    leave(&mut alice1, "lobby").await;
    // Her leave first (removals are written in the background), then bob's: a known story.
    receiver.wait_accepted(5).await;
    bob2.close().await;
    let accepted = receiver.wait_accepted(7).await;
    // Every node has the same webhook endpoint; each event must still come once. Shut the
    // nodes down (which delivers whatever they still hold) before counting.
    drop((alice0, alice1));
    for node in nodes {
        node.shutdown().await;
    }
    let all = receiver.accepted();
    assert_eq!(all.len(), 7, "{all:#?}");
    let mut by_version: Vec<&Value> = accepted.iter().collect();
    by_version.sort_by_key(|e| {
        (
            e["version"].as_u64().or(e["seq"].as_u64()).unwrap_or(0),
            e["type"] == "room.vacated",
            e["type"] != "room.occupied",
        )
    });
    let presence: Vec<(String, String)> = by_version
        .iter()
        .filter(|e| e["type"] != "message.published")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["user"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        presence,
        pairs(&[
            ("room.occupied", ""),
            ("member.joined", "alice"),
            ("member.joined", "bob"),
            ("member.left", "alice"),
            ("member.left", "bob"),
            ("room.vacated", ""),
        ]),
        "{all:#?}"
    );
    let message = all
        .iter()
        .find(|e| e["type"] == "message.published")
        .unwrap();
    assert_eq!(
        (&message["seq"], &message["data"]),
        (&json!(seq), &json!(42))
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::Relaxed), 0);
    let attempts = receiver.attempts_per_id();
    assert!(
        attempts.values().all(|n| *n == 2),
        "retried once each: {attempts:?}"
    );
}
