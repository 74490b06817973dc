// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The HTTP API on one node (docs/http-api.md): publish and broadcast reach WebSocket members
//! like a member's publish, reads answer what `/ws` would, keys and scopes, every error
//! status, disconnect with a deny list, and the OpenAPI document. Multi-node behaviour is in
//! the `api_cluster` module.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::{ApiConfig, ApiKeyConfig, ApiScope};
use testkit::{Client, TestServer, read_head, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "test-key-0123456789abcdef";
const READER: &str = "reader-key-0123456789";

/// A response of the API.
#[derive(Debug)]
struct ApiResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl ApiResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer.
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// Sends one request (`Connection: close`) and reads the answer; the body is JSON (or null).
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
    extra: &[(&str, &str)],
) -> ApiResponse {
    let fut = async {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            server.addr()
        );
        if let Some(key) = key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        stream.write_all(head.as_bytes()).await.unwrap();
        // A refused body may be left unread by the server: a reset then is fine.
        let _ = stream.write_all(body).await;
        let (status, headers) = read_head(&mut stream).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        let body = serde_json::from_slice(&rest).unwrap_or(Value::Null);
        ApiResponse {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
}

async fn post(server: &TestServer, path: &str, body: Value) -> ApiResponse {
    call(
        server,
        "POST",
        path,
        Some(KEY),
        Some(body.to_string().as_bytes()),
        &[],
    )
    .await
}

async fn get(server: &TestServer, path: &str) -> ApiResponse {
    call(server, "GET", path, Some(KEY), None, &[]).await
}

fn api_config() -> Config {
    Config {
        api: ApiConfig {
            key: Some(KEY.to_owned()),
            keys: vec![ApiKeyConfig {
                name: "dashboard".into(),
                key: Some(READER.into()),
                sha256: None,
                scopes: vec![ApiScope::Read],
            }],
            ..ApiConfig::default()
        },
        ..Config::default()
    }
}

#[tokio::test]
async fn without_a_key_the_api_is_not_there() {
    let server = TestServer::default_config().await;
    let response = post(&server, "/api/v1/publish", json!({"room": "r", "data": 1})).await;
    assert_eq!(response.status, 404);
    assert_eq!(get(&server, "/api/v1/openapi.json").await.status, 404);
}

#[tokio::test]
async fn a_published_message_reaches_members_in_order_and_is_kept_in_history() {
    let server = TestServer::start(api_config()).await;
    let mut sub = Client::connect(&server, "sub").await;
    let joined = sub.join("news").await;
    for n in 1..=3 {
        let response = post(
            &server,
            "/api/v1/publish",
            json!({"room": "news", "data": {"n": n}}),
        )
        .await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body["seq"], n);
        assert_eq!(response.body["epoch"], joined["epoch"]);
        assert_eq!(response.body["duplicate"], false);
        assert_eq!(sub.expect_message("news", "api", &json!({"n": n})).await, n);
    }
    // Binary, and another sender name.
    let response = post(
        &server,
        "/api/v1/publish",
        json!({"room": "news", "data_base64": "AAEC", "from": "orders"}),
    )
    .await;
    assert_eq!((response.status, &response.body["seq"]), (200, &json!(4)));
    let frame = sub.expect_binary().await;
    assert!(frame.ends_with(&[0, 1, 2]), "{frame:?}");
    // A room without members keeps the message for later joiners (history).
    let response = post(
        &server,
        "/api/v1/publish",
        json!({"room": "empty", "data": "x"}),
    )
    .await;
    assert_eq!((response.status, &response.body["seq"]), (200, &json!(1)));

    let history = get(&server, "/api/v1/rooms/news/history?since=1").await;
    assert_eq!(history.status, 200, "{history:?}");
    assert_eq!(history.body["seq"], 4);
    assert_eq!(history.body["complete"], true);
    let seqs: Vec<u64> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(history.body["messages"][2]["binary"], "AAEC");
    assert_eq!(history.body["messages"][2]["from"], "orders");
    let latest = get(&server, "/api/v1/rooms/news/history?limit=1").await;
    assert_eq!(latest.body["messages"][0]["seq"], 4);

    let presence = get(&server, "/api/v1/rooms/news/presence").await;
    assert_eq!(presence.status, 200);
    assert_eq!(
        (&presence.body["members"], &presence.body["member_count"]),
        (&json!(["sub"]), &json!(1))
    );
    let rooms = get(&server, "/api/v1/rooms").await;
    assert_eq!(
        rooms.body["rooms"],
        json!([{"room": "empty", "member_count": 0}, {"room": "news", "member_count": 1}])
    );
    let page = get(&server, "/api/v1/rooms?prefix=n&limit=1").await;
    assert_eq!(
        page.body["rooms"],
        json!([{"room": "news", "member_count": 1}])
    );
    let reader = call(
        &server,
        "GET",
        "/api/v1/rooms?limit=1",
        Some(READER),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (reader.status, &reader.body["next"]),
        (200, &json!("empty")),
        "a read-only key reads; pages go on after `next`"
    );
}

