//! Room and presence events for the outside world (webhooks): the seam the engines report
//! transitions through.
//!
//! An engine calls [`EventSink::emit`] at the moment it sees a transition, once per cluster:
//! the in-memory [`crate::Hub`] under the room's lock; the Redis engine on the node whose
//! script saw a user's (or the room's) count go 0 → 1 or 1 → 0, or that sequenced the
//! message. `emit` never blocks (a bounded queue behind it drops and counts what does not
//! fit), so it is safe under a room lock.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The room's first user arrived (it had no user before).
    RoomOccupied,
    /// The room's last user left.
    RoomVacated,
    /// A user's first connection joined the room (presence is per user, not per connection).
    MemberJoined,
    /// A user's last connection left the room.
    MemberLeft,
    /// A message was sequenced in the room.
    MessagePublished,
}

impl EventKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 5] = [
        Self::RoomOccupied,
        Self::RoomVacated,
        Self::MemberJoined,
        Self::MemberLeft,
        Self::MessagePublished,
    ];

    /// The wire name (`room.occupied`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::RoomOccupied => "room.occupied",
            Self::RoomVacated => "room.vacated",
            Self::MemberJoined => "member.joined",
            Self::MemberLeft => "member.left",
            Self::MessagePublished => "message.published",
        }
    }

    /// The kind of a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A published message's payload.
#[derive(Debug, Clone)]
pub enum EventPayload {
    /// JSON, as published.
    Json(Box<RawValue>),
    /// Binary bytes.
    Binary(Bytes),
}

/// The message of a [`EventKind::MessagePublished`] event.
#[derive(Debug, Clone)]
pub struct EventMessage {
    /// The message's `ts` (ms since the Unix epoch).
    pub ts: u64,
    /// What was published.
    pub payload: EventPayload,
}

/// One event.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    /// What happened.
    pub kind: EventKind,
    /// The room.
    pub room: Arc<str>,
    /// The member (presence events) or the publisher (messages); `None` for room events.
    pub user: Option<Arc<str>>,
    /// Presence events: the room's presence version of the change (increasing per room;
    /// cluster-wide with Redis). Messages: the message's `seq`.
    pub version: u64,
    /// Messages only.
    pub message: Option<EventMessage>,
}

impl RoomEvent {
    /// A presence or room event.
    pub fn presence(kind: EventKind, room: &str, user: Option<&Arc<str>>, version: u64) -> Self {
        Self {
            kind,
            room: Arc::from(room),
            user: user.cloned(),
            version,
            message: None,
        }
    }
}

/// Where engines report events. Implementations must not block: `emit` is called under room
/// locks and on the Redis engine's tasks.
pub trait EventSink: Send + Sync + fmt::Debug {
    /// Whether `message.published` events of `room` are wanted (checked before the payload
    /// is copied, so rooms nobody listens to cost nothing).
    fn wants_messages(&self, room: &str) -> bool;

    /// Takes one event (or drops and counts it when its queue is full).
    fn emit(&self, event: RoomEvent);
}

/// The sink of an engine, if any.
pub type Events = Option<Arc<dyn EventSink>>;

/// Reports a user's first arrival in a room (and the room's occupation when it was empty).
pub fn joined(events: &Events, room: &str, user: &Arc<str>, version: u64, users_now: usize) {
    if let Some(sink) = events {
        if users_now == 1 {
            sink.emit(RoomEvent::presence(
                EventKind::RoomOccupied,
                room,
                None,
                version,
            ));
        }
        sink.emit(RoomEvent::presence(
            EventKind::MemberJoined,
            room,
            Some(user),
            version,
        ));
    }
}

/// Reports a user's departure from a room (and the room's vacancy when it is now empty).
pub fn left(events: &Events, room: &str, user: &Arc<str>, version: u64, users_now: usize) {
    if let Some(sink) = events {
        sink.emit(RoomEvent::presence(
            EventKind::MemberLeft,
            room,
            Some(user),
            version,
        ));
        if users_now == 0 {
            sink.emit(RoomEvent::presence(
                EventKind::RoomVacated,
                room,
                None,
                version,
            ));
        }
    }
}

/// Reports a sequenced message, if its room's messages are wanted. `payload` is called only
/// then.
pub fn published(
    events: &Events,
    room: &str,
    from: &Arc<str>,
    seq: u64,
    ts: u64,
    payload: impl FnOnce() -> EventPayload,
) {
    if let Some(sink) = events
        && sink.wants_messages(room)
    {
        sink.emit(RoomEvent {
            kind: EventKind::MessagePublished,
            room: Arc::from(room),
            user: Some(from.clone()),
            version: seq,
            message: Some(EventMessage {
                ts,
                payload: payload(),
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::{Hub, HubConfig};

    /// Kind, room, user, version.
    type Seen = (EventKind, String, Option<String>, u64);

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Seen>>);

    impl EventSink for Recorder {
        fn wants_messages(&self, room: &str) -> bool {
            room.starts_with("chat")
        }

        fn emit(&self, event: RoomEvent) {
            self.0.lock().push((
                event.kind,
                event.room.to_string(),
                event.user.map(|u| u.to_string()),
                event.version,
            ));
        }
    }

    #[test]
    fn the_hub_reports_transitions_per_user_and_messages_of_wanted_rooms() {
        let recorder = Arc::new(Recorder::default());
        let hub = Hub::new(HubConfig {
            events: Some(recorder.clone()),
            ..HubConfig::default()
        });
        let (a1, a2, b) = (
            hub.connect("alice".into()),
            hub.connect("alice".into()),
            hub.connect("bob".into()),
        );
        for session in [&a1, &a2, &b] {
            hub.join(session, "chat", None, None, true, 0).unwrap();
        }
        hub.join(&b, "other", None, None, true, 0).unwrap();
        let data = RawValue::from_string("1".to_owned()).unwrap();
        hub.publish(&b, "chat", &data, false, 5, None).unwrap();
        hub.publish(&b, "other", &data, false, 5, None).unwrap();
        hub.disconnect(&a1); // alice is still there through a2
        hub.leave(&b, "chat", None).unwrap();
        hub.leave(&b, "other", None).unwrap();
        hub.disconnect(&a2);
        let user = |u: &str| Some(u.to_owned());
        use EventKind::*;
        assert_eq!(
            *recorder.0.lock(),
            vec![
                (RoomOccupied, "chat".into(), None, 1),
                (MemberJoined, "chat".into(), user("alice"), 1),
                (MemberJoined, "chat".into(), user("bob"), 2),
                (RoomOccupied, "other".into(), None, 1),
                (MemberJoined, "other".into(), user("bob"), 1),
                (MessagePublished, "chat".into(), user("bob"), 1),
                (MemberLeft, "chat".into(), user("bob"), 3),
                (MemberLeft, "other".into(), user("bob"), 2),
                (RoomVacated, "other".into(), None, 2),
                (MemberLeft, "chat".into(), user("alice"), 4),
                (RoomVacated, "chat".into(), None, 4),
            ]
        );
    }
}
