// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Hardening over real sockets: the controls of docs/security.md — authentication at the
//! upgrade, refresh and expiry, room rights, the Origin check, rate/room/connection limits,
//! malformed input at the framing and JSON level, and TLS. The backpressure test at scale runs
//! the real binary and lives in crates/cli/tests/backpressure.rs; the cross-origin test in a
//! real browser in web/tests/origin.test.mjs.
//!
//! Synchronisation: no sleeps. Replies, closes and EOFs are awaited with timeouts. The only
//! time windows: silence checks (nothing arrives while a deadline passes: the old expiry after
//! a refresh, the first 300 ms of a connection within the leeway), lower bounds on the
//! handshake timeouts, the paced writes of a slowloris client, and one bounded retry loop for
//! a server-side effect no frame reports (a freed connection slot).

mod security_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use security_support::{
    SECRET, TempDir, assert_serves, connect_with, exp_of, hs256_config, p256_key_pair, read_head,
    read_until_close, rsa_key_pair, sign_hs256, sign_with_pem, token, token_path, unix_now,
    upgrade, upgrade_with_host,
};
use serde_json::{Value, json};
use support::{
    Client, RECV_TIMEOUT, TestServer, masked_fragment, masked_frame, members, opcode,
    read_to_end_within, unthrottled,
};
use switchboard_protocol::binary::encode_client;
use switchboard_server::Config;
use switchboard_server::config::AuthConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_websockets::Message;

// =============================================================================================
// Authentication at the upgrade
// =============================================================================================

/// Connects with `?token=` and returns the client.
async fn connect_token(server: &TestServer, token: &str, name: &str) -> Client {
    Client::connect_path(server, &token_path(token), name).await
}

/// Joins a fresh room and returns its members: whom the server thinks this connection is.
async fn whoami(client: &mut Client, room: &str) -> Vec<String> {
    members(&client.join(room).await)
}

#[tokio::test]
async fn without_a_token_the_upgrade_is_401_with_www_authenticate() {
    let server = TestServer::start(hs256_config()).await;
    for path in ["/ws", "/ws?token=", "/ws?user=alice"] {
        let answer = upgrade(server.addr(), path, &[]).await;
        assert_eq!(answer.status, 401, "{path}: {answer:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{path}");
        assert!(
            answer.body.starts_with("authentication required"),
            "{path}: {:?}",
            answer.body
        );
    }
    assert_serves(server.addr(), &token_path(&token("probe", 60, None))).await;
}

#[tokio::test]
async fn a_badly_signed_token_is_401_bad_signature() {
    let server = TestServer::start(hs256_config()).await;
    let exp = unix_now() + 60;
    let forged = sign_hs256(
        b"not the server's secret, but long enough",
        &json!({"sub": "alice", "exp": exp}),
    );
    let answer = upgrade(server.addr(), &token_path(&forged), &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    assert_eq!(answer.body, "invalid token: bad signature\n");

    // A token with its payload swapped (sub changed) keeps a signature that no longer fits.
    let genuine = token("alice", 60, None);
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mallory = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"sub": "mallory", "exp": exp}).to_string())
    };
    parts[1] = &mallory;
    let tampered = parts.join(".");
    let answer = upgrade(server.addr(), &token_path(&tampered), &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer.body.starts_with("invalid token"),
        "{:?}",
        answer.body
    );

    for garbage in ["not-a-jwt", "a.b.c"] {
        let answer = upgrade(server.addr(), &token_path(garbage), &[]).await;
        assert_eq!(answer.status, 401, "{garbage}: {answer:?}");
        assert!(
            answer.body.starts_with("invalid token"),
            "{:?}",
            answer.body
        );
    }
    assert_serves(server.addr(), &token_path(&genuine)).await;
}

#[tokio::test]
async fn an_expired_token_is_401_token_expired() {
    let server = TestServer::start(hs256_config()).await;
    // Well past the default leeway of 5 s.
    let expired = token("alice", -3600, None);
    let answer = upgrade(server.addr(), &token_path(&expired), &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    assert_eq!(answer.body, "token expired\n");
    assert_serves(server.addr(), &token_path(&token("probe", 60, None))).await;
}

#[tokio::test]
async fn tokens_with_unusable_claims_are_401() {
    let server = TestServer::start(hs256_config()).await;
    let exp = unix_now() + 60;
    let cases = [
        ("no sub", json!({"exp": exp})),
        ("no exp", json!({"sub": "alice"})),
        (
            "a sub with a control character",
            json!({"sub": "a\nb", "exp": exp}),
        ),
        (
            "a sub over 64 bytes",
            json!({"sub": "a".repeat(65), "exp": exp}),
        ),
        (
            "an unknown right",
            json!({"sub": "alice", "exp": exp, "rooms": {"chat:*": ["fly"]}}),
        ),
        (
            "rooms that are not a map",
            json!({"sub": "alice", "exp": exp, "rooms": ["chat:*"]}),
        ),
    ];
    for (what, claims) in cases {
        let token = sign_hs256(SECRET.as_bytes(), &claims);
        let answer = upgrade(server.addr(), &token_path(&token), &[]).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{what}");
        assert!(
            answer.body.starts_with("invalid token"),
            "{what}: {:?}",
            answer.body
        );
    }
    assert_serves(server.addr(), &token_path(&token("probe", 60, None))).await;
}

#[tokio::test]
async fn a_bad_sub_is_401_even_when_anonymous_access_is_also_on() {
    // docs/protocol.md 2.5: a token whose `sub` breaks the user-name rules is an unusable
    // token (401), whatever the anonymous setting; 400 is for a bad `?user=`.
    let mut config = hs256_config();
    config.auth.anonymous = Some(true);
    let server = TestServer::start(config).await;
    let token = sign_hs256(
        SECRET.as_bytes(),
        &json!({"sub": "a\nb", "exp": unix_now() + 60}),
    );
    let answer = upgrade(server.addr(), &token_path(&token), &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
}

#[tokio::test]
async fn a_token_sent_to_a_server_without_a_key_is_401() {
    let server = TestServer::default_config().await;
    let answer = upgrade(server.addr(), &token_path(&token("alice", 60, None)), &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    // Anonymous access is unaffected.
    assert_serves(server.addr(), "/ws?user=probe").await;
}

#[tokio::test]
async fn a_repeated_token_or_user_parameter_is_400() {
    let server = TestServer::start(hs256_config()).await;
    let (alice, bob) = (token("alice", 60, None), token("bob", 60, None));
    for path in [
        format!("/ws?token={alice}&token={bob}"),
        format!("/ws?token={alice}&user=a&user=b"),
    ] {
        let answer = upgrade(server.addr(), &path, &[]).await;
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
    }
}

#[tokio::test]
async fn the_token_is_accepted_in_an_authorization_bearer_header() {
    let server = TestServer::start(hs256_config()).await;
    let bearer = format!("Bearer {}", token("alice", 60, None));
    let mut alice =
        connect_with(server.addr(), "/ws", &[("Authorization", &bearer)], "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice"]);
}

#[tokio::test]
async fn the_token_is_accepted_in_the_token_query_parameter() {
    let server = TestServer::start(hs256_config()).await;
    let mut alice = connect_token(&server, &token("alice", 60, None), "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice"]);
}

#[tokio::test]
async fn the_token_is_accepted_in_the_default_cookie() {
    let server = TestServer::start(hs256_config()).await;
    let cookie = format!(
        "theme=dark; switchboard_token={}; other=1",
        token("alice", 60, None)
    );
    let mut alice = connect_with(server.addr(), "/ws", &[("Cookie", &cookie)], "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice"]);
}

