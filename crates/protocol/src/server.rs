//! Server → client messages and their encoding. Each message is encoded once into [`Bytes`]
//! that the hub then shares with every recipient.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::client::RequestId;
use crate::codes::ErrorCode;

/// A presence change in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    /// The user's first connection joined the room.
    Join,
    /// The user's last connection left the room.
    Leave,
}

/// Every message the server sends as a JSON text frame.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// The reply to `join`.
    Joined {
        /// The room joined.
        room: &'a str,
        /// The request id of the `join`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The room's members, each user once.
        members: &'a [&'a str],
        /// The room's current sequence number (that of its last message; 0 if none yet).
        seq: u64,
    },
    /// The reply to `leave`.
    Left {
        /// The room left.
        room: &'a str,
        /// The request id of the `leave`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// A message published in a room.
    Message {
        /// The room.
        room: &'a str,
        /// The publishing user.
        from: &'a str,
        /// The payload, exactly as published.
        data: &'a RawValue,
        /// The message's sequence number in the room.
        seq: u64,
        /// The server's clock when it sequenced the message, in milliseconds since the Unix epoch.
        ts: u64,
    },
    /// Someone in the room is typing.
    Typing {
        /// The room.
        room: &'a str,
        /// The typing user.
        from: &'a str,
    },
    /// A user's presence in a room changed.
    Presence {
        /// The room.
        room: &'a str,
        /// Join or leave.
        event: PresenceEvent,
        /// The user.
        user: &'a str,
    },
    /// Acknowledges a `publish` that carried an id.
    Ack {
        /// The request id of the `publish`.
        id: RequestId,
        /// The sequence number given to the message.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// The request id, when the failed request had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: &'a str,
    },
    /// The reply to `ping`.
    Pong {
        /// The request id of the `ping`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

impl ServerMessage<'_> {
    /// Encodes the message as the payload of one JSON text frame.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(128);
        // Serializing these types into a Vec cannot fail: every field is a string, a number, a
        // unit enum or already-valid JSON, and maps have string keys.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => Bytes::from(out),
            Err(_) => Bytes::from_static(
                br#"{"type":"error","code":"internal","message":"encoding failed"}"#,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(msg: &ServerMessage<'_>) -> String {
        String::from_utf8(msg.encode().to_vec()).unwrap_or_default()
    }

    #[test]
    fn field_names_match_the_contract() -> Result<(), serde_json::Error> {
        let data = RawValue::from_string(r#"{"text":"hi"}"#.to_owned())?;
        assert_eq!(
            text(&ServerMessage::Message {
                room: "r",
                from: "alice",
                data: &data,
                seq: 7,
                ts: 1700
            }),
            r#"{"type":"message","room":"r","from":"alice","data":{"text":"hi"},"seq":7,"ts":1700}"#
        );
        assert_eq!(
            text(&ServerMessage::Joined {
                room: "r",
                id: Some(1),
                members: &["a", "b"],
                seq: 0
            }),
            r#"{"type":"joined","room":"r","id":1,"members":["a","b"],"seq":0}"#
        );
        assert_eq!(
            text(&ServerMessage::Left {
                room: "r",
                id: None
            }),
            r#"{"type":"left","room":"r"}"#
        );
        assert_eq!(
            text(&ServerMessage::Presence {
                room: "r",
                event: PresenceEvent::Leave,
                user: "bob"
            }),
            r#"{"type":"presence","room":"r","event":"leave","user":"bob"}"#
        );
        assert_eq!(
            text(&ServerMessage::Ack {
                id: 4,
                seq: Some(9)
            }),
            r#"{"type":"ack","id":4,"seq":9}"#
        );
        assert_eq!(
            text(&ServerMessage::Error {
                id: None,
                code: ErrorCode::NotJoined,
                message: "join first"
            }),
            r#"{"type":"error","code":"not_joined","message":"join first"}"#
        );
        assert_eq!(
            text(&ServerMessage::Pong { id: Some(2) }),
            r#"{"type":"pong","id":2}"#
        );
        assert_eq!(
            text(&ServerMessage::Typing {
                room: "r",
                from: "a\"b"
            }),
            r#"{"type":"typing","room":"r","from":"a\"b"}"#
        );
        Ok(())
    }
}
