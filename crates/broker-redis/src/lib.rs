//! The Redis engine: several Switchboard nodes share one set of rooms through Redis. It only
//! sequences, stores and relays ([`switchboard_hub::Engine`]); the rooms on this node, joins,
//! leaves, resyncs and replies are the hub's, written once for every such engine
//! ([`switchboard_hub::Cluster`]; [`RedisBroker`] is that broker over this engine).
//!
//! - **Order**: a Lua script assigns each message its room's next `seq` (deduplicating on
//!   `msg_id`), stores it in the room's history stream and publishes it on the room's channel,
//!   atomically; every node receives a room's channel over one connection, in that order.
//! - **Fan-out**: a node subscribes to a room's channel only while it has members in the room
//!   and feeds each frame (encoded once, by the publishing node) to its members through
//!   [`switchboard_hub::Relay`].
//! - **Recovery**: history lives in Redis, so a client recovers its `since` on any node; the
//!   join script returns the snapshot (epoch, seq, replay, presence) the hub places.
//! - **Presence**: each node keeps its users' entries alive with a heartbeat; the entries of a
//!   node that stops (crash, partition) expire after `presence_ttl` and the next heartbeat of
//!   any node in the room reaps them and publishes the `leave`s.
//! - **Outages**: room operations fail with `unavailable` while Redis is unreachable; the
//!   subscriber reconnects with backoff, resubscribes every room that has members, and asks the
//!   relay to resync each room from its last delivered seq (missed messages come from history).
//! - **Cluster extras**: the rooms page, kicks and the deny list, node stats, health.
//!
//! Layout (each file one job): `config` (settings, start errors), `engine` (the
//! [`switchboard_hub::Engine`] implementation, which only dispatches), `rooms` (subscribe, the
//! snapshot script, publish, reading history and members), `presence` (heartbeat and
//! removals), `subscriber` (the one connection receiving every room's channel), `publisher`
//! (the publish task and its budget), `api` (rooms page, kicks), `node_stats`, `scripts`
//! (Lua), `wire` (keys and frames). This file holds the engine's state and its start.

mod api;
mod config;
mod engine;
mod metrics;
mod node_stats;
mod presence;
mod publisher;
mod rooms;
mod scripts;
mod subscriber;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_hub::{Cluster, Departure, HubError, OutboxPool, Relay};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(crate) use crate::config::redact;
pub use crate::config::{RedisBrokerError, RedisConfig};
use crate::scripts::Scripts;
use crate::subscriber::Command;

/// The broker's connection state, for `/readyz` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    Up,
    Down(String),
}

/// What the background tasks and the request path share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This node's rooms: the subscriber feeds them, the heartbeat reads their users.
    pub(crate) relay: Arc<Relay>,
    pub(crate) config: RedisConfig,
    /// This node's id: names its presence entries and its sessions in SKIP fields.
    pub(crate) node: String,
    pub(crate) conn: ConnectionManager,
    pub(crate) client: redis::Client,
    pub(crate) scripts: Scripts,
    pub(crate) link: Mutex<Link>,
    /// Bytes of publishes queued or on their way (bounded by `publish_queue_bytes`).
    pub(crate) publish_budget: Arc<publisher::Budget>,
    /// Whether Redis is known not to answer (a request timed out and no PING has been
    /// answered since): requests are refused at once meanwhile.
    stalled: AtomicBool,
    /// Wakes the publish task to probe Redis after a request timed out.
    pub(crate) probe: Notify,
    /// This node's connections by user and its deny list (kicks arrive on the control channel).
    pub(crate) users: switchboard_hub::Users,
}

/// The Redis broker: this node's rooms ([`switchboard_hub::Relay`]) over the Redis engine,
/// through the hub's one implementation of [`switchboard_hub::Broker`] for such engines.
pub type RedisBroker = Cluster<RedisEngine>;

/// Starts the Redis broker (see [`RedisEngine::start`]). Redis need not be reachable yet: the
/// broker reports `unavailable` until it is.
pub fn start(config: RedisConfig) -> Result<RedisBroker, RedisBrokerError> {
    let relay = Arc::new(
        Relay::with_pool(
            config.outbox_bytes,
            config.outbox_pool_bytes.map(OutboxPool::new),
        )
        .with_presence(config.presence),
    );
    let engine = RedisEngine::start(config, relay.clone())?;
    Ok(Cluster::new(relay, engine))
}

