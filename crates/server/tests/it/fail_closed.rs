// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Regression tests of issue 11's "fail closed" and Origin findings, over real sockets
//! against the real server: F4 (`rooms: null`), F15 (JWT `crit`, unbounded `exp`, auth
//! schemes, 401 wording), F9 (anonymous names beside a key), F14 (deceptive user names),
//! F11 (Origin scheme and `Host`: DNS rebinding), F16 (security headers on the demo page).
//! Each test is named for its finding. No sleeps: every answer is awaited with a timeout.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_server::Config;
use testkit::{
    SECRET, assert_serves, connect_with, hs256_config, sign_hs256, token, token_path, unix_now,
    upgrade, upgrade_with_host,
};
use testkit::{TestServer, http_get, members};

/// 401 with `WWW-Authenticate: Bearer` and exactly `body`.
async fn assert_401(server: &TestServer, path: &str, extra: &[(&str, &str)], body: &str) {
    let answer = upgrade(server.addr(), path, extra).await;
    assert_eq!(answer.status, 401, "{path} {extra:?}: {answer:?}");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    assert_eq!(answer.body, format!("{body}\n"), "{path} {extra:?}");
}

#[tokio::test]
async fn f4_rooms_null_is_refused() {
    let server = TestServer::start(hs256_config()).await;
    let exp = unix_now() + 60;
    for rooms in [json!(null), json!([]), json!("chat:*"), json!(7)] {
        let token = sign_hs256(
            SECRET.as_bytes(),
            &json!({"sub": "alice", "exp": exp, "rooms": rooms}),
        );
        assert_401(
            &server,
            &token_path(&token),
            &[],
            "invalid token: rooms must be a map of room pattern to a list of rights (or left out)",
        )
        .await;
    }
    // An empty map is a token with no rights (not every right): it connects, joins nothing.
    let empty = token("alice", 60, Some(json!({})));
    let mut alice = connect_with(server.addr(), &token_path(&empty), &[], "alice").await;
    alice
        .send_json(json!({"type": "join", "room": "chat:1", "id": 1}))
        .await;
    alice.expect_error("forbidden", Some(1)).await;
    assert_serves(server.addr(), &token_path(&token("probe", 60, None))).await;
}

#[tokio::test]
async fn f15_jwt_crit_unknown_exp_unbounded_and_schemes_fail_closed() {
    let server = TestServer::start(hs256_config()).await;
    let claims = json!({"sub": "alice", "exp": unix_now() + 60});
    // `crit` naming an extension this server does not understand (RFC 7515 4.1.11).
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["b64".to_owned()]);
    let crit = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_401(
        &server,
        &token_path(&crit),
        &[],
        "invalid token: unsupported critical header extension (crit)",
    )
    .await;
    // `exp` = 2^64-1 would never expire: refused beyond auth.max_token_lifetime (30 days).
    let forever = sign_hs256(SECRET.as_bytes(), &json!({"sub": "alice", "exp": u64::MAX}));
    assert_401(
        &server,
        &token_path(&forever),
        &[],
        "invalid token: exp is more than 30days away (this server's limit on token lifetime)",
    )
    .await;

    // Schemes are case-insensitive.
    let good = token("alice", 60, None);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} {good}");
        let mut client =
            connect_with(server.addr(), "/ws", &[("Authorization", &value)], scheme).await;
        assert_eq!(members(&client.join("r").await), ["alice"], "{scheme}");
    }
    // Another scheme is a 401, not a fall-through to the (valid) query token or cookie.
    let cookie = format!("switchboard_token={good}");
    for value in ["Basic YWxpY2U6c2VjcmV0", "Token abc"] {
        assert_401(
            &server,
            &token_path(&good),
            &[("Authorization", value), ("Cookie", &cookie)],
            "unsupported authorization scheme: send Authorization: Bearer TOKEN",
        )
        .await;
    }
    assert_401(
        &server,
        &token_path(&good),
        &[("Authorization", "Bearer ")],
        "invalid token: malformed Authorization header: no token after Bearer",
    )
    .await;
}

