//! This node's rooms of one engine and the connections in them: the registry, session ids and
//! counts, the outbox settings every session gets, and the queue of rooms with presence
//! waiting. The in-memory engine ([`crate::Hub`]) and the broker-fed one ([`crate::Relay`])
//! each hold one, over their own engine part `S`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use switchboard_protocol::names::validate_room;

use super::{PresenceQueue, Room, RoomState};
use crate::error::HubError;
use crate::hub::HubStats;
use crate::outbox::OutboxPool;
use crate::presence::PresenceConfig;
use crate::registry::Registry;
use crate::session::{Session, SessionId};

#[derive(Debug)]
pub(crate) struct LocalRooms<S> {
    pub(crate) registry: Registry<Room<S>>,
    next_session: AtomicU64,
    sessions: AtomicUsize,
    outbox_bytes: usize,
    outbox_pool: Option<Arc<OutboxPool>>,
    pub(crate) presence: PresenceConfig,
    /// Rooms with presence changes waiting for the next tick.
    presence_queue: PresenceQueue<S>,
}

impl<S: Send + Sync + 'static> LocalRooms<S> {
    pub(crate) fn new(
        outbox_bytes: usize,
        outbox_pool: Option<Arc<OutboxPool>>,
        presence: PresenceConfig,
    ) -> Self {
        Self {
            registry: Registry::new(),
            next_session: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
            outbox_bytes,
            outbox_pool,
            presence,
            presence_queue: PresenceQueue::default(),
        }
    }

    /// Registers a connection of `user`; [`LocalRooms::disconnected`] when it ends.
    pub(crate) fn connect(&self, user: Arc<str>) -> Arc<Session> {
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Arc::new(Session::new(
            id,
            user,
            self.outbox_bytes,
            self.outbox_pool.clone(),
        ))
    }

    /// The byte budget of each session's outbox.
    pub(crate) fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// A connection ended (after it left its rooms).
    pub(crate) fn disconnected(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// The room named `name`, created with the engine part `make` gives if there is none.
    pub(crate) fn get_or_create(
        &self,
        name: &str,
        make: impl FnOnce(&Arc<str>) -> S,
    ) -> Arc<Room<S>> {
        self.registry.get_or_create(name, |name| {
            Room::new(name.clone(), self.presence, make(name))
        })
    }

    /// Runs `f` on the room named `name` (created with the engine part `make` gives if there
    /// is none) under its lock. A room the registry dropped between the lookup and the lock
    /// (its last member left) is looked up again.
    pub(crate) fn with_room<T>(
        &self,
        name: &str,
        make: impl Fn(&Arc<str>) -> S,
        f: impl FnOnce(&Arc<Room<S>>, &mut RoomState<S>) -> T,
    ) -> (Arc<Room<S>>, T) {
        loop {
            let entry = self.get_or_create(name, &make);
            let mut state = entry.state.lock();
            if state.local.closed {
                continue;
            }
            let out = f(&entry, &mut state);
            drop(state);
            return (entry, out);
        }
    }

    /// The room of a session's membership, from the session's own map: no registry lock on
    /// the publish path.
    pub(crate) fn member_room(
        &self,
        session: &Session,
        room: &str,
    ) -> Result<Arc<Room<S>>, HubError> {
        if let Some(entry) = session.room::<Room<S>>(room) {
            return Ok(entry);
        }
        validate_room(room)?;
        Err(HubError::NotJoined(room.to_owned()))
    }

    /// Puts `room` on the list of rooms with presence to hand out. Lock order: a room, then
    /// the queue (never the other way round).
    pub(crate) fn queue_presence(&self, room: Arc<Room<S>>) {
        self.presence_queue.push(room);
    }

    /// Hands out the presence changes collected since the last call.
    pub(crate) fn flush_presence(&self, now_ms: u64) {
        self.presence_queue.flush(now_ms);
    }

    /// Whether `session` is a member of `room` according to the room itself.
    pub(crate) fn is_member(&self, session: SessionId, room: &str) -> bool {
        self.registry
            .shard(room)
            .read()
            .get(room)
            .is_some_and(|entry| entry.state.lock().local.is_member(session))
    }

    /// Rooms, sessions and outbox pool; the engine adds what it keeps.
    pub(crate) fn stats(&self, history_bytes: usize, idempotency_ids: usize) -> HubStats {
        HubStats {
            rooms: self.registry.len(),
            sessions: self.sessions.load(Ordering::Relaxed),
            outbox_pool_bytes: self.outbox_pool.as_ref().map_or(0, |p| p.used()),
            history_bytes,
            idempotency_ids,
        }
    }
}
