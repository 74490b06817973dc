use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::outbox::{Outbox, OutboxPool};
use crate::relay::RelayRoom;
use crate::room::Room;

/// Identifies one connection for the lifetime of a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// One connection as the hub sees it: who it is, where its frames go, which rooms it is in.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    user: Arc<str>,
    outbox: Outbox,
    /// Rooms joined: publishing goes straight to the room without a registry lookup, and a
    /// disconnect leaves them all. Only this session's own connection task touches the map, so
    /// the lock is never contended.
    pub(crate) rooms: Mutex<HashMap<Arc<str>, Membership>>,
}

/// A room a session is in: sequenced by this process ([`crate::Hub`]) or by a remote broker
/// and relayed here ([`crate::Relay`]). A session uses one kind only.
#[derive(Debug, Clone)]
pub(crate) enum Membership {
    Local(Arc<Room>),
    Relay(Arc<RelayRoom>),
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        user: Arc<str>,
        outbox_budget: usize,
        pool: Option<Arc<OutboxPool>>,
    ) -> Self {
        Self {
            id,
            user,
            outbox: Outbox::pooled(outbox_budget, pool),
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The user name the connection authenticated (or was named) as.
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }

    /// The session's outbound queue.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the session is a member of `room`.
    pub fn is_member(&self, room: &str) -> bool {
        self.rooms.lock().contains_key(room)
    }

    /// How many rooms the session is in.
    pub fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }
}
