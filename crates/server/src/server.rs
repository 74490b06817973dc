//! The accept loop and the server's lifecycle: bind, serve, shut down gracefully.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_hub::Broker;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, info, warn};

use crate::config::ConfigError;
use crate::http::routes;
use crate::limits::{IpLimiter, IpSlots};
use crate::settings::Settings;
use crate::state::{AppState, PeerAddr};
use crate::webhooks::Webhooks;

/// How often expired history, abandoned rooms and quiet per-IP buckets are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Periodic cleanup, until shutdown: expires history, drops rooms that have neither members
/// nor history, forgets the connection-rate buckets of quiet addresses.
async fn sweep(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let dropped = state.broker.sweep(crate::session::now_millis());
                if dropped > 0 {
                    debug!(dropped, "swept rooms without members or history");
                }
                state.ip_limiter.sweep(tokio::time::Instant::now());
                crate::metrics::exporter::upkeep();
            }
        }
    }
}

/// Hands out coalesced presence every `presence.batch_interval`, until shutdown (a room's
/// changes wait at most one interval; see `switchboard_hub::PresenceConfig`).
async fn flush_presence(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.presence.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => state.broker.flush_presence(crate::session::now_millis()),
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection, plain or TLS. On shutdown the request
/// in flight finishes and the connection closes; upgraded connections have left hyper by then
/// and close themselves with 1001.
async fn serve_http<I, S>(
    http: &http1::Builder,
    io: I,
    service: S,
    stop: &CancellationToken,
) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    /// `metrics.listen`'s listener, when `/metrics` has its own address.
    metrics_listener: Option<TcpListener>,
    /// The webhook dispatcher, when endpoints are configured; stopped after the broker.
    webhooks: Option<Arc<Webhooks>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listen address of `settings` (port 0 picks a free port), to serve with
    /// `broker` as the engine that sequences and stores rooms: the one `settings.engine()`
    /// names, built by the caller (the binary; [`Settings::memory_engine`] for this process's
    /// hub).
    pub async fn bind(settings: Settings, broker: Arc<dyn Broker>) -> Result<Self, ServerError> {
        let (config, auth, trusted_proxies) = settings.into_parts();
        if auth.allows_anonymous() && auth.verifies_tokens() {
            warn!(
                prefix = auth.anonymous_prefix(),
                "anonymous access is on beside a token key: anyone can connect, with every right, \
                 under a name starting with the anonymous prefix"
            );
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let addr = config.listen;
        let listener = listen(addr, config.limits.listen_backlog)
            .map_err(|source| ServerError::Bind { addr, source })?;
        // Before the broker starts, so that its first counts are recorded.
        let metrics_listener = match &config.metrics {
            metrics if !metrics.enabled || !crate::metrics::exporter::install() => None,
            metrics => match metrics.listen {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Bind { addr, source })?,
                ),
                None => None,
            },
        };
        let pending = pending_cap(&config.limits);
        let limits = &config.limits;
        let api = crate::http::api::ApiKeys::from_config(&config.api);
        // The operator page is on with an admin key or an API key with the `admin` scope.
        let admin_on = config.admin.enabled()
            || api
                .as_ref()
                .is_some_and(crate::http::api::ApiKeys::any_admin);
        let admin = admin_on.then(|| {
            let port = listener
                .local_addr()
                .map_or(addr.port(), |bound| bound.port());
            Arc::new(crate::admin::sampler::AdminState::new(port))
        });
        Ok(Self {
            listener,
            metrics_listener,
            tls,
            webhooks: None,
            state: Arc::new(AppState {
                broker,
                trusted_proxies,
                server_names: crate::http::origin::ServerNames::new(
                    &config.server_names,
                    addr.ip(),
                ),
                auth,
                api,
                ip_limiter: IpLimiter::new(
                    limits.connections_per_ip_per_second,
                    limits.connection_burst_per_ip,
                ),
                connections: Arc::new(Semaphore::new(limits.max_connections)),
                ip_connections: IpSlots::new(limits.connections_per_ip_cap()),
                pending: Arc::new(Semaphore::new(pending)),
                // At most half the pending slots for one address, whatever the setting, so
                // one address never holds them all.
                pending_per_ip: IpSlots::new(limits.max_pending_per_ip.min((pending / 2).max(1))),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                admin,
                config,
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on when it has its own (`metrics.listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Whether the server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Hands the server the webhook dispatcher whose sink `broker` was built with
    /// ([`Webhooks::events`]), so that shutdown drains it after the broker.
    #[must_use]
    pub fn with_webhooks(mut self, webhooks: Option<Arc<Webhooks>>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Webhook delivery counts, when webhooks are configured.
    pub fn webhook_stats(&self) -> Option<Arc<crate::webhooks::WebhookStats>> {
        self.webhooks.as_ref().map(|webhooks| webhooks.stats())
    }

    /// The broker behind this server (rooms, presence, history).
    pub fn broker(&self) -> Arc<dyn Broker> {
        self.state.broker.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes every WebSocket with
    /// 1001, waits for the close handshakes (at most `shutdown_timeout`) and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            listener,
            state,
            tls,
            metrics_listener,
            webhooks,
        } = self;
        let router = routes::router(state.clone());
        if let Some(listener) = metrics_listener {
            let serve = crate::metrics::http::serve(listener, state.clone(), shutdown.clone());
            state.tracker.spawn(serve);
        }
        state.tracker.spawn(sweep(state.clone(), shutdown.clone()));
        state
            .tracker
            .spawn(flush_presence(state.clone(), shutdown.clone()));
        if let Some(admin) = state.admin.clone() {
            let sampler = crate::admin::sampler::run(state.clone(), admin, shutdown.clone());
            state.tracker.spawn(sampler);
        }
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(state.config.handshake_timeout)
            .keep_alive(true);
        loop {
            // Admission before accept (F7): a permit for a connection that is not yet
            // upgraded is taken first, so at the cap the server spends nothing — no file
            // descriptor, no task — and new connections wait in the listen backlog.
            let admission = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = state.pending.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors or similar: back off instead of spinning.
                            warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // One address may hold only part of the pending slots; proxies, which
                    // carry many clients, are exempt.
                    let per_ip = if state.trusted_proxies.iter().any(|net| net.contains(peer.ip())) {
                        None
                    } else {
                        match state.pending_per_ip.try_acquire(peer.ip()) {
                            Some(slot) => Some(slot),
                            None => {
                                debug!(%peer, reason = "pending_per_ip", max = state.config.limits.max_pending_per_ip, "connection refused at accept");
                                continue;
                            }
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                        request.extensions_mut().insert(PeerAddr(peer));
                        router.clone().call(request)
                    });
                    let (http, stop, tls) = (http.clone(), state.shutdown.clone(), tls.clone());
                    let handshake_timeout = state.config.handshake_timeout;
                    state.tracker.spawn(async move {
                        // Held until the HTTP connection ends — for a WebSocket, when hyper
                        // hands the upgraded socket over; the session then holds a
                        // `connections` permit instead.
                        let _admission = (admission, per_ip);
                        let result = match tls {
                            None => serve_http(&http, stream, service, &stop).await,
                            Some(tls) => match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                                Ok(Ok(stream)) => serve_http(&http, stream, service, &stop).await,
                                Ok(Err(err)) => {
                                    debug!(%peer, error = %err, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            },
                        };
                        if let Err(err) = result {
                            debug!(%peer, error = %err, "http connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        let open = state.broker.stats().sessions;
        info!(
            open_sessions = open,
            "shutting down: closing connections with 1001"
        );
        state.shutdown.cancel();
        state.tracker.close();
        let drained = state.tracker.wait();
        // Sessions bound their own close handshake by shutdown_timeout; the extra second
        // covers the last writes.
        let limit = state.config.shutdown_timeout + Duration::from_secs(1);
        if tokio::time::timeout(limit, drained).await.is_err() {
            warn!(
                remaining = state.tracker.len(),
                "shutdown timeout: dropping the connections still open"
            );
        } else {
            info!("all connections closed");
        }
        state.broker.shutdown().await;
        // After the broker: the presence it wrote on the way out (members left, rooms
        // vacated) is still delivered, within `webhooks.drain_timeout`.
        if let Some(webhooks) = webhooks {
            webhooks.shutdown().await;
        }
    }
}

/// Binds `addr` with a listen backlog of `backlog` (std's `TcpListener::bind` uses 128, which
/// a reconnect storm overflows: each dropped SYN costs the client a 1 s retransmit).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std does on Unix: a restarted server can bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    if let Some(cap) = somaxconn().filter(|cap| *cap < backlog) {
        warn!(
            listen_backlog = backlog,
            somaxconn = cap,
            "the kernel caps the listen backlog at net.core.somaxconn; raise it (sysctl -w net.core.somaxconn={backlog}) for reconnect storms"
        );
    }
    socket.listen(backlog)
}

/// `net.core.somaxconn` (Linux), the kernel's cap on listen backlogs.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// File descriptors kept free beyond open and pending connections: log files, the Redis
/// connection, key files read on reload, the listener itself.
const FD_RESERVE: u64 = 64;

/// The cap on connections not yet upgraded: `max_pending_connections`, lowered if needed so
/// that slow or idle sockets never take the descriptors open WebSockets need. The open-file
/// limit is first raised to its hard maximum (as Go's runtime does). When `max_connections`
/// fits the limit, pending connections get at most what is left beside it (minus a reserve);
/// when it does not (the default 100,000 above a 20,000 limit), at most a quarter of the
/// limit, and the server warns that `max_connections` cannot be reached.
fn pending_cap(limits: &crate::config::LimitsConfig) -> usize {
    /// Never below this, so a tight configuration still accepts.
    const MIN_PENDING: u64 = 16;
    let configured = limits.max_pending_connections;
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            debug!(error = %err, "cannot read or raise RLIMIT_NOFILE");
            return configured;
        }
    };
    let established = u64::try_from(limits.max_connections).unwrap_or(u64::MAX);
    let beside = nofile.saturating_sub(established.saturating_add(FD_RESERVE));
    let fits = if beside >= MIN_PENDING {
        beside
    } else {
        let reachable = nofile.saturating_sub(nofile / 4 + FD_RESERVE);
        // A warning when the operator chose max_connections; for the built-in default (which
        // most development machines' limits do not reach) a note, not noise at every start.
        if limits.max_connections == crate::config::LimitsConfig::default().max_connections {
            info!(
                max_connections = limits.max_connections,
                open_file_limit = nofile,
                "the open-file limit allows about {reachable} WebSocket connections"
            );
        } else {
            warn!(
                max_connections = limits.max_connections,
                open_file_limit = nofile,
                "max_connections does not fit the open-file limit (ulimit -n): connections beyond about {reachable} will fail; raise the limit or lower max_connections"
            );
        }
        (nofile / 4).max(MIN_PENDING)
    };
    let cap = configured.min(usize::try_from(fits).unwrap_or(usize::MAX));
    if cap < configured {
        info!(
            max_pending_connections = cap,
            configured,
            open_file_limit = nofile,
            "pending-connection cap lowered to leave file descriptors for open connections"
        );
    }
    cap
}
