//! The room registry and the operations a connection performs on it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use serde_json::value::RawValue;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::names::validate_room;

use crate::error::HubError;
use crate::room::Room;
use crate::session::{Session, SessionId};

/// Registry shards: enough that creating and dropping rooms on many cores rarely contends.
const SHARDS: usize = 64;

/// One shard of the room registry.
type Shard = RwLock<HashMap<Arc<str>, Arc<Room>>>;

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Byte budget of each session's outbox (see [`crate::Outbox`]).
    pub outbox_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            outbox_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Counters for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Sessions registered.
    pub sessions: usize,
}

/// The room registry. Cheap to share (`Arc<Hub>`); several hubs can live in one process.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_session: AtomicU64,
    sessions: AtomicUsize,
    config: HubConfig,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_session: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
            config,
        }
    }

    /// Registers a connection of `user`. Call [`Hub::disconnect`] when it ends.
    pub fn connect(&self, user: Arc<str>) -> Arc<Session> {
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Arc::new(Session::new(id, user, self.config.outbox_bytes))
    }

    /// Joins `room`, queuing `joined` (with `id`) on the session's outbox and a presence `join`
    /// for the others if this is the user's first connection in the room. Idempotent.
    pub fn join(
        &self,
        session: &Arc<Session>,
        room: &str,
        id: Option<RequestId>,
    ) -> Result<(), HubError> {
        validate_room(room)?;
        loop {
            let entry = self.get_or_create(room);
            let mut state = entry.state.lock();
            if state.closed {
                // Dropped by its last member between our lookup and our lock: look again.
                continue;
            }
            state.join(&entry.name, session, id);
            drop(state);
            session.rooms.lock().insert(entry.name.clone(), entry);
            return Ok(());
        }
    }

    /// Leaves `room`, queuing `left` (with `id`) and a presence `leave` for the others if this
    /// was the user's last connection in the room.
    pub fn leave(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
    ) -> Result<(), HubError> {
        validate_room(room)?;
        let entry = session
            .rooms
            .lock()
            .remove(room)
            .ok_or_else(|| HubError::NotJoined(room.to_owned()))?;
        self.leave_entry(session, &entry, Some(id));
        Ok(())
    }

    /// Leaves every room (presence `leave` events, no replies) and unregisters the session.
    /// Call it once when the connection ends, however it ends.
    pub fn disconnect(&self, session: &Session) {
        let rooms: Vec<Arc<Room>> = session.rooms.lock().drain().map(|(_, room)| room).collect();
        for room in rooms {
            self.leave_entry(session, &room, None);
        }
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes JSON `data` to `room`: assigns the next `seq` and queues one shared encoding
    /// for every member (the publisher too when `echo`). Returns the message's `seq`.
    pub fn publish(
        &self,
        session: &Session,
        room: &str,
        data: &RawValue,
        echo: bool,
        ts: u64,
    ) -> Result<u64, HubError> {
        let entry = self.member_room(session, room)?;
        let seq = entry
            .state
            .lock()
            .publish(&entry.name, session, data, echo, ts);
        Ok(seq)
    }

    /// Publishes a binary payload to `room` (never echoed). Returns the message's `seq`.
    pub fn publish_binary(
        &self,
        session: &Session,
        room: &str,
        payload: &[u8],
        ts: u64,
    ) -> Result<u64, HubError> {
        let entry = self.member_room(session, room)?;
        let seq = entry
            .state
            .lock()
            .publish_binary(&entry.name, session, payload, ts);
        Ok(seq)
    }

    /// Tells the room's other connections that the session's user is typing.
    pub fn typing(&self, session: &Session, room: &str) -> Result<(), HubError> {
        let entry = self.member_room(session, room)?;
        entry.state.lock().typing(&entry.name, session);
        Ok(())
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        HubStats {
            rooms: self.shards.iter().map(|s| s.read().len()).sum(),
            sessions: self.sessions.load(Ordering::Relaxed),
        }
    }

    /// The room, from the session's own map: no registry lock on the publish path.
    fn member_room(&self, session: &Session, room: &str) -> Result<Arc<Room>, HubError> {
        if let Some(entry) = session.rooms.lock().get(room) {
            return Ok(entry.clone());
        }
        validate_room(room)?;
        Err(HubError::NotJoined(room.to_owned()))
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo the slice's length, which is SHARDS > 0"
    )]
    fn shard(&self, room: &str) -> &Shard {
        let hash = usize::try_from(self.hasher.hash_one(room) % SHARDS as u64).unwrap_or(0);
        &self.shards[hash % self.shards.len()]
    }

    fn get_or_create(&self, room: &str) -> Arc<Room> {
        let shard = self.shard(room);
        if let Some(entry) = shard.read().get(room) {
            return entry.clone();
        }
        shard
            .write()
            .entry(Arc::from(room))
            .or_insert_with_key(|name| Arc::new(Room::new(name.clone())))
            .clone()
    }

    fn leave_entry(&self, session: &Session, entry: &Arc<Room>, reply: Option<Option<RequestId>>) {
        let now_empty = {
            let mut state = entry.state.lock();
            state.leave(&entry.name, session, reply);
            state.is_empty()
        };
        if now_empty {
            self.drop_if_empty(entry);
        }
    }

    /// Removes an empty room from the registry, so rooms do not outlive their last member.
    fn drop_if_empty(&self, entry: &Arc<Room>) {
        let mut shard = self.shard(&entry.name).write();
        if shard
            .get(&entry.name)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
        {
            let mut state = entry.state.lock();
            if state.is_empty() && !state.closed {
                state.closed = true;
                shard.remove(&entry.name);
            }
        }
    }

    /// Whether `session` is currently a member of `room` according to the room itself.
    pub fn is_member(&self, session: SessionId, room: &str) -> bool {
        self.shard(room)
            .read()
            .get(room)
            .is_some_and(|entry| entry.state.lock().is_member(session))
    }
}
