//! The operator page: `/admin` (a page of live charts, embedded from `web/admin/`) and its data,
//! `GET /admin/api/stats` (`Authorization: Bearer KEY`): this node's snapshot and, in a
//! cluster, every node's, refreshed once a second (docs/admin.md).
//!
//! Off unless `[admin] key` is set: then none of these routes exists (404).
//!
//! - `config`: the `[admin]` settings.
//! - `sampler`: the once-a-second snapshot and the cluster view, shared through the broker.
//! - `rooms`: the busiest rooms from seq deltas; `counters`: rates and latency quantiles from
//!   the traffic counters.

pub mod config;
mod counters;
mod rooms;
pub(crate) mod sampler;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq as _;

use crate::state::AppState;

const PAGE_HTML: &str = include_str!("../../../../web/admin/index.html");
const PAGE_JS: &str = include_str!("../../../../web/admin/admin.js");
const PAGE_CSS: &str = include_str!("../../../../web/admin/admin.css");

/// Adds the operator page's routes when it is enabled.
pub(crate) fn routes(router: Router<Arc<AppState>>, state: &AppState) -> Router<Arc<AppState>> {
    if state.admin.is_none() {
        return router;
    }
    router
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/admin.js", get(script))
        .route("/admin/admin.css", get(style))
        .route("/admin/api/stats", get(stats))
}

/// Whether `presented` is a key that may read the operator page's data: the `[admin] key`,
/// compared in constant time. (API keys with an `admin` scope join here.)
pub(crate) fn admin_authorised(state: &AppState, presented: &str) -> bool {
    state
        .config
        .admin
        .key
        .as_deref()
        .is_some_and(|key| bool::from(key.as_bytes().ct_eq(presented.as_bytes())))
}

/// The key of `Authorization: Bearer KEY`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// The page itself carries no data: it asks for the key and reads `/admin/api/stats` with it.
async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_CSS,
    )
}

/// `GET /admin/api/stats`: 401 without the key, else the latest cluster view (JSON).
async fn stats(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(admin) = &state.admin else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !bearer(&headers).is_some_and(|key| admin_authorised(&state, key)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"switchboard admin\"",
            )],
            "admin key required: Authorization: Bearer KEY\n",
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        admin.view().to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_key_is_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
