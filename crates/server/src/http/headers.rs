//! Security headers on every HTTP answer (F16): the demo page and its assets, the SDK module,
//! health checks and refusals. A 101 is left alone (nothing a browser renders).

use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

/// What the demo page needs and nothing more: its own scripts, styles and SDK module
/// (`'self'`), the `data:` favicon, WebSockets to any server (the page can be pointed at
/// another node with `?sb=`), and no framing by other sites (clickjacking).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds `Content-Security-Policy`, `X-Content-Type-Options: nosniff`, `Referrer-Policy:
/// no-referrer` (a page URL may carry `?token=`) and `X-Frame-Options: DENY` (for browsers
/// without `frame-ancestors`) unless a handler set them itself.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ] {
        headers.entry(name).or_insert(value);
    }
    response
}
