//! One room on this node, whichever engine sequences it: its local members (live or pending),
//! their per-user presence counts and rights, the coalesced presence they are handed, and the
//! fan-out of frames that are already encoded and sequenced. Everything sits behind the room's
//! one lock, beside the engine's own part of the room (`S`), which is what gives every member
//! the same order of messages.
//!
//! - [`Room<Store>`](store::Store): the in-memory engine. The engine's part is an embedded
//!   sequencer (seq, epoch, history, recent msg ids) under the same lock, so a publish is one
//!   lock and a join is atomic: the joiner's snapshot is taken under the room lock, so it goes
//!   live at once (no pending state, no buffer).
//! - [`Room<Remote>`](pending::Remote): a room a remote broker sequences (Redis). The general
//!   form of a join: subscribe first, the member is pending (frames buffered) until the
//!   broker's snapshot, then the snapshot and the buffer merge by seq (`pending`).
//!
//! Files: this one (the room, its members and their fan-out), `presence` (presence counting
//! and coalesced hand-outs, and the queue of rooms to flush), `pending` (pending members, the
//! merge by seq, resyncs), `store` (the embedded sequencer of the in-memory engine), `rooms`
//! (an engine's rooms and sessions on this node: registry, session ids, presence queue).

mod pending;
mod presence;
mod rooms;
mod store;

use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use switchboard_protocol::client::RequestId;

use crate::delivery::Sequenced;
use crate::members::Members;
use crate::outbox::Outbound;
use crate::presence::{PresenceBatch, PresenceConfig};
use crate::reply::{self, Roster};
use crate::session::{Session, SessionId};

pub use pending::{Inbound, InboundKind, ResyncRequest, Snapshot};
pub(crate) use pending::{Joining, Remote, Tickets};
use presence::PresenceQueue;
pub(crate) use rooms::LocalRooms;
pub(crate) use store::Store;
pub use store::{Position, Published};

/// A room: its name and its state behind its one lock.
#[derive(Debug)]
pub(crate) struct Room<S> {
    pub(crate) name: Arc<str>,
    pub(crate) state: Mutex<RoomState<S>>,
}

/// What the room's lock guards: the local side and the engine's part (`S`).
#[derive(Debug)]
pub(crate) struct RoomState<S> {
    pub(crate) local: Local,
    /// The engine's part of the room: the embedded sequencer ([`Store`]) or where a remote
    /// broker's stream stands ([`Remote`]).
    pub(crate) engine: S,
}

/// A room's engine part, as the operator page and listings see it.
pub(crate) trait Stream {
    /// The room's last message seq as this node has it (0 before the first).
    fn last_seq(&self) -> u64;
}

impl<S> Room<S> {
    pub(crate) fn new(name: Arc<str>, presence: PresenceConfig, engine: S) -> Self {
        Self {
            name,
            state: Mutex::new(RoomState {
                local: Local::new(presence),
                engine,
            }),
        }
    }
}

impl<S: Stream> Room<S> {
    /// Its name, this node's connections in it and its last seq, for the operator page
    /// (`crate::activity`).
    pub(crate) fn activity(&self) -> (&Arc<str>, usize, u64) {
        let state = self.state.lock();
        (
            &self.name,
            state.local.members.len(),
            state.engine.last_seq(),
        )
    }
}

/// The room's local side: its members on this node and what they have been told.
#[derive(Debug)]
pub(crate) struct Local {
    /// Members and connections per user: presence changes only on the first join and the
    /// last leave.
    members: Members<Member>,
    /// The room's presence version as this node's stream has applied it: the in-memory engine
    /// counts its changes here; a broker-fed room takes the broker's (snapshots and events).
    presence_version: u64,
    /// Presence changes not yet handed out to the live members.
    batch: PresenceBatch,
    /// The room's distinct users (on every node), as of presence version `count_version`.
    member_count: u64,
    count_version: u64,
    config: PresenceConfig,
    /// Set when the registry dropped this room; a joiner holding a stale reference must look
    /// the room up again.
    pub(crate) closed: bool,
}

