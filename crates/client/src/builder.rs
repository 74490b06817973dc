//! [`ClientBuilder`]: where to connect, as whom, and how to behave when the connection drops.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use switchboard_protocol::names::validate_user;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::Client;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::events::Events;

/// Default of [`ClientBuilder::heartbeat_timeout`].
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ClientBuilder::send_buffer`].
pub const DEFAULT_SEND_BUFFER: usize = 1024;
/// Default of [`ClientBuilder::event_buffer`].
pub const DEFAULT_EVENT_BUFFER: usize = 1024;
/// Default of [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ClientBuilder::max_message_size`]: the server's default limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Configures and opens a [`Client`]. Made by [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// use switchboard_client::{Backoff, Client};
///
/// let builder = Client::builder("ws://127.0.0.1:8080/ws")
///     .user("alice")
///     .token("secret")
///     .backoff(Backoff { base: Duration::from_secs(1), ..Backoff::default() })
///     .heartbeat_timeout(Duration::from_secs(45));
/// // let (client, events) = builder.connect().await?;
/// # drop(builder);
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    user: Option<String>,
    headers: Vec<(String, String)>,
    backoff: Backoff,
    heartbeat_timeout: Duration,
    send_buffer: usize,
    event_buffer: usize,
    connect_timeout: Duration,
    max_message_size: usize,
    /// Extra trusted roots for `wss://` (PEM), besides the Mozilla set.
    root_pem: Vec<Vec<u8>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values (tokens) are left out.
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("headers", &headers)
            .field("backoff", &self.backoff)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("send_buffer", &self.send_buffer)
            .field("event_buffer", &self.event_buffer)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("extra_roots", &self.root_pem.len())
            .finish()
    }
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            headers: Vec::new(),
            backoff: Backoff::default(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            send_buffer: DEFAULT_SEND_BUFFER,
            event_buffer: DEFAULT_EVENT_BUFFER,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            root_pem: Vec::new(),
        }
    }

    /// Trusts the CA certificate(s) in `pem` for `wss://`, besides the Mozilla root set (for
    /// example a private or development CA).
    pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_pem.push(pem.into());
        self
    }

    /// Connects as user `name` (sent as the `user` query parameter, percent-encoded). Without
    /// it the server makes up an `anon-…` name.
    pub fn user(mut self, name: impl Into<String>) -> Self {
        self.user = Some(name.into());
        self
    }

    /// Adds a header to the upgrade request of every connection attempt, e.g.
    /// `("Authorization", "Bearer …")`. Invalid names or values are reported by
    /// [`connect`](Self::connect). Setting a header again replaces it.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Shorthand for `.header("Authorization", format!("Bearer {token}"))`.
    pub fn token(self, token: impl fmt::Display) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// How long to wait between reconnection attempts. Default: [`Backoff::default`]
    /// (0.5 s, ×2, at most 30 s, full jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// When nothing at all (not even a ping) arrives from the server for this long, the
    /// connection is considered dead: it is dropped and the client reconnects. Default 60 s
    /// (the server pings every 25 s). `Duration::ZERO` turns the check off.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// How many requests may wait at once, for a connection (while disconnected) or for their
    /// reply; beyond that, [`Client::publish`] and the other buffered requests fail with
    /// [`Error::BufferFull`]. Default 1024.
    pub fn send_buffer(mut self, requests: usize) -> Self {
        self.send_buffer = requests;
        self
    }

    /// Capacity of the event channel to the application (at least 1). Default 1024.
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events.max(1);
        self
    }

    /// How long one connection attempt (TCP and upgrade) may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest frame the client sends; larger publishes fail with [`Error::TooLarge`]
    /// instead of making the server close the connection. Default 64 KiB, the server's
    /// default limit.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Checks the settings, opens the first connection and starts the client. Returns once
    /// the connection is up ([`Event::Connected`](crate::Event::Connected) is the first
    /// event), or the error of this first attempt (no retry).
    pub async fn connect(self) -> Result<(Client, Events), Error> {
        let settings = self.settings()?;
        Client::start(settings).await
    }

    pub(crate) fn settings(&self) -> Result<Settings, Error> {
        let url = match &self.user {
            Some(user) => {
                validate_user(user).map_err(Error::InvalidUser)?;
                let separator = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{separator}user={}", self.url, percent_encode(user))
            }
            None => self.url.clone(),
        };
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|err: http::uri::InvalidUri| invalid(&err.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("ws" | "wss") if uri.host().is_none() => return Err(invalid("no host")),
            Some("ws") => None,
            Some("wss") => Some(self.tls_config().map_err(|reason| invalid(&reason))?),
            _ => return Err(invalid("expected ws://HOST[:PORT]/PATH or wss://…")),
        };
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                let bad = |reason: String| Error::InvalidHeader {
                    name: name.clone(),
                    reason,
                };
                let header_name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|err| bad(err.to_string()))?;
                let mut header_value =
                    HeaderValue::from_str(value.trim()).map_err(|err| bad(err.to_string()))?;
                header_value.set_sensitive(true);
                // Check now what the WebSocket library refuses (Host, Upgrade, Sec-WebSocket-*).
                tokio_websockets::ClientBuilder::new()
                    .add_header(header_name.clone(), header_value.clone())
                    .map_err(|err| bad(err.to_string()))?;
                Ok((header_name, header_value))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Settings {
            uri,
            headers,
            backoff: self.backoff,
            heartbeat_timeout: (!self.heartbeat_timeout.is_zero())
                .then_some(self.heartbeat_timeout),
            send_buffer: self.send_buffer,
            event_buffer: self.event_buffer,
            connect_timeout: self.connect_timeout,
            max_message_size: self.max_message_size,
            tls,
        })
    }

    /// The rustls client configuration: Mozilla roots plus the added PEM certificates.
    fn tls_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for pem in &self.root_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("bad root certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable root certificate: {e}"))?;
            }
        }
        Ok(Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    }
}

