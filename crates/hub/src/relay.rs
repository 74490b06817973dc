//! The local side of rooms that a remote broker sequences (Redis, in `switchboard-broker-redis`):
//! this node's members of each room, their presence counts, and the fan-out of frames that
//! arrive already encoded and sequenced.
//!
//! The broker owns the order: it assigns `seq`, keeps history and presence, and delivers every
//! frame of a room over one ordered stream (one Redis connection). The relay keeps each member
//! gap-free and duplicate-free on top of it:
//!
//! - A joiner is *pending* until the broker's snapshot (seq, epoch, members, the replay after
//!   its `since`) arrives; frames that come meanwhile are buffered (bounded) and those after the
//!   snapshot follow it, so the replay and the live stream meet without a gap or a duplicate.
//! - A room notices a gap (a seq that does not follow the last one, or a new epoch — Redis lost
//!   its data) and asks the broker to resync: members are pending again, then get the missed
//!   frames from history, or an unsolicited `joined` with `recovered: false` when history can
//!   no longer fill the gap.
//!
//! Everything here is synchronous and knows nothing of the broker's transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::codes::close;
use switchboard_protocol::names::validate_room;
use switchboard_protocol::server::PresenceEvent;

use crate::delivery::Sequenced;
use crate::error::HubError;
use crate::hub::HubStats;
use crate::members::Members;
use crate::outbox::{CloseFrame, Outbound, OutboxPool};
use crate::presence::{PresenceBatch, PresenceConfig, Recorded};
use crate::registry::Registry;
use crate::reply::{self, Roster};
use crate::room::Position;
use crate::session::{Session, SessionId};

/// What a frame from the broker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    /// A sequenced `message` (JSON or binary); `seq` is the room's sequence number.
    Message,
    /// A `presence` event; `seq` is the room's presence version.
    Presence,
    /// A `typing` signal; unsequenced.
    Typing,
}

/// One frame of a room's stream, as the broker delivers it.
#[derive(Debug, Clone)]
pub struct Inbound<'a> {
    /// What it is.
    pub kind: InboundKind,
    /// The room's epoch the seq belongs to (messages only).
    pub epoch: &'a str,
    /// Message seq or presence version.
    pub seq: u64,
    /// A session of this node that must not receive it (a publisher without `echo`, the
    /// subject of a presence event, the typist).
    pub skip: Option<SessionId>,
    /// The frame, encoded once, shared by every member.
    pub frame: Outbound,
    /// When the message was sequenced (messages only; `None` if the broker did not say).
    pub sequenced: Option<Sequenced>,
}

/// The broker's view of a room at one moment, for a joiner or a resync.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// The room's last seq.
    pub seq: u64,
    /// The room's presence version (the count of presence events so far).
    pub presence_version: u64,
    /// Users present on any node: all of them, or (in a room larger than the list limit) at
    /// least the list limit of them.
    pub members: Vec<Arc<str>>,
    /// How many distinct users are present on any node.
    pub member_count: u64,
    /// Every message after the asked position up to `seq`, oldest first, with its seq — or
    /// `None` when the position is in another epoch or history no longer covers it.
    pub replay: Option<Vec<(u64, Outbound)>>,
}

/// A resync the broker must perform for a room: a [`Snapshot`] after `since` under `epoch`,
/// handed back with [`Relay::finish_resync`] and the same `ticket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncRequest {
    /// The room.
    pub room: Arc<str>,
    /// The last seq the room delivered.
    pub since: u64,
    /// The epoch it delivered it under.
    pub epoch: Arc<str>,
    /// Identifies this resync.
    pub ticket: u64,
}

/// A join in progress, from [`Relay::begin_join`] to [`Relay::finish_join`] or
/// [`Relay::abort_join`].
#[derive(Debug)]
pub struct JoinTicket {
    room: Arc<RelayRoom>,
    ticket: u64,
    /// The relay's generation when the join began (see [`Relay::resync_all`]).
    generation: u64,
    /// The room had no member on this node: the broker must subscribe to it first.
    pub first_in_room: bool,
    /// The user had no other connection in the room on this node: the broker adds the
    /// user's presence.
    pub first_of_user: bool,
}

impl RelayRoom {
    /// Its name, this node's connections in it and the last seq delivered, for the operator
    /// page (`crate::activity`).
    pub(crate) fn activity(&self) -> (&Arc<str>, usize, u64) {
        let state = self.state.lock();
        (
            &self.name,
            state.members.len(),
            state.synced.as_ref().map_or(0, |(_, seq)| *seq),
        )
    }
}

impl JoinTicket {
    /// The room's name.
    pub fn room(&self) -> &Arc<str> {
        &self.room.name
    }
}

/// What leaving changed on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The room.
    pub room: Arc<str>,
    /// The user.
    pub user: Arc<str>,
    /// No member of the room is left on this node: the broker may unsubscribe.
    pub room_empty: bool,
    /// The user's last connection in the room on this node left: the broker removes the
    /// user's presence from this node.
    pub last_of_user: bool,
}

/// This node's members of broker-sequenced rooms.
#[derive(Debug)]
pub struct Relay {
    rooms: Registry<RelayRoom>,
    next_session: AtomicU64,
    next_ticket: AtomicU64,
    /// Counts the broker's stream interruptions ([`Relay::resync_all`]): a join that began
    /// before one may hold a snapshot older than what the stream lost.
    generation: AtomicU64,
    sessions: AtomicUsize,
    outbox_bytes: usize,
    outbox_pool: Option<Arc<OutboxPool>>,
    presence: PresenceConfig,
    /// Rooms with presence changes waiting for [`Relay::flush_presence`].
    presence_queue: Mutex<Vec<Arc<RelayRoom>>>,
}

/// One room's members on this node.
#[derive(Debug)]
pub struct RelayRoom {
    name: Arc<str>,
    state: Mutex<RelayState>,
}

#[derive(Debug, Default)]
struct RelayState {
    /// The epoch and last seq delivered in order; `None` until a snapshot is applied.
    synced: Option<(Arc<str>, u64)>,
    /// A resync asked of the broker and not yet applied.
    resync: Option<u64>,
    /// The presence version of the last presence event (or snapshot) applied: a resync whose
    /// snapshot is newer missed presence events, and refreshes the members' lists.
    presence_version: u64,
    members: Members<Member>,
    closed: bool,
    /// Presence changes not yet handed out to the live members.
    batch: PresenceBatch,
    /// The room's distinct users on every node, as of presence version `count_version`.
    member_count: u64,
    count_version: u64,
}

#[derive(Debug)]
struct Member {
    session: Arc<Session>,
    presence: bool,
    state: MemberState,
    /// A repeated join waiting for its snapshot. The member keeps its place in the stream
    /// (and in a resync) meanwhile; the snapshot only answers it with `joined`.
    rejoin: Option<Rejoin>,
    /// The presence version its view includes (its snapshot's, or the last event it got).
    floor: u64,
}

#[derive(Debug)]
struct Rejoin {
    ticket: u64,
    id: Option<RequestId>,
    /// The epoch of the join's `since`, for `recovered`.
    since_epoch: Option<Arc<str>>,
}

#[derive(Debug)]
enum MemberState {
    /// Receives the stream; frames at or below `position` are not delivered again.
    Live { position: u64 },
    /// Waits for a snapshot; frames are buffered meanwhile.
    Pending(Pending),
}

#[derive(Debug)]
struct Pending {
    ticket: u64,
    why: Why,
    buffer: Vec<Buffered>,
    bytes: usize,
}

#[derive(Debug)]
enum Why {
    /// A join request: answered with `joined`.
    Join {
        id: Option<RequestId>,
        since: Option<(u64, Arc<str>)>,
    },
    /// The room lost its place: the member had everything up to `since`.
    Resync { since: u64 },
}

