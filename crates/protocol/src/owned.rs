//! Server → client messages as a client reads them: owned types that deserialize what
//! [`crate::server`] encodes (the server side borrows and only serializes, for its
//! encode-once fan-out). The Rust SDK, the load generator and the fuzz targets read frames
//! with [`decode`].
//!
//! As protocol v1 asks of clients, unknown fields are ignored, an unknown `type` decodes as
//! [`OwnedServerMessage::Unknown`] and an unknown error code as [`ErrorCode::Other`]. Fields a
//! server before member counts or recovery did not send are `Option`s.

use serde::Deserialize;
use serde_json::Value;

use crate::client::RequestId;
use crate::codes::ErrorCode;
use crate::server::PresenceEvent;

/// A JSON text frame from the server, owned.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OwnedServerMessage {
    /// The reply to `join`.
    Joined {
        /// The room joined.
        room: String,
        /// The request id of the `join`.
        id: Option<RequestId>,
        /// The room's members (at most the server's list limit of them).
        members: Vec<String>,
        /// Distinct users in the room (absent from servers before member counts).
        member_count: Option<u64>,
        /// `members` lists only part of the room.
        #[serde(default)]
        members_truncated: bool,
        /// The room's current sequence number.
        seq: u64,
        /// The room's epoch (absent from servers without recovery).
        epoch: Option<String>,
        /// For a join with `since`: whether every missed message follows.
        recovered: Option<bool>,
    },
    /// The reply to `leave`.
    Left {
        /// The room left.
        room: String,
        /// The request id of the `leave`.
        id: Option<RequestId>,
    },
    /// A JSON message published in a room.
    Message {
        /// The room.
        room: String,
        /// The publishing user.
        from: String,
        /// The payload (`null` is a valid one, and a missing one reads as `null`).
        #[serde(default)]
        data: Value,
        /// The message's sequence number in the room.
        seq: u64,
        /// When it was sequenced, in ms since the Unix epoch.
        ts: u64,
    },
    /// Someone in the room is typing.
    Typing {
        /// The room.
        room: String,
        /// The typing user.
        from: String,
    },
    /// Presence: one change (`event`, `user`), several (`joins`, `leaves`), or only the count
    /// (a room over the server's list limit); the server's `Presence` and `PresenceBatch`.
    Presence {
        /// The room.
        room: String,
        /// The single change's kind.
        event: Option<PresenceEvent>,
        /// The single change's user.
        user: Option<String>,
        /// Users now present who were not.
        #[serde(default)]
        joins: Vec<String>,
        /// Users now gone who were present.
        #[serde(default)]
        leaves: Vec<String>,
        /// Distinct users in the room after the changes.
        member_count: Option<u64>,
    },
    /// The reply to `members`: one page of users.
    Members {
        /// The room.
        room: String,
        /// The request id.
        id: Option<RequestId>,
        /// The users of this page.
        members: Vec<String>,
        /// Distinct users in the room.
        member_count: u64,
        /// More follow: ask again with this as `after`.
        next: Option<String>,
    },
    /// Acknowledges a `publish` that carried an id.
    Ack {
        /// The request id of the `publish`.
        id: RequestId,
        /// The sequence number given to the message.
        seq: Option<u64>,
        /// The `msg_id` had already been accepted.
        #[serde(default)]
        duplicate: bool,
    },
    /// A request failed; the connection stays open.
    Error {
        /// The request id, when the failed request had one.
        id: Option<RequestId>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// The reply to a successful `refresh`: the new token's expiry (s since the Unix epoch).
    Refreshed {
        /// The request id of the `refresh`.
        id: Option<RequestId>,
        /// The new token's expiry.
        exp: u64,
    },
    /// The reply to `ping`.
    Pong {
        /// The request id of the `ping`.
        id: Option<RequestId>,
    },
    /// The reply to `history` ([`crate::server::encode_history`]).
    History {
        /// The room.
        room: String,
        /// The request id.
        id: Option<RequestId>,
        /// The room's current sequence number.
        seq: u64,
        /// The room's epoch.
        epoch: String,
        /// The messages, oldest first.
        messages: Vec<HistoryEntry>,
    },
    /// A type this version does not know (from a later server): to be ignored.
    #[serde(other)]
    Unknown,
}

