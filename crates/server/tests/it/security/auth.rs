//! Authentication at the upgrade: token sources, claims, algorithms, anonymous access.

use super::*;

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
