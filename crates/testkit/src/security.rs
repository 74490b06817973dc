//! Helpers of the security tests: tokens (HS256 with arbitrary claims, RS256/ES256 key pairs), upgrades with
//! chosen headers whose HTTP answer the test reads, temporary directories for key and
//! certificate files, a raw WebSocket connection, and the "server still serves" check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_server::Config;
use switchboard_server::config::AuthConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_websockets::ClientBuilder;

use crate::{Client, RECV_TIMEOUT, RawFrame, UPGRADE_HEADERS, read_head};

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// The HS256 secret of the tests' servers (at least 32 bytes).
pub const SECRET: &str = "switchboard security tests: 32+ bytes of secret";

/// Defaults plus an HS256 secret (so anonymous access is off).
pub fn hs256_config() -> Config {
    Config {
        auth: AuthConfig {
            hmac_secret: Some(SECRET.to_owned()),
            ..AuthConfig::default()
        },
        ..Config::default()
    }
}

/// Seconds since the Unix epoch, by the test's clock.
pub fn unix_now() -> u64 {
    crate::now_millis() / 1000
}

/// Signs arbitrary claims with HS256 and `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign an HS256 token")
}

/// A token for `sub` valid `ttl` seconds (negative: already expired), with an optional
/// `rooms` claim, signed with [`SECRET`].
pub fn token(sub: &str, ttl: i64, rooms: Option<Value>) -> String {
    let exp = unix_now().saturating_add_signed(ttl);
    let mut claims = json!({"sub": sub, "exp": exp});
    if let Some(rooms) = rooms {
        claims["rooms"] = rooms;
    }
    sign_hs256(SECRET.as_bytes(), &claims)
}

/// The exp claim of a token, read back without verifying it.
pub fn exp_of(token: &str) -> u64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["exp"].as_u64().expect("numeric exp")
}

/// A fresh RSA-2048 key pair: (PKCS#1 private key PEM, SPKI public key PEM).
pub fn rsa_key_pair() -> (String, String) {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::EncodePublicKey as _;
    use rsa::pkcs8::LineEnding;
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
    let private_pem = private
        .to_pkcs1_pem(LineEnding::LF)
        .expect("RSA private key PEM")
        .to_string();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("RSA public key PEM");
    (private_pem, public_pem)
}

/// A fresh P-256 key pair: (PKCS#8 private key PEM, SPKI public key PEM).
pub fn p256_key_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key pair");
    (key.serialize_pem(), key.public_key_pem())
}

/// Signs `claims` with `algorithm` and a private key PEM (RS256: RSA, ES256: EC).
pub fn sign_with_pem(algorithm: Algorithm, private_pem: &str, claims: &Value) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        other => panic!("no PEM signing for {other:?} in these tests"),
    }
    .expect("private key PEM");
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).expect("sign a token")
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-security-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        path
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Upgrades with chosen headers
// ---------------------------------------------------------------------------------------------

/// The HTTP answer to an upgrade request. After a 101 the socket is kept (so the connection
/// stays open, holding its slot) and speaks WebSocket frames.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub stream: TcpStream,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a WebSocket upgrade request for `path` (a valid one, plus `extra` headers) on a new
/// connection and reads the answer: the head, and for anything but 101 the body.
pub async fn upgrade(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Answer {
    upgrade_with_host(addr, path, &addr.to_string(), extra).await
}

/// Upgrades `path` once a freed connection slot lets it through: the server frees a slot
/// when it has finished with a closed connection, which nothing tells the client, so this
/// retries (bounded by `RECV_TIMEOUT`) while the answer is still the `refused` status.
pub async fn upgrade_once_freed(addr: SocketAddr, path: &str, refused: u16) -> Answer {
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let answer = upgrade(addr, path, &[]).await;
        if answer.status == 101 {
            return answer;
        }
        assert_eq!(answer.status, refused, "{answer:?}");
        assert!(
            Instant::now() < deadline,
            "no slot freed within {RECV_TIMEOUT:?} of a clean close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`upgrade`] with a chosen `Host` header.
pub async fn upgrade_with_host(
    addr: SocketAddr,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in UPGRADE_HEADERS.iter().chain(extra) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write the upgrade request");
        let (status, headers) = read_head(&mut stream).await;
        let mut body = Vec::new();
        if status != 101 {
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            body.resize(length, 0);
            stream.read_exact(&mut body).await.expect("read the body");
        }
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            stream,
        }
    };
    timeout(RECV_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("upgrade of {path} timed out"))
}

/// Connects a protocol client to `path` with extra request headers (e.g. `Authorization`,
/// `Cookie`, `Origin`); panics if the upgrade fails.
pub async fn connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    name: &str,
) -> Client {
    let url = format!("ws://{addr}{path}");
    let mut builder = ClientBuilder::new()
        .uri(&url)
        .unwrap_or_else(|err| panic!("bad test URL {url}: {err}"));
    for (header, value) in headers {
        builder = builder
            .add_header(
                HeaderName::from_bytes(header.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            )
            .expect("an allowed header");
    }
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        builder.connect_on(tcp).await
    };
    let (ws, _response) = timeout(RECV_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{name}: connecting to {url} timed out"))
        .unwrap_or_else(|err| panic!("{name}: connecting to {url} failed: {err}"));
    Client {
        ws,
        name: name.to_owned(),
    }
}

/// `/ws?token=TOKEN`.
pub fn token_path(token: &str) -> String {
    format!("/ws?token={token}")
}

/// Proves the server still serves: a new connection on `path` joins a room, publishes with
/// an ack, gets its own message back (echo) and closes cleanly.
pub async fn assert_serves(addr: SocketAddr, path: &str) {
    let mut probe = connect_with(addr, path, &[], "probe").await;
    probe.join("probe-room").await;
    probe
        .send_json(json!({"type": "publish", "room": "probe-room", "data": "alive", "echo": true, "id": 1}))
        .await;
    let mut got_ack = false;
    let mut got_message = false;
    while !(got_ack && got_message) {
        let value = probe.recv_json().await;
        match value["type"].as_str() {
            Some("ack") => got_ack = true,
            Some("message") => {
                assert_eq!(value["data"], "alive", "{value}");
                got_message = true;
            }
            _ => panic!("probe: unexpected {value}"),
        }
    }
    probe.close().await;
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket frames
// ---------------------------------------------------------------------------------------------

/// Reads raw server frames from `stream` until a close frame arrives or the connection ends,
/// at most `limit`. Returns every complete frame read.
pub async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> Vec<RawFrame> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = vec![0; 16 * 1024];
    loop {
        let (frames, _) = crate::parse_frames(&buf);
        if frames.iter().any(|f| f.close().is_some()) {
            return frames;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "neither a close frame nor the end of the connection within {limit:?}: {frames:?}"
            ),
            Ok(Ok(0) | Err(_)) => return frames,
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}
