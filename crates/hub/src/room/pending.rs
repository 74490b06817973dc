//! The general form of a room's local side, for rooms a remote broker sequences (Redis, in
//! `switchboard-broker-redis`): the broker owns the order (it assigns `seq`, keeps history and
//! presence, and delivers every frame of a room over one ordered stream); the room keeps each
//! member gap-free and duplicate-free on top of it.
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
use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_protocol::client::RequestId;
use switchboard_protocol::codes::close;
use switchboard_protocol::server::PresenceEvent;

use super::{Member, MemberState, RoomState, Stream};
use crate::delivery::Sequenced;
use crate::outbox::{CloseFrame, Outbound};
use crate::reply::{self, Roster};
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
/// handed back with [`crate::Relay::finish_resync`] and the same `ticket`.
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

/// Numbers joins and resyncs, engine-wide.
#[derive(Debug)]
pub(crate) struct Tickets(AtomicU64);

impl Default for Tickets {
    fn default() -> Self {
        Self(AtomicU64::new(1))
    }
}

impl Tickets {
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Where a broker's stream of the room stands on this node.
#[derive(Debug, Default)]
pub(crate) struct Remote {
    /// The epoch and last seq delivered in order; `None` until a snapshot is applied.
    synced: Option<(Arc<str>, u64)>,
    /// A resync asked of the broker and not yet applied.
    resync: Option<u64>,
}

impl Stream for Remote {
    fn last_seq(&self) -> u64 {
        self.synced.as_ref().map_or(0, |(_, seq)| *seq)
    }
}

/// A repeated join waiting for its snapshot.
#[derive(Debug)]
pub(super) struct Rejoin {
    ticket: u64,
    id: Option<RequestId>,
    /// The epoch of the join's `since`, for `recovered`.
    since_epoch: Option<Arc<str>>,
}

/// A member waiting for a snapshot.
#[derive(Debug)]
pub(super) struct Pending {
    ticket: u64,
    why: Why,
    buffer: Vec<Buffered>,
    bytes: usize,
}

impl Pending {
    fn new(ticket: u64, why: Why) -> Box<Self> {
        Box::new(Self {
            ticket,
            why,
            buffer: Vec::new(),
            bytes: 0,
        })
    }
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

/// What beginning a join changed on this node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Begun {
    /// The room had no member on this node: the broker must subscribe to it first.
    pub(crate) first_in_room: bool,
    /// The user had no other connection in the room on this node: the broker adds the user's
    /// presence.
    pub(crate) first_of_user: bool,
}

/// A join as the room's lock sees it: its ticket, and whether the broker's stream was
/// interrupted since it began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Joining {
    pub(crate) ticket: u64,
    pub(crate) stale: bool,
}

impl RoomState<Remote> {
    /// Adds `session` as a pending member (or, already a member, waits for the snapshot that
    /// answers its repeated join).
    pub(crate) fn begin_join(
        &mut self,
        session: &Arc<Session>,
        ticket: u64,
        id: Option<RequestId>,
        since: Option<super::Position<'_>>,
        presence: bool,
    ) -> Begun {
        let local = &mut self.local;
        let first_in_room = local.members.is_empty();
        let mut first_of_user = false;
        let why = Why::Join {
            id,
            since: since.map(|p| (p.seq, Arc::from(p.epoch))),
        };
        match local.members.get_mut(&session.id()) {
            None => {
                let member = Member {
                    session: session.clone(),
                    presence,
                    state: MemberState::Pending(Pending::new(ticket, why)),
                    rejoin: None,
                    floor: 0,
                };
                first_of_user = local.members.add(session, member);
            }
            Some(member) => match &mut member.state {
                // Its first join is still waiting: this one takes its place (and what was
                // buffered for it).
                MemberState::Pending(pending) if matches!(pending.why, Why::Join { .. }) => {
                    pending.ticket = ticket;
                    pending.why = why;
                }
                // Already a member: it keeps its place in the stream, or in a resync (a gap it
                // is owed), and is answered from the snapshot, without a replay.
                _ => {
                    member.rejoin = Some(Box::new(Rejoin {
                        ticket,
                        id,
                        since_epoch: since.map(|p| Arc::from(p.epoch)),
                    }));
                }
            },
        }
        Begun {
            first_in_room,
            first_of_user,
        }
    }

