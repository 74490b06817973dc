//! One event as POSTed: its id, its time, and its JSON body (encoded once, on first use, and
//! shared by every endpoint and attempt).

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_hub::RoomEvent;
use switchboard_hub::events::EventPayload;

/// An event with its identity.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// `evt_` and 32 hex digits (128 random bits): the same for every attempt, so receivers
    /// can deduplicate.
    pub(crate) id: Arc<str>,
    /// When this node saw the event, ms since the Unix epoch.
    pub(crate) time: u64,
    pub(crate) event: RoomEvent,
    body: OnceLock<Bytes>,
}

/// The JSON body.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    time: u64,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    /// Presence and room events: the room's presence version.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    /// Messages: seq, ts, and the payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

impl Envelope {
    pub(crate) fn new(event: RoomEvent) -> Self {
        Self {
            id: format!("evt_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)).into(),
            time: now_millis(),
            event,
            body: OnceLock::new(),
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Bytes {
        self.body
            .get_or_init(|| {
                let event = &self.event;
                let message = event.message.as_ref();
                let body = Body {
                    id: &self.id,
                    kind: event.kind.name(),
                    time: self.time,
                    room: &event.room,
                    user: event.user.as_deref(),
                    version: message.is_none().then_some(event.version),
                    seq: message.map(|_| event.version),
                    ts: message.map(|m| m.ts),
                    data: message.and_then(|m| match &m.payload {
                        EventPayload::Json(data) => Some(&**data),
                        EventPayload::Binary(_) => None,
                    }),
                    data_base64: message.and_then(|m| match &m.payload {
                        EventPayload::Binary(bytes) => {
                            Some(base64::engine::general_purpose::STANDARD.encode(bytes))
                        }
                        EventPayload::Json(_) => None,
                    }),
                };
                // A struct of strings, numbers and already-valid JSON: encoding cannot fail.
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
            })
            .clone()
    }
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use switchboard_hub::EventKind;
    use switchboard_hub::events::EventMessage;

    use super::*;

    #[test]
    fn bodies_carry_id_type_time_room_and_the_event_fields() {
        let user: Arc<str> = Arc::from("alice");
        let joined = Envelope::new(RoomEvent::presence(
            EventKind::MemberJoined,
            "lobby",
            Some(&user),
            7,
        ));
        let value: Value = serde_json::from_slice(&joined.body()).unwrap_or_default();
        assert_eq!(value["type"], "member.joined");
        assert_eq!(value["room"], "lobby");
        assert_eq!(value["user"], "alice");
        assert_eq!(value["version"], 7);
        assert_eq!(value["id"].as_str().map(str::len), Some(36));
        assert!(
            value["time"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000)
        );
        let message = Envelope::new(RoomEvent {
            kind: EventKind::MessagePublished,
            room: Arc::from("lobby"),
            user: Some(user),
            version: 3,
            message: Some(EventMessage {
                ts: 5,
                payload: EventPayload::Binary(Bytes::from_static(b"\x01\x02")),
            }),
        });
        let value: Value = serde_json::from_slice(&message.body()).unwrap_or_default();
        assert_eq!(value["seq"], 3);
        assert_eq!(value["ts"], 5);
        assert_eq!(value["data_base64"], "AQI=");
        assert_eq!(value.get("version"), None);
        assert_eq!(value.get("data"), None);
    }
}
