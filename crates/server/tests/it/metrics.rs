// Tests fail loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! `GET /metrics`: scraped with a real Prometheus text-format parser (`prometheus-parse`)
//! before and after a known workload, and the deltas checked — N publishes to M members are
//! N×M deliveries, one slow consumer is one `slow_consumer` close, one refused token is one
//! 401 — and the deploy/ dashboard queries only names the server exports.
//!
//! The metrics recorder is process-wide: each test here starts its own server and counts
//! deltas, which is exact under `cargo nextest` (one process per test).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;
use switchboard_server::Config;
use switchboard_server::config::MetricsConfig;
use testkit::{
    Client, RECV_TIMEOUT, RedisServer, TestServer, connect_small_window, http_get, masked_frame,
    opcode, raw_upgrade, unthrottled, ws_connect,
};
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;
use tokio_websockets::Message;

/// One scrape, parsed: every sample by metric name and labels.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(addr: SocketAddr) -> Self {
        let response = http_get(addr, "/metrics", &[]).await;
        assert_eq!(response.status, 200, "GET /metrics");
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{:?}",
            response.headers
        );
        let text = String::from_utf8(response.body).expect("UTF-8 exposition");
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        Self(Scrape::parse(lines).expect("a valid Prometheus text exposition"))
    }

    /// The value of the counter or gauge `name` with exactly these labels (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels_match(&s.labels, labels))
            .map(|s| match s.value {
                Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
                _ => panic!("{name} is not a counter or gauge"),
            })
            .sum()
    }

    /// How many observations the histogram `name` holds.
    fn histogram_count(&self, name: &str) -> u64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match &s.value {
                Sample::Histogram(buckets) => {
                    buckets.iter().map(|b| b.count as u64).max().unwrap_or(0)
                }
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Every metric family the scrape has (histograms and summaries by their base name).
    fn names(&self) -> BTreeSet<String> {
        self.0.samples.iter().map(|s| s.metric.clone()).collect()
    }
}

fn labels_match(actual: &prometheus_parse::Labels, wanted: &[(&str, &str)]) -> bool {
    let actual: &HashMap<String, String> = actual;
    wanted
        .iter()
        .all(|(k, v)| actual.get(*k).is_some_and(|a| a == v))
}

