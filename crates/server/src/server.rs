//! The accept loop and the server's lifecycle: bind, serve, shut down gracefully.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_hub::{Hub, HubConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, info, warn};

use crate::config::{Config, ConfigError};
use crate::http::routes;
use crate::state::{AppState, PeerAddr};

/// How often expired history and abandoned rooms are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Expires history and drops rooms that have neither members nor history, until shutdown.
async fn sweep_rooms(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let dropped = hub.sweep(crate::ws::session::now_millis());
                if dropped > 0 {
                    debug!(dropped, "swept rooms without members or history");
                }
            }
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
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Validates `config` and binds its listen address (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let hub = Arc::new(Hub::new(HubConfig {
            outbox_bytes: config.outbox_bytes,
            history: config.history.rules(),
            idempotency_window: config.idempotency_window,
        }));
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                hub,
                config,
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub behind this server.
    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes every WebSocket with
    /// 1001, waits for the close handshakes (at most `shutdown_timeout`) and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { listener, state } = self;
        let router = routes::router(state.clone());
        state
            .tracker
            .spawn(sweep_rooms(state.hub.clone(), shutdown.clone()));
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
                    let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
                    let stop = state.shutdown.clone();
                    state.tracker.spawn(async move {
                        tokio::pin!(connection);
                        let result = tokio::select! {
                            result = connection.as_mut() => result,
                            () = stop.cancelled() => {
                                // Finish the request in flight, then close; upgraded
                                // connections have left hyper and close themselves with 1001.
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(err) = result {
                            debug!(%peer, error = %err, "http connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        let open = state.hub.stats().sessions;
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
    }
}
