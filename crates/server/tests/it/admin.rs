// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The operator page: off (404) without `[admin] key`, 401 with a wrong key, and the JSON
//! snapshot it charts, once a second: this node's connections and busiest rooms on one node,
//! every node's through Redis. The browser side is web/tests/admin.test.mjs.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::{
    AdminConfig, ApiConfig, ApiKeyConfig, ApiScope, ClusterConfig, MetricsConfig,
};
use testkit::RedisServer;
use testkit::{Client, TestServer, http_get, unthrottled};
use tokio::time::Instant;

const KEY: &str = "test-admin-key-0123456789";

fn with_key(config: Config) -> Config {
    Config {
        admin: AdminConfig {
            key: Some(KEY.to_owned()),
        },
        ..unthrottled(config)
    }
}

async fn stats(server: &TestServer, key: &str) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let response = http_get(
        server.addr(),
        "/admin/api/stats",
        &[("Authorization", auth.as_str())],
    )
    .await;
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

/// Polls the stats until `ok` holds (at most 10 s: snapshots are taken once a second).
async fn wait_for_stats(server: &TestServer, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, view) = stats(server, KEY).await;
        assert_eq!(status, 200, "{view}");
        if ok(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; last: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_an_admin_key_the_operator_page_does_not_exist() {
    let server = TestServer::start(Config::default()).await;
    for path in ["/admin", "/admin/admin.js", "/admin/api/stats"] {
        let response = http_get(
            server.addr(),
            path,
            &[("Authorization", &format!("Bearer {KEY}"))],
        )
        .await;
        assert_eq!(response.status, 404, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_gets_401_and_the_page_itself_carries_no_data() {
    let server = TestServer::start(with_key(Config::default())).await;
    let missing = http_get(server.addr(), "/admin/api/stats", &[]).await;
    assert_eq!(missing.status, 401);
    assert!(missing.header("www-authenticate").is_some());
    let (status, _) = stats(&server, "test-admin-key-012345678X").await;
    assert_eq!(status, 401);
    let (status, _) = stats(&server, "").await;
    assert_eq!(status, 401);
    let basic = http_get(
        server.addr(),
        "/admin/api/stats",
        &[("Authorization", &format!("Basic {KEY}"))],
    )
    .await;
    assert_eq!(basic.status, 401);
    let page = http_get(server.addr(), "/admin", &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("/admin/admin.js"), "{html}");
    assert!(
        page.headers
            .iter()
            .any(|(name, _)| name == "content-security-policy")
    );
    let (status, view) = stats(&server, KEY).await;
    assert_eq!(status, 200);
    assert!(
        view["node"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", server.addr().port()))
    );
    server.shutdown().await;
}

/// Issue #16: the page is on with an API key alone (no `[admin] key`), and an API key reads
/// the stats only with the `admin` scope (`[api] key` has every scope).
#[tokio::test]
async fn an_api_key_with_the_admin_scope_opens_the_operator_page_and_one_without_it_gets_401() {
    const API_KEY: &str = "test-api-key-0123456789abcdef";
    const PUBLISHER: &str = "test-publisher-key-0123456789";
    let server = TestServer::start(unthrottled(Config {
        api: ApiConfig {
            key: Some(API_KEY.to_owned()),
            keys: vec![ApiKeyConfig {
                name: "orders".to_owned(),
                key: Some(PUBLISHER.to_owned()),
                sha256: None,
                scopes: vec![ApiScope::Publish],
            }],
            ..ApiConfig::default()
        },
        ..Config::default()
    }))
    .await;
    let (status, view) = stats(&server, API_KEY).await;
    assert_eq!(status, 200, "{view}");
    assert!(view["nodes"].is_array(), "{view}");
    let (status, _) = stats(&server, PUBLISHER).await;
    assert_eq!(status, 401);
    let (status, _) = stats(&server, KEY).await;
    assert_eq!(status, 401, "no [admin] key is set");
    server.shutdown().await;

    // Only named keys without `admin`: the page stays off.
    let server = TestServer::start(Config {
        api: ApiConfig {
            keys: vec![ApiKeyConfig {
                name: "orders".to_owned(),
                key: Some(PUBLISHER.to_owned()),
                sha256: None,
                scopes: vec![ApiScope::Publish, ApiScope::Read],
            }],
            ..ApiConfig::default()
        },
        ..Config::default()
    })
    .await;
    let (status, _) = stats(&server, PUBLISHER).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn the_snapshot_counts_connections_and_ranks_the_busiest_room_under_publishes() {
    let server = TestServer::start(with_key(Config::default())).await;
    let mut alice = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    let mut carol = Client::connect(&server, "carol").await;
    // Alice (the publisher) joins last, so no presence event comes between her publishes and
    // their acks.
    bob.join("hot").await;
    carol.join("quiet").await;
    alice.join("hot").await;
    alice.join("quiet").await;
    let view = wait_for_stats(&server, "3 connections in 2 rooms", |view| {
        let node = &view["nodes"][0];
        node["connections"] == 3 && node["rooms"] == 2 && node["room_members"] == 4
    })
    .await;
    let node = &view["nodes"][0];
    assert_eq!(node["broker"], "memory");
    assert_eq!(node["node"], view["node"]);
    // The traffic counters come from the /metrics recorder (`[metrics]` is on by default).
    assert!(node["metrics"].is_object(), "{node:#}");
    // Publishes until a snapshot ranks "hot" first with a positive rate (bounded: 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        for n in 0..5 {
            alice.publish("hot", json!({ "n": n })).await;
        }
        let (_, view) = stats(&server, KEY).await;
        let node = &view["nodes"][0];
        if node["busiest_rooms"][0]["room"] == "hot"
            && node["busiest_rooms"][0]["messages_per_s"].as_f64() > Some(0.0)
        {
            break view;
        }
        assert!(Instant::now() < deadline, "hot never ranked: {view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node = &view["nodes"][0];
    assert!(node["room_messages_per_s"].as_f64() > Some(0.0), "{view:#}");
    assert_eq!(node["busiest_rooms"][0]["members"], 2);
    let largest: Vec<&str> = node["largest_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["room"].as_str().unwrap())
        .collect();
    assert_eq!(largest.len(), 2, "{view:#}");
    drop((alice, bob, carol));
    wait_for_stats(&server, "no connection left", |view| {
        view["nodes"][0]["connections"] == 0
    })
    .await;
    server.shutdown().await;
}

/// With `[metrics]` off there is no recorder to read: the traffic counters are left out, not
/// zero (the page says so instead of charting zeros). One process per test under nextest, so
/// no other test's recorder is installed here.
#[tokio::test]
async fn without_metrics_the_traffic_counters_are_null() {
    let server = TestServer::start(with_key(Config {
        metrics: MetricsConfig {
            enabled: false,
            listen: None,
        },
        ..Config::default()
    }))
    .await;
    let alice = Client::connect(&server, "alice").await;
    let view = wait_for_stats(&server, "1 connection", |view| {
        view["nodes"][0]["connections"] == 1
    })
    .await;
    assert_eq!(view["nodes"][0]["metrics"], Value::Null);
    alice.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn over_redis_every_live_node_is_in_the_view_and_a_stopped_one_leaves_it() {
    let redis = RedisServer::start();
    let config = |prefix: &str| {
        with_key(Config {
            cluster: ClusterConfig {
                broker: redis.url(),
                redis_prefix: prefix.to_owned(),
                redis_timeout: Duration::from_millis(500),
                ..ClusterConfig::default()
            },
            ..Config::default()
        })
    };
    let a = TestServer::start(config("sbadmin")).await;
    let b = TestServer::start(config("sbadmin")).await;
    let mut client = Client::connect(&b, "bob").await;
    client.join("on-b").await;
    let names = |view: &Value| -> Vec<String> {
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| node["node"].as_str().unwrap().to_owned())
            .collect()
    };
    let view = wait_for_stats(&a, "both nodes, b with its connection", |view| {
        view["nodes"].as_array().is_some_and(|nodes| {
            nodes.len() == 2
                && nodes.iter().any(|node| {
                    node["connections"] == 1
                        && node["largest_rooms"][0]["room"] == "on-b"
                        && node["broker"] == "redis"
                })
        })
    })
    .await;
    let b_port = format!(":{}", b.addr().port());
    assert!(
        names(&view).iter().any(|name| name.ends_with(&b_port)),
        "{view:#}"
    );
    drop(client);
    b.shutdown().await;
    // b's entry goes stale after 3 s without a write.
    let view = wait_for_stats(&a, "b gone", |view| {
        view["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.len() == 1)
    })
    .await;
    assert!(
        names(&view)[0].ends_with(&format!(":{}", a.addr().port())),
        "{view:#}"
    );
    a.shutdown().await;
}