/// One message of a `history` reply: a `message` object as delivered live, or for a binary
/// message the same without `data` and with `binary` (the payload in standard base64).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryEntry {
    /// The room.
    pub room: String,
    /// The publishing user.
    pub from: String,
    /// The message's sequence number.
    pub seq: u64,
    /// When it was sequenced, in ms since the Unix epoch.
    pub ts: u64,
    /// The JSON payload (`null` for a binary message).
    #[serde(default)]
    pub data: Value,
    /// A binary message's payload, base64 (standard alphabet, padded).
    pub binary: Option<String>,
}

/// Decodes a text frame from the server; `Err` for anything that is not a server message.
pub fn decode(text: &str) -> Result<OwnedServerMessage, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;
    use serde_json::value::RawValue;

    use super::*;
    use crate::server::{self, HistoryItem, ServerMessage};

    /// What the server encodes, decoded as a client reads it.
    fn round_trip(frame: &Bytes) -> OwnedServerMessage {
        let text = std::str::from_utf8(frame).unwrap_or_default();
        decode(text).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn every_server_message_decodes_into_its_owned_form() -> Result<(), serde_json::Error> {
        let data = RawValue::from_string(r#"{"text":"hi","n":[1,2]}"#.to_owned())?;
        let null = RawValue::from_string("null".to_owned())?;
        let table: Vec<(Bytes, OwnedServerMessage)> = vec![
            (
                ServerMessage::Joined {
                    room: "r",
                    id: Some(1),
                    members: &["a", "b"],
                    member_count: 3,
                    members_truncated: true,
                    seq: 9,
                    epoch: "e",
                    recovered: Some(false),
                }
                .encode(),
                OwnedServerMessage::Joined {
                    room: "r".into(),
                    id: Some(1),
                    members: vec!["a".into(), "b".into()],
                    member_count: Some(3),
                    members_truncated: true,
                    seq: 9,
                    epoch: Some("e".into()),
                    recovered: Some(false),
                },
            ),
            (
                ServerMessage::Joined {
                    room: "r",
                    id: None,
                    members: &[],
                    member_count: 0,
                    members_truncated: false,
                    seq: 0,
                    epoch: "e",
                    recovered: None,
                }
                .encode(),
                OwnedServerMessage::Joined {
                    room: "r".into(),
                    id: None,
                    members: vec![],
                    member_count: Some(0),
                    members_truncated: false,
                    seq: 0,
                    epoch: Some("e".into()),
                    recovered: None,
                },
            ),
            (
                ServerMessage::Left {
                    room: "r",
                    id: Some(2),
                }
                .encode(),
                OwnedServerMessage::Left {
                    room: "r".into(),
                    id: Some(2),
                },
            ),
            (
                ServerMessage::Message {
                    room: "r",
                    from: "a\"b",
                    data: &data,
                    seq: 7,
                    ts: 1700,
                }
                .encode(),
                OwnedServerMessage::Message {
                    room: "r".into(),
                    from: "a\"b".into(),
                    data: json!({"text": "hi", "n": [1, 2]}),
                    seq: 7,
                    ts: 1700,
                },
            ),
            (
                ServerMessage::Message {
                    room: "r",
                    from: "a",
                    data: &null,
                    seq: 8,
                    ts: 1701,
                }
                .encode(),
                OwnedServerMessage::Message {
                    room: "r".into(),
                    from: "a".into(),
                    data: Value::Null,
                    seq: 8,
                    ts: 1701,
                },
            ),
            (
                ServerMessage::Typing {
                    room: "r",
                    from: "bob",
                }
                .encode(),
                OwnedServerMessage::Typing {
                    room: "r".into(),
                    from: "bob".into(),
                },
            ),
            (
                ServerMessage::Presence {
                    room: "r",
                    event: PresenceEvent::Leave,
                    user: "bob",
                }
                .encode(),
                OwnedServerMessage::Presence {
                    room: "r".into(),
                    event: Some(PresenceEvent::Leave),
                    user: Some("bob".into()),
                    joins: vec![],
                    leaves: vec![],
                    member_count: None,
                },
            ),
            (
                server::presence_single("r", PresenceEvent::Join, "al", 2),
                OwnedServerMessage::Presence {
                    room: "r".into(),
                    event: Some(PresenceEvent::Join),
                    user: Some("al".into()),
                    joins: vec![],
                    leaves: vec![],
                    member_count: Some(2),
                },
            ),
            (
                ServerMessage::PresenceBatch {
                    room: "r",
                    joins: &["a", "b"],
                    leaves: &["c"],
                    member_count: 4,
                }
                .encode(),
                OwnedServerMessage::Presence {
                    room: "r".into(),
                    event: None,
                    user: None,
                    joins: vec!["a".into(), "b".into()],
                    leaves: vec!["c".into()],
                    member_count: Some(4),
                },
            ),
            (
                ServerMessage::Members {
                    room: "r",
                    id: Some(3),
                    members: &["a"],
                    member_count: 9,
                    next: Some("a"),
                }
                .encode(),
                OwnedServerMessage::Members {
                    room: "r".into(),
                    id: Some(3),
                    members: vec!["a".into()],
                    member_count: 9,
                    next: Some("a".into()),
                },
            ),
            (
                ServerMessage::Ack {
                    id: 4,
                    seq: Some(9),
                    duplicate: true,
                }
                .encode(),
                OwnedServerMessage::Ack {
                    id: 4,
                    seq: Some(9),
                    duplicate: true,
                },
            ),
            (
                ServerMessage::Ack {
                    id: u64::MAX,
                    seq: None,
                    duplicate: false,
                }
                .encode(),
                OwnedServerMessage::Ack {
                    id: u64::MAX,
                    seq: None,
                    duplicate: false,
                },
            ),
            (
                ServerMessage::Refreshed {
                    id: Some(5),
                    exp: 1_700_000_000,
                }
                .encode(),
                OwnedServerMessage::Refreshed {
                    id: Some(5),
                    exp: 1_700_000_000,
                },
            ),
            (
                ServerMessage::Pong { id: None }.encode(),
                OwnedServerMessage::Pong { id: None },
            ),
        ];
        for (frame, expected) in table {
            assert_eq!(round_trip(&frame), expected, "{frame:?}");
        }
        for code in ErrorCode::ALL {
            let frame = ServerMessage::Error {
                id: Some(6),
                code: code.clone(),
                message: "why",
            }
            .encode();
            assert_eq!(
                round_trip(&frame),
                OwnedServerMessage::Error {
                    id: Some(6),
                    code,
                    message: "why".into(),
                }
            );
        }
        Ok(())
    }

    #[test]
    fn history_replies_decode_with_json_and_binary_entries() {
        let json = br#"{"type":"message","room":"r","from":"a","data":{"n":1},"seq":1,"ts":5}"#;
        let binary = crate::binary::ServerBinary {
            room: "r",
            seq: 2,
            ts: 6,
            from: "b",
            payload: b"\x00\xffab",
        }
        .encode();
        let reply = server::encode_history(
            "r",
            Some(3),
            2,
            "ep",
            [HistoryItem::Json(json), HistoryItem::Binary(&binary)],
        );
        assert_eq!(
            round_trip(&reply),
            OwnedServerMessage::History {
                room: "r".into(),
                id: Some(3),
                seq: 2,
                epoch: "ep".into(),
                messages: vec![
                    HistoryEntry {
                        room: "r".into(),
                        from: "a".into(),
                        seq: 1,
                        ts: 5,
                        data: json!({"n": 1}),
                        binary: None,
                    },
                    HistoryEntry {
                        room: "r".into(),
                        from: "b".into(),
                        seq: 2,
                        ts: 6,
                        data: Value::Null,
                        binary: Some("AP9hYg==".into()),
                    },
                ],
            }
        );
    }

    #[test]
    fn unknown_types_fields_and_codes_are_tolerated() -> Result<(), serde_json::Error> {
        assert_eq!(
            decode(r#"{"type":"weather","sunny":true}"#)?,
            OwnedServerMessage::Unknown
        );
        assert_eq!(
            decode(r#"{"type":"pong","id":3,"server_time":5}"#)?,
            OwnedServerMessage::Pong { id: Some(3) }
        );
        assert_eq!(
            decode(r#"{"type":"error","code":"quota","message":"m"}"#)?,
            OwnedServerMessage::Error {
                id: None,
                code: ErrorCode::Other("quota".into()),
                message: "m".into(),
            }
        );
        // A server before member counts and recovery.
        assert_eq!(
            decode(r#"{"type":"joined","room":"r","members":["a"],"seq":0}"#)?,
            OwnedServerMessage::Joined {
                room: "r".into(),
                id: None,
                members: vec!["a".into()],
                member_count: None,
                members_truncated: false,
                seq: 0,
                epoch: None,
                recovered: None,
            }
        );
        assert!(decode(r#"{"room":"x"}"#).is_err());
        assert!(decode("[1]").is_err());
        assert!(decode(r#"{"type":"ack","id":-1,"seq":1}"#).is_err());
        Ok(())
    }
}
