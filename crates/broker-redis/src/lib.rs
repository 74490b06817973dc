//! The Redis broker: several Switchboard nodes share one set of rooms through Redis.
//!
//! - **Order**: a Lua script assigns each message its room's next `seq`, stores it in the
//!   room's history stream and publishes it on the room's channel, atomically; every node
//!   receives a room's channel over one connection, in that order.
//! - **Fan-out**: a node subscribes to a room's channel only while it has members in the room
//!   and fans each frame (encoded once, by the publishing node) out to them through
//!   [`switchboard_hub::Relay`].
//! - **Recovery**: history lives in Redis, so a client recovers its `since` on any node.
//! - **Presence**: each node keeps its users' entries alive with a heartbeat; the entries of a
//!   node that stops (crash, partition) expire after `presence_ttl` and the next heartbeat of
//!   any node in the room reaps them and publishes the `leave`s.
//! - **Outages**: room operations fail with `unavailable` while Redis is unreachable; the
//!   subscriber reconnects with backoff, resubscribes every room that has members, and
//!   resyncs each room from its last delivered seq (missed messages come from history).

//!
//! Layout (each file one job): `config` (settings, start errors), `rooms` (join, publish,
//! `history`, `members` against Redis), `presence` (heartbeat and removals), `resync` (the
//! resync worker), `subscriber` (the one connection receiving every room's channel),
//! `publisher` (the publish task and its budget), `scripts` (Lua), `wire` (keys and frames).
//! This file holds the broker's state, its start and the [`Broker`] implementation, which only
//! dispatches to those.

mod api;
mod config;
mod metrics;
mod node_stats;
mod presence;
mod publisher;
mod resync;
mod rooms;
mod scripts;
mod subscriber;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_hub::events::EventPayload;
use switchboard_hub::{
    Broker, BrokerFuture, BrokerHealth, Departure, HubError, HubStats, JoinRequest, OutboxPool,
    PublishRequest, Published, Relay, ResyncRequest, Session,
};
use switchboard_protocol::binary::encode_server_parts;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::server::{ServerMessage, encode_message_parts};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(crate) use crate::config::redact;
pub use crate::config::{RedisBrokerError, RedisConfig};
use crate::scripts::Scripts;
use crate::subscriber::Command;
use crate::wire::RoomKeys;

/// The broker's connection state, for `/readyz` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    Up,
    Down(String),
}

/// What the background tasks and the request path share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) relay: Relay,
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
    /// Resyncs to perform, newest per room.
    resyncs: Mutex<Vec<ResyncRequest>>,
    resync_ready: Notify,
    /// This node's connections by user and its deny list (kicks arrive on the control channel).
    pub(crate) users: switchboard_hub::Users,
}

/// The Redis engine of [`Broker`].
#[derive(Debug)]
pub struct RedisBroker {
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

impl RedisBroker {
    /// Starts the broker's tasks (subscriber, resync worker, presence heartbeat). Redis need
    /// not be reachable yet: the broker reports `unavailable` until it is.
    pub fn start(config: RedisConfig) -> Result<Self, RedisBrokerError> {
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
            relay: Relay::with_pool(
                config.outbox_bytes,
                config.outbox_pool_bytes.map(OutboxPool::new),
            )
            .with_presence(config.presence),
            node: format!("{:016x}", fastrand::u64(..)),
            conn,
            client,
            scripts: Scripts::new(),
            link: Mutex::new(Link::Down("connecting".to_owned())),
            publish_budget: Arc::new(publisher::Budget::new(config.publish_queue_bytes)),
            stalled: AtomicBool::new(false),
            probe: Notify::new(),
            resyncs: Mutex::new(Vec::new()),
            resync_ready: Notify::new(),
            users: switchboard_hub::Users::default(),
            config,
        });
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (leaves, leave_rx) = mpsc::channel(LEAVE_QUEUE);
        let (publishes, publish_rx) = mpsc::channel(shared.config.publish_queue.max(1));
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        tasks.spawn(subscriber::run(shared.clone(), command_rx, stop.clone()));
        tasks.spawn(resync::resync_worker(shared.clone(), stop.clone()));
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

impl Drop for RedisBroker {
    /// The background tasks stop with the broker (after `shutdown`, they have already).
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

impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn connect(&self, user: Arc<str>) -> Arc<Session> {
        self.shared.relay.connect(user)
    }

    fn disconnect(&self, session: &Arc<Session>) {
        for departure in self.shared.relay.disconnect(session) {
            self.forget(departure);
        }
    }