#[tokio::test]
async fn f15_401_bodies_say_what_is_wrong_in_words() {
    let server = TestServer::start(hs256_config()).await;
    let exp = unix_now() + 60;
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        ("not-a-jwt".to_owned(), "invalid token: malformed"),
        (
            sign_hs256(SECRET.as_bytes(), &json!({"sub": "alice"})),
            "invalid token: missing claim exp",
        ),
        (
            sign_hs256(
                b"another secret, long enough, 32+ bytes",
                &json!({"sub": "a", "exp": exp}),
            ),
            "invalid token: bad signature",
        ),
        (hs384, "invalid token: wrong algorithm"),
        (
            sign_hs256(SECRET.as_bytes(), &json!({"sub": ["a"], "exp": exp})),
            "invalid token: malformed claims (sub must be a string, exp a whole number of seconds)",
        ),
        (token("alice", -3600, None), "token expired"),
    ];
    for (token, body) in cases {
        // The signature check precedes the claims for the badly signed one.
        let answer = upgrade(server.addr(), &token_path(&token), &[]).await;
        assert_eq!(answer.status, 401, "{token}: {answer:?}");
        assert_eq!(answer.body, format!("{body}\n"), "{token}");
        for internal in ["Error", "Kind", "Json", "Base64", "line ", "column"] {
            assert!(!answer.body.contains(internal), "{:?}", answer.body);
        }
    }
}

#[tokio::test]
async fn f9_anonymous_users_beside_a_key_cannot_take_token_names() {
    let mut config = hs256_config();
    config.auth.anonymous = Some(true);
    let server = TestServer::start(config).await;
    let mut alice = connect_with(
        server.addr(),
        &token_path(&token("alice", 60, None)),
        &[],
        "alice",
    )
    .await;
    alice.join("room").await;
    // A guest asking to be "alice" is "guest-alice": no impersonation, no presence spoofing.
    let mut guest = testkit::Client::connect(&server, "alice").await;
    let mut seen = members(&guest.join("room").await);
    seen.sort();
    assert_eq!(seen, ["alice", "guest-alice"]);
    alice.expect_presence("room", "join", "guest-alice").await;
    // And a guest publishing with alice's next msg_id does not suppress alice's message.
    guest
        .send_json(
            json!({"type": "publish", "room": "room", "data": "fake", "msg_id": "m-1", "id": 1}),
        )
        .await;
    guest.expect("ack").await;
    alice
        .expect_message("room", "guest-alice", &json!("fake"))
        .await;
    alice
        .send_json(json!({"type": "publish", "room": "room", "data": "real", "msg_id": "m-1", "id": 2, "echo": true}))
        .await;
    let mut got_real = false;
    for _ in 0..2 {
        let value: Value = alice.recv_json().await;
        if value["type"] == "message" {
            assert_eq!(value["from"], "alice");
            assert_eq!(value["data"], "real");
            got_real = true;
        }
    }
    assert!(got_real, "alice's own message was delivered");
    // A token may not use the guests' namespace.
    assert_401(
        &server,
        &token_path(&token("guest-bob", 60, None)),
        &[],
        "invalid token: sub starts with \"guest-\", the prefix reserved for anonymous users",
    )
    .await;
}

