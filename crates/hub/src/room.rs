//! One room: members, presence counts and the sequence. All of it behind the room's own lock,
//! which is what gives every member the same order of messages.

use std::ops::Bound;
use std::sync::Arc;

use std::time::Duration;

use parking_lot::Mutex;
use serde_json::value::RawValue;
use switchboard_protocol::binary::ServerBinary;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::server::{PresenceEvent, ServerMessage};

use crate::events::{self, EventPayload, Events};
use crate::history::{self, History, HistoryBudget};
use crate::idempotency::RecentIds;
use crate::members::Members;
use crate::outbox::Outbound;
use crate::policy::HistoryPolicy;
use crate::presence::{self, PresenceBatch, PresenceConfig, Recorded};
use crate::reply::{self, Roster};
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

#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) name: Arc<str>,
    pub(crate) state: Mutex<RoomState>,
}

#[derive(Debug)]
struct Member {
    session: Arc<Session>,
    /// Whether this member may see who else is here (members list, presence events).
    presence: bool,
    /// The presence version its view includes (that of its `joined`).
    floor: u64,
}

#[derive(Debug)]
pub(crate) struct RoomState {
    /// The sequence number of the room's last message (0 before the first).
    seq: u64,
    /// Identifies this incarnation of the room's sequence: a room re-created after its
    /// history expired (or on a restarted server) starts again at seq 0 under a new epoch.
    epoch: Arc<str>,
    history: History,
    recent_ids: RecentIds,
    /// Members and connections per user: presence changes only on the first join and the
    /// last leave.
    members: Members<Member>,
    /// Counts presence changes: a member's `floor` says which it has seen.
    presence_version: u64,
    /// Presence changes not yet handed out.
    batch: PresenceBatch,
    presence_config: PresenceConfig,
    /// Where room and presence transitions are reported (webhooks), if anywhere.
    events: Events,
    /// Set when the registry dropped this room (it was empty); a joiner holding a stale
    /// reference must look the room up again.
    pub(crate) closed: bool,
}

impl Room {
    pub(crate) fn new(
        name: Arc<str>,
        policy: HistoryPolicy,
        budget: Arc<HistoryBudget>,
        presence: PresenceConfig,
        events: Events,
    ) -> Self {
        Self {
            name,
            state: Mutex::new(RoomState {
                seq: 0,
                epoch: format!("{:016x}", fastrand::u64(..)).into(),
                recent_ids: RecentIds::new(budget.clone()),
                history: History::new(policy, budget),
                members: Members::default(),
                presence_version: 0,
                batch: PresenceBatch::default(),
                presence_config: presence,
                events,
                closed: false,
            }),
        }
    }
}

