//! What every request handler and connection shares.

use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_hub::Broker;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::limits::IpLimiter;

/// Shared server state, passed to handlers with axum's `State`.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Where rooms live (this process, or Redis shared with other nodes).
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) config: Config,
    /// Verifies tokens at the upgrade and on `refresh`.
    pub(crate) auth: Authenticator,
    /// New connections per IP address.
    pub(crate) ip_limiter: IpLimiter,
    /// Proxies whose `X-Forwarded-For` names the client (`Config::trusted_proxies`).
    pub(crate) trusted_proxies: Vec<crate::http::client_ip::Network>,
    /// The names browser requests may use in `Host` (`Config::server_names`).
    pub(crate) server_names: crate::http::origin::ServerNames,
    /// One permit per open WebSocket (`limits.max_connections`).
    pub(crate) connections: Arc<Semaphore>,
    /// Open WebSockets per address (`limits.max_connections_per_ip`).
    pub(crate) ip_connections: Arc<crate::limits::IpSlots>,
    /// One permit per accepted connection not yet upgraded (`limits.max_pending_connections`),
    /// taken before `accept`.
    pub(crate) pending: Arc<Semaphore>,
    /// Pending connections per peer address (`limits.max_pending_per_ip`).
    pub(crate) pending_per_ip: Arc<crate::limits::IpSlots>,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the server starts shutting down; connections then close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// The operator page's state, when `[admin] key` is set.
    pub(crate) admin: Option<Arc<crate::admin::sampler::AdminState>>,
}

/// The TCP peer of a request, put into its extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

impl AppState {
    /// The per-address cap on open WebSockets, for logs.
    pub(crate) fn ip_connections_cap(&self) -> usize {
        self.config.limits.connections_per_ip_cap()
    }
}
