//! The HTTP handlers that upgrade to WebSocket (`/ws`, `/echo`) and the connection tasks they
//! start.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use hyper::upgrade::Upgraded;
use serde::Deserialize;
use switchboard_hub::Outbox;
use switchboard_protocol::names::validate_user;
use tracing::{debug, info};

use super::codec;
use super::driver::{self, DriveOptions, Ending};
use super::echo::EchoHandler;
use super::session::SessionHandler;
use super::upgrade;
use crate::state::{AppState, PeerAddr};

#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    user: Option<String>,
}

/// `GET /ws`: protocol v1.
pub(crate) async fn ws(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Query(query): Query<WsQuery>,
    request: Request,
) -> Response {
    let accept = match upgrade::check(request.headers()) {
        Ok(accept) => accept,
        Err(response) => return response,
    };
    let user: Arc<str> = match query.user {
        Some(user) => match validate_user(&user) {
            Ok(()) => user.into(),
            Err(err) => {
                debug!(%peer, %err, "upgrade refused: bad user name");
                return (
                    StatusCode::BAD_REQUEST,
                    format!("invalid user name: {err}\n"),
                )
                    .into_response();
            }
        },
        None => format!("anon-{:08x}", fastrand::u32(..)).into(),
    };
    let on_upgrade = hyper::upgrade::on(request);
    let task_state = state.clone();
    state.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run_session(&task_state, upgraded, user, peer).await,
            Err(err) => debug!(%peer, %err, "upgrade did not complete"),
        }
    });
    upgrade::switching_protocols(&accept)
}

/// `GET /echo`: echoes every message (only with `echo_endpoint`).
pub(crate) async fn echo(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    request: Request,
) -> Response {
    let accept = match upgrade::check(request.headers()) {
        Ok(accept) => accept,
        Err(response) => return response,
    };
    let on_upgrade = hyper::upgrade::on(request);
    let task_state = state.clone();
    state.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run_echo(&task_state, upgraded, peer).await,
            Err(err) => debug!(%peer, %err, "upgrade did not complete"),
        }
    });
    upgrade::switching_protocols(&accept)
}

fn options(state: &AppState) -> DriveOptions {
    DriveOptions {
        ping_interval: state.config.ping_interval,
        pong_timeout: state.config.pong_timeout,
        shutdown_timeout: state.config.shutdown_timeout,
    }
}

async fn run_session(state: &AppState, upgraded: Upgraded, user: Arc<str>, peer: SocketAddr) {
    let socket = codec::server_socket(upgraded, state.config.max_message_size);
    let session = state.hub.connect(user);
    debug!(%peer, session = session.id().0, user = %session.user(), "connected");
    let mut handler = SessionHandler::new(
        state.hub.clone(),
        session.clone(),
        state.config.max_violations,
    );
    let ending = driver::drive(
        socket,
        session.outbox(),
        &mut handler,
        options(state),
        &state.shutdown,
    )
    .await;
    state.hub.disconnect(&session);
    log_ending(&ending, peer, session.id().0, session.user());
}

async fn run_echo(state: &AppState, upgraded: Upgraded, peer: SocketAddr) {
    let max = state.config.echo_max_message_size;
    let socket = codec::server_socket(upgraded, max);
    // Room for a maximal message on its way back plus the next one.
    let outbox = Outbox::new(max.saturating_mul(2).saturating_add(64 * 1024));
    let mut handler = EchoHandler::new(&outbox);
    let ending = driver::drive(
        socket,
        &outbox,
        &mut handler,
        options(state),
        &state.shutdown,
    )
    .await;
    log_ending(&ending, peer, 0, "echo");
}

fn log_ending(ending: &Ending, peer: SocketAddr, session: u64, user: &str) {
    let how = ending.label();
    match ending {
        Ending::PeerClosed(code, reason) => {
            debug!(%peer, session, user, how, code, reason = %reason, "disconnected");
        }
        Ending::PeerGone(cause) => debug!(%peer, session, user, how, cause, "disconnected"),
        Ending::ServerClosed(frame) => {
            debug!(%peer, session, user, how, code = frame.code, reason = %frame.reason, "disconnected");
        }
        Ending::ProtocolError(err) => {
            info!(%peer, session, user, how, error = %err, "disconnected")
        }
        Ending::PingTimeout | Ending::SlowConsumer => {
            info!(%peer, session, user, how, "disconnected")
        }
    }
}
