//! The RFC 6455 opening handshake on the server side: check the request, compute
//! `Sec-WebSocket-Accept`, answer 101 — or explain with the right HTTP status why not.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The GUID of RFC 6455 section 1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Checks an upgrade request; on success returns the `Sec-WebSocket-Accept` value.
#[allow(
    clippy::result_large_err,
    reason = "the error is the HTTP response itself"
)]
pub(crate) fn check(headers: &HeaderMap) -> Result<String, Response> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "this endpoint speaks WebSocket: send an Upgrade: websocket request",
            true,
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version: only 13 is supported",
            true,
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|key| STANDARD.decode(key).is_ok_and(|raw| raw.len() == 16))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "missing or malformed Sec-WebSocket-Key",
                false,
            )
        })?;
    Ok(accept_key(key))
}

/// `base64(sha1(key + GUID))`.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// The 101 response that completes the handshake.
pub(crate) fn switching_protocols(accept: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// A refusal with a short plain-text reason.
pub(crate) fn refuse(status: StatusCode, reason: &'static str, advertise: bool) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    if advertise {
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn checks_each_header() {
        let good = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert!(check(&headers(&good)).is_ok());
        let status = |h: &[(&'static str, &'static str)]| check(&headers(h)).unwrap_err().status();
        assert_eq!(status(&good[1..]), StatusCode::BAD_REQUEST);
        let mut wrong_version = good;
        wrong_version[2].1 = "8";
        assert_eq!(status(&wrong_version), StatusCode::UPGRADE_REQUIRED);
        let mut bad_key = good;
        bad_key[3].1 = "c2hvcnQ=";
        assert_eq!(status(&bad_key), StatusCode::BAD_REQUEST);
    }
}
