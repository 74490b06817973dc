//! The HTTP handlers that upgrade to WebSocket (`/ws`, `/echo`) and the connection tasks they
//! start.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use switchboard_hub::{Outbox, Session};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, warn};

use super::codec;
use super::deflate::{self, Deflate};
use super::driver::{self, DriveOptions};
use super::echo::EchoHandler;
use super::upgrade;
use crate::auth::{AuthError, Identity};
use crate::http::client_ip::client_ip;
use crate::http::origin;
use crate::limits::IpSlot;
use crate::metrics::conn::Transport;
use crate::session::SessionHandler;
use crate::state::{AppState, PeerAddr};

#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    user: Option<String>,
    token: Option<String>,
}

/// Everything checked before the 101, cheapest first: the handshake itself, the Origin,
/// the per-IP connection rate, the token, the node's connection cap.
#[allow(
    clippy::result_large_err,
    reason = "the error is the HTTP response itself"
)]
fn admit(
    state: &AppState,
    peer: SocketAddr,
    request: &Request,
    query: &WsQuery,
) -> Result<(String, Identity, Slots), Response> {
    let headers = request.headers();
    let accept = upgrade::check(headers)?;
    if let Err(refused) = origin::check(
        &state.config.allowed_origins,
        &state.server_names,
        scheme(state, peer, headers),
        headers,
    ) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|value| value.to_str().ok());
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok());
        info!(%peer, origin, host, reason = "origin", error = %refused, "upgrade refused");
        return Err(refusal(StatusCode::FORBIDDEN, &refused.to_string(), None));
    }
    let client = client_ip(peer.ip(), headers, &state.trusted_proxies);
    if let Err(wait) = state.ip_limiter.admit(client, Instant::now()) {
        info!(%peer, %client, reason = "ip_rate", "upgrade refused");
        return Err(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections from this address",
            Some(wait),
        ));
    }
    let ip_slot = state.ip_connections.try_acquire(client).ok_or_else(|| {
        info!(%peer, %client, reason = "ip_connections", max = state.ip_connections_cap(), "upgrade refused");
        refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open connections from this address",
            Some(Duration::from_secs(5)),
        )
    })?;
    let identity = state
        .auth
        .authenticate(headers, query.token.as_deref(), query.user.as_deref())
        .map_err(|err| {
            info!(%peer, reason = "auth", error = %err, "upgrade refused");
            match err {
                AuthError::BadUser(_) if state.auth.allows_anonymous() => {
                    (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response()
                }
                _ => {
                    let mut response =
                        (StatusCode::UNAUTHORIZED, format!("{err}\n")).into_response();
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    response
                }
            }
        })?;
    if state
        .broker
        .users()
        .is_denied(&identity.user, crate::session::now_millis())
    {
        info!(%peer, reason = "denied", user = %identity.user, "upgrade refused");
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "this user is refused for now (disconnected through the API)",
            None,
        ));
    }
    let permit = state.connections.clone().try_acquire_owned().map_err(|_| {
        warn!(%peer, reason = "capacity", max = state.config.limits.max_connections, "upgrade refused");
        refusal(StatusCode::SERVICE_UNAVAILABLE, "server at its connection limit", Some(Duration::from_secs(5)))
    })?;
    Ok((accept, identity, (permit, ip_slot)))
}

/// What an open `/ws` connection holds: its node-wide slot and its address's.
type Slots = (OwnedSemaphorePermit, IpSlot);

/// How the client reached the server: `https` with TLS; behind a trusted proxy, what its
/// `X-Forwarded-Proto` says (the proxy may terminate TLS); else `http`.
fn scheme(state: &AppState, peer: SocketAddr, headers: &http::HeaderMap) -> &'static str {
    if state.config.tls_cert.is_some() {
        return "https";
    }
    let behind_proxy = state
        .trusted_proxies
        .iter()
        .any(|net| net.contains(peer.ip()));
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    if behind_proxy && forwarded_https {
        "https"
    } else {
        "http"
    }
}

/// A refusal with a reason and, for limits, `Retry-After` (whole seconds, at least 1).
fn refusal(status: StatusCode, reason: &str, retry_after: Option<Duration>) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// `GET /ws`: protocol v1.
pub(crate) async fn ws(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Query(query): Query<WsQuery>,
    request: Request,
) -> Response {
    let (accept, identity, permit) = match admit(&state, peer, &request, &query) {
        Ok(admitted) => admitted,
        Err(response) => {
            crate::metrics::conn::rejected(response.status());
            return response;
        }
    };
    let deflate = deflate::negotiate(request.headers(), state.config.compression_settings());
    let on_upgrade = hyper::upgrade::on(request);
    let upgrade = Box::new(Upgrade {
        on_upgrade,
        identity,
        deflate: deflate.as_ref().map(|(d, _)| *d),
    });
    let task = session_task(state.clone(), upgrade, permit, peer);
    state
        .tracker
        .spawn(task.instrument(crate::metrics::conn::span("ws")));
    answer(&accept, deflate)
}

/// The 101 response, with the `Sec-WebSocket-Extensions` answer when deflate was agreed.
fn answer(accept: &str, deflate: Option<(Deflate, HeaderValue)>) -> Response {
    let mut response = upgrade::switching_protocols(accept);
    if let Some((_, extensions)) = deflate {
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
    }
    response
}

