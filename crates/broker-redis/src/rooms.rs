//! Room operations against Redis: subscribing, the snapshot script (joins and resyncs),
//! publishes (queued for the publish task), reading history and members.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use switchboard_hub::events::{EventMessage, EventPayload};
use switchboard_hub::{
    BrokerFuture, Departure, EventKind, HistoryRead, HubError, Message, Outbound, Payload,
    RoomEvent, Sequenced, Snapshot, SnapshotRequest,
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::metrics;
use crate::presence::presence_heads;
use crate::subscriber::Command;
use crate::wire::{self, RoomKeys};
use crate::{RedisEngine, STALLED, Shared, millis, new_epoch, publisher, unavailable};

impl RedisEngine {
    /// Makes sure this node receives the room's channel; bounded by twice the command
    /// timeout (the subscriber may be busy with another room's subscription).
    pub(crate) async fn subscribe_room(&self, room: &Arc<str>) -> Result<(), HubError> {
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

    /// Stops receiving the room's channel (no member left here).
    pub(crate) fn unsubscribe_room(&self, room: &Arc<str>) {
        let _ = self.commands.try_send(Command::Unsubscribe(room.clone()));
    }

    /// Queues the removal of a user's presence on this node for the heartbeat task.
    pub(crate) fn queue_leave(&self, departure: Departure) {
        if self.leaves.try_send(departure).is_err() {
            debug!("presence removal queue full; the entry will expire by its TTL");
        }
    }

    /// Queues the publish of a message for the publish task (its place in the order is fixed
    /// now) and returns the wait for its outcome.
    pub(crate) fn enqueue(
        &self,
        message: &Message<'_>,
    ) -> BrokerFuture<'static, publisher::Sequenced> {
        let Message {
            room,
            from,
            payload,
            head,
            tail,
            skip,
            ts,
            msg_id,
        } = *message;
        let kind = match payload {
            Payload::Json(_) => "j",
            Payload::Binary(_) => "b",
        };
        let skip = skip.map_or_else(
            || "-".to_owned(),
            |id| wire::skip_tag(&self.shared.node, id),
        );
        let event = self.message_event(from, room, ts, || match payload {
            Payload::Json(data) => EventPayload::Json(data.to_owned()),
            Payload::Binary(bytes) => EventPayload::Binary(Bytes::copy_from_slice(bytes)),
        });
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

    /// Every user of the room (HKEYS, one round trip).
    pub(crate) async fn members_read(&self, room: &str) -> Result<Vec<String>, HubError> {
        let keys = RoomKeys::new(&self.shared.config.prefix, room);
        metrics::timed(
            "members",
            redis::cmd("HKEYS")
                .arg(&keys.users)
                .query_async(&mut self.shared.conn.clone()),
        )
        .await
        .map_err(|err| self.shared.failed("members", &err))
    }

    /// The room's latest `limit` messages (at most its history size), oldest first.
    pub(crate) async fn history_read(
        &self,
        room: &str,
        limit: Option<u64>,
        now_ms: u64,
    ) -> Result<HistoryRead, HubError> {
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
        // Newest first from Redis; oldest first on the wire.
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
        Ok(HistoryRead {
            epoch,
            seq,
            entries: kept,
        })
    }
}

impl Shared {
    /// A room's snapshot: seq, epoch, members, presence version, and the replay after `since`
    /// (if history covers it and its frames fit in `budget` bytes). With `user`, adds that
    /// user's presence on this node.
    pub(crate) async fn snapshot(
        &self,
        request: SnapshotRequest<'_>,
    ) -> Result<Snapshot, HubError> {
        let SnapshotRequest {
            room,
            since,
            user,
            restore,
            skip,
            now_ms,
            budget,
            op,
        } = request;
        let skip = skip.map_or_else(|| "-".to_owned(), |id| wire::skip_tag(&self.node, id));
        let keys = RoomKeys::new(&self.config.prefix, room);
        let policy = self.config.history.policy_for(room);
        let (join_head, leave_head) = presence_heads(room);
        let mut invocation = self.scripts.join.key(&keys.meta);
        invocation
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
            .arg(restore.iter().map(AsRef::as_ref).collect::<Vec<&str>>());
        let mut conn = self.conn.clone();
        let (epoch, seq, pv, members, recovered, replay, member_count, events): JoinReply =
            metrics::timed(op, invocation.invoke_async(&mut conn))
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
