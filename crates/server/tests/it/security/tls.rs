//! TLS: wss, https, a stalled handshake.

use super::*;

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
        testkit::ws_connect(addr, &format!("ws://{addr}/ws?user=plain")),
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