#[derive(Debug)]
struct Buffered {
    kind: InboundKind,
    epoch: Arc<str>,
    seq: u64,
    skip: Option<SessionId>,
    frame: Outbound,
}

impl Relay {
    /// An empty relay; each session's outbox holds `outbox_bytes`.
    pub fn new(outbox_bytes: usize) -> Self {
        Self::with_pool(outbox_bytes, None)
    }

    /// An empty relay whose sessions' outboxes also draw on the server-wide `pool`.
    pub fn with_pool(outbox_bytes: usize, outbox_pool: Option<Arc<OutboxPool>>) -> Self {
        Self {
            rooms: Registry::new(),
            next_session: AtomicU64::new(1),
            next_ticket: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            outbox_bytes,
            outbox_pool,
            presence: PresenceConfig::default(),
            presence_queue: Mutex::new(Vec::new()),
        }
    }

    /// The same relay with these presence settings.
    #[must_use]
    pub fn with_presence(mut self, presence: PresenceConfig) -> Self {
        self.presence = presence;
        self
    }

    /// Registers a connection of `user`. Call [`Relay::disconnect`] when it ends.
    pub fn connect(&self, user: Arc<str>) -> Arc<Session> {
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Arc::new(Session::new(
            id,
            user,
            self.outbox_bytes,
            self.outbox_pool.clone(),
        ))
    }

    /// Adds `session` to `room` as a pending member. The broker then fetches a [`Snapshot`]
    /// (after subscribing, if `first_in_room`) and calls [`Relay::finish_join`]. A session
    /// already in the room is answered from a fresh snapshot too, without a replay; it keeps
    /// its place in the stream (or in a resync) meanwhile, and stays if the join is aborted.
    pub fn begin_join(
        &self,
        session: &Arc<Session>,
        room: &str,
        id: Option<RequestId>,
        since: Option<Position<'_>>,
        presence: bool,
    ) -> Result<JoinTicket, HubError> {
        validate_room(room)?;
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        loop {
            let entry = self.get_or_create(room);
            let mut state = entry.state.lock();
            if state.closed {
                continue;
            }
            let first_in_room = state.members.is_empty();
            let mut first_of_user = false;
            let why = Why::Join {
                id,
                since: since.map(|p| (p.seq, Arc::from(p.epoch))),
            };
            match state.members.get_mut(&session.id()) {
                None => {
                    let member = Member {
                        session: session.clone(),
                        presence,
                        state: MemberState::Pending(Pending {
                            ticket,
                            why,
                            buffer: Vec::new(),
                            bytes: 0,
                        }),
                        rejoin: None,
                        floor: 0,
                    };
                    first_of_user = state.members.add(session, member);
                }
                Some(member) => match &mut member.state {
                    // Its first join is still waiting: this one takes its place (and what
                    // was buffered for it).
                    MemberState::Pending(pending) if matches!(pending.why, Why::Join { .. }) => {
                        pending.ticket = ticket;
                        pending.why = why;
                    }
                    // Already a member: it keeps its place in the stream, or in a resync (a
                    // gap it is owed), and is answered from the snapshot, without a replay.
                    _ => {
                        member.rejoin = Some(Rejoin {
                            ticket,
                            id,
                            since_epoch: since.map(|p| Arc::from(p.epoch)),
                        });
                    }
                },
            }
            drop(state);
            session.enter(entry.name.clone(), entry.clone());
            return Ok(JoinTicket {
                generation: self.generation.load(Ordering::Acquire),
                room: entry,
                ticket,
                first_in_room,
                first_of_user,
            });
        }
    }

    /// Answers a pending join with the broker's snapshot: `joined`, the replay, then what
    /// arrived meanwhile after the snapshot. Nothing happens if the session left meanwhile.
    /// When the broker's stream was interrupted while the join was on its way, the snapshot
    /// may predate what the stream lost: the member then waits for a resync from its position,
    /// which the broker must perform (the returned request).
    pub fn finish_join(
        &self,
        join: &JoinTicket,
        session: &Session,
        snapshot: &Snapshot,
    ) -> Option<ResyncRequest> {
        let stale = join.generation != self.generation.load(Ordering::Acquire);
        let mut state = join.room.state.lock();
        let state = &mut *state;
        let member = state.members.get_mut(&session.id())?;
        if let Some(rejoin) = member.rejoin.take_if(|r| r.ticket == join.ticket) {
            // A repeated join: nothing was missed if the epoch is the one it asked about. The
            // reply takes its place in the member's stream: `seq` is the last one it got.
            let recovered = rejoin.since_epoch.map(|epoch| epoch == snapshot.epoch);
            let seq = match member.state {
                MemberState::Live { position }
                    if state
                        .synced
                        .as_ref()
                        .is_some_and(|(e, _)| *e == snapshot.epoch) =>
                {
                    position
                }
                _ => snapshot.seq,
            };
            let reply = joined(
                &join.room.name,
                member,
                rejoin.id,
                snapshot,
                seq,
                recovered,
                self.presence.max_joined_members,
            );
            let _ = member.session.outbox().push(reply);
            member.floor = member.floor.max(snapshot.presence_version);
            return None;
        }
        let MemberState::Pending(pending) = &member.state else {
            return None;
        };
        if pending.ticket != join.ticket {
            return None;
        }
        let MemberState::Pending(pending) =
            std::mem::replace(&mut member.state, MemberState::Live { position: 0 })
        else {
            return None;
        };
        let asked = matches!(pending.why, Why::Join { since: Some(_), .. });
        let (id, since) = match pending.why {
            Why::Join { id, since } => (id, since),
            Why::Resync { since } => (None, Some((since, snapshot.epoch.clone()))),
        };
        let replay = match (&since, &snapshot.replay) {
            (Some((_, epoch)), Some(replay)) if *epoch == snapshot.epoch => Some(replay),
            _ => None,
        };
        let recovered = since.as_ref().map(|_| replay.is_some());
        let reply = joined(
            &join.room.name,
            member,
            id,
            snapshot,
            snapshot.seq,
            recovered,
            self.presence.max_joined_members,
        );
        let outbox = member.session.outbox();
        let _ = outbox.push(reply);
        let floor = since.as_ref().map_or(0, |(seq, _)| *seq);
        let mut replayed = 0;
        for (seq, frame) in replay.into_iter().flatten() {
            if *seq > floor {
                let _ = outbox.push_message(frame.clone(), None);
                replayed += 1;
            }
        }
        crate::metrics::recovery(asked, replay.is_some().then_some(replayed));
        let (position, floor) = flush(member, pending.buffer, snapshot, snapshot.seq);
        member.floor = floor;
        if snapshot.presence_version >= state.count_version {
            state.member_count = snapshot.member_count;
            state.count_version = snapshot.presence_version;
        }
        if stale {
            // Catch up from here, like the room's other members did after the interruption.
            let mut since = match &state.synced {
                Some((epoch, last)) if *epoch == snapshot.epoch => position.min(*last),
                _ => position,
            };
            let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            member.state = MemberState::Pending(Pending {
                ticket,
                why: Why::Resync { since: position },
                buffer: Vec::new(),
                bytes: 0,
            });
            // One resync for the room: members already waiting for one wait for this one.
            for other in state.members.values_mut() {
                if let MemberState::Pending(p) = &mut other.state
                    && let Why::Resync { since: theirs } = p.why
                {
                    p.ticket = ticket;
                    since = since.min(theirs);
                }
            }
            state.resync = Some(ticket);
            return Some(ResyncRequest {
                room: join.room.name.clone(),
                since,
                epoch: snapshot.epoch.clone(),
                ticket,
            });
        }
        member.state = MemberState::Live { position };
        if state.synced.is_none() && state.resync.is_none() {
            state.synced = Some((snapshot.epoch.clone(), position));
            state.presence_version = snapshot.presence_version;
        }
        None
    }

