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

mod metrics;
mod publisher;
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
use switchboard_hub::{
    Broker, BrokerFuture, BrokerHealth, Departure, HistoryRules, HubError, HubStats, JoinRequest,
    Outbound, OutboxPool, Position, PresenceConfig, PublishRequest, Published, Relay,
    ResyncRequest, Sequenced, Session, Snapshot, members_page as page_of, members_reply,
};
use switchboard_protocol::binary::encode_server_parts;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::server::{PresenceEvent, ServerMessage, encode_message_parts};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::scripts::Scripts;
use crate::subscriber::Command;
use crate::wire::RoomKeys;

/// Settings of the Redis broker.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel, so that several deployments can share one Redis.
    pub prefix: String,
    /// How long a node's presence entries live without a heartbeat: the longest a crashed
    /// node's users stay listed (plus one `presence_interval`).
    pub presence_ttl: Duration,
    /// How often each node refreshes its users' presence and reaps expired entries.
    pub presence_interval: Duration,
    /// History size and time-to-live per room-name pattern.
    pub history: HistoryRules,
    /// How long a publish's `msg_id` is remembered.
    pub idempotency_window: Duration,
    /// Byte budget of each session's outbox.
    pub outbox_bytes: usize,
    /// Server-wide bytes outboxes may hold beyond their allowance (`None`: unbounded).
    pub outbox_pool_bytes: Option<usize>,
    /// How long a Redis command may take before the request fails with `unavailable`.
    pub timeout: Duration,
    /// Publishes that may wait for the publish task at once: a connection has at most a
    /// fixed number on their way, so this is that number times the connection limit.
    pub publish_queue: usize,
    /// Bytes of publishes (frames and keys) waiting for Redis or on their way, node-wide;
    /// past it publishes are answered `unavailable` at once (not published).
    pub publish_queue_bytes: usize,
    /// Member lists and coalesced presence.
    pub presence: PresenceConfig,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBrokerError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// The cause.
        source: redis::RedisError,
    },
}

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
            config,
        });
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (leaves, leave_rx) = mpsc::channel(LEAVE_QUEUE);
        let (publishes, publish_rx) = mpsc::channel(shared.config.publish_queue.max(1));
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        tasks.spawn(subscriber::run(shared.clone(), command_rx, stop.clone()));
        tasks.spawn(resync_worker(shared.clone(), stop.clone()));
        tasks.spawn(heartbeat(shared.clone(), leave_rx, stop.clone()));
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

    /// Makes sure this node receives the room's channel; bounded by twice the command
    /// timeout (the subscriber may be busy with another room's subscription).
    async fn subscribe(&self, room: &Arc<str>) -> Result<(), HubError> {
        let asked = async {
            let (done, answer) = oneshot::channel();
            self.commands
                .send(Command::Subscribe(room.clone(), done))
                .await
                .map_err(|_| unavailable("the broker is shutting down"))?;
            answer
                .await
                .map_err(|_| unavailable("the broker is shutting down"))?
                .map_err(unavailable)
        };
        tokio::time::timeout(self.shared.config.timeout * 2, asked)
            .await
            .unwrap_or_else(|_| Err(unavailable("redis subscribe timed out")))
    }

    fn forget(&self, departure: Departure) {
        if departure.room_empty {
            let _ = self
                .commands
                .try_send(Command::Unsubscribe(departure.room.clone()));
        }
        if departure.last_of_user && self.leaves.try_send(departure).is_err() {
            debug!("presence removal queue full; the entry will expire by its TTL");
        }
    }

    async fn join_inner(
        &self,
        session: &Arc<Session>,
        request: JoinRequest<'_>,
    ) -> Result<(), HubError> {
        let ticket = self.shared.relay.begin_join(
            session,
            request.room,
            request.id,
            request.since,
            request.presence,
        )?;
        let room = ticket.room().clone();
        // `redis_timeout` bounds the whole join: subscription and snapshot.
        let snapshot = self
            .shared
            .bounded(async {
                self.subscribe(&room).await?;
                let user = ticket.first_of_user.then(|| session.user().as_ref());
                let skip = wire::skip_tag(&self.shared.node, session.id());
                let snapshot = self.shared.snapshot(
                    &room,
                    request.since,
                    user,
                    &[],
                    &skip,
                    request.now_ms,
                    session.outbox().budget() / 2,
                );
                metrics::timed("join", snapshot).await
            })
            .await;
        match snapshot {
            Ok(snapshot) => {
                if let Some(request) = self.shared.relay.finish_join(&ticket, session, &snapshot) {
                    self.shared.request_resync(request);
                }
                Ok(())
            }
            Err(err) => {
                if let Some(departure) = self.shared.relay.abort_join(&ticket, session) {
                    self.forget(departure);
                }
                Err(err)
            }
        }
    }

    /// Queues a publish for the publish task (its place in the order is fixed now) and
    /// returns the wait for its outcome.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of one message, passed through"
    )]
    fn submit(
        &self,
        session: &Session,
        room: &str,
        kind: &str,
        head: &[u8],
        tail: &[u8],
        echo: bool,
        ts: u64,
        msg_id: Option<&str>,
    ) -> BrokerFuture<'static, Published> {
        let room = match self.shared.relay.member_room(session, room) {
            Ok(room) => room,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        if self.shared.stalled.load(Ordering::Acquire) {
            return Box::pin(std::future::ready(Err(publisher::not_published(STALLED))));
        }
        let keys = RoomKeys::new(&self.shared.config.prefix, &room);
        let policy = self.shared.config.history.policy_for(&room);
        let skip = if echo {
            "-".to_owned()
        } else {
            wire::skip_tag(&self.shared.node, session.id())
        };
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.shared.scripts.publish.get_hash())
            .arg(if msg_id.is_some() { 3 } else { 2 })
            .arg(&keys.meta)
            .arg(&keys.hist);
        if let Some(msg_id) = msg_id {
            command.arg(keys.idempotency(session.user(), msg_id));
        }
        command
            .arg(&keys.channel)
            .arg(kind)
            .arg(head)
            .arg(tail)
            .arg(skip)
            .arg(ts)
            .arg(policy.size)
            .arg(self.shared.keep_ms(policy.ttl))
            .arg(millis(policy.ttl).max(1))
            .arg(millis(self.shared.config.idempotency_window).max(1))
            .arg(new_epoch())
            .arg(format!("@{}", Sequenced::now().0));
        // What the publish holds until answered: its frame (in the command, and once more
        // while the pipeline is written) and the keys.
        let bytes = head.len() + tail.len() + room.len() * 4 + 256;
        let Some(reservation) = self.shared.publish_budget.reserve(bytes) else {
            let limit = self.shared.config.publish_queue_bytes;
            return Box::pin(std::future::ready(Err(publisher::not_published(&format!(
                "this node's publishes waiting for Redis fill its budget ({limit} bytes)"
            )))));
        };
        let timeout = self.shared.config.timeout;
        let deadline = switchboard_hub::deadline::due(timeout);
        let fate = Arc::new(publisher::Fate::default());
        let (reply, outcome) = oneshot::channel();
        let job = publisher::Job {
            command,
            reply,
            deadline,
            fate: fate.clone(),
            _bytes: reservation,
        };
        if let Err(err) = self.publishes.try_send(job) {
            let reason = match err {
                mpsc::error::TrySendError::Full(_) => "too many publishes waiting for Redis",
                mpsc::error::TrySendError::Closed(_) => "the broker is shutting down",
            };
            return Box::pin(std::future::ready(Err(publisher::not_published(reason))));
        }
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, outcome).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(publisher::not_published("the broker is shutting down")),
                // `redis_timeout` is the bound on the answer. Still queued: it never will be
                // sent. Sent: Redis may yet run it.
                Err(_) if fate.abandon() => Err(publisher::not_published(&format!(
                    "Redis did not answer within {} ms",
                    timeout.as_millis()
                ))),
                Err(_) => Err(publisher::maybe_published(timeout)),
            }
        })
    }

    /// A page of the room's users: every name is read (HKEYS, one round trip) and sorted
    /// here. O(room) per request, bounded by the connection's rate limit; a 5,000-user room
    /// is ~60 KB from Redis.
    async fn members_inner(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(), HubError> {
        switchboard_protocol::names::validate_room(room).map_err(HubError::from)?;
        let keys = RoomKeys::new(&self.shared.config.prefix, room);
        let mut users: Vec<String> = metrics::timed(
            "members",
            redis::cmd("HKEYS")
                .arg(&keys.users)
                .query_async(&mut self.shared.conn.clone()),
        )
        .await
        .map_err(|err| self.shared.failed("members", &err))?;
        users.sort_unstable();
        let count = u64::try_from(users.len()).unwrap_or(u64::MAX);
        let start = after.map_or(0, |after| users.partition_point(|u| u.as_str() <= after));
        let rest = users.get(start..).unwrap_or_default();
        let (page, next) = page_of(rest.iter().map(String::as_str), limit);
        let reply = members_reply(room, id, &page, count, next);
        let _ = session.outbox().push(reply);
        Ok(())
    }

    async fn history_inner(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) -> Result<(), HubError> {
        switchboard_protocol::names::validate_room(room).map_err(HubError::from)?;
        let keys = RoomKeys::new(&self.shared.config.prefix, room);
        let policy = self.shared.config.history.policy_for(room);
        let limit = limit.map_or(policy.size, |l| {
            usize::try_from(l).unwrap_or(usize::MAX).min(policy.size)
        });
        let mut invocation = self.shared.scripts.history.key(&keys.meta);
        invocation
            .key(&keys.hist)
            .arg(limit)
            .arg(now_ms.saturating_sub(millis(policy.ttl)));
        let (epoch, seq, entries): (String, u64, Vec<Bytes>) = metrics::timed(
            "history",
            invocation.invoke_async(&mut self.shared.conn.clone()),
        )
        .await
        .map_err(|err| self.shared.failed("history", &err))?;
        // Newest first from Redis; keep those that fit in half the outbox (binary entries grow
        // by base64), then oldest first on the wire.
        let budget = session.outbox().budget() / 2;
        let mut bytes = 0;
        let mut kept: Vec<(u64, Outbound)> = Vec::new();
        for entry in entries.chunks_exact(3) {
            let [entry_seq, kind, frame] = entry else {
                continue;
            };
            let Some(entry_seq) = std::str::from_utf8(entry_seq)
                .ok()
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            let frame = frame_of(kind, frame.clone());
            bytes += frame.cost() * 2;
            if bytes > budget {
                break;
            }
            kept.push((entry_seq, frame));
        }
        kept.reverse();
        let epoch = if epoch.is_empty() { new_epoch() } else { epoch };
        self.shared
            .relay
            .place_history(session, room, id, seq, &epoch, &kept);
        Ok(())
    }
}

