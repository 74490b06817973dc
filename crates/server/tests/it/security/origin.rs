//! The Origin check.

use super::*;

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