    /// Undoes a join the broker could not complete. Returns the departure to undo in the
    /// broker (unsubscribe when the room is now empty here).
    pub fn abort_join(&self, join: &JoinTicket, session: &Session) -> Option<Departure> {
        let matches = {
            let mut state = join.room.state.lock();
            let member = state.members.get_mut(&session.id())?;
            if member.rejoin.take_if(|r| r.ticket == join.ticket).is_some() {
                return None; // a repeated join: the membership stays as it was
            }
            matches!(&member.state, MemberState::Pending(p) if p.ticket == join.ticket)
        };
        if !matches {
            return None;
        }
        session.exit::<RelayRoom>(&join.room.name);
        self.remove(&join.room, session, None)
    }

    /// Leaves `room`, queuing `left` with `id`.
    pub fn leave(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
    ) -> Result<Departure, HubError> {
        validate_room(room)?;
        let Some(entry) = session.exit::<RelayRoom>(room) else {
            return Err(HubError::NotJoined(room.to_owned()));
        };
        self.remove(&entry, session, Some(id))
            .ok_or_else(|| HubError::NotJoined(room.to_owned()))
    }

    /// Leaves every room and unregisters the session; returns what the broker must undo.
    pub fn disconnect(&self, session: &Session) -> Vec<Departure> {
        let rooms = session.exit_all::<RelayRoom>();
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        rooms
            .iter()
            .filter_map(|room| self.remove(room, session, None))
            .collect()
    }

    /// The room of a session's membership (for publishing: no registry lookup).
    pub fn member_room(&self, session: &Session, room: &str) -> Result<Arc<str>, HubError> {
        if let Some(entry) = session.room::<RelayRoom>(room) {
            return Ok(entry.name.clone());
        }
        validate_room(room)?;
        Err(HubError::NotJoined(room.to_owned()))
    }

    /// Fans a frame of `room`'s stream out to this node's members. Returns a resync to perform
    /// when the frame shows that the room missed something.
    pub fn deliver(&self, room: &str, inbound: Inbound<'_>) -> Option<ResyncRequest> {
        let entry = self.rooms.get(room)?;
        let mut state = entry.state.lock();
        let state = &mut *state;
        match inbound.kind {
            InboundKind::Typing => {
                for (id, member) in state.members.iter() {
                    if Some(*id) != inbound.skip && matches!(member.state, MemberState::Live { .. })
                    {
                        let _ = member.session.outbox().push(inbound.frame.clone());
                    }
                }
                None
            }
            InboundKind::Presence => {
                // Members still waiting for a snapshot keep the event with the stream; live
                // ones get it in the room's next coalesced hand-out.
                for member in state.members.values_mut() {
                    if let MemberState::Pending(pending) = &mut member.state
                        && member.presence
                    {
                        buffer(&member.session, pending, &inbound);
                    }
                }
                if state.resync.is_none() {
                    state.presence_version = inbound.seq;
                }
                // Lock order: a room, then the queue (never the other way round).
                if self.record_presence(&entry.name, state, &inbound) {
                    self.presence_queue.lock().push(entry.clone());
                }
                None
            }
            InboundKind::Message => self.deliver_message(&entry.name, state, &inbound),
        }
    }

    /// Records a presence event of the broker's stream for the room's next hand-out and keeps
    /// the member count. Returns whether the room must be queued.
    fn record_presence(&self, room: &str, state: &mut RelayState, inbound: &Inbound<'_>) -> bool {
        let Some((event, user)) = presence_change(&inbound.frame) else {
            return false;
        };
        if inbound.seq > state.count_version {
            state.member_count = match event {
                PresenceEvent::Join => state.member_count.saturating_add(1),
                PresenceEvent::Leave => state.member_count.saturating_sub(1),
            };
            state.count_version = inbound.seq;
        }
        if inbound.seq <= state.batch.last_version() {
            // Versions went back (Redis lost the room and started again): what waits goes
            // out first, then everyone hears of changes from this one on.
            self.hand_out_presence(room, state, 0);
            state.batch.reset_version(inbound.seq.saturating_sub(1));
            for member in state.members.values_mut() {
                member.floor = member.floor.min(inbound.seq.saturating_sub(1));
            }
        }
        // The subject of the event (its own join) is not told about itself: its snapshot
        // normally includes the event already; if not and it missed nothing else, skip it.
        if let Some(subject) = inbound.skip.and_then(|id| state.members.get_mut(&id))
            && matches!(subject.state, MemberState::Live { .. })
            && subject.floor.saturating_add(1) == inbound.seq
        {
            subject.floor = inbound.seq;
        }
        let users = usize::try_from(state.member_count).unwrap_or(usize::MAX);
        match state
            .batch
            .record(&self.presence, inbound.seq, &user, event, users)
        {
            Recorded::Waiting => false,
            Recorded::Queue => true,
            // A list window: the clock only matters to count-only ones.
            Recorded::FlushNow => {
                self.hand_out_presence(room, state, 0);
                false
            }
            Recorded::FlushNowAndQueue => {
                self.hand_out_presence(room, state, 0);
                true
            }
        }
    }

    /// Queues the window's frames for the live members that may see presence, each the
    /// changes after its floor.
    fn hand_out_presence(&self, room: &str, state: &mut RelayState, now_ms: u64) {
        let last = state.batch.last_version();
        let mut flush = state
            .batch
            .take(&self.presence, room, state.member_count, now_ms);
        for member in state.members.values_mut() {
            if !matches!(member.state, MemberState::Live { .. }) {
                continue;
            }
            if member.presence
                && let Some(frame) = flush.frame_for(member.floor)
            {
                let _ = member.session.outbox().push(frame);
            }
            member.floor = member.floor.max(last);
        }
    }

    /// Hands out the presence changes collected since the last call (see
    /// [`crate::PresenceConfig`]). Call it every `batch_interval`.
    pub fn flush_presence(&self, now_ms: u64) {
        let rooms = std::mem::take(&mut *self.presence_queue.lock());
        let mut waiting = Vec::new();
        for entry in rooms {
            let mut state = entry.state.lock();
            let users = usize::try_from(state.member_count).unwrap_or(usize::MAX);
            if state.batch.due(&self.presence, users, now_ms) {
                self.hand_out_presence(&entry.name, &mut state, now_ms);
            }
            let keep = state.batch.tick();
            drop(state);
            if keep {
                waiting.push(entry);
            }
        }
        if !waiting.is_empty() {
            self.presence_queue.lock().extend(waiting);
        }
    }

    /// The room's member count as this node knows it (from snapshots and presence events).
    pub fn member_count(&self, room: &str) -> Option<u64> {
        let entry = self.rooms.get(room)?;
        let count = entry.state.lock().member_count;
        Some(count)
    }

