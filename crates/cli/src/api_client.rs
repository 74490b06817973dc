//! A small HTTP/1.1 client for the server's HTTP API (`switchboard publish`, `bench api`):
//! one keep-alive connection per [`ApiConnection`], plain or TLS (Mozilla roots), on hyper's
//! client connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long connecting (TCP, TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The API's base URL (`http://HOST:PORT` or `https://…`) and key.
#[derive(Debug, Clone)]
pub(crate) struct ApiTarget {
    base: Uri,
    authorization: HeaderValue,
}

impl ApiTarget {
    pub(crate) fn new(url: &str, key: &str) -> anyhow::Result<Self> {
        let base: Uri = url
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("invalid API URL {url:?}"))?;
        match base.scheme_str() {
            Some("http" | "https") if base.host().is_some() => {}
            _ => bail!("invalid API URL {url:?}: expected http://HOST[:PORT] or https://…"),
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key must be printable ASCII")?;
        authorization.set_sensitive(true);
        Ok(Self {
            base,
            authorization,
        })
    }

    fn is_tls(&self) -> bool {
        self.base.scheme_str() == Some("https")
    }

    fn host(&self) -> &str {
        self.base.host().unwrap_or("127.0.0.1")
    }

    fn port(&self) -> u16 {
        self.base
            .port_u16()
            .unwrap_or(if self.is_tls() { 443 } else { 80 })
    }

    /// Opens one keep-alive connection.
    pub(crate) async fn connect(&self) -> anyhow::Result<ApiConnection> {
        let what = format!("{}:{}", self.host(), self.port());
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&what))
            .await
            .with_context(|| format!("connecting to {what} timed out"))?
            .with_context(|| format!("cannot connect to {what}"))?;
        let _ = tcp.set_nodelay(true);
        let sender = if self.is_tls() {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls_pki_types::ServerName::try_from(self.host().to_owned())
                .context("invalid TLS server name")?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {what} failed"))?;
            handshake(tls).await?
        } else {
            handshake(tcp).await?
        };
        Ok(ApiConnection {
            target: self.clone(),
            sender,
        })
    }
}

async fn handshake<I>(io: I) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake failed")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One keep-alive connection to the API.
#[derive(Debug)]
pub(crate) struct ApiConnection {
    target: ApiTarget,
    sender: SendRequest<Full<Bytes>>,
}

impl ApiConnection {
    /// Sends one request (`path` under the base URL) and reads the whole answer.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let authority = self
            .target
            .base
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let base_path = self.target.base.path().trim_end_matches('/');
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{base_path}{path}"))
            .header(header::HOST, authority)
            .header(header::AUTHORIZATION, self.target.authorization.clone());
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .context("building the request")?;
        self.sender.ready().await.context("connection closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("the request failed")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the answer failed")?
            .to_bytes();
        Ok((status, body))
    }
}
