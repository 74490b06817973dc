//! The in-memory engine's part of a room: an embedded sequencer (seq, epoch, history, recent
//! msg ids) that lives beside the room's local side under the same lock, so that a publish is
//! one lock and a join is atomic — the joiner's snapshot is taken under the room lock, so it
//! goes live at once, its replay queued ahead of the live stream without a gap or a duplicate.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_protocol::binary::ServerBinary;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::server::{PresenceEvent, ServerMessage};

use super::{Member, MemberState, RoomState, Stream, sequenced};
use crate::events::{self, EventPayload, Events};
use crate::history::{self, History, HistoryBudget};
use crate::idempotency::RecentIds;
use crate::outbox::Outbound;
use crate::policy::HistoryPolicy;
use crate::reply;
use crate::session::{Session, SessionId};

/// The outcome of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's sequence number (the original one for a duplicate).
    pub seq: u64,
    /// The `msg_id` had already been accepted: nothing was delivered.
    pub duplicate: bool,
}

/// Where a recovering joiner left off: the protocol's one stream position, borrowing the
/// epoch from the request.
pub type Position<'a> = switchboard_protocol::StreamPosition<&'a str>;

/// The embedded sequencer of an in-memory room.
#[derive(Debug)]
pub(crate) struct Store {
    /// The sequence number of the room's last message (0 before the first).
    seq: u64,
    /// Identifies this incarnation of the room's sequence: a room re-created after its
    /// history expired (or on a restarted server) starts again at seq 0 under a new epoch.
    epoch: Arc<str>,
    history: History,
    recent_ids: RecentIds,
    /// Where room and presence transitions are reported (webhooks), if anywhere.
    events: Events,
}

impl Store {
    pub(crate) fn new(policy: HistoryPolicy, budget: Arc<HistoryBudget>, events: Events) -> Self {
        Self {
            seq: 0,
            epoch: format!("{:016x}", fastrand::u64(..)).into(),
            recent_ids: RecentIds::new(budget.clone()),
            history: History::new(policy, budget),
            events,
        }
    }
}

impl Stream for Store {
    fn last_seq(&self) -> u64 {
        self.seq
    }
}

impl RoomState<Store> {
    /// No members and no history left: the registry may forget the room.
    pub(crate) fn is_disposable(&mut self, now_ms: u64) -> bool {
        self.engine.history.expire(now_ms);
        self.local.members.is_empty() && self.engine.history.is_empty()
    }

    /// The time of the oldest history entry (for the server-wide eviction).
    pub(crate) fn oldest_history_ts(&self) -> Option<u64> {
        self.engine.history.oldest_ts()
    }

    /// Evicts the room's oldest history entry; returns the bytes freed.
    pub(crate) fn evict_oldest_history(&mut self) -> usize {
        self.engine.history.evict_oldest()
    }

