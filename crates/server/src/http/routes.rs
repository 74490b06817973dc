//! Which path goes to which handler.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchboard_hub::BrokerHealth;
use tracing::debug;

use super::assets;
use crate::state::AppState;
use crate::ws::endpoints;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/sdk/switchboard.js", get(assets::sdk_js))
        .route("/sdk/switchboard.min.js", get(assets::sdk_min_js))
        .route("/ticker.html", get(assets::ticker_html))
        .route("/ticker.js", get(assets::ticker_js))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ws", get(endpoints::ws));
    if state.config.echo_endpoint {
        router = router.route("/echo", get(endpoints::echo));
    }
    if state.api.is_some() {
        router = router.merge(super::api::routes());
    }
    if state.config.metrics.enabled && state.config.metrics.listen.is_none() {
        router = router.route("/metrics", get(crate::metrics::http::scrape));
    }
    router = crate::admin::routes(router, &state);
    router
        .layer(axum::middleware::map_response(
            super::headers::security_headers,
        ))
        .with_state(state)
}

/// 200 while the server is serving.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when the node can serve room operations; 503 while its broker is unreachable (a load
/// balancer should then send new clients elsewhere; connected ones stay). The body names the
/// broker and its state: `ready broker=redis` or `unavailable broker=redis reason=…`.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let kind = state.broker.kind();
    match state.broker.health() {
        BrokerHealth::Ready => (StatusCode::OK, format!("ready broker={kind}\n")).into_response(),
        BrokerHealth::Unavailable(reason) => {
            debug!(broker = kind, reason = %reason, "readyz: unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unavailable broker={kind} reason={reason}\n"),
            )
                .into_response()
        }
    }
}