    fn deliver_message(
        &self,
        room: &Arc<str>,
        state: &mut RelayState,
        inbound: &Inbound<'_>,
    ) -> Option<ResyncRequest> {
        let mut resync = None;
        match &mut state.synced {
            Some((epoch, last)) if **epoch == *inbound.epoch && inbound.seq <= *last => {
                return None; // delivered already
            }
            Some((epoch, last)) if **epoch == *inbound.epoch && inbound.seq == *last + 1 => {
                *last = inbound.seq;
            }
            Some((epoch, last)) => {
                // A gap, or a new epoch: every live member waits for the broker to fill it.
                let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                resync = Some(ResyncRequest {
                    room: room.clone(),
                    since: *last,
                    epoch: epoch.clone(),
                    ticket,
                });
                for member in state.members.values_mut() {
                    if let MemberState::Live { position } = member.state {
                        member.state = MemberState::Pending(Pending {
                            ticket,
                            why: Why::Resync { since: position },
                            buffer: Vec::new(),
                            bytes: 0,
                        });
                    }
                }
                state.synced = None;
                state.resync = Some(ticket);
            }
            None => {}
        }
        for (id, member) in state.members.iter_mut() {
            match &mut member.state {
                MemberState::Live { position } => {
                    if inbound.seq > *position {
                        *position = inbound.seq;
                        if Some(*id) != inbound.skip {
                            let _ = member
                                .session
                                .outbox()
                                .push_message(inbound.frame.clone(), inbound.sequenced);
                        }
                    }
                }
                MemberState::Pending(pending) => buffer(&member.session, pending, inbound),
            }
        }
        resync
    }

    /// Applies the snapshot of a resync: each waiting member gets what it missed from history,
    /// or an unsolicited `joined` with `recovered: false` when history cannot fill the gap,
    /// then the frames that arrived meanwhile.
    pub fn finish_resync(&self, request: &ResyncRequest, snapshot: &Snapshot) {
        let Some(entry) = self.rooms.get(&request.room) else {
            return;
        };
        let mut state = entry.state.lock();
        let state = &mut *state;
        if state.resync != Some(request.ticket) {
            return;
        }
        state.resync = None;
        let mut last = snapshot.seq;
        // Presence events are not kept in history: if some were missed, members get the
        // current list instead (an unsolicited `joined` that continues the stream).
        let presence_missed = snapshot.presence_version > state.presence_version;
        state.presence_version = snapshot.presence_version;
        if snapshot.presence_version < state.batch.last_version() {
            // The presence version went back: Redis lost the room. Members get the list from
            // the notice below; what waits belongs to the lost incarnation.
            let _ = state.batch.take(&self.presence, &entry.name, 0, 0);
            state.batch.reset_version(snapshot.presence_version);
            for member in state.members.values_mut() {
                member.floor = snapshot.presence_version;
            }
        }
        if snapshot.presence_version >= state.count_version
            || snapshot.presence_version < state.batch.last_version()
        {
            state.member_count = snapshot.member_count;
            state.count_version = snapshot.presence_version;
        }
        let limit = self.presence.max_joined_members;
        for member in state.members.values_mut() {
            let pending = match &member.state {
                MemberState::Pending(p) if p.ticket == request.ticket => {
                    match std::mem::replace(&mut member.state, MemberState::Live { position: 0 }) {
                        MemberState::Pending(p) => p,
                        MemberState::Live { .. } => continue,
                    }
                }
                _ => continue,
            };
            let since = match pending.why {
                Why::Resync { since } => since,
                Why::Join { .. } => continue,
            };
            let outbox = member.session.outbox();
            match &snapshot.replay {
                Some(replay) if snapshot.epoch == request.epoch => {
                    for (seq, frame) in replay {
                        if *seq > since {
                            let _ = outbox.push_message(frame.clone(), None);
                        }
                    }
                    if presence_missed && member.presence {
                        let refresh = joined(
                            &entry.name,
                            member,
                            None,
                            snapshot,
                            snapshot.seq,
                            Some(true),
                            limit,
                        );
                        let _ = outbox.push(refresh);
                    }
                }
                _ => {
                    let notice = joined(
                        &entry.name,
                        member,
                        None,
                        snapshot,
                        snapshot.seq,
                        Some(false),
                        limit,
                    );
                    let _ = outbox.push(notice);
                }
            }
            let (position, floor) = flush(member, pending.buffer, snapshot, snapshot.seq);
            member.floor = floor;
            member.state = MemberState::Live { position };
            last = last.max(position);
        }
        state.synced = Some((snapshot.epoch.clone(), last));
    }

    /// Queues a `history` reply (`entries` oldest first, with their seqs, as the broker read
    /// them when the room was at `seq`; the newest that fit in the session's reply budget are
    /// kept) where it belongs in the session's stream of the room:
    /// for a live member, at its position — entries after it are left out (they arrive live,
    /// after the reply) and the reply's `seq` is the position — so that every message up to
    /// the reply's `seq` arrives before it and every later one after it, as on a single node.
    pub fn place_history(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        seq: u64,
        epoch: &str,
        entries: &[(u64, Outbound)],
    ) {
        let entry = self.rooms.get(room);
        let state = entry.as_ref().map(|entry| entry.state.lock());
        let position = state.as_ref().and_then(|state| {
            let member = state.members.get(&session.id())?;
            match (&member.state, &state.synced) {
                (MemberState::Live { position }, Some((synced, _))) if **synced == *epoch => {
                    Some(*position)
                }
                _ => None,
            }
        });
        let upto = position.map_or(seq, |position| position.min(seq));
        // The newest entries that fit in the reply budget (see [`reply::history_fit`]).
        let fit = reply::history_fit(
            entries.iter().rev().map(|(_, frame)| frame),
            session.outbox().replay_budget(),
        );
        let kept = entries
            .get(entries.len().saturating_sub(fit)..)
            .unwrap_or_default();
        let frames = kept
            .iter()
            .filter(|(entry_seq, _)| *entry_seq <= upto)
            .map(|(_, frame)| frame);
        let reply = reply::history(room, id, upto, epoch, frames);
        // Queued while the room's lock is held: no frame of the room slips in between.
        let _ = session.outbox().push(reply);
        drop(state);
    }

    /// Every room with members here, and their users: for presence heartbeats and for
    /// resubscribing after the broker's connection came back.
    pub fn rooms(&self) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let mut rooms = Vec::new();
        for shard in self.rooms.shards() {
            for (name, room) in shard.read().iter() {
                let state = room.state.lock();
                if !state.members.is_empty() {
                    rooms.push((
                        name.clone(),
                        state.members.users().keys().cloned().collect(),
                    ));
                }
            }
        }
        rooms
    }

    /// After the broker's stream was interrupted: every room with members resyncs from the
    /// last seq it delivered (rooms still waiting for their first snapshot are left to it).
    pub fn resync_all(&self) -> Vec<ResyncRequest> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut requests = Vec::new();
        for shard in self.rooms.shards() {
            for room in shard.read().values() {
                let mut state = room.state.lock();
                let state = &mut *state;
                let Some((epoch, last)) = state.synced.take() else {
                    continue;
                };
                let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                for member in state.members.values_mut() {
                    match &mut member.state {
                        MemberState::Live { position } => {
                            member.state = MemberState::Pending(Pending {
                                ticket,
                                why: Why::Resync { since: *position },
                                buffer: Vec::new(),
                                bytes: 0,
                            });
                        }
                        MemberState::Pending(p) if matches!(p.why, Why::Resync { .. }) => {
                            p.ticket = ticket;
                        }
                        MemberState::Pending(_) => {}
                    }
                }
                state.resync = Some(ticket);
                requests.push(ResyncRequest {
                    room: room.name.clone(),
                    since: last,
                    epoch,
                    ticket,
                });
            }
        }
        requests
    }

    /// The users `room` has on this node now (`None` without members).
    pub fn users_of(&self, room: &str) -> Option<Vec<Arc<str>>> {
        let entry = self.rooms.get(room)?;
        let state = entry.state.lock();
        let users = state.members.users();
        (!users.is_empty()).then(|| users.keys().cloned().collect())
    }

    /// Whether `room` has members on this node.
    pub fn has_members(&self, room: &str) -> bool {
        self.rooms
            .shard(room)
            .read()
            .get(room)
            .is_some_and(|entry| !entry.state.lock().members.is_empty())
    }

    /// The room registry, for listings (`crate::activity`).
    pub(crate) fn registry(&self) -> &Registry<RelayRoom> {
        &self.rooms
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        HubStats {
            rooms: self.rooms.len(),
            sessions: self.sessions.load(Ordering::Relaxed),
            outbox_pool_bytes: self.outbox_pool.as_ref().map_or(0, |p| p.used()),
            // History lives in Redis, not on this node.
            history_bytes: 0,
            idempotency_ids: 0,
        }
    }

    fn remove(
        &self,
        entry: &Arc<RelayRoom>,
        session: &Session,
        reply: Option<Option<RequestId>>,
    ) -> Option<Departure> {
        let (room_empty, last_of_user) = {
            let mut state = entry.state.lock();
            let (_, last_of_user) = state.members.remove(session)?;
            (state.members.is_empty(), last_of_user)
        };
        if let Some(id) = reply {
            let _ = session.outbox().push(reply::left(&entry.name, id));
        }
        if room_empty {
            self.rooms.dispose(&entry.name, entry, |room| {
                let mut state = room.state.lock();
                state.closed |= state.members.is_empty();
                state.closed
            });
        }
        Some(Departure {
            room: entry.name.clone(),
            user: session.user().clone(),
            room_empty,
            last_of_user,
        })
    }

    fn get_or_create(&self, room: &str) -> Arc<RelayRoom> {
        self.rooms.get_or_create(room, |name| RelayRoom {
            name: name.clone(),
            state: Mutex::new(RelayState::default()),
        })
    }
}