#[tokio::test]
async fn f14_user_names_with_bidi_zero_width_or_separators_are_refused() {
    let server = TestServer::default_config().await;
    // U+202E (right-to-left override), U+200B (zero-width space), U+2028 (line separator),
    // percent-encoded in the query.
    for (encoded, label) in [
        ("alice%E2%80%AE", "U+202E"),
        ("al%E2%80%8Bice", "U+200B"),
        ("alice%E2%80%A8", "U+2028"),
        ("%E2%81%A6alice", "U+2066"),
    ] {
        let answer = upgrade(server.addr(), &format!("/ws?user={encoded}"), &[]).await;
        assert_eq!(answer.status, 400, "{label}: {answer:?}");
        assert!(
            answer
                .body
                .starts_with("invalid user name: contains the character"),
            "{label}: {:?}",
            answer.body
        );
    }
    // And in a token's `sub`: 401.
    let server = TestServer::start(hs256_config()).await;
    let answer = upgrade(
        server.addr(),
        &token_path(&token("alice\u{202e}", 60, None)),
        &[],
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_serves(server.addr(), &token_path(&token("Zoë", 60, None))).await;
}

#[tokio::test]
async fn f11_origin_scheme_and_host_dns_rebinding_are_refused() {
    let server = TestServer::default_config().await;
    let addr = server.addr();
    let port = addr.port();
    // DNS rebinding: evil.example now resolves to 127.0.0.1; the browser believes the page
    // and the WebSocket are same-origin.
    let rebound = format!("evil.example:{port}");
    let answer = upgrade_with_host(
        addr,
        "/ws?user=alice",
        &rebound,
        &[("Origin", &format!("http://{rebound}"))],
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(
        answer.body,
        "host not allowed: browser pages must reach this server by one of its names (setting server_names)\n"
    );
    // The scheme is part of the origin: an https page is not this plain-http server.
    let answer = upgrade(
        addr,
        "/ws?user=alice",
        &[("Origin", &format!("https://{addr}"))],
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.body, "origin not allowed\n");
    // Loopback names and clients without Origin keep working.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let answer = upgrade_with_host(
            addr,
            "/ws?user=alice",
            &host,
            &[("Origin", &format!("http://{host}"))],
        )
        .await;
        assert_eq!(answer.status, 101, "{host}: {answer:?}");
    }
    let answer = upgrade_with_host(addr, "/ws?user=alice", &rebound, &[]).await;
    assert_eq!(answer.status, 101, "no Origin, no Host check: {answer:?}");

    // A configured name replaces the loopback defaults; behind a trusted proxy that
    // terminates TLS, X-Forwarded-Proto gives the scheme.
    let server = TestServer::start(Config {
        server_names: vec!["chat.example.com".to_owned()],
        trusted_proxies: vec!["127.0.0.1".to_owned()],
        ..Config::default()
    })
    .await;
    let https_page = [
        ("Origin", "https://chat.example.com"),
        ("X-Forwarded-Proto", "https"),
    ];
    let answer =
        upgrade_with_host(server.addr(), "/ws?user=a", "chat.example.com", &https_page).await;
    assert_eq!(answer.status, 101, "{answer:?}");
    let answer = upgrade_with_host(
        server.addr(),
        "/ws?user=a",
        "chat.example.com",
        &[("Origin", "https://chat.example.com")],
    )
    .await;
    assert_eq!(
        answer.status, 403,
        "no X-Forwarded-Proto: the hop was http: {answer:?}"
    );
    let loopback = server.addr().to_string();
    let answer = upgrade_with_host(
        server.addr(),
        "/ws?user=a",
        &loopback,
        &[("Origin", &format!("http://{loopback}"))],
    )
    .await;
    assert_eq!(
        answer.status, 403,
        "not one of the configured names: {answer:?}"
    );
}

#[tokio::test]
async fn f16_demo_pages_carry_security_headers() {
    let server = TestServer::default_config().await;
    for path in ["/", "/app.js", "/style.css", "/healthz", "/no-such-page"] {
        let response = http_get(server.addr(), path, &[]).await;
        if path != "/no-such-page" {
            assert_eq!(response.status, 200, "{path}");
        }
        let csp = response
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP in {:?}", response.headers));
        for directive in [
            "default-src 'self'",
            "connect-src 'self' ws: wss:",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            response.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(response.header("x-frame-options"), Some("DENY"), "{path}");
    }
    // The 101 of an upgrade is not touched.
    let answer = upgrade(server.addr(), "/ws?user=a", &[]).await;
    assert_eq!(answer.status, 101);
    assert_eq!(answer.header("content-security-policy"), None);
}
