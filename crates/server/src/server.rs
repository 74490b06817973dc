//! The accept loop and the server's lifecycle: bind, serve, shut down gracefully.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_broker_redis::{RedisBroker, RedisBrokerError, RedisConfig};
use switchboard_hub::{Broker, Hub, HubConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::http::routes;
use crate::limits::IpLimiter;
use crate::state::{AppState, PeerAddr};

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
                let dropped = state.broker.sweep(crate::ws::session::now_millis());
                if dropped > 0 {
                    debug!(dropped, "swept rooms without members or history");
                }
                state.ip_limiter.sweep(tokio::time::Instant::now());
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
            _ = tick.tick() => state.broker.flush_presence(crate::ws::session::now_millis()),
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The broker could not start.
    #[error(transparent)]
    Broker(#[from] RedisBrokerError),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
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
    /// Validates `config` and binds its listen address (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let auth = Authenticator::from_config(&config.auth)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let broker = broker_for(&config)?;
        let trusted_proxies =
            config
                .trusted_proxy_networks()
                .map_err(|reason| ConfigError::Invalid {
                    field: "trusted_proxies",
                    reason,
                })?;
        let limits = &config.limits;
        Ok(Self {
            listener,
            tls,
            state: Arc::new(AppState {
                broker,
                trusted_proxies,
                auth,
                ip_limiter: IpLimiter::new(
                    limits.connections_per_ip_per_second,
                    limits.connection_burst_per_ip,
                ),
                connections: Arc::new(Semaphore::new(limits.max_connections)),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                config,
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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
        } = self;
        let router = routes::router(state.clone());
        state.tracker.spawn(sweep(state.clone(), shutdown.clone()));
        state
            .tracker
            .spawn(flush_presence(state.clone(), shutdown.clone()));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(state.config.handshake_timeout)
            .keep_alive(true);
        loop {
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
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                        request.extensions_mut().insert(PeerAddr(peer));
                        router.clone().call(request)
                    });
                    let (http, stop, tls) = (http.clone(), state.shutdown.clone(), tls.clone());
                    let handshake_timeout = state.config.handshake_timeout;
                    state.tracker.spawn(async move {
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
    }
}

/// The broker the configuration names: this process's hub, or Redis.
fn broker_for(config: &Config) -> Result<Arc<dyn Broker>, ServerError> {
    let history = config.history.rules();
    Ok(match config.cluster.redis_url() {
        None => Arc::new(Hub::new(HubConfig {
            outbox_bytes: config.outbox_bytes,
            history,
            idempotency_window: config.idempotency_window,
            presence: config.presence.hub(),
        })),
        Some(url) => {
            let cluster = &config.cluster;
            Arc::new(RedisBroker::start(RedisConfig {
                url: url.to_owned(),
                prefix: cluster.redis_prefix.clone(),
                presence_ttl: cluster.presence_ttl,
                presence_interval: cluster.presence_interval,
                history,
                idempotency_window: config.idempotency_window,
                outbox_bytes: config.outbox_bytes,
                timeout: cluster.redis_timeout,
                publish_queue: crate::ws::session::MAX_PIPELINED
                    .saturating_mul(config.limits.max_connections),
                presence: config.presence.hub(),
            })?)
        }
    })
}