#[tokio::test]
async fn the_token_is_accepted_in_a_custom_cookie_and_only_there() {
    let mut config = hs256_config();
    config.auth.cookie = "sb_auth".to_owned();
    let server = TestServer::start(config).await;
    let token = token("alice", 60, None);
    let cookie = format!("sb_auth={token}");
    let mut alice = connect_with(server.addr(), "/ws", &[("Cookie", &cookie)], "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice"]);

    // The default name is not read any more.
    let default_name = format!("switchboard_token={token}");
    let answer = upgrade(server.addr(), "/ws", &[("Cookie", &default_name)]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
}

#[tokio::test]
async fn token_sources_are_read_in_the_order_bearer_query_cookie() {
    let server = TestServer::start(hs256_config()).await;
    let (alice, bob, carol) = (
        token("alice", 60, None),
        token("bob", 60, None),
        token("carol", 60, None),
    );
    let bearer = format!("Bearer {alice}");
    let cookie = format!("switchboard_token={carol}");
    let mut first = connect_with(
        server.addr(),
        &token_path(&bob),
        &[("Authorization", &bearer), ("Cookie", &cookie)],
        "bearer-wins",
    )
    .await;
    assert_eq!(whoami(&mut first, "room-1").await, ["alice"]);
    let mut second = connect_with(
        server.addr(),
        &token_path(&bob),
        &[("Cookie", &cookie)],
        "query-wins",
    )
    .await;
    assert_eq!(whoami(&mut second, "room-2").await, ["bob"]);

    // An empty `?token=` counts as no token, and the cookie after it is not looked at.
    let answer = upgrade(server.addr(), "/ws?token=", &[("Cookie", &cookie)]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer.body.starts_with("authentication required"),
        "{:?}",
        answer.body
    );

    // The first source found is the one verified: a bad Bearer is not rescued by a good query.
    let answer = upgrade(
        server.addr(),
        &token_path(&bob),
        &[("Authorization", "Bearer forged.token.here")],
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
}

#[tokio::test]
async fn sub_is_the_user_name_and_the_user_parameter_is_ignored() {
    let server = TestServer::start(hs256_config()).await;
    let mut watcher = connect_token(&server, &token("watcher", 60, None), "watcher").await;
    watcher.join("room").await;
    let path = format!("/ws?user=mallory&token={}", token("alice", 60, None));
    let mut alice = Client::connect_path(&server, &path, "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice", "watcher"]);
    watcher.expect_presence("room", "join", "alice").await;
    alice.publish("room", json!("hi")).await;
    watcher.expect_message("room", "alice", &json!("hi")).await;
}

#[tokio::test]
async fn anonymous_access_is_off_once_a_secret_is_set() {
    let server = TestServer::start(hs256_config()).await;
    let answer = upgrade(server.addr(), "/ws?user=bob", &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.body.starts_with("authentication required"));
}

