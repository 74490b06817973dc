//! Room operations against Redis: join (subscribe, then the snapshot script), publish (queued
//! for the publish task), `history` and `members` replies.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use switchboard_hub::events::{EventMessage, EventPayload};
use switchboard_hub::{
    BrokerFuture, Departure, EventKind, HubError, JoinRequest, Outbound, Position, Published,
    RoomEvent, Sequenced, Session, Snapshot, members_page as page_of, members_reply,
};
use switchboard_protocol::client::RequestId;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::metrics;
use crate::presence::presence_heads;
use crate::subscriber::Command;
use crate::wire::{self, RoomKeys};
use crate::{RedisBroker, STALLED, Shared, millis, new_epoch, publisher, unavailable};

impl RedisBroker {
    /// Makes sure this node receives the room's channel; bounded by twice the command
    /// timeout (the subscriber may be busy with another room's subscription).
    pub(crate) async fn subscribe(&self, room: &Arc<str>) -> Result<(), HubError> {
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

    pub(crate) fn forget(&self, departure: Departure) {
        if departure.room_empty {
            let _ = self
                .commands
                .try_send(Command::Unsubscribe(departure.room.clone()));
        }
        if departure.last_of_user && self.leaves.try_send(departure).is_err() {
            debug!("presence removal queue full; the entry will expire by its TTL");
        }
    }

    pub(crate) async fn join_inner(
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
                    session.outbox().replay_budget(),
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
    pub(crate) fn submit(
        &self,
        session: &Session,
        room: &str,
        kind: &str,
        head: &[u8],
        tail: &[u8],
        echo: bool,
        ts: u64,
        msg_id: Option<&str>,
        event: Option<RoomEvent>,
    ) -> BrokerFuture<'static, Published> {
        let room = match self.shared.relay.member_room(session, room) {
            Ok(room) => room,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let skip = if echo {
            "-".to_owned()
        } else {
            wire::skip_tag(&self.shared.node, session.id())
        };
        let sequenced = self.enqueue(
            &room,
            session.user(),
            skip,
            kind,
            head,
            tail,
            ts,
            msg_id,
            event,
        );
        Box::pin(async move { sequenced.await.map(|(published, _)| published) })
    }

    /// Queues the publish of a frame `from` a user to a room (membership already checked, or
    /// not needed: [`switchboard_hub::Broker::publish_from`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of one message, passed through"
    )]
    pub(crate) fn enqueue(
        &self,
        room: &str,
        from: &str,
        skip: String,
        kind: &str,
        head: &[u8],
        tail: &[u8],
        ts: u64,
        msg_id: Option<&str>,
        event: Option<RoomEvent>,
    ) -> BrokerFuture<'static, publisher::Sequenced> {
        if self.shared.stalled.load(Ordering::Acquire) {
            return Box::pin(std::future::ready(Err(publisher::not_published(STALLED))));
        }
        let keys = RoomKeys::new(&self.shared.config.prefix, room);
        let policy = self.shared.config.history.policy_for(room);
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.shared.scripts.publish.get_hash())
            .arg(if msg_id.is_some() { 3 } else { 2 })
            .arg(&keys.meta)
            .arg(&keys.hist);
        if let Some(msg_id) = msg_id {
            command.arg(keys.idempotency(from, msg_id));
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
            event,
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

    /// The `message.published` event of a publish to `room`, if its messages are wanted
    /// (its seq is filled in by the publish task, which reports it in sequence order).
    pub(crate) fn message_event(
        &self,
        user: &Arc<str>,
        room: &str,
        ts: u64,
        payload: impl FnOnce() -> EventPayload,
    ) -> Option<RoomEvent> {
        let sink = self.shared.config.events.as_ref()?;
        sink.wants_messages(room).then(|| RoomEvent {
            kind: EventKind::MessagePublished,
            room: Arc::from(room),
            user: Some(user.clone()),
            version: 0,
            message: Some(EventMessage {
                ts,
                payload: payload(),
            }),
        })
    }

    /// A page of the room's users: every name is read (HKEYS, one round trip) and sorted
    /// here. O(room) per request, bounded by the connection's rate limit; a 5,000-user room
    /// is ~60 KB from Redis.
    pub(crate) async fn members_inner(
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

    pub(crate) async fn history_inner(
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
        // Newest first from Redis; oldest first on the wire. The relay keeps those that fit
        // in the reply budget and places the reply in the session's stream.
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
            kept.push((entry_seq, frame_of(kind, frame.clone())));
        }
        kept.reverse();
        let epoch = if epoch.is_empty() { new_epoch() } else { epoch };
        self.shared
            .relay
            .place_history(session, room, id, seq, &epoch, &kept);
        Ok(())
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
        let (epoch, seq, pv, members, recovered, replay, member_count, events): JoinReply = self
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
        self.report(room, &events);
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
}

/// What the join script returns: epoch, seq, presence version, members, recovered, replay,
/// member count, events (see `scripts::JOIN`).
type JoinReply = (
    String,
    u64,
    u64,
    Vec<String>,
    u8,
    Vec<Bytes>,
    u64,
    Vec<String>,
);

fn frame_of(kind: &[u8], frame: Bytes) -> Outbound {
    if kind == b"b" {
        Outbound::Binary(frame)
    } else {
        Outbound::Text(frame)
    }
}
