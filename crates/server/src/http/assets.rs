//! The demo chat page, embedded in the binary from `web/`.

use axum::response::IntoResponse;
use http::header;

const INDEX_HTML: &str = include_str!("../../../../web/index.html");
const APP_JS: &str = include_str!("../../../../web/app.js");
const STYLE_CSS: &str = include_str!("../../../../web/style.css");

pub(crate) async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

pub(crate) async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

pub(crate) async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

// The JavaScript SDK (clients/js), built output committed under clients/js/dist and checked fresh by
// scripts/js-tests.sh, so `cargo build` needs no Node. Pages load it with
// `import { Client } from "/sdk/switchboard.min.js"` and need no build step of their own.
const SDK_JS: &str = include_str!("../../../../clients/js/dist/switchboard.js");
const SDK_MIN_JS: &str = include_str!("../../../../clients/js/dist/switchboard.min.js");

// The live ticker demo (web/ticker.html): many viewers, one publisher from the CLI.
const TICKER_HTML: &str = include_str!("../../../../web/ticker.html");
const TICKER_JS: &str = include_str!("../../../../web/ticker.js");

fn javascript(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // Revalidate on every load: the SDK changes with the server that serves it.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub(crate) async fn sdk_js() -> impl IntoResponse {
    javascript(SDK_JS)
}

pub(crate) async fn sdk_min_js() -> impl IntoResponse {
    javascript(SDK_MIN_JS)
}

pub(crate) async fn ticker_html() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        TICKER_HTML,
    )
}

pub(crate) async fn ticker_js() -> impl IntoResponse {
    javascript(TICKER_JS)
}
