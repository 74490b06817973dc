//! One room: members, presence counts and the sequence. All of it behind the room's own lock,
//! which is what gives every member the same order of messages.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::value::RawValue;
use switchboard_protocol::binary::ServerBinary;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::server::{PresenceEvent, ServerMessage};

use crate::outbox::Outbound;
use crate::session::{Session, SessionId};

#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) name: Arc<str>,
    pub(crate) state: Mutex<RoomState>,
}

#[derive(Debug, Default)]
pub(crate) struct RoomState {
    /// The sequence number of the room's last message (0 before the first).
    seq: u64,
    members: HashMap<SessionId, Arc<Session>>,
    /// Connections per user: presence changes only on the first join and the last leave.
    users: HashMap<Arc<str>, u32>,
    /// Set when the registry dropped this room (it was empty); a joiner holding a stale
    /// reference must look the room up again.
    pub(crate) closed: bool,
}

impl Room {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            state: Mutex::new(RoomState::default()),
        }
    }
}

impl RoomState {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn is_member(&self, session: SessionId) -> bool {
        self.members.contains_key(&session)
    }

    /// Adds `session` (idempotent) and queues its `joined` reply. The reply is queued under the
    /// room lock so that it always precedes the first message the joiner receives.
    pub(crate) fn join(&mut self, room: &str, session: &Arc<Session>, id: Option<RequestId>) {
        if let Entry::Vacant(slot) = self.members.entry(session.id()) {
            slot.insert(session.clone());
            let count = self.users.entry(session.user().clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.presence(room, PresenceEvent::Join, session);
            }
        }
        let members: Vec<&str> = self.users.keys().map(|u| &**u).collect();
        let reply = ServerMessage::Joined {
            room,
            id,
            members: &members,
            seq: self.seq,
        };
        let _ = session.outbox().push(Outbound::Text(reply.encode()));
    }

    /// Removes `session`; queues `left` when `id_reply` is given. Returns false if it was not
    /// a member.
    pub(crate) fn leave(
        &mut self,
        room: &str,
        session: &Session,
        reply: Option<Option<RequestId>>,
    ) -> bool {
        if self.members.remove(&session.id()).is_none() {
            return false;
        }
        if let Entry::Occupied(mut count) = self.users.entry(session.user().clone()) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
                self.presence(room, PresenceEvent::Leave, session);
            }
        }
        if let Some(id) = reply {
            let left = ServerMessage::Left { room, id };
            let _ = session.outbox().push(Outbound::Text(left.encode()));
        }
        true
    }

    /// Sequences a JSON message and shares its one encoding with every member.
    pub(crate) fn publish(
        &mut self,
        room: &str,
        from: &Session,
        data: &RawValue,
        echo: bool,
        ts: u64,
    ) -> u64 {
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
        self.fan_out(skip, &Outbound::Text(frame));
        self.seq
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
        self.fan_out(Some(from.id()), &Outbound::Binary(frame));
        self.seq
    }

    pub(crate) fn typing(&self, room: &str, from: &Session) {
        let frame = ServerMessage::Typing {
            room,
            from: from.user(),
        }
        .encode();
        self.fan_out(Some(from.id()), &Outbound::Text(frame));
    }

    fn presence(&self, room: &str, event: PresenceEvent, about: &Session) {
        let frame = ServerMessage::Presence {
            room,
            event,
            user: about.user(),
        }
        .encode();
        self.fan_out(Some(about.id()), &Outbound::Text(frame));
    }

    /// Queues `frame` for every member but `skip`. A member whose outbox overflows is aborted
    /// by its outbox (slow consumer); the others are not held back.
    fn fan_out(&self, skip: Option<SessionId>, frame: &Outbound) {
        for (id, member) in &self.members {
            if Some(*id) != skip {
                let _ = member.outbox().push(frame.clone());
            }
        }
    }
}
