//! Which path goes to which handler.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use super::assets;
use crate::state::AppState;
use crate::ws::endpoints;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/healthz", get(healthz))
        .route("/ws", get(endpoints::ws));
    if state.config.echo_endpoint {
        router = router.route("/echo", get(endpoints::echo));
    }
    router.with_state(state)
}

/// 200 while the server is serving.
async fn healthz() -> &'static str {
    "ok\n"
}
