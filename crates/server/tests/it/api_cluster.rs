// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The HTTP API in a cluster, over a real Redis of the test's own (never the shared 6379):
//! a publish through node A reaches WebSocket members on node B in order with the same seqs,
//! msg_id deduplication spans the API and WebSocket retries on other nodes, a disconnect
//! reaches the user on another node and the deny list keeps them out on every node (one
//! started later too), and reads answer the same on every node.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::{ApiConfig, ClusterConfig};
use testkit::RedisServer;
use testkit::{Client, TestServer, http_get, read_head, unthrottled, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const KEY: &str = "cluster-key-0123456789";

fn node_config(redis: &RedisServer) -> Config {
    unthrottled(Config {
        cluster: ClusterConfig {
            broker: redis.url(),
            redis_prefix: "apitest".to_owned(),
            presence_ttl: Duration::from_secs(30),
            presence_interval: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(1000),
            ..ClusterConfig::default()
        },
        api: ApiConfig {
            key: Some(KEY.to_owned()),
            ..ApiConfig::default()
        },
        ..Config::default()
    })
}

async fn node(redis: &RedisServer) -> TestServer {
    let node = TestServer::start(node_config(redis)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = http_get(node.addr(), "/readyz", &[]).await;
        if response.status == 200 {
            return node;
        }
        assert!(Instant::now() < deadline, "node not ready: {response:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One API request; returns the status and the JSON body.
async fn call(node: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let fut = async {
        let mut stream = TcpStream::connect(node.addr()).await.unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            node.addr(),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, _) = read_head(&mut stream).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        (status, serde_json::from_slice(&rest).unwrap_or(Value::Null))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
}

#[tokio::test]
async fn a_publish_through_node_a_reaches_members_on_node_b_in_order_with_the_same_seqs() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut on_b = Client::connect(&b, "watcher").await;
    let joined = on_b.join("ticks").await;
    let mut on_a = Client::connect(&a, "other").await;
    on_a.join("ticks").await;
    on_b.expect_presence("ticks", "join", "other").await;
    let mut seqs = Vec::new();
    for n in 0..20 {
        let (status, body) = call(
            &a,
            "POST",
            "/api/v1/publish",
            Some(json!({"room": "ticks", "data": n})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["epoch"], joined["epoch"]);
        seqs.push(body["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    for (n, seq) in seqs.iter().enumerate() {
        assert_eq!(on_b.expect_message("ticks", "api", &json!(n)).await, *seq);
        assert_eq!(on_a.expect_message("ticks", "api", &json!(n)).await, *seq);
    }
    // The same answers from either node.
    let (_, history_a) = call(&a, "GET", "/api/v1/rooms/ticks/history?since=15", None).await;
    let (_, history_b) = call(&b, "GET", "/api/v1/rooms/ticks/history?since=15", None).await;
    assert_eq!(history_a, history_b);
    assert_eq!(history_a["messages"].as_array().unwrap().len(), 5);
    assert_eq!(history_a["complete"], true);
    let (_, presence_a) = call(&a, "GET", "/api/v1/rooms/ticks/presence", None).await;
    let (_, presence_b) = call(&b, "GET", "/api/v1/rooms/ticks/presence", None).await;
    assert_eq!(presence_a, presence_b);
    assert_eq!(presence_a["members"], json!(["other", "watcher"]));
    let (_, rooms_a) = call(&a, "GET", "/api/v1/rooms?prefix=ti", None).await;
    let (_, rooms_b) = call(&b, "GET", "/api/v1/rooms?prefix=ti", None).await;
    assert_eq!(rooms_a, rooms_b);
    assert_eq!(
        rooms_a["rooms"],
        json!([{"room": "ticks", "member_count": 2}])
    );
}

#[tokio::test]
async fn a_msg_id_through_the_api_then_a_websocket_retry_on_another_node_counts_once() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut sub = Client::connect(&a, "sub").await;
    sub.join("orders").await;
    let (status, first) = call(
        &a,
        "POST",
        "/api/v1/publish",
        Some(json!({"room": "orders", "data": "paid", "from": "shop", "msg_id": "o-1"})),
    )
    .await;
    assert_eq!((status, &first["duplicate"]), (200, &json!(false)));
    let mut shop = Client::connect(&b, "shop").await;
    shop.join("orders").await;
    shop.send_json(
        json!({"type": "publish", "room": "orders", "data": "paid", "id": 1, "msg_id": "o-1"}),
    )
    .await;
    let ack = shop.expect("ack").await;
    assert_eq!(
        (&ack["seq"], &ack["duplicate"]),
        (&first["seq"], &json!(true))
    );
    let (_, again) = call(
        &b,
        "POST",
        "/api/v1/publish",
        Some(json!({"room": "orders", "data": "paid", "from": "shop", "msg_id": "o-1"})),
    )
    .await;
    assert_eq!(
        (&again["seq"], &again["duplicate"]),
        (&first["seq"], &json!(true))
    );
    sub.expect_message("orders", "shop", &json!("paid")).await;
    // Shop's join on node B reaches sub through Redis in its own presence window, before or
    // after this sync; only a second delivery of the message would be wrong.
    let later = sub.sync_collect().await;
    assert!(
        later.iter().all(|frame| frame["type"] == "presence"),
        "the duplicate was delivered again: {later:?}"
    );
    let (_, history) = call(&b, "GET", "/api/v1/rooms/orders/history", None).await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        1,
        "{history}"
    );
}

async fn refused(node: &TestServer, user: &str) -> bool {
    match ws_connect(node.addr(), &node.url(&format!("/ws?user={user}"))).await {
        Err(tokio_websockets::Error::Upgrade(err)) => err.to_string().contains("403"),
        _ => false,
    }
}

#[tokio::test]
async fn a_disconnect_through_one_node_closes_the_user_on_another_and_keeps_them_out_everywhere() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut mallory = Client::connect(&b, "mallory").await;
    mallory.join("r").await;
    let mut bob = Client::connect(&b, "bob").await;
    let (status, body) = call(
        &a,
        "POST",
        "/api/v1/users/mallory/disconnect",
        Some(json!({"reason": "abuse", "revoke_for": 120})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mallory.expect_close().await, (4003, "abuse".to_owned()));
    assert!(
        refused(&a, "mallory").await,
        "denied on the node that was asked"
    );
    assert!(
        refused(&b, "mallory").await,
        "denied on the node that heard it"
    );
    // A node started after the kick loads the deny list from Redis.
    let c = node(&redis).await;
    assert!(
        refused(&c, "mallory").await,
        "denied on a node started later"
    );
    bob.sync().await;
    Client::connect(&c, "bob").await.sync().await;
}