    fn join<'a>(
        &'a self,
        session: &'a Arc<Session>,
        request: JoinRequest<'a>,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(self.join_inner(session, request))
    }

    fn leave<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let departure = self.shared.relay.leave(session, room, id)?;
            // Presence writes go through one task, in order (see `heartbeat`).
            self.forget(departure);
            Ok(())
        })
    }

    fn publish(
        &self,
        session: &Arc<Session>,
        request: PublishRequest<'_>,
    ) -> BrokerFuture<'static, Published> {
        let (head, tail) =
            encode_message_parts(request.room, session.user(), request.data, request.ts);
        let event = self.message_event(session.user(), request.room, request.ts, || {
            EventPayload::Json(request.data.to_owned())
        });
        self.submit(
            session,
            request.room,
            "j",
            &head,
            &tail,
            request.echo,
            request.ts,
            request.msg_id,
            event,
        )
    }

    fn publish_binary(
        &self,
        session: &Arc<Session>,
        room: &str,
        payload: &[u8],
        ts: u64,
    ) -> BrokerFuture<'static, u64> {
        let (head, tail) = encode_server_parts(room, ts, session.user(), payload);
        let event = self.message_event(session.user(), room, ts, || {
            EventPayload::Binary(Bytes::copy_from_slice(payload))
        });
        let published = self.submit(session, room, "b", &head, &tail, false, ts, None, event);
        Box::pin(async move { published.await.map(|published| published.seq) })
    }

    fn typing<'a>(&'a self, session: &'a Arc<Session>, room: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(self.shared.bounded(async move {
            let room = self.shared.relay.member_room(session, room)?;
            let frame = ServerMessage::Typing {
                room: &room,
                from: session.user(),
            }
            .encode();
            let keys = RoomKeys::new(&self.shared.config.prefix, &room);
            let skip = wire::skip_tag(&self.shared.node, session.id());
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&keys.channel)
                .arg(wire::typing(&skip, &frame))
                .query_async(&mut self.shared.conn.clone())
                .await
                .map_err(|err| self.shared.failed("typing", &err))?;
            Ok(())
        }))
    }

    fn history<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(
            self.shared
                .bounded(self.history_inner(session, room, id, limit, now_ms)),
        )
    }

    fn members<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(
            self.shared
                .bounded(self.members_inner(session, room, id, after, limit)),
        )
    }

    fn flush_presence(&self, now_ms: u64) {
        self.shared.relay.flush_presence(now_ms);
    }

    fn sweep(&self, _now_ms: u64) -> usize {
        // History and room lifetimes are Redis TTLs.
        0
    }

    fn stats(&self) -> HubStats {
        self.shared.relay.stats()
    }

    fn visit_rooms(&self, visit: &mut dyn FnMut(switchboard_hub::RoomActivity<'_>)) {
        self.shared.relay.visit_rooms(visit);
    }

    fn share_node_stats<'a>(
        &'a self,
        node: &'a str,
        snapshot: String,
    ) -> BrokerFuture<'a, Vec<String>> {
        Box::pin(self.shared.share_node_stats(node, snapshot))
    }

    fn health(&self) -> BrokerHealth {
        if self.shared.stalled.load(Ordering::Acquire) {
            return BrokerHealth::Unavailable("redis is not answering".to_owned());
        }
        match &*self.shared.link.lock() {
            Link::Up => BrokerHealth::Ready,
            Link::Down(reason) => BrokerHealth::Unavailable(reason.clone()),
        }
    }

    fn publish_from(
        &self,
        request: switchboard_hub::SourcePublish<'_>,
    ) -> BrokerFuture<'static, switchboard_hub::SourcePublished> {
        api::publish_from(self, &request)
    }

    fn rooms<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, switchboard_hub::RoomsPage> {
        Box::pin(
            self.shared
                .bounded(api::rooms(&self.shared, prefix, after, limit)),
        )
    }

    fn users(&self) -> &switchboard_hub::Users {
        &self.shared.users
    }

    fn kick<'a>(&'a self, kick: &'a switchboard_hub::Kick, now_ms: u64) -> BrokerFuture<'a, usize> {
        Box::pin(self.shared.bounded(api::kick(&self.shared, kick, now_ms)))
    }

    /// Stops the background tasks after writing the presence removals still queued (each
    /// bounded by the command timeout).
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.stop.cancel();
            self.tasks.close();
            self.tasks.wait().await;
        })
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