impl Drop for RedisBroker {
    /// The background tasks stop with the broker (after `shutdown`, they have already).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    /// A room's snapshot: seq, epoch, members, presence version, and the replay after `since`
    /// (if history covers it and its frames fit in `budget` bytes). With `user`, adds that
    /// user's presence on this node.
    #[allow(
        clippy::too_many_arguments,
        reason = "the inputs of one script call, passed through"
    )]
    pub(crate) async fn snapshot(
        &self,
        room: &str,
        since: Option<Position<'_>>,
        user: Option<&str>,
        restore: &[Arc<str>],
        skip: &str,
        now_ms: u64,
        budget: usize,
    ) -> Result<Snapshot, HubError> {
        let keys = RoomKeys::new(&self.config.prefix, room);
        let policy = self.config.history.policy_for(room);
        let (join_head, leave_head) = presence_heads(room);
        let (epoch, seq, pv, members, recovered, replay, member_count): (
            String,
            u64,
            u64,
            Vec<String>,
            u8,
            Vec<Bytes>,
            u64,
        ) = self
            .scripts
            .join
            .key(&keys.meta)
            .key(&keys.hist)
            .key(&keys.pres)
            .key(&keys.users)
            .arg(&keys.channel)
            .arg(&self.node)
            .arg(user.unwrap_or(""))
            .arg(now_ms)
            .arg(now_ms.saturating_add(millis(self.config.presence_ttl)))
            .arg(since.map_or(String::new(), |p| p.seq.to_string()))
            .arg(since.map_or("", |p| p.epoch))
            .arg(millis(policy.ttl))
            .arg(join_head)
            .arg(leave_head)
            .arg(skip)
            .arg(new_epoch())
            .arg(self.keep_ms(policy.ttl))
            .arg(self.config.presence.max_joined_members)
            .arg(restore.iter().map(AsRef::as_ref).collect::<Vec<&str>>())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|err| self.failed("join", &err))?;
        let replay = (recovered == 1).then(|| {
            replay
                .chunks_exact(3)
                .filter_map(|entry| match entry {
                    [seq, kind, frame] => {
                        let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
                        Some((seq, frame_of(kind, frame.clone())))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        // A replay too large for the outbox would make the joiner a slow consumer: it resyncs
        // from `history` instead (recovered: false).
        let replay =
            replay.filter(|r| r.iter().map(|(_, frame)| frame.cost()).sum::<usize>() <= budget);
        Ok(Snapshot {
            epoch: epoch.into(),
            seq,
            presence_version: pv,
            members: members.into_iter().map(Arc::from).collect(),
            member_count,
            replay,
        })
    }

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

    /// Removes a user's presence on this node.
    async fn leave_presence(&self, departure: &Departure) -> Result<(), redis::RedisError> {
        let keys = RoomKeys::new(&self.config.prefix, &departure.room);
        let (_, leave_head) = presence_heads(&departure.room);
        let mut invocation = self.scripts.leave.key(&keys.meta);
        invocation
            .key(&keys.pres)
            .key(&keys.users)
            .arg(&keys.channel)
            .arg(&self.node)
            .arg(departure.user.as_ref())
            .arg(leave_head)
            .arg("-");
        let _: i64 =
            metrics::timed("leave", invocation.invoke_async(&mut self.conn.clone())).await?;
        Ok(())
    }

    /// Refreshes this node's presence in every room it has members in, and reaps the entries
    /// of nodes that stopped doing so.
    async fn refresh_presence(&self) {
        for (room, _) in self.relay.rooms() {
            // Read again now: a leave since the list was taken must not be undone.
            let Some(users) = self.relay.users_of(&room) else {
                continue;
            };
            let now = now_millis();
            let keys = RoomKeys::new(&self.config.prefix, &room);
            let policy = self.config.history.policy_for(&room);
            let (join_head, leave_head) = presence_heads(&room);
            let mut invocation = self.scripts.refresh.key(&keys.meta);
            invocation
                .key(&keys.hist)
                .key(&keys.pres)
                .key(&keys.users)
                .arg(&keys.channel)
                .arg(&self.node)
                .arg(now)
                .arg(now.saturating_add(millis(self.config.presence_ttl)))
                .arg(self.keep_ms(policy.ttl))
                .arg(join_head)
                .arg(leave_head)
                .arg(new_epoch());
            for user in &users {
                invocation.arg(user.as_ref());
            }
            let result: Result<i64, _> =
                metrics::timed("presence", invocation.invoke_async(&mut self.conn.clone())).await;
            if let Err(err) = result {
                debug!(room = %room, error = %err, "presence refresh failed");
                return;
            }
        }
    }

    /// Queues a resync (replacing an older one of the same room).
    pub(crate) fn request_resync(&self, request: ResyncRequest) {
        let mut queue = self.resyncs.lock();
        queue.retain(|queued| queued.room != request.room);
        queue.push(request);
        drop(queue);
        self.resync_ready.notify_one();
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
        self.submit(
            session,
            request.room,
            "j",
            &head,
            &tail,
            request.echo,
            request.ts,
            request.msg_id,
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
        let published = self.submit(session, room, "b", &head, &tail, false, ts, None);
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

    fn health(&self) -> BrokerHealth {
        if self.shared.stalled.load(Ordering::Acquire) {
            return BrokerHealth::Unavailable("redis is not answering".to_owned());
        }
        match &*self.shared.link.lock() {
            Link::Up => BrokerHealth::Ready,
            Link::Down(reason) => BrokerHealth::Unavailable(reason.clone()),
        }
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

/// Performs the resyncs that rooms ask for (after a gap or a reconnection), retrying while
/// Redis is unreachable.
async fn resync_worker(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let batch: Vec<ResyncRequest> = std::mem::take(&mut *shared.resyncs.lock());
        if batch.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.resync_ready.notified() => continue,
            }
        }
        let mut failed = false;
        for request in batch {
            let since = Position {
                seq: request.since,
                epoch: &request.epoch,
            };
            let budget = shared.config.outbox_bytes / 2;
            // This node's users of the room are listed again in the snapshot's members (and
            // their presence restored) even when Redis lost its data (F17).
            let local = shared.relay.users_of(&request.room).unwrap_or_default();
            let snapshot = shared.snapshot(
                &request.room,
                Some(since),
                None,
                &local,
                "-",
                now_millis(),
                budget,
            );
            match shared.bounded(metrics::timed("resync", snapshot)).await {
                Ok(snapshot) => {
                    debug!(room = %request.room, since = request.since, seq = snapshot.seq, recovered = snapshot.replay.is_some(), "room resynced");
                    shared.relay.finish_resync(&request, &snapshot);
                }
                Err(_) => {
                    failed = true;
                    let mut queue = shared.resyncs.lock();
                    if !queue.iter().any(|queued| queued.room == request.room) {
                        queue.push(request);
                    }
                }
            }
        }
        if failed {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Refreshes presence every `presence_interval` and writes presence removals as they come.
async fn heartbeat(
    shared: Arc<Shared>,
    mut leaves: mpsc::Receiver<Departure>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.config.presence_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => shared.refresh_presence().await,
            Some(departure) = leaves.recv() => {
                // The user may be back on this node since (a reconnect): its entry stays.
                let back = shared
                    .relay
                    .users_of(&departure.room)
                    .is_some_and(|users| users.contains(&departure.user));
                if back {
                    continue;
                }
                if let Err(err) = shared.leave_presence(&departure).await {
                    debug!(room = %departure.room, error = %err, "presence removal failed; the entry will expire by its TTL");
                }
            }
        }
    }
    // Shutting down: write the removals already queued (each bounded by the command timeout).
    leaves.close();
    while let Ok(departure) = leaves.try_recv() {
        if shared.leave_presence(&departure).await.is_err() {
            break;
        }
    }
}

/// The JSON before the user name of a presence `join` and `leave` frame of `room`
/// (`…"user":`); the scripts append the JSON-encoded user and `}`.
fn presence_heads(room: &str) -> (Vec<u8>, Vec<u8>) {
    let head = |event| {
        let mut frame = ServerMessage::Presence {
            room,
            event,
            user: "",
        }
        .encode()
        .to_vec();
        frame.truncate(frame.len().saturating_sub(3)); // `""}`
        frame
    };
    (head(PresenceEvent::Join), head(PresenceEvent::Leave))
}

fn frame_of(kind: &[u8], frame: Bytes) -> Outbound {
    if kind == b"b" {
        Outbound::Binary(frame)
    } else {
        Outbound::Text(frame)
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

/// The URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://***@{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at + 1..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_heads_complete_into_presence_frames() {
        let (join, _) = presence_heads("r");
        let mut frame = join;
        frame.extend_from_slice(b"\"al\\\"ice\"}");
        let value: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(value["type"], "presence");
        assert_eq!(value["event"], "join");
        assert_eq!(value["user"], "al\"ice");
    }

    #[test]
    fn urls_lose_their_password_in_logs() {
        assert_eq!(redact("redis://:secret@host:6379"), "redis://***@host:6379");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
