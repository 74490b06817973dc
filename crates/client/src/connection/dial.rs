//! Dialing: opening one connection (TCP, TLS, the upgrade with the builder's headers), and
//! whether to dial again after a connection ended.

use std::sync::Arc;

use switchboard_protocol::codes::close;
use tokio::net::TcpStream;
use tokio_websockets::{Error as WsError, MaybeTlsStream, upgrade};

use super::link::Ws;
use crate::builder::Settings;
use crate::error::Error;

/// Close codes after which the client does not reconnect (besides a close 1000 from either
/// side): 1008 (policy violation: too many protocol errors, ping timeout), Switchboard's
/// authentication / permission codes 4001 and 4003, and those other servers and proxies use
/// for the same (4002, 4401, 4403). Reconnecting would only be refused again.
pub const NO_RECONNECT_CLOSE_CODES: &[u16] = &[
    close::POLICY_VIOLATION,
    close::TOKEN_EXPIRED,
    4002,
    close::FORBIDDEN,
    4401,
    4403,
];

/// HTTP statuses of a refused reconnection after which the client stops (authentication).
pub(super) const NO_RECONNECT_HTTP_STATUSES: &[u16] = &[401, 403];

/// Whether the client reconnects after a connection ended with this close code (`None`: no
/// close frame).
pub(crate) fn should_reconnect(code: Option<u16>) -> bool {
    match code {
        None => true,
        Some(close::NORMAL) => false,
        Some(code) => !NO_RECONNECT_CLOSE_CODES.contains(&code),
    }
}

/// Opens one connection: TCP, then the upgrade, within the connect timeout.
///
/// `token`, when set (after a `refresh`), replaces the builder's `Authorization` header.
pub(crate) async fn open(settings: Arc<Settings>, token: Option<String>) -> Result<Ws, Error> {
    let attempt = async {
        let uri = &settings.uri;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if settings.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| Error::Connect(WsError::Io(err)))?;
        // Small frames (acks, typing) should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let stream = match &settings.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(config) => {
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|err| {
                        Error::Connect(WsError::Io(std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            err,
                        )))
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|err| Error::Connect(WsError::Io(err)))?;
                MaybeTlsStream::Rustls(tls)
            }
        };
        let mut builder = tokio_websockets::ClientBuilder::from_uri(uri.clone());
        for (name, value) in &settings.headers {
            if token.is_some() && *name == http::header::AUTHORIZATION {
                continue;
            }
            builder = builder
                .add_header(name.clone(), value.clone())
                .map_err(Error::Connect)?;
        }
        if let Some(token) = &token {
            let mut value =
                http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|err| {
                    Error::Connect(WsError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        err,
                    )))
                })?;
            value.set_sensitive(true);
            builder = builder
                .add_header(http::header::AUTHORIZATION, value)
                .map_err(Error::Connect)?;
        }
        match builder.connect_on(stream).await {
            Ok((ws, _response)) => Ok(ws),
            Err(WsError::Upgrade(upgrade::Error::DidNotSwitchProtocols(status))) => {
                Err(Error::Refused { status })
            }
            Err(err) => Err(Error::Connect(err)),
        }
    };
    tokio::time::timeout(settings.connect_timeout, attempt)
        .await
        .unwrap_or(Err(Error::ConnectTimeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_policy() {
        let table = [
            (None, true),
            (Some(1000), false),
            (Some(1001), true),
            (Some(1005), true),
            (Some(1006), true),
            (Some(1008), false),
            (Some(1009), true),
            (Some(1011), true),
            (Some(1013), true),
            (Some(4000), true),
            (Some(4001), false),
            (Some(4002), false),
            (Some(4003), false),
            (Some(4004), true),
            (Some(4401), false),
            (Some(4403), false),
        ];
        for (code, reconnect) in table {
            assert_eq!(should_reconnect(code), reconnect, "{code:?}");
        }
    }
}
