//! An in-process server on `127.0.0.1:0`, built as `switchboard serve` builds it: the
//! configuration validated into [`Settings`], the engine it names started by the binary's
//! own code (`switchboard_cli::engine`), so a test server with `cluster.broker` set to a
//! [`RedisServer`](crate::RedisServer)'s URL runs on Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_server::webhooks::{WebhookStats, Webhooks};
use switchboard_server::{Broker, CancellationToken, Config, Server, Settings};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::RECV_TIMEOUT;

/// An in-process server on `127.0.0.1:0`, running on a task of the test's runtime.
pub struct TestServer {
    addr: SocketAddr,
    /// `/metrics`'s own address, with `metrics.listen` set.
    metrics_addr: Option<SocketAddr>,
    token: CancellationToken,
    run: Option<JoinHandle<()>>,
    sessions: Box<dyn Fn() -> usize + Send + Sync>,
    /// The broker, for the memory counters ([`TestServer::stats`]).
    broker: Arc<dyn Broker>,
    /// Webhook delivery counts, when webhooks are configured.
    webhooks: Option<Arc<WebhookStats>>,
}

impl TestServer {
    /// Binds `config` (its `listen` is replaced by `127.0.0.1:0`) and spawns `run`.
    pub async fn start(config: Config) -> Self {
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config
        };
        let settings = Settings::new(config).expect("a valid test configuration");
        let webhooks = Webhooks::start(&settings.webhooks).expect("start the webhooks");
        let engine = switchboard_cli::engine::start(&settings, Webhooks::events(&webhooks))
            .expect("start the engine");
        let server = Server::bind(settings, engine)
            .await
            .expect("bind the test server")
            .with_webhooks(webhooks);
        let addr = server
            .local_addr()
            .expect("local address of the test server");
        let metrics_addr = server.metrics_addr();
        let broker = server.broker();
        let webhooks = server.webhook_stats();
        let token = CancellationToken::new();
        let run = tokio::spawn(server.run(token.clone()));
        Self {
            addr,
            metrics_addr,
            token,
            run: Some(run),
            broker: broker.clone(),
            webhooks,
            sessions: Box::new(move || broker.stats().sessions),
        }
    }

    /// A server with the default configuration.
    pub async fn default_config() -> Self {
        Self::start(Config::default()).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when it has its own address (`metrics.listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `ws://ADDR{path}` (path includes the query, e.g. `/ws?user=alice`).
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Cancels `run` and waits (at most `limit`) for it to return; panics if it does not.
    pub async fn shutdown_within(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.token.cancel();
        let run = self.run.take().expect("server is running");
        timeout(limit, run)
            .await
            .unwrap_or_else(|_| panic!("Server::run did not return within {limit:?} of cancel"))
            .expect("Server::run panicked");
        started.elapsed()
    }

    /// Cancels `run` and waits for it (15 s at most: clients that never answer the close
    /// are dropped after `shutdown_timeout`, 10 s by default).
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(15)).await;
    }

    /// Sessions the hub currently counts. A session is unregistered after it has left all its
    /// rooms, so this tells when a disconnect that sends no frame has been fully processed.
    pub fn sessions(&self) -> usize {
        (self.sessions)()
    }

    /// Webhook delivery counts (`None` without webhook endpoints).
    pub fn webhooks(&self) -> Option<Arc<WebhookStats>> {
        self.webhooks.clone()
    }

    /// The hub's counters: sessions, rooms and the server-wide memory budgets' use.
    pub fn stats(&self) -> switchboard_hub::HubStats {
        self.broker.stats()
    }

    /// Waits until the hub counts exactly `n` sessions (bounded by [`RECV_TIMEOUT`]). Only for
    /// server-side effects no frame reports (an abrupt disconnect that must send nothing).
    pub async fn wait_for_sessions(&self, n: usize) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while self.sessions() != n {
            assert!(
                Instant::now() < deadline,
                "hub still counts {} sessions after {RECV_TIMEOUT:?}, expected {n}",
                self.sessions()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// `config` without the per-connection message rate limit: for tests that publish thousands
/// of messages to test something else (ordering, slow consumers).
pub fn unthrottled(mut config: Config) -> Config {
    config.limits.messages_per_second = 1_000_000;
    config.limits.message_burst = 1_000_000;
    config
}