/// The event and user of a `presence` frame from the broker (the single form).
fn presence_change(frame: &Outbound) -> Option<(PresenceEvent, Arc<str>)> {
    let Outbound::Text(json) = frame else {
        return None;
    };
    let single: serde_json::Value = serde_json::from_slice(json).ok()?;
    let event = match single.get("event")?.as_str()? {
        "join" => PresenceEvent::Join,
        "leave" => PresenceEvent::Leave,
        _ => return None,
    };
    Some((event, Arc::from(single.get("user")?.as_str()?)))
}

/// The `joined` frame answering `member` from `snapshot`, at `seq`.
fn joined(
    room: &str,
    member: &Member,
    id: Option<RequestId>,
    snapshot: &Snapshot,
    seq: u64,
    recovered: Option<bool>,
    limit: usize,
) -> Outbound {
    let mut sorted: Vec<&str> = Vec::new();
    if member.presence {
        sorted = snapshot.members.iter().map(|m| &**m).collect();
        sorted.sort_unstable();
    }
    let roster = member.presence.then(|| Roster {
        sorted: sorted.into_iter(),
        count: snapshot.member_count,
    });
    reply::joined(room, id, roster, limit, seq, &snapshot.epoch, recovered)
}

/// Buffers a frame for a pending member, within half its outbox budget; a member whose
/// snapshot takes so long that the buffer overflows is cut off as a slow consumer (it
/// reconnects and recovers from history).
fn buffer(session: &Session, pending: &mut Pending, inbound: &Inbound<'_>) {
    let cost = inbound.frame.cost();
    if pending.bytes + cost > session.outbox().replay_budget() {
        session.outbox().abort(Some(CloseFrame::new(
            close::TRY_AGAIN_LATER,
            "slow consumer: too far behind while joining",
        )));
        pending.buffer.clear();
        pending.bytes = 0;
        return;
    }
    pending.bytes += cost;
    pending.buffer.push(Buffered {
        kind: inbound.kind,
        epoch: Arc::from(inbound.epoch),
        seq: inbound.seq,
        skip: inbound.skip,
        frame: inbound.frame.clone(),
    });
}