impl RoomState {
    /// This node's connections in the room and its last seq, for the operator page
    /// (`crate::activity`).
    pub(crate) fn activity(&self) -> (usize, u64) {
        (self.members.len(), self.seq)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// No members and no history left: the registry may forget the room.
    pub(crate) fn is_disposable(&mut self, now_ms: u64) -> bool {
        self.history.expire(now_ms);
        self.members.is_empty() && self.history.is_empty()
    }

    /// The time of the oldest history entry (for the server-wide eviction).
    pub(crate) fn oldest_history_ts(&self) -> Option<u64> {
        self.history.oldest_ts()
    }

    /// Evicts the room's oldest history entry; returns the bytes freed.
    pub(crate) fn evict_oldest_history(&mut self) -> usize {
        self.history.evict_oldest()
    }

    /// The epoch of the room's sequence.
    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    pub(crate) fn is_member(&self, session: SessionId) -> bool {
        self.members.contains(&session)
    }

    /// Adds `session` (idempotent) and queues its `joined` reply — then, for a recovering join
    /// that can be served, every message after its position. All of it under the room lock, so
    /// the replay and the live stream meet without a gap or a duplicate. Returns whether the
    /// room must be put on the list of rooms with presence to hand out.
    pub(crate) fn join(
        &mut self,
        room: &str,
        session: &Arc<Session>,
        id: Option<RequestId>,
        since: Option<Position<'_>>,
        presence: bool,
        now_ms: u64,
    ) -> bool {
        // A member already receives the live stream: a repeated join never replays.
        let already_member = self.members.contains(&session.id());
        let mut queue = false;
        if !already_member {
            // Its view includes its own join (the next presence version, if it is its user's
            // first connection here): it is never told of it.
            let first_of_user = !self.members.users().contains_key(session.user());
            let member = Member {
                session: session.clone(),
                presence,
                floor: self
                    .presence_version
                    .saturating_add(u64::from(first_of_user)),
            };
            if self.members.add(session, member) {
                queue = self.presence_change(room, PresenceEvent::Join, session.user());
                let (version, users) = (self.presence_version, self.members.user_count());
                events::joined(&self.events, room, session.user(), version, users);
            }
        }
        self.history.expire(now_ms);
        // What to replay: every message after the position, if history has them all and they
        // fit comfortably in the outbox (a replay must not itself make a slow consumer).
        let budget = session.outbox().replay_budget();
        let replay: Option<Vec<&Outbound>> = match since {
            Some(position) if !already_member && position.epoch == &*self.epoch => self
                .history
                .after(position.seq, self.seq)
                .and_then(|entries| {
                    let frames: Vec<&Outbound> = entries.map(|e| &e.frame).collect();
                    let bytes: usize = frames.iter().map(|f| f.cost()).sum();
                    (bytes <= budget).then_some(frames)
                }),
            Some(position) if already_member && position.epoch == &*self.epoch => Some(Vec::new()),
            _ => None,
        };
        // A re-join is answered like a join, from the same bounded list: no amplification.
        let roster = presence.then(|| Roster {
            sorted: self.members.users().keys().map(|u| &**u),
            count: self.member_count(),
        });
        let reply = reply::joined(
            room,
            id,
            roster,
            self.presence_config.max_joined_members,
            self.seq,
            &self.epoch,
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

    /// Removes `session`; queues `left` when `id_reply` is given. Returns whether the room
    /// must be put on the list of rooms with presence to hand out.
    pub(crate) fn leave(
        &mut self,
        room: &str,
        session: &Session,
        reply: Option<Option<RequestId>>,
    ) -> bool {
        let Some((_, last_of_user)) = self.members.remove(session) else {
            return false;
        };
        let mut queue = false;
        if last_of_user {
            queue = self.presence_change(room, PresenceEvent::Leave, session.user());
            let (version, users) = (self.presence_version, self.members.user_count());
            events::left(&self.events, room, session.user(), version, users);
        }
        if let Some(id) = reply {
            let _ = session.outbox().push(reply::left(room, id));
        }
        queue
    }

    pub(crate) fn member_count(&self) -> u64 {
        u64::try_from(self.members.user_count()).unwrap_or(u64::MAX)
    }

    /// Records a presence change for the next hand-out. Returns whether the room must be
    /// queued for it.
    fn presence_change(&mut self, room: &str, event: PresenceEvent, user: &Arc<str>) -> bool {
        self.presence_version += 1;
        let config = self.presence_config;
        match self.batch.record(
            &config,
            self.presence_version,
            user,
            event,
            self.members.user_count(),
        ) {
            Recorded::Waiting => false,
            Recorded::Queue => true,
            // A list window (count-only windows keep no names): the clock only matters to
            // count-only windows.
            Recorded::FlushNow => {
                self.hand_out_presence(room, 0);
                false
            }
            Recorded::FlushNowAndQueue => {
                self.hand_out_presence(room, 0);
                true
            }
        }
    }

    /// Hands out the presence window if it is due. Returns whether the room stays on the
    /// list (presence waits, or it was handed out recently).
    pub(crate) fn flush_presence(&mut self, room: &str, now_ms: u64) -> bool {
        if self
            .batch
            .due(&self.presence_config, self.members.user_count(), now_ms)
        {
            self.hand_out_presence(room, now_ms);
        }
        self.batch.tick()
    }

    /// Queues the window's frames: each member gets the changes after its `floor`.
    fn hand_out_presence(&mut self, room: &str, now_ms: u64) {
        let count = self.member_count();
        let mut flush = self.batch.take(&self.presence_config, room, count, now_ms);
        for member in self.members.values_mut() {
            if !member.presence {
                continue;
            }
            if let Some(frame) = flush.frame_for(member.floor) {
                let _ = member.session.outbox().push(frame);
            }
            member.floor = self.presence_version;
        }
    }

    /// The `members` reply: one page of users in byte order, after `after`.
    pub(crate) fn members_reply(
        &self,
        room: &str,
        session: &Session,
        id: Option<RequestId>,
        after: Option<&str>,
        limit: usize,
    ) {
        let range = match after {
            Some(after) => self
                .members
                .users()
                .range::<str, _>((Bound::Excluded(after), Bound::Unbounded)),
            None => self.members.users().range::<str, _>(..),
        };
        let (list, next) = presence::page(range.map(|(u, _)| &**u), limit);
        let reply = presence::members_reply(room, id, &list, self.member_count(), next);
        let _ = session.outbox().push(reply);
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
            && let Some(seq) = self.recent_ids.get(from.user(), msg_id, ts, window)
        {
            return Published {
                seq,
                duplicate: true,
            };
        }
        self.seq += 1;
        let frame = ServerMessage::Message {
            room,
            from: from.user(),
            data,
            seq: self.seq,
            ts,
        }
        .encode();
        let skip = (!echo).then(|| from.id());
        self.deliver(skip, ts, Outbound::Text(frame));
        if let Some(msg_id) = msg_id {
            self.recent_ids.insert(from.user(), msg_id, self.seq, ts);
        }
        events::published(&self.events, room, from.user(), self.seq, ts, || {
            EventPayload::Json(data.to_owned())
        });
        Published {
            seq: self.seq,
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
        self.seq += 1;
        let frame = ServerBinary {
            room,
            seq: self.seq,
            ts,
            from: from.user(),
            payload,
        }
        .encode();
        self.deliver(Some(from.id()), ts, Outbound::Binary(frame));
        events::published(&self.events, room, from.user(), self.seq, ts, || {
            EventPayload::Binary(bytes::Bytes::copy_from_slice(payload))
        });
        self.seq
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
        self.history.expire(now_ms);
        let size = self.history.size();
        let limit = limit.map_or(size, |l| usize::try_from(l).unwrap_or(usize::MAX).min(size));
        // The newest messages that fit in the reply budget (half the outbox), so that the
        // reply never makes the reader a slow consumer; `messages` may so be fewer than asked.
        let budget = session.outbox().replay_budget();
        let count = reply::history_fit(self.history.latest(limit).rev().map(|e| &e.frame), budget);
        // Queued under the room lock: the reply has a definite place in the live stream.
        let frames = self.history.latest(count).map(|e| &e.frame);
        let reply = reply::history(room, id, self.seq, &self.epoch, frames);
        let _ = session.outbox().push(reply);
    }

    /// Fans a sequenced message out and keeps it in the history.
    fn deliver(&mut self, skip: Option<SessionId>, ts: u64, frame: Outbound) {
        // Stamped once per message, for the publish → socket latency (see `Sequenced`).
        let sequenced = Some(crate::Sequenced::now());
        for (id, member) in self.members.iter() {
            if Some(*id) != skip {
                let _ = member
                    .session
                    .outbox()
                    .push_message(frame.clone(), sequenced);
            }
        }
        self.history.push(history::Entry {
            seq: self.seq,
            ts,
            frame,
        });
    }

    pub(crate) fn typing(&self, room: &str, from: &Session) {
        let frame = ServerMessage::Typing {
            room,
            from: from.user(),
        }
        .encode();
        self.fan_out(Some(from.id()), &Outbound::Text(frame));
    }

    /// Queues `frame` for every member but `skip`. A member whose outbox overflows is aborted
    /// by its outbox (slow consumer); the others are not held back.
    fn fan_out(&self, skip: Option<SessionId>, frame: &Outbound) {
        for (id, member) in self.members.iter() {
            if Some(*id) != skip {
                let _ = member.session.outbox().push(frame.clone());
            }
        }
    }
}