/// The Redis engine: sequences, stores and relays the rooms of every node
/// ([`switchboard_hub::Engine`]).
#[derive(Debug)]
pub struct RedisEngine {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    publishes: mpsc::Sender<publisher::Job>,
    leaves: mpsc::Sender<Departure>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Pending subscriber commands (joins waiting for a subscription, unsubscribes).
const COMMAND_QUEUE: usize = 4096;
/// Presence removals waiting to be written (from disconnects); past it, entries expire by TTL.
const LEAVE_QUEUE: usize = 65_536;

impl RedisEngine {
    /// Starts the engine's tasks (subscriber, presence heartbeat, publisher), feeding the
    /// rooms of `relay`. Redis need not be reachable yet: the engine reports `unavailable`
    /// until it is.
    pub fn start(config: RedisConfig, relay: Arc<Relay>) -> Result<Self, RedisBrokerError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| RedisBrokerError::Url {
                url: config.url.clone(),
                source,
            })?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), manager).map_err(|source| {
                RedisBrokerError::Url {
                    url: config.url.clone(),
                    source,
                }
            })?;
        let shared = Arc::new(Shared {
            relay,
            node: format!("{:016x}", fastrand::u64(..)),
            conn,
            client,
            scripts: Scripts::new(),
            link: Mutex::new(Link::Down("connecting".to_owned())),
            publish_budget: Arc::new(publisher::Budget::new(config.publish_queue_bytes)),
            stalled: AtomicBool::new(false),
            probe: Notify::new(),
            users: switchboard_hub::Users::default(),
            config,
        });
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (leaves, leave_rx) = mpsc::channel(LEAVE_QUEUE);
        let (publishes, publish_rx) = mpsc::channel(shared.config.publish_queue.max(1));
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        tasks.spawn(subscriber::run(shared.clone(), command_rx, stop.clone()));
        tasks.spawn(presence::heartbeat(shared.clone(), leave_rx, stop.clone()));
        tasks.spawn(publisher::run(shared.clone(), publish_rx, stop.clone()));
        info!(node = %shared.node, url = %redact(&shared.config.url), "redis broker started");
        Ok(Self {
            shared,
            commands,
            publishes,
            leaves,
            tasks,
            stop,
        })
    }

    /// This node's id in Redis.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Bytes of publishes waiting for Redis or on their way now (at most
    /// [`RedisConfig::publish_queue_bytes`]).
    pub fn publish_bytes_waiting(&self) -> usize {
        self.shared.publish_budget.used()
    }
}

impl Drop for RedisEngine {
    /// The background tasks stop with the engine (after `shutdown`, they have already).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    /// Room keys outlive the history they hold and the presence entries that mention them.
    fn keep_ms(&self, history_ttl: Duration) -> u64 {
        millis(history_ttl)
            .max(millis(self.config.presence_ttl))
            .max(1)
            .saturating_add(millis(self.config.presence_interval))
    }

    pub(crate) fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Release);
    }

    /// `Err` while Redis is known not to answer: a request refused at once rather than
    /// after `redis_timeout` (and, for a publish, never sent to run when Redis wakes).
    fn check_stalled(&self) -> Result<(), HubError> {
        if self.stalled.load(Ordering::Acquire) {
            Err(unavailable(STALLED))
        } else {
            Ok(())
        }
    }

    /// `redis_timeout` (or the caller's earlier deadline, [`switchboard_hub::deadline`]) as
    /// a bound on a request's answer, whatever Redis or the node's queues do: past it the
    /// request is answered `unavailable`, and the publish task probes Redis.
    async fn bounded<T>(
        &self,
        request: impl Future<Output = Result<T, HubError>>,
    ) -> Result<T, HubError> {
        self.check_stalled()?;
        let timeout = self.config.timeout;
        match tokio::time::timeout_at(switchboard_hub::deadline::due(timeout), request).await {
            Ok(result) => result,
            Err(_) => {
                self.probe.notify_one();
                Err(unavailable(format!(
                    "Redis did not answer within {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Logs a failed Redis command and turns it into `unavailable`.
    pub(crate) fn failed(&self, what: &str, err: &redis::RedisError) -> HubError {
        warn!(op = what, error = %err, "redis command failed");
        HubError::Unavailable(err.to_string())
    }
}

/// Why requests are refused at once during a hang.
const STALLED: &str =
    "Redis is not answering (it hung: requests are refused until it answers again)";

fn unavailable(reason: impl Into<String>) -> HubError {
    HubError::Unavailable(reason.into())
}

fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