/// `GET /echo`: echoes every message (only with `echo_endpoint`).
pub(crate) async fn echo(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    request: Request,
) -> Response {
    let accept = match upgrade::check(request.headers()) {
        Ok(accept) => accept,
        Err(response) => {
            crate::metrics::conn::rejected(response.status());
            return response;
        }
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        crate::metrics::conn::rejected(StatusCode::SERVICE_UNAVAILABLE);
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at its connection limit",
            Some(Duration::from_secs(5)),
        );
    };
    let deflate = deflate::negotiate(request.headers(), state.config.compression_settings());
    let on_upgrade = hyper::upgrade::on(request);
    let task = echo_task(
        state.clone(),
        on_upgrade,
        permit,
        peer,
        deflate.as_ref().map(|(d, _)| *d),
    );
    state
        .tracker
        .spawn(task.instrument(crate::metrics::conn::span("echo")));
    answer(&accept, deflate)
}

fn options(state: &AppState, max_message_size: usize, deflate: Option<Deflate>) -> DriveOptions {
    DriveOptions {
        ping_interval: state.config.ping_interval,
        pong_timeout: state.config.pong_timeout,
        shutdown_timeout: state.config.shutdown_timeout,
        write_timeout: state.config.memory.write_timeout,
        fragment_timeout: state.config.memory.fragment_timeout,
        max_message_size,
        deflate,
    }
}

/// The task of one `/ws` connection, from the upgrade to the end. Its future is most of what
/// an idle connection costs, so it is one `async move` block (each value captured once, no
/// nested `async fn` keeping copies of its arguments) and the upgraded I/O becomes the
/// socket inside the call that takes it.
///
/// What is needed only until the upgrade completes (the upgrade itself, the identity, the
/// deflate parameters: 76 bytes) comes boxed. An `async` block keeps every captured value in
/// its prefix for its whole life, even once moved out; boxed, it keeps 8 bytes, and what is
/// unpacked lives only across the upgrade's `await`, overlapping the connection's state.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in the task"
)]
fn session_task(
    state: Arc<AppState>,
    upgrade: Box<Upgrade>,
    permit: Slots,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send {
    async move {
        let Upgrade {
            on_upgrade,
            identity,
            deflate,
        } = *upgrade;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                debug!(%peer, %err, "upgrade did not complete");
                return;
            }
        };
        let session = state.broker.connect(identity.user.clone());
        state.broker.users().register(&session);
        // Leaves every room when the task ends, however it ends (a panic included).
        let _registered = Registered {
            state: &state,
            session: &session,
        };
        debug!(%peer, session = session.id().0, user = %session.user(), "connected");
        let connection = crate::metrics::conn::Connection::open(Transport::Ws);
        let mut handler = SessionHandler::new(state.clone(), session.clone(), identity);
        let ending = driver::drive(
            codec::server_socket(upgraded, state.config.max_message_size, deflate.is_some()),
            session.outbox(),
            &mut handler,
            options(&state, state.config.max_message_size, deflate),
            &state.shutdown,
            &connection.counts,
        )
        .await;
        connection.closed(&ending, peer, session.user());
        drop(permit);
    }
}

/// What a `/ws` connection's task needs only until the upgrade completes (see
/// [`session_task`]).
struct Upgrade {
    on_upgrade: OnUpgrade,
    identity: Identity,
    deflate: Option<Deflate>,
}

/// A session registered with the hub; dropping it disconnects the session.
/// (The state, not `&dyn Broker`: a thin reference, 8 bytes fewer in every task.)
struct Registered<'a> {
    state: &'a AppState,
    session: &'a Arc<Session>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let broker = &*self.state.broker;
        broker.users().unregister(self.session);
        #[allow(
            clippy::cast_precision_loss,
            reason = "at most max_rooms_per_connection"
        )]
        crate::metrics::conn::memberships(-(self.session.room_count() as f64));
        broker.disconnect(self.session);
    }
}

/// The task of one `/echo` connection, built like [`session_task`].
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in the task"
)]
fn echo_task(
    state: Arc<AppState>,
    on_upgrade: OnUpgrade,
    permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    deflate: Option<Deflate>,
) -> impl Future<Output = ()> + Send {
    async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                debug!(%peer, %err, "upgrade did not complete");
                return;
            }
        };
        let max = state.config.echo_max_message_size;
        // Room for a maximal message on its way back plus the next one.
        let outbox = Outbox::new(max.saturating_mul(2).saturating_add(64 * 1024));
        let connection = crate::metrics::conn::Connection::open(Transport::Echo);
        let mut handler = EchoHandler::new(&outbox);
        let ending = driver::drive(
            codec::server_socket(upgraded, max, deflate.is_some()),
            &outbox,
            &mut handler,
            options(&state, max, deflate),
            &state.shutdown,
            &connection.counts,
        )
        .await;
        connection.closed(&ending, peer, "echo");
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `task` returns, without calling it.
    fn future_size<A, B, C, D, F: Future>(_task: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    /// The `/ws` task is most of what an idle connection costs, and tokio pads its cell (the
    /// future plus 152 bytes: the tracing span, the task tracker's token, tokio's header,
    /// scheduler handle and trailer) to a multiple of 128 bytes, so a few bytes more can cost
    /// 128 per connection. Release build: 1,688 bytes (cell 1,920); it was 1,864 (cell
    /// 2,048) with the identity held for the task's whole life, the drive options copied into
    /// both loops, and the pipeline and violation queue inline. (The test build measures the
    /// same 1,688 bytes.) Up to 1,768 bytes still fits the 1,920-byte cell.
    #[test]
    fn ws_task_future_fits_a_1920_byte_task_cell() {
        let size = future_size(session_task);
        assert!(size <= 1688, "session_task's future grew to {size} bytes");
    }
}