/// Scrapes until `done` holds (the writer counts a batch right after flushing it, which can
/// be a moment after the client read it), at most 5 s.
async fn scrape_until(addr: SocketAddr, mut done: impl FnMut(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let metrics = Metrics::scrape(addr).await;
        if done(&metrics) || Instant::now() >= deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const DELIVERIES: &str = "switchboard_deliveries_total";
const LATENCY: &str = "switchboard_delivery_latency_seconds";
const CLOSED: &str = "switchboard_connections_closed_total";
const REJECTED: &str = "switchboard_handshakes_rejected_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_publishes_to_m_members_are_n_times_m_deliveries() {
    const MEMBERS: usize = 4;
    const PUBLISHES: usize = 25;
    let server = TestServer::start(unthrottled(Config::default())).await;
    let addr = server.addr();
    let before = Metrics::scrape(addr).await;

    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut member = Client::connect(&server, &format!("m{i}")).await;
        member.join("room").await;
        members.push(member);
    }
    // Last, so that no presence frame comes between its publishes and their acks.
    let mut publisher = Client::connect(&server, "pub").await;
    publisher.join("room").await;
    for n in 0..PUBLISHES {
        publisher.publish("room", json!({"n": n})).await;
    }
    for member in &mut members {
        let mut seen = 0;
        while seen < PUBLISHES {
            if member.recv_json().await["type"] == "message" {
                seen += 1;
            }
        }
    }
    // A binary publish and a refused request.
    publisher
        .send_text(r#"{"type":"publish","room":"elsewhere","data":1,"id":9}"#)
        .await;
    publisher.expect_error("not_joined", Some(9)).await;

    let expected = before.value(DELIVERIES, &[]) + (PUBLISHES * MEMBERS) as f64;
    let after = scrape_until(addr, |m| m.value(DELIVERIES, &[]) >= expected).await;
    assert_eq!(
        after.value(DELIVERIES, &[]) - before.value(DELIVERIES, &[]),
        (PUBLISHES * MEMBERS) as f64,
        "N publishes to M members (the publisher does not get its own: echo is off)"
    );
    let published =
        |m: &Metrics| m.value("switchboard_messages_published_total", &[("source", "ws")]);
    assert_eq!(published(&after) - published(&before), PUBLISHES as f64);
    assert!(
        after.histogram_count(LATENCY) > before.histogram_count(LATENCY),
        "the delivery latency histogram moved"
    );
    let errors = |m: &Metrics| m.value("switchboard_errors_total", &[("code", "not_joined")]);
    assert_eq!(errors(&after) - errors(&before), 1.0);
    let opened = |m: &Metrics| {
        m.value(
            "switchboard_connections_opened_total",
            &[("transport", "ws")],
        )
    };
    assert_eq!(opened(&after) - opened(&before), (MEMBERS + 1) as f64);
    assert_eq!(
        after.value("switchboard_connections", &[("transport", "ws")]),
        (MEMBERS + 1) as f64
    );
    assert_eq!(
        after.value("switchboard_room_members", &[]),
        (MEMBERS + 1) as f64
    );
    assert_eq!(after.value("switchboard_rooms", &[]), 1.0);
    assert_eq!(after.value("switchboard_broker_up", &[]), 1.0);
    for counter in [
        "switchboard_bytes_sent_total",
        "switchboard_bytes_received_total",
    ] {
        assert!(
            after.value(counter, &[]) > before.value(counter, &[]),
            "{counter}"
        );
    }
    assert_eq!(
        after.value(
            "switchboard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(after.value("process_resident_memory_bytes", &[]) > 0.0);

    // Closing: the gauge goes down and each close is counted by reason.
    let normal = after.value(CLOSED, &[("reason", "normal")]);
    for member in members {
        member.close().await;
    }
    let closed = scrape_until(addr, |m| {
        m.value("switchboard_connections", &[("transport", "ws")]) == 1.0
    })
    .await;
    assert_eq!(
        closed.value(CLOSED, &[("reason", "normal")]) - normal,
        MEMBERS as f64
    );
    assert_eq!(closed.value("switchboard_room_members", &[]), 1.0);
    publisher.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_token_is_one_401() {
    let mut config = Config::default();
    config.auth.hmac_secret = Some("a-test-secret-of-at-least-32-bytes!!".to_owned());
    let server = TestServer::start(config).await;
    let before = Metrics::scrape(server.addr()).await;
    let refused = ws_connect(server.addr(), &server.url("/ws?token=not-a-token")).await;
    assert!(refused.is_err(), "a bad token is refused");
    let after = Metrics::scrape(server.addr()).await;
    let rejected = |m: &Metrics, status| m.value(REJECTED, &[("status", status)]);
    assert_eq!(rejected(&after, "401") - rejected(&before, "401"), 1.0);
    assert_eq!(rejected(&after, "403"), rejected(&before, "403"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_consumer_is_one_slow_consumer_close() {
    let server = TestServer::start(unthrottled(Config {
        outbox_bytes: 64 * 1024,
        max_message_size: 16 * 1024,
        ..Config::default()
    }))
    .await;
    let before = Metrics::scrape(server.addr()).await;
    let mut publisher = Client::connect(&server, "pub").await;
    publisher.join("room").await;

    // The slow client: small TCP window, joins, then never reads.
    let tcp = connect_small_window(server.addr()).await;
    let mut slow = raw_upgrade(tcp, "/ws?user=slow").await;
    let join = json!({"type": "join", "room": "room", "id": 1}).to_string();
    slow.write_all(&masked_frame(opcode::TEXT, join.as_bytes(), [1, 2, 3, 4]))
        .await
        .unwrap();
    publisher.expect_presence("room", "join", "slow").await;

    let padding = "p".repeat(1000);
    let mut sent = 0;
    'publishing: loop {
        let batch = (0..20)
            .map(|n| {
                Message::text(
                    json!({"type": "publish", "room": "room", "data": {"n": n, "pad": padding}})
                        .to_string(),
                )
            })
            .collect();
        publisher.send_all(batch).await;
        sent += 20;
        for frame in publisher.sync_collect().await {
            if frame["type"] == "presence" && frame["event"] == "leave" {
                break 'publishing;
            }
        }
        assert!(sent < 20_000, "the slow consumer was not closed");
    }
    let after = scrape_until(server.addr(), |m| {
        m.value(CLOSED, &[("reason", "slow_consumer")])
            > before.value(CLOSED, &[("reason", "slow_consumer")])
    })
    .await;
    let slow_closes = |m: &Metrics| m.value(CLOSED, &[("reason", "slow_consumer")]);
    assert_eq!(slow_closes(&after) - slow_closes(&before), 1.0);
    drop(slow);
    publisher.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_port() {
    let config = Config {
        metrics: MetricsConfig {
            enabled: true,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let addr = server.addr();
    let metrics = server.metrics_addr().expect("a metrics listener");
    assert_ne!(metrics, addr);
    assert_eq!(http_get(addr, "/metrics", &[]).await.status, 404);
    let scraped = Metrics::scrape(metrics).await;
    assert!(scraped.names().contains("switchboard_connections"));
    server.shutdown().await;
}

#[tokio::test]
async fn disabled_metrics_have_no_endpoint() {
    let config = Config {
        metrics: MetricsConfig {
            enabled: false,
            listen: None,
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    assert_eq!(server.metrics_addr(), None);
    assert_eq!(http_get(server.addr(), "/metrics", &[]).await.status, 404);
    server.shutdown().await;
}

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

/// Metric names in a PromQL expression (`switchboard_*`, `process_*`), with a histogram's
/// `_bucket`/`_sum`/`_count` series named by their family.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("switchboard_") || word.starts_with("process_") {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(&word);
            names.push(family.to_owned());
        }
        word.clear();
    }
    names
}

/// Every query of deploy/grafana/switchboard-dashboard.json uses only names a live server
/// exports (after a little traffic, so that histograms have samples), and the Prometheus
/// scrape config points at `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_exported_names() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/switchboard-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");

    let server = TestServer::start(Config::default()).await;
    let mut a = Client::connect(&server, "a").await;
    let mut b = Client::connect(&server, "b").await;
    a.join("room").await;
    b.join("room").await;
    a.expect_presence("room", "join", "b").await;
    a.publish("room", json!("hello")).await;
    b.expect_message("room", "a", &json!("hello")).await;
    let exported = scrape_until(server.addr(), |m| m.histogram_count(LATENCY) > 0)
        .await
        .names();
    let mut unknown = BTreeSet::new();
    for expr in &exprs {
        let names = names_in(expr);
        assert!(
            !names.is_empty(),
            "a query without a Switchboard metric: {expr}"
        );
        for name in names {
            // Other helpers' metrics (HTTP API, webhooks) appear once that code runs.
            let other =
                name.starts_with("switchboard_api_") || name.starts_with("switchboard_webhook_");
            if !other && !exported.contains(&name) {
                unknown.insert(name);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries names /metrics does not export: {unknown:?}"
    );

    let scrape_config = repo_file("deploy/prometheus/prometheus.yml");
    assert!(
        scrape_config.contains("metrics_path: /metrics"),
        "{scrape_config}"
    );
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

/// Through Redis, the sequencing stamp travels with the frame: a message published on node B
/// and delivered on node A is timed on A (the latency histogram moves only for stamped
/// frames), counted once per delivery, and the Redis round trips are timed by operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sequenced_through_redis_is_timed_where_it_is_delivered() {
    const MEMBERS: usize = 3;
    const PUBLISHES: usize = 10;
    let redis = RedisServer::start();
    let prefix = format!("sbmetrics:{}", std::process::id());
    let node_config = || {
        let mut config = unthrottled(Config::default());
        config.cluster.broker = redis.url();
        config.cluster.redis_prefix = prefix.clone();
        config
    };
    let a = TestServer::start(node_config()).await;
    let b = TestServer::start(node_config()).await;
    let before = scrape_until(a.addr(), |m| m.value("switchboard_broker_up", &[]) == 1.0).await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut member = Client::connect(&a, &format!("m{i}")).await;
        member.join("room").await;
        members.push(member);
    }
    let mut publisher = Client::connect(&b, "pub").await;
    publisher.join("room").await;
    for n in 0..PUBLISHES {
        publisher.publish("room", json!({"n": n})).await;
    }
    for member in &mut members {
        let mut seen = 0;
        while seen < PUBLISHES {
            if member.recv_json().await["type"] == "message" {
                seen += 1;
            }
        }
    }
    let expected = before.value(DELIVERIES, &[]) + (PUBLISHES * MEMBERS) as f64;
    let after = scrape_until(a.addr(), |m| m.value(DELIVERIES, &[]) >= expected).await;
    assert_eq!(
        after.value(DELIVERIES, &[]) - before.value(DELIVERIES, &[]),
        (PUBLISHES * MEMBERS) as f64
    );
    assert!(
        after.histogram_count(LATENCY) > before.histogram_count(LATENCY),
        "relayed frames carry their sequencing stamp"
    );
    assert!(
        after.histogram_count("switchboard_broker_command_duration_seconds")
            > before.histogram_count("switchboard_broker_command_duration_seconds"),
        "Redis round trips are timed"
    );
    publisher.close().await;
    for member in members {
        member.close().await;
    }
    b.shutdown().await;
    a.shutdown().await;
}