/// Queues the buffered frames that come after `start` (in the snapshot's epoch) and the
/// presence events after the snapshot's; returns the member's position and the presence
/// version its view now includes.
fn flush(member: &Member, buffered: Vec<Buffered>, snapshot: &Snapshot, start: u64) -> (u64, u64) {
    let mut position = start;
    let mut floor = member.floor.max(snapshot.presence_version);
    let outbox = member.session.outbox();
    let me = member.session.id();
    for frame in buffered {
        let fresh = match frame.kind {
            InboundKind::Message => {
                let fresh = *frame.epoch == *snapshot.epoch && frame.seq > position;
                if fresh {
                    position = frame.seq;
                }
                fresh
            }
            InboundKind::Presence => {
                let fresh = frame.seq > floor;
                if fresh {
                    floor = frame.seq;
                }
                fresh
            }
            InboundKind::Typing => false,
        };
        if fresh && frame.skip != Some(me) {
            let _ = match frame.kind {
                InboundKind::Message => outbox.push_message(frame.frame, None),
                InboundKind::Presence | InboundKind::Typing => outbox.push(frame.frame),
            };
        }
    }
    (position, floor)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;
    use crate::outbox::Batch;

    const BUDGET: usize = 1 << 20;

    fn frame(seq: u64) -> Outbound {
        Outbound::Text(Bytes::from(format!(
            r#"{{"type":"message","room":"r","seq":{seq}}}"#
        )))
    }

    fn snapshot(epoch: &str, seq: u64, replay: Option<&[u64]>) -> Snapshot {
        Snapshot {
            epoch: epoch.into(),
            seq,
            presence_version: 0,
            members: vec!["a".into(), "b".into()],
            member_count: 2,
            replay: replay.map(|seqs| seqs.iter().map(|&n| (n, frame(n))).collect()),
        }
    }

    /// Joins room "r" (with presence) and returns the pending join.
    fn join(
        relay: &Relay,
        session: &Arc<Session>,
        id: Option<RequestId>,
        since: Option<(u64, &str)>,
    ) -> JoinTicket {
        let since = since.map(|(seq, epoch)| Position { seq, epoch });
        relay.begin_join(session, "r", id, since, true).unwrap()
    }

    /// A relay with one member per user, each joined (without `since`) from a snapshot at
    /// `e:seq` and drained.
    fn live(seq: u64, users: &[&str]) -> (Relay, Vec<Arc<Session>>) {
        let relay = Relay::new(BUDGET);
        let sessions = users
            .iter()
            .map(|&user| {
                let session = relay.connect(user.into());
                let ticket = join(&relay, &session, None, None);
                relay.finish_join(&ticket, &session, &snapshot("e", seq, None));
                drain(&session);
                session
            })
            .collect();
        (relay, sessions)
    }

    fn deliver(
        relay: &Relay,
        kind: InboundKind,
        epoch: &str,
        seq: u64,
        skip: Option<&Session>,
        frame: Outbound,
    ) -> Option<ResyncRequest> {
        let skip = skip.map(Session::id);
        relay.deliver(
            "r",
            Inbound {
                kind,
                epoch,
                seq,
                skip,
                frame,
                sequenced: None,
            },
        )
    }

    fn msg(relay: &Relay, epoch: &str, seq: u64) -> Option<ResyncRequest> {
        deliver(relay, InboundKind::Message, epoch, seq, None, frame(seq))
    }

    /// Delivers messages `seqs` of epoch "e", none of which may ask for a resync.
    fn msgs(relay: &Relay, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            assert_eq!(msg(relay, "e", seq), None, "seq {seq}");
        }
    }

    /// Delivers presence event `version` (user `u<version>` joins) and hands it out at once,
    /// as the tick does (one event per window).
    fn presence(relay: &Relay, version: u64, skip: Option<&Session>) {
        let text =
            format!(r#"{{"type":"presence","room":"r","event":"join","user":"u{version}"}}"#);
        let frame = Outbound::Text(Bytes::from(text));
        let resync = deliver(relay, InboundKind::Presence, "", version, skip, frame);
        assert_eq!(resync, None);
        relay.flush_presence(0);
    }

    fn typing(relay: &Relay, skip: Option<&Session>) {
        let frame = Outbound::Text(Bytes::from_static(br#"{"type":"typing","room":"r"}"#));
        assert_eq!(
            deliver(relay, InboundKind::Typing, "", 0, skip, frame),
            None
        );
    }

    /// Everything queued for `session`, one compact line per frame: `m<seq>` for a message,
    /// `p<version>` for a presence event, `t` for typing, and every field of `joined`/`left`.
    fn drain(session: &Session) -> Vec<String> {
        let mut frames = std::collections::VecDeque::new();
        match session.outbox().try_batch(&mut frames) {
            None | Some(Batch::Frames) => {}
            Some(Batch::Aborted(frame)) => panic!("aborted: {frame:?}"),
        }
        frames.into_iter().map(render).collect()
    }

    fn render(frame: Outbound) -> String {
        let Outbound::Text(bytes) = frame else {
            panic!("{frame:?}");
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["room"], "r", "{v}");
        let opt = |field: &str| v.get(field).map_or("-".to_owned(), Value::to_string);
        match v["type"].as_str().unwrap() {
            "message" => format!("m{}", v["seq"]),
            "presence" => match v["user"].as_str() {
                Some(user) => format!("p{}", user.trim_start_matches('u')),
                None => format!("p{}", v["joins"]),
            },
            "typing" => "t".to_owned(),
            "left" => format!("left id={}", opt("id")),
            "history" => {
                let seqs: Vec<String> = v["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["seq"].to_string())
                    .collect();
                format!(
                    "history {}:{} [{}]",
                    v["epoch"].as_str().unwrap(),
                    v["seq"],
                    seqs.join(",")
                )
            }
            "joined" => {
                let known = [
                    "type",
                    "room",
                    "id",
                    "members",
                    "member_count",
                    "seq",
                    "epoch",
                    "recovered",
                ];
                let fields = v.as_object().unwrap().keys();
                assert!(fields.into_iter().all(|k| known.contains(&&**k)), "{v}");
                let members: Vec<&str> = v["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap())
                    .collect();
                format!(
                    "joined id={} {}:{} recovered={} [{}]",
                    opt("id"),
                    v["epoch"].as_str().unwrap(),
                    v["seq"],
                    opt("recovered"),
                    members.join(",")
                )
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }

    #[test]
    fn joined_from_the_snapshot_then_the_stream_after_it() {
        let relay = Relay::new(BUDGET);
        let a = relay.connect("a".into());
        let ticket = join(&relay, &a, Some(1), None);
        assert!(ticket.first_in_room && ticket.first_of_user);
        assert_eq!(&**ticket.room(), "r");
        assert!(a.is_member("r"));
        relay.finish_join(&ticket, &a, &snapshot("e", 5, None));
        msgs(&relay, 6..=8);
        assert_eq!(
            drain(&a),
            ["joined id=1 e:5 recovered=- [a,b]", "m6", "m7", "m8"]
        );
        // A second finish of the same join is ignored, live or resyncing.
        relay.finish_join(&ticket, &a, &snapshot("e", 5, None));
        let request = msg(&relay, "e", 10).unwrap();
        relay.finish_join(&ticket, &a, &snapshot("e", 10, None));
        assert!(drain(&a).is_empty());
        relay.finish_resync(&request, &snapshot("e", 10, Some(&[9, 10])));
        assert_eq!(drain(&a), ["m9", "m10"]);
    }

    #[test]
    fn a_pending_join_gets_joined_then_the_replay_then_what_came_after_the_snapshot() {
        let (relay, live) = live(2, &["b"]);
        let a = relay.connect("a".into());
        let ticket = join(&relay, &a, Some(1), Some((2, "e")));
        assert!(!ticket.first_in_room);
        // 3..=5 are in the snapshot (and buffered too), 6 and 7 only in the stream.
        msgs(&relay, 3..=7);
        assert!(drain(&a).is_empty());
        // The replay's entry at or below `since` is not sent.
        relay.finish_join(&ticket, &a, &snapshot("e", 5, Some(&[2, 3, 4, 5])));
        assert_eq!(
            drain(&a),
            [
                "joined id=1 e:5 recovered=true [a,b]",
                "m3",
                "m4",
                "m5",
                "m6",
                "m7"
            ]
        );
        msgs(&relay, [7, 8]);
        assert_eq!(drain(&a), ["m8"]);
        assert_eq!(drain(&live[0]), ["m3", "m4", "m5", "m6", "m7", "m8"]);
    }

    #[test]
    fn recovered_only_when_the_replay_is_there_and_in_the_same_epoch() {
        /// The epoch of `since`, the snapshot's replay, what the joiner gets.
        type Case = (
            &'static str,
            Option<&'static [u64]>,
            &'static [&'static str],
        );
        let cases: [Case; 3] = [
            ("e", None, &["joined id=- e:5 recovered=false [a,b]", "m6"]),
            (
                "old",
                Some(&[4, 5]),
                &["joined id=- e:5 recovered=false [a,b]", "m6"],
            ),
            (
                "e",
                Some(&[4, 5]),
                &["joined id=- e:5 recovered=true [a,b]", "m4", "m5", "m6"],
            ),
        ];
        for (epoch, replay, expected) in cases {
            let relay = Relay::new(BUDGET);
            let a = relay.connect("a".into());
            let ticket = join(&relay, &a, None, Some((3, epoch)));
            msgs(&relay, [5, 6]);
            relay.finish_join(&ticket, &a, &snapshot("e", 5, replay));
            assert_eq!(drain(&a), expected, "since in {epoch}, replay {replay:?}");
            msgs(&relay, [7]); // follows the buffered 6: no resync
            assert_eq!(drain(&a), ["m7"]);
        }
    }

    #[test]
    fn a_gap_resyncs_from_history_then_continues_with_what_came_meanwhile() {
        let (relay, members) = live(5, &["a", "b"]);
        msgs(&relay, [6]);
        let request = msg(&relay, "e", 8).unwrap();
        assert_eq!(
            request,
            ResyncRequest {
                room: "r".into(),
                since: 6,
                epoch: "e".into(),
                ticket: request.ticket,
            }
        );
        let stale = ResyncRequest {
            ticket: request.ticket + 100,
            ..request.clone()
        };
        relay.finish_resync(&stale, &snapshot("e", 7, Some(&[7])));
        msgs(&relay, [9]); // buffered, no second resync (the stale snapshot was ignored)
        for member in &members {
            assert_eq!(drain(member), ["m6"]);
        }
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[7, 8])));
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[7, 8])));
        msgs(&relay, [9, 10]);
        for member in &members {
            assert_eq!(drain(member), ["m7", "m8", "m9", "m10"]);
        }
    }

    #[test]
    fn a_resync_history_cannot_fill_sends_an_unsolicited_joined() {
        let new_epoch: [(&str, Option<&[u64]>); 2] = [("e2", None), ("e2", Some(&[1]))];
        let expired_history = [("e", None)];
        for (epoch, replay) in new_epoch.into_iter().chain(expired_history) {
            let (relay, members) = live(5, &["a"]);
            let request = msg(&relay, epoch, 7).unwrap();
            assert_eq!((request.since, &*request.epoch), (5, "e"));
            assert_eq!(msg(&relay, epoch, 8), None);
            relay.finish_resync(&request, &snapshot(epoch, 7, replay));
            assert_eq!(msg(&relay, epoch, 9), None);
            assert_eq!(
                drain(&members[0]),
                [
                    &*format!("joined id=- {epoch}:7 recovered=false [a,b]"),
                    "m8",
                    "m9"
                ],
                "{epoch}, replay {replay:?}"
            );
        }
    }

    #[test]
    fn a_new_epoch_resyncs() {
        let (relay, members) = live(5, &["a"]);
        let request = msg(&relay, "e2", 1).unwrap();
        assert_eq!((request.since, &*request.epoch), (5, "e"));
        assert_eq!(msg(&relay, "e2", 2), None);
        relay.finish_resync(&request, &snapshot("e2", 1, None));
        assert_eq!(msg(&relay, "e2", 3), None);
        assert_eq!(
            drain(&members[0]),
            ["joined id=- e2:1 recovered=false [a,b]", "m2", "m3"]
        );
    }

    #[test]
    fn duplicates_are_not_delivered_again() {
        let (relay, members) = live(5, &["a"]);
        msgs(&relay, [5, 3, 6, 6, 4, 7]);
        assert_eq!(drain(&members[0]), ["m6", "m7"]);
    }

    #[test]
    fn skip_presence_and_typing_reach_the_right_members() {
        let relay = Relay::new(BUDGET);
        let [a, b, quiet] = ["a", "b", "c"].map(|user| relay.connect(user.into()));
        for (session, presence) in [(&a, true), (&b, true), (&quiet, false)] {
            let ticket = relay
                .begin_join(session, "r", None, None, presence)
                .unwrap();
            relay.finish_join(&ticket, session, &snapshot("e", 0, None));
        }
        assert_eq!(drain(&quiet), ["joined id=- e:0 recovered=- []"]);
        drain(&a);
        drain(&b);
        let pending = relay.connect("d".into());
        let join_d = join(&relay, &pending, None, None);

        // a publishes 1 without echo.
        let skip_a = deliver(&relay, InboundKind::Message, "e", 1, Some(&a), frame(1));
        assert_eq!(skip_a, None);
        presence(&relay, 1, Some(&b));
        typing(&relay, Some(&a));
        relay.finish_join(&join_d, &pending, &snapshot("e", 0, None));
        assert_eq!(drain(&a), ["p1"]);
        assert_eq!(drain(&b), ["m1", "t"]);
        assert_eq!(drain(&quiet), ["m1", "t"]);
        assert_eq!(
            drain(&pending),
            ["joined id=- e:0 recovered=- [a,b]", "m1", "p1"]
        );

        // a's position moved past its own message: a resync does not send it back, nor its
        // message buffered meanwhile.
        let request = msg(&relay, "e", 3).unwrap();
        let skip_a = deliver(&relay, InboundKind::Message, "e", 4, Some(&a), frame(4));
        assert_eq!(skip_a, None);
        relay.finish_resync(&request, &snapshot("e", 3, Some(&[1, 2, 3])));
        assert_eq!(drain(&a), ["m2", "m3"]);
        for member in [&b, &quiet, &pending] {
            assert_eq!(drain(member), ["m2", "m3", "m4"]);
        }
    }

    #[test]
    fn presence_buffered_while_joining_follows_only_if_newer_than_the_snapshot() {
        let (relay, _) = live(5, &["b"]);
        let a = relay.connect("a".into());
        let quiet = relay.connect("q".into());
        let join_a = join(&relay, &a, None, None);
        let join_quiet = relay.begin_join(&quiet, "r", None, None, false).unwrap();
        presence(&relay, 1, None);
        presence(&relay, 2, None);
        msgs(&relay, [6]);
        presence(&relay, 3, None);
        presence(&relay, 4, Some(&a));
        presence(&relay, 5, None);
        typing(&relay, None);
        let snapshot = Snapshot {
            presence_version: 2,
            ..snapshot("e", 5, None)
        };
        relay.finish_join(&join_a, &a, &snapshot);
        relay.finish_join(&join_quiet, &quiet, &snapshot);
        assert_eq!(
            drain(&a),
            ["joined id=- e:5 recovered=- [a,b]", "m6", "p3", "p5"]
        );
        assert_eq!(drain(&quiet), ["joined id=- e:5 recovered=- []", "m6"]);
    }

    #[test]
    fn leaving_reports_what_changed_and_drops_the_empty_room() {
        let relay = Relay::new(BUDGET);
        let [a1, a2, b] = ["a", "a", "b"].map(|user| relay.connect(user.into()));
        let mut firsts = Vec::new();
        for session in [&a1, &a2, &b] {
            let ticket = join(&relay, session, None, None);
            firsts.push((ticket.first_in_room, ticket.first_of_user));
            relay.finish_join(&ticket, session, &snapshot("e", 0, None));
            drain(session);
        }
        assert_eq!(firsts, [(true, true), (false, false), (false, true)]);
        assert_eq!(relay.stats().rooms, 1);
        let departure = |user: &str, room_empty, last_of_user| Departure {
            room: "r".into(),
            user: user.into(),
            room_empty,
            last_of_user,
        };

        assert_eq!(
            relay.leave(&a1, "r", Some(7)).unwrap(),
            departure("a", false, false)
        );
        assert_eq!(drain(&a1), ["left id=7"]);
        assert!(!a1.is_member("r"));
        assert!(matches!(
            relay.leave(&a1, "r", None),
            Err(HubError::NotJoined(_))
        ));
        assert_eq!(relay.disconnect(&a2), [departure("a", false, true)]);
        assert!(drain(&a2).is_empty());
        assert!(relay.has_members("r"));
        assert_eq!(relay.rooms(), [("r".into(), vec!["b".into()])]);
        assert_eq!(
            relay.leave(&b, "r", None).unwrap(),
            departure("b", true, true)
        );
        assert_eq!(drain(&b), ["left id=-"]);
        assert_eq!(relay.stats().rooms, 0);
        assert_eq!(relay.stats().sessions, 2);
        assert!(!relay.has_members("r"));
        assert_eq!(msg(&relay, "e", 1), None);
        assert!(drain(&b).is_empty());

        // An aborted join leaves nothing behind, and its snapshot comes too late.
        let ticket = join(&relay, &a1, Some(8), None);
        assert!(ticket.first_in_room && ticket.first_of_user);
        assert_eq!(relay.stats().rooms, 1);
        assert_eq!(
            relay.abort_join(&ticket, &a1),
            Some(departure("a", true, true))
        );
        assert_eq!(relay.abort_join(&ticket, &a1), None);
        assert!(!a1.is_member("r"));
        assert_eq!(relay.stats().rooms, 0);
        relay.finish_join(&ticket, &a1, &snapshot("e", 0, None));
        assert!(drain(&a1).is_empty());
        // A later join starts afresh.
        let again = join(&relay, &a1, None, None);
        assert!(again.first_in_room && again.first_of_user);
        assert_eq!(relay.abort_join(&ticket, &a1), None);
        assert!(a1.is_member("r"));
    }

    #[test]
    fn a_repeated_join_is_answered_in_place_without_replay_or_gap() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        msgs(&relay, [6]);
        let ticket = join(&relay, a, Some(2), Some((6, "e")));
        assert!(!ticket.first_in_room && !ticket.first_of_user);
        msgs(&relay, [7, 8]); // the stream goes on meanwhile
        // The snapshot is older than the stream: `joined` comes at the member's place (8).
        relay.finish_join(&ticket, a, &snapshot("e", 7, Some(&[7])));
        msgs(&relay, [8, 9]);
        assert_eq!(
            drain(a),
            [
                "m6",
                "m7",
                "m8",
                "joined id=2 e:8 recovered=true [a,b]",
                "m9"
            ]
        );
        // The snapshot is ahead of the stream: 10 and 11 still follow `joined`.
        let ticket = join(&relay, a, Some(3), Some((9, "old")));
        relay.finish_join(&ticket, a, &snapshot("e", 11, Some(&[10, 11])));
        msgs(&relay, [10, 11]);
        assert_eq!(
            drain(a),
            ["joined id=3 e:9 recovered=false [a,b]", "m10", "m11"]
        );
        // A repeated join that fails leaves the membership as it was.
        let ticket = join(&relay, a, Some(4), None);
        assert_eq!(relay.abort_join(&ticket, a), None);
        relay.finish_join(&ticket, a, &snapshot("e", 11, None));
        msgs(&relay, [12]);
        assert_eq!(drain(a), ["m12"]);
        assert!(a.is_member("r"));
        // Still counted once.
        let departures = relay.disconnect(a);
        assert!(departures[0].room_empty && departures[0].last_of_user);
    }

    #[test]
    fn a_repeated_join_overlapping_a_resync_still_gets_the_gap() {
        // (join again before the gap shows, answer the join before the resync, expected)
        let cases: [(bool, bool, &[&str]); 3] = [
            (
                true,
                true,
                &["joined id=2 e:7 recovered=- [a,b]", "m6", "m7", "m8"],
            ),
            (
                false,
                true,
                &["joined id=2 e:7 recovered=- [a,b]", "m6", "m7", "m8"],
            ),
            (
                false,
                false,
                &["m6", "m7", "joined id=2 e:7 recovered=- [a,b]", "m8"],
            ),
        ];
        for (join_first, answer_first, expected) in cases {
            let (relay, members) = live(5, &["a"]);
            let a = &members[0];
            let early = join_first.then(|| join(&relay, a, Some(2), None));
            let request = msg(&relay, "e", 7).unwrap();
            let ticket = early.unwrap_or_else(|| join(&relay, a, Some(2), None));
            let answer = || relay.finish_join(&ticket, a, &snapshot("e", 7, None));
            let resync = || relay.finish_resync(&request, &snapshot("e", 7, Some(&[6, 7])));
            if answer_first {
                answer();
                resync();
            } else {
                resync();
                answer();
            }
            msgs(&relay, [7, 8]);
            assert_eq!(drain(a), expected, "{join_first} {answer_first}");
        }
    }

    #[test]
    fn a_join_during_a_resync_is_left_out_of_it() {
        let (relay, members) = live(5, &["a"]);
        let request = msg(&relay, "e", 7).unwrap();
        let b = relay.connect("b".into());
        let ticket = join(&relay, &b, None, None);
        msgs(&relay, [8]);
        relay.finish_join(&ticket, &b, &snapshot("e", 8, None));
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[6, 7, 8])));
        msgs(&relay, [8, 9]);
        assert_eq!(drain(&members[0]), ["m6", "m7", "m8", "m9"]);
        assert_eq!(drain(&b), ["joined id=- e:8 recovered=- [a,b]", "m9"]);
    }

    #[test]
    fn resync_all_resumes_every_synced_room_from_its_last_seq() {
        let (relay, members) = live(5, &["a"]);
        msgs(&relay, [6]);
        let waiting = relay.connect("w".into());
        let _first = relay.begin_join(&waiting, "s", None, None, true).unwrap();
        let requests = relay.resync_all();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!((&*requests[0].room, requests[0].since), ("r", 6));
        msgs(&relay, [8]); // buffered
        relay.finish_resync(&requests[0], &snapshot("e", 7, Some(&[7])));
        msgs(&relay, [8, 9]);
        assert_eq!(drain(&members[0]), ["m6", "m7", "m8", "m9"]);
    }

    #[test]
    fn a_pending_member_buffering_more_than_half_its_budget_is_cut_off() {
        let cost = frame(1).cost();
        // (budget, frames that fit in half of it)
        for (budget, fit) in [(10 * cost, 5), (10 * cost - 1, 4)] {
            let relay = Relay::new(budget);
            let (live, slow) = (relay.connect("a".into()), relay.connect("b".into()));
            let ticket = join(&relay, &live, None, None);
            relay.finish_join(&ticket, &live, &snapshot("e", 0, None));
            drain(&live);
            let _pending = join(&relay, &slow, None, None);
            msgs(&relay, 1..=fit);
            assert!(!slow.outbox().is_aborted(), "budget {budget}");
            msgs(&relay, [fit + 1]);
            assert!(slow.outbox().is_aborted(), "budget {budget}");
            match slow
                .outbox()
                .try_batch(&mut std::collections::VecDeque::new())
            {
                Some(Batch::Aborted(Some(frame))) => assert_eq!(frame.code, 1013),
                other => panic!("{other:?}"),
            }
            assert_eq!(drain(&live).len(), usize::try_from(fit + 1).unwrap());
        }
    }

    #[test]
    fn a_history_reply_sits_at_the_members_place_in_the_stream() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        let entries: Vec<(u64, Outbound)> = (3..=7).map(|n| (n, frame(n))).collect();
        // Redis is at 7, this member has seen 5: 6 and 7 come live, after the reply.
        relay.place_history(a, "r", Some(1), 7, "e", &entries);
        msgs(&relay, [6, 7]);
        assert_eq!(drain(a), ["history e:5 [3,4,5]", "m6", "m7"]);
        // Someone not in the room gets what Redis had.
        let reader = relay.connect("reader".into());
        relay.place_history(&reader, "r", None, 7, "e", &entries);
        assert_eq!(drain(&reader), ["history e:7 [3,4,5,6,7]"]);
    }

    #[test]
    fn a_resync_that_missed_presence_events_refreshes_the_members_list() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        // Live presence events keep the room's presence version.
        presence(&relay, 1, None);
        assert_eq!(drain(a), ["p1"]);
        // A gap: the resync's snapshot is at presence version 3 (events 2 and 3 were lost
        // with the subscription).
        let request = msg(&relay, "e", 7).expect("a gap");
        let mut fresh = snapshot("e", 7, Some(&[6, 7]));
        fresh.presence_version = 3;
        relay.finish_resync(&request, &fresh);
        assert_eq!(
            drain(a),
            ["m6", "m7", "joined id=- e:7 recovered=true [a,b]"]
        );
        // Nothing missed: no refresh.
        let request = msg(&relay, "e", 9).expect("a gap");
        let mut same = snapshot("e", 9, Some(&[8, 9]));
        same.presence_version = 3;
        relay.finish_resync(&request, &same);
        assert_eq!(drain(a), ["m8", "m9"]);
    }

    #[test]
    fn a_join_that_outlived_a_stream_interruption_catches_up_from_history() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        let b = relay.connect("b".into());
        // b's join begins; its snapshot (seq 6) is read before the stream drops.
        let ticket = join(&relay, &b, Some(1), None);
        msgs(&relay, [6]);
        assert_eq!(drain(a), ["m6"]);
        // The stream drops (7 and 8 are lost) and comes back: the room resyncs.
        let requests = relay.resync_all();
        assert_eq!(requests.len(), 1);
        // b's old snapshot arrives now: b must not go live at 6 and miss 7 and 8.
        let request = relay
            .finish_join(&ticket, &b, &snapshot("e", 6, None))
            .expect("a stale join asks for a resync");
        assert_eq!(request.since, 6);
        assert_eq!(drain(&b), ["joined id=1 e:6 recovered=- [a,b]"]);
        // The room-wide resync from before is superseded by this one (it covers a too).
        relay.finish_resync(&requests[0], &snapshot("e", 8, Some(&[6, 7, 8])));
        assert!(drain(a).is_empty());
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[7, 8])));
        assert_eq!(drain(&b), ["m7", "m8"]);
        assert_eq!(drain(a), ["m7", "m8"]);
        msgs(&relay, [9]);
        assert_eq!(drain(&b), ["m9"]);
        assert_eq!(drain(a), ["m9"]);
    }
}
