//! Refresh and expiry during the connection.

use super::*;

/// An HS256 server with no clock-skew leeway, so expiry is exactly at `exp`.
fn no_leeway() -> Config {
    let mut config = hs256_config();
    config.auth.leeway = Duration::ZERO;
    config
}

/// Milliseconds from now until `exp` (seconds since the epoch) plus `extra_ms`.
fn ms_until(exp: u64, extra_ms: u64) -> u64 {
    (exp * 1000 + extra_ms).saturating_sub(testkit::now_millis())
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