/// The checked settings the connection task works with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) uri: Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) backoff: Backoff,
    pub(crate) heartbeat_timeout: Option<Duration>,
    pub(crate) send_buffer: usize,
    pub(crate) event_buffer: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_size: usize,
    /// Set for `wss://`.
    pub(crate) tls: Option<Arc<ClientConfig>>,
}

/// Percent-encodes everything except the unreserved characters of RFC 3986.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_percent_encoded_into_the_query() {
        let s = ClientBuilder::new("ws://h:1/ws")
            .user("Zoë Smith&co")
            .settings()
            .unwrap();
        assert_eq!(s.uri.to_string(), "ws://h:1/ws?user=Zo%C3%AB%20Smith%26co");
        let s = ClientBuilder::new("ws://h/ws?x=1")
            .user("a")
            .settings()
            .unwrap();
        assert_eq!(s.uri.to_string(), "ws://h/ws?x=1&user=a");
        let s = ClientBuilder::new("ws://h/ws").settings().unwrap();
        assert_eq!(s.uri.query(), None);
    }

    #[test]
    fn bad_urls_and_users_are_refused() {
        for url in ["http://h/ws", "h:80/ws", "not a url", "ws:///ws"] {
            assert!(
                matches!(
                    ClientBuilder::new(url).settings(),
                    Err(Error::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
        for user in ["", "a\nb", &"x".repeat(65)] {
            assert!(
                matches!(
                    ClientBuilder::new("ws://h/ws").user(user).settings(),
                    Err(Error::InvalidUser(_))
                ),
                "{user:?}"
            );
        }
    }

    #[test]
    fn headers_and_token() {
        let s = ClientBuilder::new("ws://h/ws")
            .header("X-Trace", "1")
            .token("abc")
            .token("def")
            .settings()
            .unwrap();
        let headers: Vec<(String, &[u8])> = s
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes()))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("x-trace".to_owned(), &b"1"[..]),
                ("authorization".to_owned(), &b"Bearer def"[..])
            ]
        );
        for (name, value) in [
            ("bad name", "v"),
            ("X-A", "a\nb"),
            ("Sec-WebSocket-Key", "x"),
            ("Host", "h"),
        ] {
            assert!(
                matches!(
                    ClientBuilder::new("ws://h/ws")
                        .header(name, value)
                        .settings(),
                    Err(Error::InvalidHeader { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn debug_hides_header_values() {
        let text = format!("{:?}", ClientBuilder::new("ws://h/ws").token("s3cret"));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("Authorization"), "{text}");
    }

    #[test]
    fn defaults() {
        let s = ClientBuilder::new("ws://h/ws").settings().unwrap();
        assert_eq!(s.backoff, Backoff::default());
        assert_eq!(s.heartbeat_timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.send_buffer, 1024);
        let s = ClientBuilder::new("ws://h/ws")
            .heartbeat_timeout(Duration::ZERO)
            .event_buffer(0)
            .settings()
            .unwrap();
        assert_eq!((s.heartbeat_timeout, s.event_buffer), (None, 1));
    }
}
