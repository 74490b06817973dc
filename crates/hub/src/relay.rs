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

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use switchboard_protocol::ServerMessage;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::codes::close;
use switchboard_protocol::names::validate_room;

use crate::error::HubError;
use crate::hub::HubStats;
use crate::outbox::{CloseFrame, Outbound};
use crate::room::Position;
use crate::session::{Membership, Session, SessionId};

const SHARDS: usize = 64;

type Shard = RwLock<HashMap<Arc<str>, Arc<RelayRoom>>>;

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
    /// The users present on any node.
    pub members: Vec<Arc<str>>,
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
    /// The room had no member on this node: the broker must subscribe to it first.
    pub first_in_room: bool,
    /// The user had no other connection in the room on this node: the broker adds the
    /// user's presence.
    pub first_of_user: bool,
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
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_session: AtomicU64,
    next_ticket: AtomicU64,
    sessions: AtomicUsize,
    outbox_bytes: usize,
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
    members: HashMap<SessionId, Member>,
    users: HashMap<Arc<str>, u32>,
    closed: bool,
}

#[derive(Debug)]
struct Member {
    session: Arc<Session>,
    presence: bool,
    state: MemberState,
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
    /// For a member that was already live: its position, from which it continues.
    resume: Option<u64>,
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
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_session: AtomicU64::new(1),
            next_ticket: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
            outbox_bytes,
        }
    }

    /// Registers a connection of `user`. Call [`Relay::disconnect`] when it ends.
    pub fn connect(&self, user: Arc<str>) -> Arc<Session> {
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Arc::new(Session::new(id, user, self.outbox_bytes))
    }

    /// Adds `session` to `room` as a pending member. The broker then fetches a [`Snapshot`]
    /// (after subscribing, if `first_in_room`) and calls [`Relay::finish_join`]. A session
    /// already in the room is answered from a fresh snapshot too, without a replay.
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
            let pending = Pending {
                ticket,
                why: Why::Join {
                    id,
                    since: since.map(|p| (p.seq, Arc::from(p.epoch))),
                },
                resume: None,
                buffer: Vec::new(),
                bytes: 0,
            };
            match state.members.entry(session.id()) {
                Entry::Vacant(slot) => {
                    slot.insert(Member {
                        session: session.clone(),
                        presence,
                        state: MemberState::Pending(pending),
                    });
                    let count = state.users.entry(session.user().clone()).or_insert(0);
                    *count += 1;
                    first_of_user = *count == 1;
                }
                Entry::Occupied(mut member) => {
                    // Already a member: it keeps its place in the stream (and what was
                    // buffered for it) and is answered from the snapshot, without a replay.
                    let previous = std::mem::replace(
                        &mut member.get_mut().state,
                        MemberState::Live { position: 0 },
                    );
                    let (resume, buffer, bytes) = match previous {
                        MemberState::Live { position } => (Some(position), Vec::new(), 0),
                        MemberState::Pending(p) => {
                            let resume = match p.why {
                                Why::Resync { since } => Some(since),
                                Why::Join { .. } => p.resume,
                            };
                            (resume, p.buffer, p.bytes)
                        }
                    };
                    member.get_mut().state = MemberState::Pending(Pending {
                        resume,
                        buffer,
                        bytes,
                        ..pending
                    });
                }
            }
            drop(state);
            session
                .rooms
                .lock()
                .insert(entry.name.clone(), Membership::Relay(entry.clone()));
            return Ok(JoinTicket {
                room: entry,
                ticket,
                first_in_room,
                first_of_user,
            });
        }
    }

    /// Answers a pending join with the broker's snapshot: `joined`, the replay, then what
    /// arrived meanwhile after the snapshot. Nothing happens if the session left meanwhile.
    pub fn finish_join(&self, join: &JoinTicket, session: &Session, snapshot: &Snapshot) {
        let mut state = join.room.state.lock();
        let state = &mut *state;
        let Some(member) = state.members.get_mut(&session.id()) else {
            return;
        };
        let MemberState::Pending(pending) = &member.state else {
            return;
        };
        if pending.ticket != join.ticket {
            return;
        }
        let MemberState::Pending(pending) =
            std::mem::replace(&mut member.state, MemberState::Live { position: 0 })
        else {
            return;
        };
        let (id, since) = match pending.why {
            Why::Join { id, since } => (id, since),
            Why::Resync { since } => (None, Some((since, snapshot.epoch.clone()))),
        };
        let replay = match (&since, &snapshot.replay) {
            (Some((_, epoch)), Some(replay))
                if *epoch == snapshot.epoch && pending.resume.is_none() =>
            {
                Some(replay)
            }
            _ => None,
        };
        let recovered = match pending.resume {
            // A repeated join: nothing was missed if the epoch is the one it asked about.
            Some(_) => since.as_ref().map(|(_, epoch)| *epoch == snapshot.epoch),
            None => since.as_ref().map(|_| replay.is_some()),
        };
        let members: Vec<&str> = if member.presence {
            snapshot.members.iter().map(|m| &**m).collect()
        } else {
            Vec::new()
        };
        let reply = ServerMessage::Joined {
            room: &join.room.name,
            id,
            members: &members,
            seq: snapshot.seq,
            epoch: &snapshot.epoch,
            recovered,
        };
        let outbox = member.session.outbox();
        let _ = outbox.push(Outbound::Text(reply.encode()));
        let floor = since.as_ref().map_or(0, |(seq, _)| *seq);
        for (seq, frame) in replay.into_iter().flatten() {
            if *seq > floor {
                let _ = outbox.push(frame.clone());
            }
        }
        let start = pending.resume.unwrap_or(snapshot.seq);
        let position = flush(member, pending.buffer, snapshot, start);
        member.state = MemberState::Live { position };
        if state.synced.is_none() && state.resync.is_none() {
            state.synced = Some((snapshot.epoch.clone(), position));
        }
    }

    /// Undoes a join the broker could not complete. Returns the departure to undo in the
    /// broker (unsubscribe when the room is now empty here).
    pub fn abort_join(&self, join: &JoinTicket, session: &Session) -> Option<Departure> {
        let matches = {
            let state = join.room.state.lock();
            state.members.get(&session.id()).is_some_and(|member| {
                matches!(&member.state, MemberState::Pending(p) if p.ticket == join.ticket)
            })
        };
        if !matches {
            return None;
        }
        session.rooms.lock().remove(&join.room.name);
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
        let entry = match session.rooms.lock().remove(room) {
            Some(Membership::Relay(entry)) => entry,
            _ => return Err(HubError::NotJoined(room.to_owned())),
        };
        self.remove(&entry, session, Some(id))
            .ok_or_else(|| HubError::NotJoined(room.to_owned()))
    }

    /// Leaves every room and unregisters the session; returns what the broker must undo.
    pub fn disconnect(&self, session: &Session) -> Vec<Departure> {
        let rooms: Vec<Arc<RelayRoom>> = session
            .rooms
            .lock()
            .drain()
            .filter_map(|(_, room)| match room {
                Membership::Relay(room) => Some(room),
                Membership::Local(_) => None,
            })
            .collect();
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        rooms
            .iter()
            .filter_map(|room| self.remove(room, session, None))
            .collect()
    }

    /// The room of a session's membership (for publishing: no registry lookup).
    pub fn member_room(&self, session: &Session, room: &str) -> Result<Arc<str>, HubError> {
        if let Some(Membership::Relay(entry)) = session.rooms.lock().get(room) {
            return Ok(entry.name.clone());
        }
        validate_room(room)?;
        Err(HubError::NotJoined(room.to_owned()))
    }

    /// Fans a frame of `room`'s stream out to this node's members. Returns a resync to perform
    /// when the frame shows that the room missed something.
    pub fn deliver(&self, room: &str, inbound: Inbound<'_>) -> Option<ResyncRequest> {
        let entry = self.shard(room).read().get(room).cloned()?;
        let mut state = entry.state.lock();
        let state = &mut *state;
        match inbound.kind {
            InboundKind::Typing => {
                for (id, member) in &state.members {
                    if Some(*id) != inbound.skip && matches!(member.state, MemberState::Live { .. })
                    {
                        let _ = member.session.outbox().push(inbound.frame.clone());
                    }
                }
                None
            }
            InboundKind::Presence => {
                for (id, member) in &mut state.members {
                    if Some(*id) == inbound.skip || !member.presence {
                        continue;
                    }
                    match &mut member.state {
                        MemberState::Live { .. } => {
                            let _ = member.session.outbox().push(inbound.frame.clone());
                        }
                        MemberState::Pending(pending) => buffer(&member.session, pending, &inbound),
                    }
                }
                None
            }
            InboundKind::Message => self.deliver_message(&entry.name, state, &inbound),
        }
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
                            resume: None,
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
        for (id, member) in &mut state.members {
            match &mut member.state {
                MemberState::Live { position } => {
                    if inbound.seq > *position {
                        *position = inbound.seq;
                        if Some(*id) != inbound.skip {
                            let _ = member.session.outbox().push(inbound.frame.clone());
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
        let Some(entry) = self.shard(&request.room).read().get(&request.room).cloned() else {
            return;
        };
        let mut state = entry.state.lock();
        let state = &mut *state;
        if state.resync != Some(request.ticket) {
            return;
        }
        state.resync = None;
        let mut last = snapshot.seq;
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
                            let _ = outbox.push(frame.clone());
                        }
                    }
                }
                _ => {
                    let members: Vec<&str> = if member.presence {
                        snapshot.members.iter().map(|m| &**m).collect()
                    } else {
                        Vec::new()
                    };
                    let notice = ServerMessage::Joined {
                        room: &entry.name,
                        id: None,
                        members: &members,
                        seq: snapshot.seq,
                        epoch: &snapshot.epoch,
                        recovered: Some(false),
                    };
                    let _ = outbox.push(Outbound::Text(notice.encode()));
                }
            }
            let position = flush(member, pending.buffer, snapshot, snapshot.seq);
            member.state = MemberState::Live { position };
            last = last.max(position);
        }
        state.synced = Some((snapshot.epoch.clone(), last));
    }

    /// Every room with members here, and their users: for presence heartbeats and for
    /// resubscribing after the broker's connection came back.
    pub fn rooms(&self) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let mut rooms = Vec::new();
        for shard in &*self.shards {
            for (name, room) in shard.read().iter() {
                let state = room.state.lock();
                if !state.members.is_empty() {
                    rooms.push((name.clone(), state.users.keys().cloned().collect()));
                }
            }
        }
        rooms
    }

    /// After the broker's stream was interrupted: every room with members resyncs from the
    /// last seq it delivered (rooms still waiting for their first snapshot are left to it).
    pub fn resync_all(&self) -> Vec<ResyncRequest> {
        let mut requests = Vec::new();
        for shard in &*self.shards {
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
                                resume: None,
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

    /// Whether `room` has members on this node.
    pub fn has_members(&self, room: &str) -> bool {
        self.shard(room)
            .read()
            .get(room)
            .is_some_and(|entry| !entry.state.lock().members.is_empty())
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        HubStats {
            rooms: self.shards.iter().map(|s| s.read().len()).sum(),
            sessions: self.sessions.load(Ordering::Relaxed),
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
            state.members.remove(&session.id())?;
            let mut last_of_user = false;
            if let Entry::Occupied(mut count) = state.users.entry(session.user().clone()) {
                *count.get_mut() = count.get().saturating_sub(1);
                if *count.get() == 0 {
                    count.remove();
                    last_of_user = true;
                }
            }
            (state.members.is_empty(), last_of_user)
        };
        if let Some(id) = reply {
            let left = ServerMessage::Left {
                room: &entry.name,
                id,
            };
            let _ = session.outbox().push(Outbound::Text(left.encode()));
        }
        if room_empty {
            let mut shard = self.shard(&entry.name).write();
            if shard
                .get(&entry.name)
                .is_some_and(|current| Arc::ptr_eq(current, entry))
            {
                let mut state = entry.state.lock();
                if state.members.is_empty() {
                    state.closed = true;
                    shard.remove(&entry.name);
                }
            }
        }
        Some(Departure {
            room: entry.name.clone(),
            user: session.user().clone(),
            room_empty,
            last_of_user,
        })
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo the slice's length, which is SHARDS > 0"
    )]
    fn shard(&self, room: &str) -> &Shard {
        let hash = usize::try_from(self.hasher.hash_one(room) % SHARDS as u64).unwrap_or(0);
        &self.shards[hash % self.shards.len()]
    }

    fn get_or_create(&self, room: &str) -> Arc<RelayRoom> {
        let shard = self.shard(room);
        if let Some(entry) = shard.read().get(room) {
            return entry.clone();
        }
        shard
            .write()
            .entry(Arc::from(room))
            .or_insert_with_key(|name| {
                Arc::new(RelayRoom {
                    name: name.clone(),
                    state: Mutex::new(RelayState::default()),
                })
            })
            .clone()
    }
}

/// Buffers a frame for a pending member, within half its outbox budget; a member whose
/// snapshot takes so long that the buffer overflows is cut off as a slow consumer (it
/// reconnects and recovers from history).
fn buffer(session: &Session, pending: &mut Pending, inbound: &Inbound<'_>) {
    let cost = inbound.frame.cost();
    if pending.bytes + cost > session.outbox().budget() / 2 {
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
/// presence events after the snapshot's; returns the member's position.
fn flush(member: &Member, buffered: Vec<Buffered>, snapshot: &Snapshot, start: u64) -> u64 {
    let mut position = start;
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
            InboundKind::Presence => frame.seq > snapshot.presence_version,
            InboundKind::Typing => false,
        };
        if fresh && frame.skip != Some(me) {
            let _ = outbox.push(frame.frame);
        }
    }
    position
}