#[tokio::test]
async fn broadcast_publishes_to_each_room_with_its_own_seq() {
    let server = TestServer::start(api_config()).await;
    let mut a = Client::connect(&server, "a").await;
    a.join("a").await;
    let response = post(
        &server,
        "/api/v1/broadcast",
        json!({"rooms": ["a", "b", "bad room"], "data": "hi", "msg_id": "b1"}),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let results = response.body["results"].as_array().unwrap();
    assert_eq!(
        (&results[0]["room"], &results[0]["seq"]),
        (&json!("a"), &json!(1))
    );
    assert_eq!(results[1]["seq"], 1);
    assert_eq!(results[2]["error"]["code"], "invalid_room");
    a.expect_message("a", "api", &json!("hi")).await;
    let again = post(
        &server,
        "/api/v1/broadcast",
        json!({"rooms": ["a"], "data": "hi", "msg_id": "b1"}),
    )
    .await;
    assert_eq!(again.body["results"][0]["duplicate"], true);
    a.assert_silent(100).await;
}

/// `switchboard_messages_published_total{source="api"}`, read off `GET /metrics`.
async fn api_publishes_counted(server: &TestServer) -> u64 {
    let response = testkit::http_get(server.addr(), "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(r#"switchboard_messages_published_total{source="api"} "#)
        })
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Each room a publish or broadcast sequences counts once under `source="api"`; a duplicate
/// `msg_id` does not count (it was not delivered again), nor does a refused room.
#[tokio::test]
async fn api_publishes_are_counted_under_source_api() {
    let server = TestServer::start(api_config()).await;
    let before = api_publishes_counted(&server).await;
    let body = json!({"room": "r", "data": 1, "msg_id": "m1"});
    assert_eq!(
        post(&server, "/api/v1/publish", body.clone()).await.status,
        200
    );
    let again = post(&server, "/api/v1/publish", body).await;
    assert_eq!(again.body["duplicate"], true, "{again:?}");
    let broadcast = post(
        &server,
        "/api/v1/broadcast",
        json!({"rooms": ["a", "b", "bad room"], "data": "hi"}),
    )
    .await;
    assert_eq!(broadcast.status, 200, "{broadcast:?}");
    assert_eq!(api_publishes_counted(&server).await - before, 3);
}

/// Protocol §5.9: the pair (user, msg_id) is one message, whether it came over HTTP or a
/// WebSocket; `Idempotency-Key` is the header spelling of `msg_id`.
#[tokio::test]
async fn a_msg_id_published_through_the_api_and_retried_over_a_websocket_counts_once() {
    let server = TestServer::start(api_config()).await;
    let mut sub = Client::connect(&server, "sub").await;
    sub.join("r").await;
    let first = call(
        &server,
        "POST",
        "/api/v1/publish",
        Some(KEY),
        Some(
            json!({"room": "r", "data": 1, "from": "backend"})
                .to_string()
                .as_bytes(),
        ),
        &[("Idempotency-Key", "order-7")],
    )
    .await;
    assert_eq!(
        (first.status, &first.body["duplicate"]),
        (200, &json!(false))
    );
    let again = post(
        &server,
        "/api/v1/publish",
        json!({"room": "r", "data": 1, "from": "backend", "msg_id": "order-7"}),
    )
    .await;
    assert_eq!(
        (&again.body["seq"], &again.body["duplicate"]),
        (&json!(1), &json!(true))
    );
    let mut backend = Client::connect(&server, "backend").await;
    backend.join("r").await;
    backend
        .send_json(json!({"type": "publish", "room": "r", "data": 1, "id": 9, "msg_id": "order-7"}))
        .await;
    let ack = backend.expect("ack").await;
    assert_eq!((&ack["seq"], &ack["duplicate"]), (&json!(1), &json!(true)));
    sub.expect_message("r", "backend", &json!(1)).await;
    sub.sync().await;
    let history = get(&server, "/api/v1/rooms/r/history").await;
    assert_eq!(history.body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_error_has_its_status_and_a_json_body() {
    let mut config = api_config();
    config.api.max_body_bytes = 2048;
    config.max_message_size = 1024;
    config.outbox_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    let publish = |body: Value| post(&server, "/api/v1/publish", body);

    let cases: Vec<(ApiResponse, u16, &str)> = vec![
        (
            call(&server, "POST", "/api/v1/publish", None, Some(b"{}"), &[]).await,
            401,
            "unauthorized",
        ),
        (
            call(
                &server,
                "POST",
                "/api/v1/publish",
                Some("wrong-key-0123456789"),
                Some(b"{}"),
                &[],
            )
            .await,
            401,
            "unauthorized",
        ),
        (
            call(
                &server,
                "POST",
                "/api/v1/publish",
                Some(READER),
                Some(b"{}"),
                &[],
            )
            .await,
            403,
            "forbidden",
        ),
        (publish(json!({"room": "r"})).await, 400, "bad_request"),
        (
            publish(json!({"room": "r", "data": 1, "data_base64": "AA=="})).await,
            400,
            "bad_request",
        ),
        (
            publish(json!({"room": "r", "data": 1, "extra": 1})).await,
            400,
            "bad_request",
        ),
        (
            publish(json!({"room": "r r", "data": 1})).await,
            400,
            "invalid_room",
        ),
        (
            publish(json!({"room": "r", "data": 1, "from": ""})).await,
            400,
            "invalid_user",
        ),
        (
            publish(json!({"room": "r", "data_base64": "!!"})).await,
            400,
            "bad_request",
        ),
        (
            publish(json!({"room": "r", "data": 1, "msg_id": "x".repeat(65)})).await,
            400,
            "bad_request",
        ),
        (
            publish(json!({"room": "r", "data": "x".repeat(1100)})).await,
            413,
            "payload_too_large",
        ),
        (
            publish(json!({"room": "r", "data": "x".repeat(4000)})).await,
            413,
            "payload_too_large",
        ),
        (
            call(
                &server,
                "POST",
                "/api/v1/publish",
                Some(KEY),
                Some(b"{not json"),
                &[],
            )
            .await,
            400,
            "bad_request",
        ),
        (
            get(&server, "/api/v1/rooms/r%20r/history").await,
            400,
            "invalid_room",
        ),
        (
            get(&server, "/api/v1/rooms/r/history?limit=0").await,
            400,
            "bad_request",
        ),
        (
            get(&server, "/api/v1/rooms/r/history?since=x").await,
            400,
            "bad_request",
        ),
        (
            get(&server, "/api/v1/rooms?prefix=*").await,
            400,
            "invalid_room",
        ),
        (get(&server, "/api/v1/nothing").await, 404, "not_found"),
        (
            post(
                &server,
                "/api/v1/users/alice/disconnect",
                json!({"code": 3000}),
            )
            .await,
            400,
            "bad_request",
        ),
        (
            post(
                &server,
                "/api/v1/users/alice/disconnect",
                json!({"revoke_for": 999_999_999}),
            )
            .await,
            400,
            "bad_request",
        ),
        (
            call(
                &server,
                "POST",
                "/api/v1/users/alice/disconnect",
                Some(READER),
                None,
                &[],
            )
            .await,
            403,
            "forbidden",
        ),
    ];
    for (n, (response, status, code)) in cases.iter().enumerate() {
        assert_eq!(
            (response.status, response.code()),
            (*status, *code),
            "case {n}: {response:?}"
        );
        assert!(
            response.body["error"]["message"].is_string(),
            "case {n}: {response:?}"
        );
        assert_eq!(response.header("content-type"), Some("application/json"));
    }
    assert_eq!(cases[0].0.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn each_key_has_its_own_rate_limit() {
    let mut config = api_config();
    config.api.requests_per_second = 1;
    config.api.burst = 2;
    let server = TestServer::start(config).await;
    for _ in 0..2 {
        assert_eq!(get(&server, "/api/v1/rooms").await.status, 200);
    }
    let limited = get(&server, "/api/v1/rooms").await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    assert_eq!(limited.header("retry-after"), Some("1"));
    let other = call(&server, "GET", "/api/v1/rooms", Some(READER), None, &[]).await;
    assert_eq!(other.status, 200, "another key is not limited by this one");
}

#[tokio::test]
async fn disconnect_closes_the_users_connections_and_the_deny_list_keeps_them_out() {
    let server = TestServer::start(api_config()).await;
    let mut alice = Client::connect(&server, "alice").await;
    alice.join("r").await;
    let mut alice2 = Client::connect(&server, "alice").await;
    let mut bob = Client::connect(&server, "bob").await;
    let response = post(
        &server,
        "/api/v1/users/alice/disconnect",
        json!({"reason": "banned", "revoke_for": 60}),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let until = response.body["denied_until"].as_u64().unwrap();
    assert!(until > testkit::now_millis() + 50_000);
    assert_eq!(alice.expect_close().await, (4003, "banned".to_owned()));
    assert_eq!(alice2.expect_close().await.0, 4003);
    let refused = ws_connect(server.addr(), &server.url("/ws?user=alice")).await;
    let Err(tokio_websockets::Error::Upgrade(err)) = refused else {
        panic!("a denied user must be refused at the upgrade: {refused:?}");
    };
    assert!(err.to_string().contains("403"), "{err}");
    bob.sync().await;

    // Without revoke_for: closed, and free to come back.
    let response = post(
        &server,
        "/api/v1/users/bob/disconnect",
        json!({"code": 1000}),
    )
    .await;
    assert!(response.body.get("denied_until").is_none(), "{response:?}");
    assert_eq!(bob.expect_close().await.0, 1000);
    Client::connect(&server, "bob").await.sync().await;
    // An empty body is fine; a user with no connections is not an error.
    let response = call(
        &server,
        "POST",
        "/api/v1/users/nobody/disconnect",
        Some(KEY),
        None,
        &[],
    )
    .await;
    assert_eq!(response.status, 200);
}

/// The document is generated from the handlers (utoipa), so it cannot list a route that does
/// not exist: every documented operation is answered by its route (401 without a key, not
/// 404/405), and every route of `http::api::routes` is documented.
#[tokio::test]
async fn the_openapi_document_is_3_1_and_matches_the_routes() {
    let server = TestServer::start(api_config()).await;
    let response = call(&server, "GET", "/api/v1/openapi.json", None, None, &[]).await;
    assert_eq!(response.status, 200, "served without a key");
    let doc = response.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        vec![
            "GET /api/v1/openapi.json",
            "GET /api/v1/rooms",
            "GET /api/v1/rooms/{room}/history",
            "GET /api/v1/rooms/{room}/presence",
            "POST /api/v1/broadcast",
            "POST /api/v1/publish",
            "POST /api/v1/users/{user}/disconnect",
        ]
    );
    for operation in &operations {
        let (method, path) = operation.split_once(' ').unwrap();
        let path = path.replace("{room}", "r").replace("{user}", "u");
        let answer = call(&server, method, &path, None, Some(b"{}"), &[]).await;
        let expected = if path.ends_with("openapi.json") {
            200
        } else {
            401
        };
        assert_eq!(answer.status, expected, "{operation}: {answer:?}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "PublishBody",
        "PublishResult",
        "ErrorBody",
        "HistoryResult",
        "HistoryMessage",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
