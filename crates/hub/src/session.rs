use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::outbox::{Outbox, OutboxPool};

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
    rooms: Mutex<HashMap<Arc<str>, RoomHandle>>,
}

/// A room a session is in, as the engine that registered the session keeps it ([`crate::Hub`]
/// its rooms, [`crate::Relay`] its relayed rooms): opaque here, so that the session knows
/// nothing of rooms and rooms may hold their members' sessions. The engine gets its own type
/// back with [`Session::room`] (a session uses one engine only).
pub(crate) type RoomHandle = Arc<dyn Any + Send + Sync>;

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

    /// Records that the session is in `room` (kept by its engine as `handle`).
    pub(crate) fn enter(&self, room: Arc<str>, handle: RoomHandle) {
        self.rooms.lock().insert(room, handle);
    }

    /// The engine's room `T` named `room`, if the session is in it: no registry lookup.
    pub(crate) fn room<T: Any + Send + Sync>(&self, room: &str) -> Option<Arc<T>> {
        let handle = self.rooms.lock().get(room)?.clone();
        handle.downcast().ok()
    }

    /// Forgets `room`; returns the engine's room `T` if the session was in it.
    pub(crate) fn exit<T: Any + Send + Sync>(&self, room: &str) -> Option<Arc<T>> {
        self.rooms.lock().remove(room)?.downcast().ok()
    }

    /// Forgets every room; returns the engine's rooms `T` the session was in.
    pub(crate) fn exit_all<T: Any + Send + Sync>(&self) -> Vec<Arc<T>> {
        self.rooms
            .lock()
            .drain()
            .filter_map(|(_, handle)| handle.downcast().ok())
            .collect()
    }
}