#[derive(Debug)]
struct Member {
    session: Arc<Session>,
    /// Whether this member may see who else is here (members list, presence events).
    presence: bool,
    /// The presence version its view includes (its `joined`'s, or the last change it got).
    floor: u64,
    state: MemberState,
    /// A repeated join waiting for its snapshot (broker-fed rooms). The member keeps its place
    /// in the stream (and in a resync) meanwhile; the snapshot only answers it with `joined`.
    /// Boxed, like `Pending`: the fan-out walks members, and a small member is a cheap one.
    rejoin: Option<Box<pending::Rejoin>>,
}

#[derive(Debug)]
enum MemberState {
    /// Receives the stream; frames at or below `position` are not delivered again.
    Live { position: u64 },
    /// Waits for a snapshot; frames are buffered meanwhile (broker-fed rooms only: an
    /// in-memory joiner is live at once).
    Pending(Box<pending::Pending>),
}

impl Member {
    fn is_live(&self) -> bool {
        matches!(self.state, MemberState::Live { .. })
    }
}

impl Local {
    fn new(config: PresenceConfig) -> Self {
        Self {
            members: Members::default(),
            presence_version: 0,
            batch: PresenceBatch::default(),
            member_count: 0,
            count_version: 0,
            config,
            closed: false,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn is_member(&self, session: SessionId) -> bool {
        self.members.contains(&session)
    }

    /// The room's distinct users, as this node knows them.
    pub(crate) fn member_count(&self) -> u64 {
        self.member_count
    }

    /// The users here, when there are members.
    pub(crate) fn users_if_any(&self) -> Option<Vec<Arc<str>>> {
        let users = self.members.users();
        (!users.is_empty()).then(|| users.keys().cloned().collect())
    }

    /// Removes `session`; returns whether it was its user's last connection here. `None` if
    /// it was not a member.
    fn remove(&mut self, session: &Session) -> Option<bool> {
        self.members
            .remove(session)
            .map(|(_, last_of_user)| last_of_user)
    }

    /// Fans a sequenced frame out: each live member gets it once (not at or below its
    /// position; not the `skip`ped publisher), each pending member buffers it. Shares the one
    /// encoding: no allocation per live member.
    fn deliver(&mut self, inbound: &Inbound<'_>) {
        for (id, member) in self.members.iter_mut() {
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
                MemberState::Pending(pending) => {
                    pending::buffer(&member.session, pending, inbound);
                }
            }
        }
    }

    /// Queues an unsequenced frame (`typing`) for every live member but `skip`. A member whose
    /// outbox overflows is aborted by its outbox (slow consumer); the others are not held back.
    fn fan_out(&self, skip: Option<SessionId>, frame: &Outbound) {
        for (id, member) in self.members.iter() {
            if Some(*id) != skip && member.is_live() {
                let _ = member.session.outbox().push(frame.clone());
            }
        }
    }

    /// The `members` reply: one page of this node's users in byte order, after `after`.
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
        let (list, next) = crate::presence::page(range.map(|(u, _)| &**u), limit);
        let reply = crate::presence::members_reply(room, id, &list, self.member_count, next);
        let _ = session.outbox().push(reply);
    }

    /// The `joined` frame for `member` listing this node's users (the in-memory engine: they
    /// are all the room's users).
    fn joined_here(
        &self,
        room: &str,
        presence: bool,
        id: Option<RequestId>,
        seq: u64,
        epoch: &str,
        recovered: Option<bool>,
    ) -> Outbound {
        let roster = presence.then(|| Roster {
            sorted: self.members.users().keys().map(|u| &**u),
            count: self.member_count,
        });
        reply::joined(
            room,
            id,
            roster,
            self.config.max_joined_members,
            seq,
            epoch,
            recovered,
        )
    }
}

/// A frame sequenced by the embedded store, as the fan-out takes it.
fn sequenced(epoch: &str, seq: u64, skip: Option<SessionId>, frame: Outbound) -> Inbound<'_> {
    Inbound {
        kind: InboundKind::Message,
        epoch,
        seq,
        skip,
        frame,
        sequenced: Some(Sequenced::now()),
    }
}