#[tokio::test]
async fn anonymous_access_can_be_turned_on_beside_a_secret() {
    let mut config = hs256_config();
    config.auth.anonymous = Some(true);
    let server = TestServer::start(config).await;
    let mut bob = Client::connect(&server, "bob").await;
    // Beside a key, anonymous names carry the anonymous prefix (F9).
    assert_eq!(whoami(&mut bob, "room").await, ["guest-bob"]);
    let mut alice = connect_token(&server, &token("alice", 60, None), "alice").await;
    assert_eq!(whoami(&mut alice, "room-a").await, ["alice"]);
    // A token that is present is still verified: a bad one is not downgraded to anonymous.
    let forged = sign_hs256(
        b"not the server's secret, but long enough",
        &json!({"sub": "alice", "exp": unix_now() + 60}),
    );
    let answer = upgrade(server.addr(), &format!("/ws?user=bob&token={forged}"), &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
}

/// A server verifying with the public key PEM `public_pem`.
async fn public_key_server(dir: &TempDir, public_pem: &str) -> TestServer {
    let path = dir.write("public.pem", public_pem);
    TestServer::start(Config {
        auth: AuthConfig {
            public_key_file: Some(path),
            ..AuthConfig::default()
        },
        ..Config::default()
    })
    .await
}

/// An unsigned token (`alg: none`).
fn alg_none_token(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

#[tokio::test]
async fn rs256_tokens_are_verified_with_an_rsa_public_key_file() {
    let dir = TempDir::new("rs256");
    let (private_pem, public_pem) = rsa_key_pair();
    let server = public_key_server(&dir, &public_pem).await;
    let claims = json!({"sub": "alice", "exp": unix_now() + 60});

    let good = sign_with_pem(Algorithm::RS256, &private_pem, &claims);
    let mut alice = connect_token(&server, &good, "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice"]);

    let (other_private, _) = rsa_key_pair();
    let refused = [
        (
            "another RSA key",
            sign_with_pem(Algorithm::RS256, &other_private, &claims),
        ),
        // Algorithm confusion: HS256 keyed with the public key the server holds.
        (
            "HS256 keyed with the public key",
            sign_hs256(public_pem.as_bytes(), &claims),
        ),
        ("alg none", alg_none_token(&claims)),
        ("an HS256 token", sign_hs256(SECRET.as_bytes(), &claims)),
    ];
    for (what, token) in refused {
        let answer = upgrade(server.addr(), &token_path(&token), &[]).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert!(
            answer.body.starts_with("invalid token"),
            "{what}: {:?}",
            answer.body
        );
    }
    // With a key configured anonymous access is off.
    assert_eq!(
        upgrade(server.addr(), "/ws?user=bob", &[]).await.status,
        401
    );
}

#[tokio::test]
async fn es256_tokens_are_verified_with_a_p256_public_key_file() {
    let dir = TempDir::new("es256");
    let (private_pem, public_pem) = p256_key_pair();
    let server = public_key_server(&dir, &public_pem).await;
    let claims = json!({"sub": "alice", "exp": unix_now() + 60});

    let good = sign_with_pem(Algorithm::ES256, &private_pem, &claims);
    let mut alice = connect_token(&server, &good, "alice").await;
    assert_eq!(whoami(&mut alice, "room").await, ["alice"]);

    let (other_private, _) = p256_key_pair();
    let (rsa_private, _) = rsa_key_pair();
    let refused = [
        (
            "another P-256 key",
            sign_with_pem(Algorithm::ES256, &other_private, &claims),
        ),
        (
            "an RS256 token",
            sign_with_pem(Algorithm::RS256, &rsa_private, &claims),
        ),
        (
            "HS256 keyed with the public key",
            sign_hs256(public_pem.as_bytes(), &claims),
        ),
        ("alg none", alg_none_token(&claims)),
    ];
    for (what, token) in refused {
        let answer = upgrade(server.addr(), &token_path(&token), &[]).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert!(
            answer.body.starts_with("invalid token"),
            "{what}: {:?}",
            answer.body
        );
    }
}

// =============================================================================================
// Refresh and expiry during the connection
// =============================================================================================

/// An HS256 server with no clock-skew leeway, so expiry is exactly at `exp`.
fn no_leeway() -> Config {
    let mut config = hs256_config();
    config.auth.leeway = Duration::ZERO;
    config
}

/// Milliseconds from now until `exp` (seconds since the epoch) plus `extra_ms`.
fn ms_until(exp: u64, extra_ms: u64) -> u64 {
    (exp * 1000 + extra_ms).saturating_sub(support::now_millis())
}

#[tokio::test]
async fn refresh_for_the_same_sub_is_refreshed_and_outlives_the_old_expiry() {
    let server = TestServer::start(no_leeway()).await;
    let first = token("alice", 2, None);
    let old_exp = exp_of(&first);
    let mut alice = connect_token(&server, &first, "alice").await;
    alice.join("room").await;

    let second = token("alice", 3600, None);
    alice
        .send_json(json!({"type": "refresh", "token": second, "id": 7}))
        .await;
    let refreshed = alice.expect("refreshed").await;
    assert_eq!(refreshed["id"], 7, "{refreshed}");
    assert_eq!(refreshed["exp"], exp_of(&second), "{refreshed}");

    // Past the old expiry (plus a second for rounding), nothing arrives: no 4001.
    alice.assert_silent(ms_until(old_exp, 1000)).await;
    alice.sync().await;
    alice.publish("room", json!("still here")).await;
}

#[tokio::test]
async fn refresh_replaces_the_rights_for_later_requests() {
    let server = TestServer::start(hs256_config()).await;
    let mut alice = connect_token(&server, &token("alice", 60, None), "alice").await;
    alice.join("chat:x").await;
    alice.publish("chat:x", json!(1)).await;
    let narrower = token("alice", 60, Some(json!({"chat:*": ["join"]})));
    alice
        .send_json(json!({"type": "refresh", "token": narrower, "id": 1}))
        .await;
    alice.expect("refreshed").await;
    alice
        .send_json(json!({"type": "publish", "room": "chat:x", "data": 2, "id": 2}))
        .await;
    alice.expect_error("forbidden", Some(2)).await;
    alice
        .send_json(json!({"type": "join", "room": "other", "id": 3}))
        .await;
    alice.expect_error("forbidden", Some(3)).await;
    // It does not undo the join: alice still receives chat:x.
    let mut bob = connect_token(&server, &token("bob", 60, None), "bob").await;
    bob.join("chat:x").await;
    alice.expect_presence("chat:x", "join", "bob").await;
    bob.publish("chat:x", json!("for alice")).await;
    alice
        .expect_message("chat:x", "bob", &json!("for alice"))
        .await;
}

#[tokio::test]
async fn refresh_naming_another_user_is_forbidden_then_closes_with_4003() {
    let server = TestServer::start(hs256_config()).await;
    let mut bob = connect_token(&server, &token("bob", 60, None), "bob").await;
    bob.join("room").await;
    let mut alice = connect_token(&server, &token("alice", 60, None), "alice").await;
    alice.join("room").await;
    bob.expect_presence("room", "join", "alice").await;

    alice
        .send_json(json!({"type": "refresh", "token": token("mallory", 60, None), "id": 8}))
        .await;
    alice.expect_error("forbidden", Some(8)).await;
    assert_eq!(
        alice.expect_close().await,
        (4003, "identity change not allowed".to_owned())
    );
    bob.expect_presence("room", "leave", "alice").await;
    assert_serves(server.addr(), &token_path(&token("probe", 60, None))).await;
}

#[tokio::test]
async fn refresh_with_a_bad_token_is_invalid_token_and_the_connection_stays() {
    let server = TestServer::start(hs256_config()).await;
    let mut alice = connect_token(&server, &token("alice", 60, None), "alice").await;
    alice.join("room").await;
    let forged = sign_hs256(
        b"not the server's secret, but long enough",
        &json!({"sub": "alice", "exp": unix_now() + 3600}),
    );
    let bad = [
        (1, forged),
        (2, token("alice", -3600, None)),
        (3, "garbage".to_owned()),
    ];
    for (id, bad_token) in bad {
        alice
            .send_json(json!({"type": "refresh", "token": bad_token, "id": id}))
            .await;
        alice.expect_error("invalid_token", Some(id)).await;
    }
    alice.sync().await;
    alice.publish("room", json!("still here")).await;
}

#[tokio::test]
async fn a_token_that_expires_without_refresh_closes_with_4001() {
    let server = TestServer::start(no_leeway()).await;
    let mut bob = connect_token(&server, &token("bob", 3600, None), "bob").await;
    bob.join("room").await;
    let mut alice = connect_token(&server, &token("alice", 2, None), "alice").await;
    alice.join("room").await;
    bob.expect_presence("room", "join", "alice").await;
    // Nothing from alice's side: the server closes at exp (within 2 s, RECV_TIMEOUT is 5 s).
    assert_eq!(
        alice.expect_close().await,
        (4001, "token expired".to_owned())
    );
    bob.expect_presence("room", "leave", "alice").await;
    bob.sync().await;
}

#[tokio::test]
async fn a_token_admitted_within_the_leeway_is_not_closed_before_the_leeway_ends() {
    // docs/security.md: `exp` is enforced with `auth.leeway` of clock skew, at the upgrade
    // and during the connection. A token 1 s past `exp` passes the upgrade with the default
    // 5 s leeway, so the connection must be usable until exp + leeway, then close with 4001.
    let server = TestServer::start(hs256_config()).await;
    let late = token("alice", -1, None);
    let exp = exp_of(&late);
    let mut alice = connect_token(&server, &late, "alice").await;
    let first = alice
        .recv_within(Duration::from_millis(300))
        .await
        .map(|m| format!("{m:?}"));
    assert_eq!(
        first, None,
        "a connection admitted within the leeway got a frame at once (expected none until exp + 5 s)"
    );
    alice.join("room").await;
    alice.sync().await;
    // Closed once the leeway is over (exp + 5 s; RECV_TIMEOUT after the last check).
    let waited = alice
        .recv_within(Duration::from_millis(ms_until(exp, 6000)))
        .await
        .expect("no close after exp + leeway");
    let (code, reason) = waited.as_close().expect("a close frame");
    assert_eq!((u16::from(code), reason), (4001, "token expired"));
}

// =============================================================================================
// Room rights
// =============================================================================================

/// {"chat:*": ["join","publish","presence"], "news:*": ["join"]}
fn limited_rooms() -> Value {
    json!({"chat:*": ["join", "publish", "presence"], "news:*": ["join"]})
}

/// An HS256 server, a watcher with every right, and `lim` with [`limited_rooms`].
async fn rights_scene() -> (TestServer, Client, Client) {
    let server = TestServer::start(hs256_config()).await;
    let watcher = connect_token(&server, &token("watcher", 60, None), "watcher").await;
    let lim = connect_token(&server, &token("lim", 60, Some(limited_rooms())), "lim").await;
    (server, watcher, lim)
}

#[tokio::test]
async fn the_rooms_claim_allows_joining_matching_rooms_and_forbids_the_others() {
    let (_server, _watcher, mut lim) = rights_scene().await;
    assert_eq!(whoami(&mut lim, "chat:x").await, ["lim"]);
    lim.join("news:x").await;
    for (id, room) in [(5, "other"), (6, "chat"), (7, "chatroom:x"), (8, "xchat:x")] {
        lim.send_json(json!({"type": "join", "room": room, "id": id}))
            .await;
        let error = lim.expect_error("forbidden", Some(id)).await;
        assert!(error["message"].as_str().unwrap().contains(room), "{error}");
    }
    // Invalid names are reported as such, before rights.
    lim.send_json(json!({"type": "join", "room": "a b", "id": 9}))
        .await;
    lim.expect_error("invalid_room", Some(9)).await;
    lim.sync().await;
}

#[tokio::test]
async fn join_only_rights_forbid_publish_typing_and_binary_publish() {
    let (_server, mut watcher, mut lim) = rights_scene().await;
    watcher.join("news:x").await;
    lim.join("news:x").await;
    watcher.expect_presence("news:x", "join", "lim").await;

    lim.send_json(json!({"type": "publish", "room": "news:x", "data": "no", "id": 6}))
        .await;
    lim.expect_error("forbidden", Some(6)).await;
    lim.send_json(json!({"type": "typing", "room": "news:x"}))
        .await;
    lim.expect_error("forbidden", None).await;
    lim.send_binary(encode_client("news:x", b"no")).await;
    lim.expect_error("forbidden", None).await;
    // Rights come before membership: forbidden, not not_joined, in a room it is not in.
    lim.send_json(json!({"type": "publish", "room": "news:y", "data": "no", "id": 7}))
        .await;
    lim.expect_error("forbidden", Some(7)).await;
    lim.send_json(json!({"type": "typing", "room": "news:y"}))
        .await;
    lim.expect_error("forbidden", None).await;
    // Nothing reached the room.
    watcher.sync().await;

    // The same connection may publish where it has the right.
    watcher.join("chat:x").await;
    lim.join("chat:x").await;
    watcher.expect_presence("chat:x", "join", "lim").await;
    lim.publish("chat:x", json!("yes")).await;
    watcher.expect_message("chat:x", "lim", &json!("yes")).await;
    // And receives in the join-only room.
    watcher.publish("news:x", json!("news")).await;
    lim.expect_message("news:x", "watcher", &json!("news"))
        .await;
}

#[tokio::test]
async fn without_the_presence_right_members_and_presence_are_hidden_but_the_user_is_seen() {
    let (server, mut watcher, mut lim) = rights_scene().await;
    watcher.join("news:x").await;
    let joined = lim.join("news:x").await;
    assert_eq!(joined["members"], json!([]), "{joined}");
    watcher.expect_presence("news:x", "join", "lim").await;

    let mut third = connect_token(&server, &token("third", 60, None), "third").await;
    assert_eq!(
        whoami(&mut third, "news:x").await,
        ["lim", "third", "watcher"]
    );
    watcher.expect_presence("news:x", "join", "third").await;
    third.close().await;
    watcher.expect_presence("news:x", "leave", "third").await;
    // lim saw neither the join nor the leave.
    lim.sync().await;

    // With the presence right (chat:*), the same connection sees everyone.
    watcher.join("chat:x").await;
    assert_eq!(whoami(&mut lim, "chat:x").await, ["lim", "watcher"]);
    watcher.expect_presence("chat:x", "join", "lim").await;
}

#[tokio::test]
async fn history_requires_the_join_right() {
    let (_server, mut watcher, mut lim) = rights_scene().await;
    watcher.join("news:x").await;
    watcher.publish("news:x", json!("kept")).await;
    lim.send_json(json!({"type": "history", "room": "other", "id": 3}))
        .await;
    lim.expect_error("forbidden", Some(3)).await;
    // Join right without being a member: allowed.
    lim.send_json(json!({"type": "history", "room": "news:x", "id": 4}))
        .await;
    let history = lim.expect("history").await;
    assert_eq!(history["id"], 4, "{history}");
    assert_eq!(history["messages"][0]["data"], "kept", "{history}");
}

// =============================================================================================
// Origin
// =============================================================================================

#[tokio::test]
async fn by_default_only_same_origin_pages_and_clients_without_origin_may_upgrade() {
    let server = TestServer::default_config().await;
    let addr = server.addr();
    let status = |origin: Option<String>| async move {
        let origin = origin;
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", o.as_str())).collect();
        upgrade(addr, "/ws?user=alice", &headers).await
    };
    assert_eq!(status(Some(format!("http://{addr}"))).await.status, 101);
    assert_eq!(status(None).await.status, 101);
    let refused = [
        "http://evil.example".to_owned(),
        // The scheme is part of the origin (F11): this server speaks plain http.
        format!("https://{addr}"),
        format!("http://127.0.0.1:{}", addr.port().wrapping_add(1)),
        format!("http://localhost:{}", addr.port()),
        "null".to_owned(),
    ];
    for origin in refused {
        let answer = status(Some(origin.clone())).await;
        assert_eq!(answer.status, 403, "{origin}: {answer:?}");
        assert_eq!(answer.body, "origin not allowed\n", "{origin}");
    }
    // Host decides what "same" means, among the server's names (loopback by default).
    let answer = upgrade_with_host(
        addr,
        "/ws?user=alice",
        &format!("localhost:{}", addr.port()),
        &[("Origin", &format!("http://localhost:{}", addr.port()))],
    )
    .await;
    assert_eq!(answer.status, 101, "{answer:?}");
    assert_serves(addr, "/ws?user=probe").await;
}

#[tokio::test]
async fn an_allow_list_admits_exact_origins_and_wildcard_subdomains_only() {
    let server = TestServer::start(Config {
        allowed_origins: vec![
            "https://app.example.org".to_owned(),
            "https://*.example.com".to_owned(),
        ],
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    let same_origin = format!("http://{addr}");
    let allowed = [
        "https://app.example.org",
        "HTTPS://APP.EXAMPLE.ORG",
        "https://a.example.com",
        "https://a.b.example.com",
        // Same-origin pages stay allowed beside a list (docs/security.md, protocol.md 2.4).
        same_origin.as_str(),
    ];
    for origin in allowed {
        let answer = upgrade(addr, "/ws?user=alice", &[("Origin", origin)]).await;
        assert_eq!(answer.status, 101, "{origin}: {answer:?}");
    }
    let refused = [
        "https://example.com",
        "http://a.example.com",
        "https://evil.org",
        "https://a.example.com.evil.org",
        "https://evilexample.com",
        "https://app.example.org:8443",
        "http://app.example.org",
        "https://a.example.com:8443",
        "null",
    ];
    for origin in refused {
        let answer = upgrade(addr, "/ws?user=alice", &[("Origin", origin)]).await;
        assert_eq!(answer.status, 403, "{origin}: {answer:?}");
    }
    assert_eq!(upgrade(addr, "/ws?user=alice", &[]).await.status, 101);
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let server = TestServer::start(Config {
        allowed_origins: vec!["*".to_owned()],
        ..Config::default()
    })
    .await;
    for origin in ["https://anything.test", "http://127.0.0.1:1", "null"] {
        let answer = upgrade(server.addr(), "/ws?user=alice", &[("Origin", origin)]).await;
        assert_eq!(answer.status, 101, "{origin}: {answer:?}");
    }
}

#[tokio::test]
async fn a_cross_site_page_carrying_the_users_cookie_is_refused_403() {
    // The cross-site WebSocket hijacking case: a valid cookie, a foreign Origin. The Origin is
    // checked before the token.
    let server = TestServer::start(hs256_config()).await;
    let cookie = format!("switchboard_token={}", token("alice", 60, None));
    let answer = upgrade(
        server.addr(),
        "/ws",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    // The same cookie from the same origin is fine.
    let same = format!("http://{}", server.addr());
    let answer = upgrade(
        server.addr(),
        "/ws",
        &[("Cookie", &cookie), ("Origin", &same)],
    )
    .await;
    assert_eq!(answer.status, 101, "{answer:?}");
    // Without a token, a foreign origin is still 403 (not 401): origin first.
    let answer = upgrade(server.addr(), "/ws", &[("Origin", "https://evil.example")]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
}

// =============================================================================================
// Limits
// =============================================================================================

#[tokio::test]
async fn a_flood_gets_rate_limited_errors_then_close_1008_while_the_room_keeps_flowing() {
    let mut config = Config::default();
    config.limits.messages_per_second = 10;
    config.limits.message_burst = 10;
    let server = TestServer::start(config).await;
    let mut carol = Client::connect(&server, "carol").await;
    let mut bob = Client::connect(&server, "bob").await;
    let mut eve = Client::connect(&server, "eve").await;
    carol.join("room").await;
    bob.join("room").await;
    carol.expect_presence("room", "join", "bob").await;
    eve.join("room").await;
    carol.expect_presence("room", "join", "eve").await;
    bob.expect_presence("room", "join", "eve").await;

    let flood: Vec<Message> = (0..50)
        .map(|i| {
            Message::text(
                json!({"type": "publish", "room": "room", "data": {"eve": i}, "id": 100 + i})
                    .to_string(),
            )
        })
        .collect();
    let eve_side = async {
        eve.send_all(flood).await;
        let (mut acked, mut errors) = (Vec::new(), 0);
        loop {
            let frame = eve.recv().await;
            if frame.is_close() {
                let (code, reason) = frame.as_close().unwrap();
                assert_eq!(
                    (u16::from(code), reason),
                    (1008, "too many protocol errors")
                );
                // Complete the close handshake (the codec answers while we read to the end).
                while let Ok(Some(Ok(_))) = timeout(RECV_TIMEOUT, eve.ws.next()).await {}
                break;
            }
            let value: Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
            match value["type"].as_str() {
                Some("ack") => acked.push(value["id"].as_u64().unwrap() - 100),
                Some("error") => {
                    assert_eq!(value["code"], "rate_limited", "{value}");
                    errors += 1;
                }
                _ => panic!("eve: unexpected {value}"),
            }
        }
        (acked, errors)
    };
    // bob, a well-behaved member, publishes at the same time (no ids: his own stream also
    // carries eve's messages; carol checks that his arrive).
    let bob_side = async {
        for i in 0..5 {
            bob.send_json(json!({"type": "publish", "room": "room", "data": {"bob": i}}))
                .await;
        }
    };
    let ((acked, errors), ()) = tokio::join!(eve_side, bob_side);
    // The 10th violation closes; the first nine did not.
    assert_eq!(errors, 10, "acked {acked:?}");
    // The burst (10, less the join) went through; the rest was dropped.
    assert!(acked.len() >= 9 && acked.len() <= 40, "acked {acked:?}");

    // carol: eve's accepted messages and all of bob's, gapless and in order, then eve leaves.
    let (mut from_eve, mut from_bob, mut last_seq, mut eve_left) =
        (Vec::new(), Vec::new(), 0, false);
    while from_eve.len() < acked.len() || from_bob.len() < 5 || !eve_left {
        let value = carol.recv_json().await;
        match value["type"].as_str() {
            Some("message") => {
                let seq = value["seq"].as_u64().unwrap();
                assert_eq!(seq, last_seq + 1, "carol: gap or reorder at {value}");
                last_seq = seq;
                match value["from"].as_str() {
                    Some("eve") => from_eve.push(value["data"]["eve"].as_u64().unwrap()),
                    Some("bob") => from_bob.push(value["data"]["bob"].as_u64().unwrap()),
                    _ => panic!("carol: {value}"),
                }
            }
            Some("presence") => {
                assert_eq!(
                    (&value["event"], &value["user"]),
                    (&json!("leave"), &json!("eve"))
                );
                eve_left = true;
            }
            _ => panic!("carol: unexpected {value}"),
        }
    }
    assert_eq!(from_eve, acked);
    assert_eq!(from_bob, [0, 1, 2, 3, 4]);
    carol.sync().await;
}

#[tokio::test]
async fn the_sixth_room_is_too_many_rooms_with_max_rooms_5() {
    let mut config = Config::default();
    config.limits.max_rooms_per_connection = 5;
    let server = TestServer::start(config).await;
    let mut alice = Client::connect(&server, "alice").await;
    for i in 0..5 {
        alice.join(&format!("room-{i}")).await;
    }
    alice
        .send_json(json!({"type": "join", "room": "room-5", "id": 50}))
        .await;
    let error = alice.expect_error("too_many_rooms", Some(50)).await;
    assert!(error["message"].as_str().unwrap().contains('5'), "{error}");
    // Re-joining a room it is in is not a new room.
    alice.join("room-0").await;
    // Leaving one makes room for another.
    alice
        .send_json(json!({"type": "leave", "room": "room-0", "id": 51}))
        .await;
    alice.expect("left").await;
    alice.join("room-5").await;
    // The limit is per connection.
    let mut again = Client::connect(&server, "alice").await;
    for i in 10..15 {
        again.join(&format!("room-{i}")).await;
    }
}

#[tokio::test]
async fn ten_thousand_joins_stop_at_100_rooms_and_close_1008_at_the_tenth_refusal() {
    // Default room limit (100) and violations (10); the message rate is raised, or the joins
    // would hit the rate limit (60 burst) before the room limit.
    let server = TestServer::start(unthrottled(Config::default())).await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room-0").await;
    let mut alice = Client::connect(&server, "alice").await;
    let joins: Vec<Message> = (0..10_000)
        .map(|i| {
            Message::text(json!({"type": "join", "room": format!("room-{i}"), "id": i}).to_string())
        })
        .collect();
    alice.send_all(joins).await;
    for i in 0..100 {
        let joined = alice.expect("joined").await;
        assert_eq!(joined["id"], i, "{joined}");
    }
    // Connection survives exactly up to the 10th violation.
    for i in 100..110 {
        alice.expect_error("too_many_rooms", Some(i)).await;
    }
    assert_eq!(
        alice.expect_close().await,
        (1008, "too many protocol errors".to_owned())
    );
    bob.expect_presence("room-0", "join", "alice").await;
    bob.expect_presence("room-0", "leave", "alice").await;
    bob.sync().await;
    assert_serves(server.addr(), "/ws?user=probe").await;
}

#[tokio::test]
async fn past_max_connections_the_upgrade_is_503_with_retry_after_until_one_closes() {
    let mut config = Config::default();
    config.limits.max_connections = 3;
    // All from one address: lift the per-address cap (a quarter of max_connections by
    // default) to test the node-wide one.
    config.limits.max_connections_per_ip = Some(100);
    let server = TestServer::start(config).await;
    let addr = server.addr();
    let first = Client::connect(&server, "c1").await;
    let _second = Client::connect(&server, "c2").await;
    let _third = Client::connect(&server, "c3").await;

    let refused = upgrade(addr, "/ws?user=c4", &[]).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(refused.body, "server at its connection limit\n");
    // Plain HTTP is not a WebSocket connection and is still served.
    assert_eq!(support::http_get(addr, "/healthz", &[]).await.status, 200);

    first.close().await;
    // The slot is freed once the server has finished with the connection; nothing tells the
    // client when, so retry (bounded).
    let admitted = security_support::upgrade_once_freed(addr, "/ws?user=c4", 503).await;
    // Full again.
    assert_eq!(upgrade(addr, "/ws?user=c5", &[]).await.status, 503);
    drop(admitted);
}

#[tokio::test]
async fn quick_upgrades_past_the_per_ip_burst_are_429_with_retry_after() {
    let mut config = Config::default();
    config.limits.connections_per_ip_per_second = 1;
    config.limits.connection_burst_per_ip = 3;
    let server = TestServer::start(config).await;
    let addr = server.addr();
    // Refused origins do not count (the Origin check comes first) ...
    for _ in 0..5 {
        let answer = upgrade(addr, "/ws?user=u", &[("Origin", "https://evil.example")]).await;
        assert_eq!(answer.status, 403, "{answer:?}");
    }
    // ... a request refused after the Origin check does (here 400 for an empty user name).
    assert_eq!(upgrade(addr, "/ws?user=", &[]).await.status, 400);
    let mut open = Vec::new();
    for i in 1..3 {
        let answer = upgrade(addr, &format!("/ws?user=u{i}"), &[]).await;
        assert_eq!(answer.status, 101, "upgrade {i}: {answer:?}");
        open.push(answer);
    }
    let refused = upgrade(addr, "/ws?user=u3", &[]).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.starts_with("too many new connections"));
    // Plain HTTP is not rate limited.
    assert_eq!(support::http_get(addr, "/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_per_ip_limit_counts_forwarded_clients() {
    let mut config = Config::default();
    config.limits.connections_per_ip_per_second = 1;
    config.limits.connection_burst_per_ip = 1;
    config.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    let server = TestServer::start(config).await;
    let addr = server.addr();
    let from = |client: &'static str| [("X-Forwarded-For", client)];
    // Two clients behind the same proxy address: one allowance each.
    let first = upgrade(addr, "/ws?user=a", &from("198.51.100.1")).await;
    assert_eq!(first.status, 101, "{first:?}");
    let second = upgrade(addr, "/ws?user=b", &from("198.51.100.2")).await;
    assert_eq!(second.status, 101, "{second:?}");
    assert_eq!(
        upgrade(addr, "/ws?user=c", &from("198.51.100.1"))
            .await
            .status,
        429
    );
    // A client cannot escape by writing its own entry left of the proxy's.
    let forged = upgrade(addr, "/ws?user=d", &from("203.0.113.50, 198.51.100.2")).await;
    assert_eq!(forged.status, 429, "{forged:?}");

    // Without trusted proxies the header is ignored: the peer address counts.
    let mut config = Config::default();
    config.limits.connections_per_ip_per_second = 1;
    config.limits.connection_burst_per_ip = 1;
    let server = TestServer::start(config).await;
    let addr = server.addr();
    assert_eq!(
        upgrade(addr, "/ws?user=a", &from("198.51.100.1"))
            .await
            .status,
        101
    );
    assert_eq!(
        upgrade(addr, "/ws?user=b", &from("198.51.100.2"))
            .await
            .status,
        429
    );
    drop((first, second));
}

#[test]
fn a_bad_trusted_proxy_is_refused_at_start() {
    let config = Config {
        trusted_proxies: vec!["10.0.0.0/40".to_owned()],
        ..Config::default()
    };
    assert!(config.validate().is_err());
}

// =============================================================================================
// Bad input the existing tests do not cover (tests/bad_input.rs, tests/lifecycle.rs already
// pin: unmasked frames, RSV bits, unknown opcodes, fragmented control frames, invalid UTF-8,
// Sec-WebSocket-Version 8, no request head at all, 1 MiB room names, data nested > 64, ids
// out of range).
// =============================================================================================

#[tokio::test]
async fn a_ping_with_a_126_byte_payload_closes_with_1002() {
    let server = TestServer::default_config().await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;

    // 125 bytes is the most a control frame may carry: answered.
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = support::raw_upgrade(tcp, "/ws?user=pinger").await;
    raw.write_all(&masked_frame(opcode::PING, &[7; 125], [1, 2, 3, 4]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let pong = loop {
        let (frames, _) = support::parse_frames(&buf);
        if let Some(frame) = frames.into_iter().next() {
            break frame;
        }
        let mut chunk = [0; 1024];
        let n = timeout(RECV_TIMEOUT, raw.read(&mut chunk))
            .await
            .expect("no pong")
            .unwrap();
        assert_ne!(n, 0, "closed instead of a pong");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!((pong.opcode, pong.payload.len()), (opcode::PONG, 125));

    // 126 bytes (16-bit length form): a protocol error.
    let frame = masked_fragment(true, opcode::PING, &[7; 126], [1, 2, 3, 4]);
    assert_eq!(frame[1] & 0x7F, 126, "uses the extended length form");
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = support::raw_upgrade(tcp, "/ws?user=pinger").await;
    raw.write_all(&frame).await.unwrap();
    let frames = read_until_close(&mut raw, RECV_TIMEOUT).await;
    let close = frames.iter().find_map(support::RawFrame::close);
    assert_eq!(close.map(|c| c.0), Some(1002), "{frames:?}");
    read_to_end_within(&mut raw, RECV_TIMEOUT).await;

    bob.sync().await;
    assert_serves(server.addr(), "/ws?user=probe").await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start(Config {
        handshake_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    let mut bob = Client::connect(&server, "bob").await;
    bob.join("room").await;

    // Half a head, then nothing.
    let started = Instant::now();
    let mut half = TcpStream::connect(server.addr()).await.unwrap();
    half.write_all(b"GET /ws?user=slow HTTP/1.1\r\nHost: x\r\nUpgrade: webs")
        .await
        .unwrap();
    let drained = read_to_end_within(&mut half, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the 500 ms handshake timeout ({drained:?})"
    );

    // A head trickled one byte every 100 ms (slowloris) is cut off too: the timeout covers
    // the whole head, not the gap between bytes.
    let started = Instant::now();
    let mut trickle = TcpStream::connect(server.addr()).await.unwrap();
    let head =
        b"GET /ws?user=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut closed = false;
    for byte in head {
        tick.tick().await;
        if trickle.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0; 64];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::ZERO, trickle.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        closed,
        "a head trickled over {took:?} was still open (handshake timeout 500 ms)"
    );

    bob.sync().await;
    assert_serves(server.addr(), "/ws?user=probe").await;
}

/// A server with bob in "room"; each case runs on a fresh connection of eve, also in "room".
struct Matrix {
    server: TestServer,
    bob: Client,
}

impl Matrix {
    async fn new() -> Self {
        let server = TestServer::default_config().await;
        let mut bob = Client::connect(&server, "bob").await;
        bob.join("room").await;
        Self { server, bob }
    }

    async fn eve(&mut self) -> Client {
        let mut eve = Client::connect(&self.server, "eve").await;
        eve.join("room").await;
        self.bob.expect_presence("room", "join", "eve").await;
        eve
    }

    /// Afterwards: eve still works, bob got nothing from it, a new client is served.
    async fn still_fine(&mut self, mut eve: Client) {
        eve.sync().await;
        eve.close().await;
        self.bob.expect_presence("room", "leave", "eve").await;
        self.bob.sync().await;
        assert_serves(self.server.addr(), "/ws?user=probe").await;
    }
}

#[tokio::test]
async fn huge_numbers_get_the_documented_answers_and_harm_no_one() {
    let mut matrix = Matrix::new().await;
    let digits = "9".repeat(10_000);
    // (frame, expected reply type, error code, id). docs/protocol.md section 3: `id` and
    // `limit` must be integers from 0 to 2^64−1 ("too large" → invalid_message, no id for a
    // bad id); unknown fields are ignored.
    let cases: Vec<(String, &str, Option<&str>, Option<u64>)> = vec![
        (
            r#"{"type":"ping","id":1e400}"#.to_owned(),
            "error",
            Some("invalid_message"),
            None,
        ),
        (
            format!(r#"{{"type":"ping","id":{digits}}}"#),
            "error",
            Some("invalid_message"),
            None,
        ),
        (
            r#"{"type":"history","room":"room","limit":18446744073709551616,"id":3}"#.to_owned(),
            "error",
            Some("invalid_message"),
            Some(3),
        ),
        (
            r#"{"type":"history","room":"room","limit":1e400,"id":4}"#.to_owned(),
            "error",
            Some("invalid_message"),
            Some(4),
        ),
        (
            format!(
                r#"{{"type":"join","room":"other","since":{{"seq":{digits},"epoch":"x"}},"id":5}}"#
            ),
            "error",
            Some("invalid_message"),
            Some(5),
        ),
        (
            r#"{"type":"ping","id":6,"x":1e400}"#.to_owned(),
            "pong",
            None,
            Some(6),
        ),
        (
            format!(r#"{{"type":"ping","id":7,"x":{digits}}}"#),
            "pong",
            None,
            Some(7),
        ),
        (
            format!(r#"{{"type":"ping","id":8,"x":-{digits}.{digits}e-99999}}"#),
            "pong",
            None,
            Some(8),
        ),
    ];
    let mut failures = Vec::new();
    for (frame, kind, code, id) in cases {
        let mut eve = matrix.eve().await;
        eve.send_text(&frame).await;
        let reply = eve.recv_json().await;
        let got = (
            reply["type"].as_str().map(str::to_owned),
            reply["code"].as_str().map(str::to_owned),
            reply["id"].as_u64(),
        );
        let want = (Some(kind.to_owned()), code.map(str::to_owned), id);
        if got != want {
            failures.push(format!(
                "{}…: expected {want:?}, got {reply}",
                &frame[..frame.len().min(60)]
            ));
        }
        matrix.still_fine(eve).await;
    }
    // Numbers in `data` beyond the f64 range are refused (`bad_json`, with the id): the server
    // relays `data` byte for byte and accepts only what every receiver can parse. A large but
    // representable number is relayed verbatim.
    let mut eve = matrix.eve().await;
    for data in ["1e400".to_owned(), digits.clone()] {
        eve.send_text(&format!(
            r#"{{"type":"publish","room":"room","data":{data},"id":9}}"#
        ))
        .await;
        let reply = eve.expect("error").await;
        assert_eq!(
            (reply["code"].as_str(), reply["id"].as_u64()),
            (Some("bad_json"), Some(9))
        );
    }
    let big = format!("1{}", "0".repeat(300));
    eve.send_text(&format!(
        r#"{{"type":"publish","room":"room","data":{big},"id":10}}"#
    ))
    .await;
    eve.expect("ack").await;
    let frame = matrix.bob.recv().await;
    let text = frame.as_text().expect("a text frame");
    assert!(
        text.contains(&format!(r#""data":{big}"#)),
        "{}",
        &text[..100]
    );
    matrix.still_fine(eve).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn deeply_nested_json_is_refused_or_ignored_never_a_crash() {
    let mut matrix = Matrix::new().await;
    let arrays = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    // (what, frame, expected reply type, error code). docs/protocol.md: a frame that is not an
    // object is `invalid_message` (checked after JSON syntax); unknown fields are ignored;
    // `data` deeper than 64 levels is `bad_json`.
    let cases = [
        (
            "a 30,000-deep array as the whole frame",
            arrays(30_000),
            "error",
            Some("invalid_message"),
        ),
        (
            "a 30,000-deep array in an unknown field",
            format!(r#"{{"type":"ping","id":1,"x":{}}}"#, arrays(30_000)),
            "pong",
            None,
        ),
        (
            "10,000-deep objects in an unknown field",
            format!(r#"{{"type":"ping","id":2,"x":{}}}"#, objects(10_000)),
            "pong",
            None,
        ),
        (
            "a 30,000-deep array as data",
            format!(
                r#"{{"type":"publish","room":"room","id":3,"data":{}}}"#,
                arrays(30_000)
            ),
            "error",
            Some("bad_json"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, frame, kind, code) in cases {
        assert!(frame.len() < 64 * 1024, "{what} fits the message limit");
        let mut eve = matrix.eve().await;
        eve.send_text(&frame).await;
        let reply = eve.recv_json().await;
        if reply["type"] != kind || reply["code"].as_str() != code {
            failures.push(format!("{what}: expected {kind} {code:?}, got {reply}"));
        }
        matrix.still_fine(eve).await;
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// =============================================================================================
// TLS
// =============================================================================================

/// A TLS server with a fresh self-signed certificate for `localhost`, and a client config
/// that trusts it (and offers `alpn`).
struct Tls {
    server: TestServer,
    client: Arc<tokio_rustls::rustls::ClientConfig>,
    _dir: TempDir,
}

impl Tls {
    async fn start(alpn: &[&[u8]]) -> Self {
        Self::start_with(Config::default(), alpn).await
    }

    async fn start_with(config: Config, alpn: &[&[u8]]) -> Self {
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};
        let dir = TempDir::new("tls");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.write("cert.pem", &certified.cert.pem());
        let key = dir.write("key.pem", &certified.signing_key.serialize_pem());
        let server = TestServer::start(Config {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..config
        })
        .await;
        let mut roots = RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Self {
            server,
            client: Arc::new(client),
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// A WebSocket over TLS to `wss://localhost:PORT{path}` (TCP to the bound address).
    async fn wss(
        &self,
        path: &str,
    ) -> tokio_websockets::WebSocketStream<tokio_websockets::MaybeTlsStream<TcpStream>> {
        let connector = tokio_websockets::Connector::Rustls(tokio_rustls::TlsConnector::from(
            self.client.clone(),
        ));
        let url = format!("wss://localhost:{}{path}", self.port());
        let fut = async {
            let tcp = TcpStream::connect(self.server.addr()).await?;
            let stream = connector.wrap("localhost", tcp).await?;
            tokio_websockets::ClientBuilder::new()
                .uri(&url)
                .unwrap()
                .connect_on(stream)
                .await
        };
        let (ws, _) = timeout(RECV_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
            .unwrap_or_else(|err| panic!("connecting to {url} failed: {err}"));
        ws
    }
}

/// Sends JSON on any WebSocket stream.
async fn send_json<S>(ws: &mut tokio_websockets::WebSocketStream<S>, value: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    timeout(RECV_TIMEOUT, ws.send(Message::text(value.to_string())))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// The next JSON text frame on any WebSocket stream (pings and pongs skipped).
async fn recv_json<S>(ws: &mut tokio_websockets::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("read failed");
        if let Some(text) = message.as_text() {
            return serde_json::from_str(text).unwrap();
        }
        assert!(message.is_ping() || message.is_pong(), "{message:?}");
    }
}

#[tokio::test]
async fn wss_with_a_self_signed_certificate_joins_and_publishes() {
    let tls = Tls::start(&[]).await;
    let mut alice = tls.wss("/ws?user=alice").await;
    let mut bob = tls.wss("/ws?user=bob").await;
    send_json(
        &mut alice,
        json!({"type": "join", "room": "secure", "id": 1}),
    )
    .await;
    assert_eq!(recv_json(&mut alice).await["type"], "joined");
    send_json(&mut bob, json!({"type": "join", "room": "secure", "id": 1})).await;
    let joined = recv_json(&mut bob).await;
    assert_eq!(
        joined["members"].as_array().map(Vec::len),
        Some(2),
        "{joined}"
    );
    let presence = recv_json(&mut alice).await;
    assert_eq!(presence["user"], "bob", "{presence}");
    send_json(
        &mut alice,
        json!({"type": "publish", "room": "secure", "data": "over tls", "id": 2}),
    )
    .await;
    assert_eq!(recv_json(&mut alice).await["type"], "ack");
    let message = recv_json(&mut bob).await;
    assert_eq!(
        (&message["from"], &message["data"]),
        (&json!("alice"), &json!("over tls"))
    );
}

#[tokio::test]
async fn plain_ws_to_the_tls_port_fails() {
    let tls = Tls::start(&[]).await;
    let addr = tls.server.addr();
    let result = timeout(
        RECV_TIMEOUT,
        support::ws_connect(addr, &format!("ws://{addr}/ws?user=plain")),
    )
    .await
    .expect("a plain connection to the TLS port neither failed nor succeeded in time");
    assert!(
        result.is_err(),
        "a plain ws:// upgrade succeeded on the TLS port"
    );
    // The TLS side is unaffected.
    let mut alice = tls.wss("/ws?user=alice").await;
    send_json(&mut alice, json!({"type": "ping", "id": 1})).await;
    assert_eq!(recv_json(&mut alice).await["type"], "pong");
}

#[tokio::test]
async fn https_healthz_works_and_alpn_is_http_1_1() {
    let tls = Tls::start(&[b"h2", b"http/1.1"]).await;
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let fut = async {
        let tcp = TcpStream::connect(tls.server.addr()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut stream = connector.connect(name, tcp).await.unwrap();
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "the server must pick http/1.1 (it cannot upgrade WebSockets over h2)"
        );
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (status, headers) = read_head(&mut stream).await;
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap();
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    };
    let (status, body) = timeout(RECV_TIMEOUT, fut)
        .await
        .expect("https GET timed out");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_after_the_handshake_timeout() {
    let tls = Tls::start_with(
        Config {
            handshake_timeout: Duration::from_millis(500),
            ..Config::default()
        },
        &[],
    )
    .await;
    let started = Instant::now();
    let mut stalled = TcpStream::connect(tls.server.addr()).await.unwrap();
    // A TLS record header announcing a 255-byte ClientHello that never comes.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x01])
        .await
        .unwrap();
    let drained = read_to_end_within(&mut stalled, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the 500 ms handshake timeout ({drained:?})"
    );
    let mut alice = tls.wss("/ws?user=alice").await;
    send_json(&mut alice, json!({"type": "ping", "id": 1})).await;
    assert_eq!(recv_json(&mut alice).await["type"], "pong");
}