    /// The epoch of the room's sequence.
    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.engine.epoch
    }

    /// Adds `session` (idempotent) and queues its `joined` reply — then, for a recovering join
    /// that can be served, every message after its position. All of it under the room lock, so
    /// the replay and the live stream meet without a gap or a duplicate: the member is live at
    /// once. Returns whether the room must be put on the list of rooms with presence to hand
    /// out.
    pub(crate) fn join(
        &mut self,
        room: &str,
        session: &Arc<Session>,
        id: Option<RequestId>,
        since: Option<Position<'_>>,
        presence: bool,
        now_ms: u64,
    ) -> bool {
        let Self { local, engine } = self;
        // A member already receives the live stream: a repeated join never replays.
        let already_member = local.members.contains(&session.id());
        let mut queue = false;
        if !already_member {
            // Its view includes its own join (the next presence version, if it is its user's
            // first connection here): it is never told of it.
            let first_of_user = !local.members.users().contains_key(session.user());
            let member = Member {
                session: session.clone(),
                presence,
                floor: local
                    .presence_version
                    .saturating_add(u64::from(first_of_user)),
                state: MemberState::Live {
                    position: engine.seq,
                },
                rejoin: None,
            };
            if local.members.add(session, member) {
                local.presence_version += 1;
                let version = local.presence_version;
                queue = local.record_presence(
                    room,
                    version,
                    session.user(),
                    PresenceEvent::Join,
                    Some(session.id()),
                );
                let users = local.members.user_count();
                events::joined(&engine.events, room, session.user(), version, users);
            }
        }
        engine.history.expire(now_ms);
        // What to replay: every message after the position, if history has them all and they
        // fit comfortably in the outbox (a replay must not itself make a slow consumer).
        let budget = session.outbox().replay_budget();
        let replay: Option<Vec<&Outbound>> = match since {
            Some(position) if !already_member && position.epoch == &*engine.epoch => engine
                .history
                .after(position.seq, engine.seq)
                .and_then(|entries| {
                    let frames: Vec<&Outbound> = entries.map(|e| &e.frame).collect();
                    let bytes: usize = frames.iter().map(|f| f.cost()).sum();
                    (bytes <= budget).then_some(frames)
                }),
            Some(position) if already_member && position.epoch == &*engine.epoch => {
                Some(Vec::new())
            }
            _ => None,
        };
        // A re-join is answered like a join, from the same bounded list: no amplification.
        let reply = local.joined_here(
            room,
            presence,
            id,
            engine.seq,
            &engine.epoch,
            since.map(|_| replay.is_some()),
        );
        let outbox = session.outbox();
        let _ = outbox.push(reply);
        crate::metrics::recovery(since.is_some(), replay.as_ref().map(Vec::len));
        for frame in replay.into_iter().flatten() {
            let _ = outbox.push_message(frame.clone(), None);
        }
        queue
    }

    /// Removes `session`; queues `left` when `reply` is given. Returns whether the room must
    /// be put on the list of rooms with presence to hand out.
    pub(crate) fn leave(
        &mut self,
        room: &str,
        session: &Session,
        reply: Option<Option<RequestId>>,
    ) -> bool {
        let Self { local, engine } = self;
        let Some(last_of_user) = local.remove(session) else {
            return false;
        };
        let mut queue = false;
        if last_of_user {
            local.presence_version += 1;
            let version = local.presence_version;
            queue =
                local.record_presence(room, version, session.user(), PresenceEvent::Leave, None);
            let users = local.members.user_count();
            events::left(&engine.events, room, session.user(), version, users);
        }
        if let Some(id) = reply {
            let _ = session.outbox().push(reply::left(room, id));
        }
        queue
    }

    /// Sequences a JSON message and shares its one encoding with every member and the
    /// history. A repeated `msg_id` (same user, within `window`) is not delivered again.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each argument distinct"
    )]
    pub(crate) fn publish(
        &mut self,
        room: &str,
        from: &Session,
        data: &RawValue,
        echo: bool,
        ts: u64,
        msg_id: Option<&str>,
        window: Duration,
    ) -> Published {
        if let Some(msg_id) = msg_id
            && let Some(seq) = self.engine.recent_ids.get(from.user(), msg_id, ts, window)
        {
            return Published {
                seq,
                duplicate: true,
            };
        }
        self.engine.seq += 1;
        let seq = self.engine.seq;
        let frame = ServerMessage::Message {
            room,
            from: from.user(),
            data,
            seq,
            ts,
        }
        .encode();
        let skip = (!echo).then(|| from.id());
        self.deliver(seq, skip, ts, Outbound::Text(frame));
        if let Some(msg_id) = msg_id {
            self.engine.recent_ids.insert(from.user(), msg_id, seq, ts);
        }
        events::published(&self.engine.events, room, from.user(), seq, ts, || {
            EventPayload::Json(data.to_owned())
        });
        Published {
            seq,
            duplicate: false,
        }
    }

    /// Sequences a binary message and shares its one encoding with every other member.
    pub(crate) fn publish_binary(
        &mut self,
        room: &str,
        from: &Session,
        payload: &[u8],
        ts: u64,
    ) -> u64 {
        self.engine.seq += 1;
        let seq = self.engine.seq;
        let frame = ServerBinary {
            room,
            seq,
            ts,
            from: from.user(),
            payload,
        }
        .encode();
        self.deliver(seq, Some(from.id()), ts, Outbound::Binary(frame));
        events::published(&self.engine.events, room, from.user(), seq, ts, || {
            EventPayload::Binary(bytes::Bytes::copy_from_slice(payload))
        });
        seq
    }

    /// Fans message `seq` out and keeps it in the history.
    fn deliver(&mut self, seq: u64, skip: Option<SessionId>, ts: u64, frame: Outbound) {
        let Self { local, engine } = self;
        // Stamped once per message, for the publish → socket latency (see `Sequenced`).
        let inbound = sequenced(&engine.epoch, seq, skip, frame);
        local.deliver(&inbound);
        engine.history.push(history::Entry {
            seq,
            ts,
            frame: inbound.frame,
        });
    }

    /// The `history` reply: the latest `limit` messages (at most the history size).
    pub(crate) fn history_reply(
        &mut self,
        room: &str,
        session: &Session,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) {
        let history = &mut self.engine.history;
        history.expire(now_ms);
        let size = history.size();
        let limit = limit.map_or(size, |l| usize::try_from(l).unwrap_or(usize::MAX).min(size));
        // The newest messages that fit in the reply budget (half the outbox), so that the
        // reply never makes the reader a slow consumer; `messages` may so be fewer than asked.
        let budget = session.outbox().replay_budget();
        let count = reply::history_fit(history.latest(limit).rev().map(|e| &e.frame), budget);
        // Queued under the room lock: the reply has a definite place in the live stream.
        let frames = history.latest(count).map(|e| &e.frame);
        let reply = reply::history(room, id, self.engine.seq, &self.engine.epoch, frames);
        let _ = session.outbox().push(reply);
    }

    /// Tells the room's other members that `from`'s user is typing.
    pub(crate) fn typing(&self, room: &str, from: &Session) {
        let frame = ServerMessage::Typing {
            room,
            from: from.user(),
        }
        .encode();
        self.local.fan_out(Some(from.id()), &Outbound::Text(frame));
    }
}