    /// Answers a pending join with the broker's snapshot: `joined`, the replay, then what
    /// arrived meanwhile after the snapshot. Nothing happens if the session left meanwhile.
    /// A stale join (the stream was interrupted while it was on its way) then waits for a
    /// resync from its position: the returned request.
    pub(crate) fn finish_join(
        &mut self,
        room: &Arc<str>,
        session: &Session,
        join: Joining,
        snapshot: &Snapshot,
        tickets: &Tickets,
    ) -> Option<ResyncRequest> {
        let Self {
            local,
            engine: remote,
        } = self;
        let limit = local.config.max_joined_members;
        let member = local.members.get_mut(&session.id())?;
        if let Some(rejoin) = member.rejoin.take_if(|r| r.ticket == join.ticket) {
            // A repeated join: nothing was missed if the epoch is the one it asked about. The
            // reply takes its place in the member's stream: `seq` is the last one it got.
            let recovered = rejoin.since_epoch.map(|epoch| epoch == snapshot.epoch);
            let seq = match member.state {
                MemberState::Live { position }
                    if remote
                        .synced
                        .as_ref()
                        .is_some_and(|(e, _)| *e == snapshot.epoch) =>
                {
                    position
                }
                _ => snapshot.seq,
            };
            let reply = joined(room, member, rejoin.id, snapshot, seq, recovered, limit);
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
        let pending = *pending;
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
        let reply = joined(room, member, id, snapshot, snapshot.seq, recovered, limit);
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
        if snapshot.presence_version >= local.count_version {
            local.member_count = snapshot.member_count;
            local.count_version = snapshot.presence_version;
        }
        if join.stale {
            // Catch up from here, like the room's other members did after the interruption.
            let mut since = match &remote.synced {
                Some((epoch, last)) if *epoch == snapshot.epoch => position.min(*last),
                _ => position,
            };
            let ticket = tickets.next();
            member.state =
                MemberState::Pending(Pending::new(ticket, Why::Resync { since: position }));
            // One resync for the room: members already waiting for one wait for this one.
            for other in local.members.values_mut() {
                if let MemberState::Pending(p) = &mut other.state
                    && let Why::Resync { since: theirs } = p.why
                {
                    p.ticket = ticket;
                    since = since.min(theirs);
                }
            }
            remote.resync = Some(ticket);
            return Some(ResyncRequest {
                room: room.clone(),
                since,
                epoch: snapshot.epoch.clone(),
                ticket,
            });
        }
        member.state = MemberState::Live { position };
        if remote.synced.is_none() && remote.resync.is_none() {
            remote.synced = Some((snapshot.epoch.clone(), position));
            local.presence_version = snapshot.presence_version;
        }
        None
    }

    /// Whether the join `ticket` of `session` is still waiting as its first join (to undo); a
    /// repeated join is simply forgotten (the membership stays as it was). `None`: not a
    /// member.
    pub(crate) fn abort_join(&mut self, session: &Session, ticket: u64) -> Option<bool> {
        let member = self.local.members.get_mut(&session.id())?;
        if member.rejoin.take_if(|r| r.ticket == ticket).is_some() {
            return Some(false);
        }
        Some(matches!(&member.state, MemberState::Pending(p) if p.ticket == ticket))
    }

    /// Removes `session`; returns whether it was its user's last connection here.
    pub(crate) fn remove(&mut self, session: &Session) -> Option<bool> {
        self.local.remove(session)
    }

    /// Fans a frame of the room's stream out to this node's members. Returns a resync to
    /// perform when the frame shows that the room missed something, and whether the room
    /// must be put on the list of rooms with presence to hand out.
    pub(crate) fn deliver(
        &mut self,
        room: &Arc<str>,
        inbound: &Inbound<'_>,
        tickets: &Tickets,
    ) -> (Option<ResyncRequest>, bool) {
        match inbound.kind {
            InboundKind::Typing => {
                self.local.fan_out(inbound.skip, &inbound.frame);
                (None, false)
            }
            InboundKind::Presence => {
                // Members still waiting for a snapshot keep the event with the stream; live
                // ones get it in the room's next coalesced hand-out.
                for member in self.local.members.values_mut() {
                    if let MemberState::Pending(pending) = &mut member.state
                        && member.presence
                    {
                        buffer(&member.session, pending, inbound);
                    }
                }
                if self.engine.resync.is_none() {
                    self.local.presence_version = inbound.seq;
                }
                let Some((event, user)) = presence_change(&inbound.frame) else {
                    return (None, false);
                };
                let queue =
                    self.local
                        .record_presence(room, inbound.seq, &user, event, inbound.skip);
                (None, queue)
            }
            InboundKind::Message => (self.deliver_message(room, inbound, tickets), false),
        }
    }

    fn deliver_message(
        &mut self,
        room: &Arc<str>,
        inbound: &Inbound<'_>,
        tickets: &Tickets,
    ) -> Option<ResyncRequest> {
        let Self {
            local,
            engine: remote,
        } = self;
        let mut resync = None;
        match &mut remote.synced {
            Some((epoch, last)) if **epoch == *inbound.epoch && inbound.seq <= *last => {
                return None; // delivered already
            }
            Some((epoch, last)) if **epoch == *inbound.epoch && inbound.seq == *last + 1 => {
                *last = inbound.seq;
            }
            Some((epoch, last)) => {
                // A gap, or a new epoch: every live member waits for the broker to fill it.
                let ticket = tickets.next();
                resync = Some(ResyncRequest {
                    room: room.clone(),
                    since: *last,
                    epoch: epoch.clone(),
                    ticket,
                });
                for member in local.members.values_mut() {
                    if let MemberState::Live { position } = member.state {
                        member.state = MemberState::Pending(Pending::new(
                            ticket,
                            Why::Resync { since: position },
                        ));
                    }
                }
                remote.synced = None;
                remote.resync = Some(ticket);
            }
            None => {}
        }
        local.deliver(inbound);
        resync
    }

    /// Applies the snapshot of a resync: each waiting member gets what it missed from history,
    /// or an unsolicited `joined` with `recovered: false` when history cannot fill the gap,
    /// then the frames that arrived meanwhile.
    pub(crate) fn finish_resync(
        &mut self,
        room: &str,
        request: &ResyncRequest,
        snapshot: &Snapshot,
    ) {
        let Self {
            local,
            engine: remote,
        } = self;
        if remote.resync != Some(request.ticket) {
            return;
        }
        remote.resync = None;
        let mut last = snapshot.seq;
        // Presence events are not kept in history: if some were missed, members get the
        // current list instead (an unsolicited `joined` that continues the stream).
        let presence_missed = snapshot.presence_version > local.presence_version;
        local.presence_version = snapshot.presence_version;
        if snapshot.presence_version < local.batch.last_version() {
            // The presence version went back: Redis lost the room. Members get the list from
            // the notice below; what waits belongs to the lost incarnation.
            let _ = local.batch.take(&local.config, room, 0, 0);
            local.batch.reset_version(snapshot.presence_version);
            for member in local.members.values_mut() {
                member.floor = snapshot.presence_version;
            }
        }
        if snapshot.presence_version >= local.count_version
            || snapshot.presence_version < local.batch.last_version()
        {
            local.member_count = snapshot.member_count;
            local.count_version = snapshot.presence_version;
        }
        let limit = local.config.max_joined_members;
        for member in local.members.values_mut() {
            let pending = match &member.state {
                MemberState::Pending(p) if p.ticket == request.ticket => {
                    match std::mem::replace(&mut member.state, MemberState::Live { position: 0 }) {
                        MemberState::Pending(p) => *p,
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
                            room,
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
                        room,
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
        remote.synced = Some((snapshot.epoch.clone(), last));
    }

    /// After the broker's stream was interrupted: every member waits for one resync of the
    /// room from the last seq it delivered (`None` for a room still waiting for its first
    /// snapshot: that snapshot serves it).
    pub(crate) fn resync(&mut self, room: &Arc<str>, tickets: &Tickets) -> Option<ResyncRequest> {
        let (epoch, last) = self.engine.synced.take()?;
        let ticket = tickets.next();
        for member in self.local.members.values_mut() {
            match &mut member.state {
                MemberState::Live { position } => {
                    member.state = MemberState::Pending(Pending::new(
                        ticket,
                        Why::Resync { since: *position },
                    ));
                }
                MemberState::Pending(p) if matches!(p.why, Why::Resync { .. }) => {
                    p.ticket = ticket;
                }
                MemberState::Pending(_) => {}
            }
        }
        self.engine.resync = Some(ticket);
        Some(ResyncRequest {
            room: room.clone(),
            since: last,
            epoch,
            ticket,
        })
    }

    /// Queues a `history` reply (`entries` oldest first, with their seqs, as the broker read
    /// them when the room was at `seq`; the newest that fit in the session's reply budget are
    /// kept) where it belongs in the session's stream of the room: for a live member, at its
    /// position — entries after it are left out (they arrive live, after the reply) and the
    /// reply's `seq` is the position — so that every message up to the reply's `seq` arrives
    /// before it and every later one after it, as on a single node. Without a room here, the
    /// caller passes `None`.
    pub(crate) fn place_history(
        this: Option<&Self>,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        seq: u64,
        epoch: &str,
        entries: &[(u64, Outbound)],
    ) {
        let position = this.and_then(|state| {
            let member = state.local.members.get(&session.id())?;
            match (&member.state, &state.engine.synced) {
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
pub(super) fn buffer(session: &Session, pending: &mut Pending, inbound: &Inbound<'_>) {
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
