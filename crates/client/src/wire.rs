//! The wire format as the client sees it: serde types for what the server sends (the
//! protocol crate's server types are serialize-only) and the encoding of requests.
//!
//! Unknown fields are ignored and unknown message types decode as
//! [`ServerMessage::Unknown`], as protocol v1 asks of clients.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::events::{Body, History, HistoryMessage, PresenceEvent};
use crate::tracker::Since;

/// A JSON text frame from the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage {
    /// Reply to `join`.
    Joined {
        room: String,
        id: Option<u64>,
        members: Vec<String>,
        /// Distinct users in the room (absent from servers before member counts).
        member_count: Option<u64>,
        #[serde(default)]
        members_truncated: bool,
        seq: u64,
        epoch: Option<String>,
        recovered: Option<bool>,
    },
    /// Reply to `leave`.
    Left { room: String, id: Option<u64> },
    /// A JSON message in a room.
    Message {
        room: String,
        from: String,
        /// `null` is a valid payload (and a missing one is read as `null`).
        #[serde(default)]
        data: Value,
        seq: u64,
        ts: u64,
    },
    /// Someone is typing.
    Typing { room: String, from: String },
    /// Presence: one change (`event`, `user`), several (`joins`, `leaves`), or only the
    /// count (a room over the server's list limit).
    Presence {
        room: String,
        event: Option<PresenceEvent>,
        user: Option<String>,
        #[serde(default)]
        joins: Vec<String>,
        #[serde(default)]
        leaves: Vec<String>,
        member_count: Option<u64>,
    },
    /// Reply to `members`: one page of users.
    Members {
        room: String,
        id: Option<u64>,
        members: Vec<String>,
        member_count: u64,
        next: Option<String>,
    },
    /// Acknowledges a publish.
    Ack {
        id: u64,
        seq: Option<u64>,
        #[serde(default)]
        duplicate: bool,
    },
    /// A request failed.
    Error {
        id: Option<u64>,
        code: String,
        message: String,
    },
    /// Reply to `ping`.
    Pong { id: Option<u64> },
    /// Reply to `refresh`: the new token's expiry (seconds since the Unix epoch).
    Refreshed { id: Option<u64>, exp: u64 },
    /// Reply to `history`.
    History {
        room: String,
        id: Option<u64>,
        seq: u64,
        epoch: String,
        messages: Vec<HistoryEntry>,
    },
    /// A type this client does not know (from a later server): ignored.
    #[serde(other)]
    Unknown,
}

/// One message inside a `history` reply: a `message` object as delivered live, or for a binary
/// message the same without `data` and with `binary` (base64 of the payload).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct HistoryEntry {
    from: String,
    seq: u64,
    ts: u64,
    #[serde(default)]
    data: Value,
    binary: Option<String>,
}

/// Decodes a text frame; `Err` for anything that is not a server message we can read.
pub(crate) fn decode(text: &str) -> Result<ServerMessage, serde_json::Error> {
    serde_json::from_str(text)
}

/// Turns a `history` reply into the public type.
pub(crate) fn history(
    room: String,
    seq: u64,
    epoch: String,
    entries: Vec<HistoryEntry>,
) -> Result<History, base64::DecodeError> {
    let messages = entries
        .into_iter()
        .map(|entry| {
            let body = match entry.binary {
                Some(b64) => Body::Binary(Bytes::from(
                    base64::engine::general_purpose::STANDARD.decode(b64)?,
                )),
                None => Body::Json(entry.data),
            };
            Ok(HistoryMessage {
                from: entry.from,
                seq: entry.seq,
                ts: entry.ts,
                body,
            })
        })
        .collect::<Result<_, base64::DecodeError>>()?;
    Ok(History {
        room,
        seq,
        epoch,
        messages,
    })
}

/// `since` of a recovering join.
#[derive(Debug, Serialize)]
pub(crate) struct SinceWire<'a> {
    seq: u64,
    epoch: &'a str,
}

/// A client → server JSON request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request<'a> {
    Join {
        room: &'a str,
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<SinceWire<'a>>,
    },
    Leave {
        room: &'a str,
        id: u64,
    },
    Publish {
        room: &'a str,
        data: &'a RawValue,
        id: u64,
        msg_id: &'a str,
    },
    Typing {
        room: &'a str,
    },
    History {
        room: &'a str,
        limit: u32,
        id: u64,
    },
    Members {
        room: &'a str,
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<&'a str>,
        limit: u32,
    },
    Refresh {
        token: &'a str,
        id: u64,
    },
}

impl<'a> Request<'a> {
    /// A `join`, recovering from `since` when given.
    pub(crate) fn join(room: &'a str, id: u64, since: Option<&'a Since>) -> Self {
        Self::Join {
            room,
            id,
            since: since.map(|s| SinceWire {
                seq: s.seq,
                epoch: &s.epoch,
            }),
        }
    }

    /// The text of the frame.
    pub(crate) fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// Bytes a `publish` frame adds around room and data (type, keys, id, msg_id), generously.
pub(crate) const PUBLISH_OVERHEAD: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ServerMessage {
        match decode(text) {
            Ok(m) => m,
            Err(err) => panic!("{text}: {err}"),
        }
    }

    #[test]
    fn decodes_every_server_message_of_the_contract() {
        assert_eq!(
            ok(r#"{"type":"joined","room":"lobby","id":1,"members":["alice","bob"],"seq":0}"#),
            ServerMessage::Joined {
                room: "lobby".into(),
                id: Some(1),
                members: vec!["alice".into(), "bob".into()],
                member_count: None,
                members_truncated: false,
                seq: 0,
                epoch: None,
                recovered: None,
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"joined","room":"r","members":["a"],"member_count":1500,"members_truncated":true,"seq":9,"epoch":"0123456789abcdef","recovered":false}"#
            ),
            ServerMessage::Joined {
                room: "r".into(),
                id: None,
                members: vec!["a".into()],
                member_count: Some(1500),
                members_truncated: true,
                seq: 9,
                epoch: Some("0123456789abcdef".into()),
                recovered: Some(false),
            }
        );
        assert_eq!(
            ok(r#"{"type":"left","room":"lobby","id":7}"#),
            ServerMessage::Left {
                room: "lobby".into(),
                id: Some(7)
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"message","room":"lobby","from":"alice","data":{"text":"hi bob"},"seq":1,"ts":1700000000000}"#
            ),
            ServerMessage::Message {
                room: "lobby".into(),
                from: "alice".into(),
                data: serde_json::json!({"text": "hi bob"}),
                seq: 1,
                ts: 1_700_000_000_000,
            }
        );
        assert_eq!(
            ok(r#"{"type":"message","room":"r","from":"a","data":null,"seq":2,"ts":3}"#),
            ServerMessage::Message {
                room: "r".into(),
                from: "a".into(),
                data: Value::Null,
                seq: 2,
                ts: 3,
            }
        );
        assert_eq!(
            ok(r#"{"type":"typing","room":"lobby","from":"bob"}"#),
            ServerMessage::Typing {
                room: "lobby".into(),
                from: "bob".into()
            }
        );
        assert_eq!(
            ok(r#"{"type":"presence","room":"lobby","event":"leave","user":"bob"}"#),
            ServerMessage::Presence {
                room: "lobby".into(),
                event: Some(PresenceEvent::Leave),
                user: Some("bob".into()),
                joins: vec![],
                leaves: vec![],
                member_count: None,
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"presence","room":"r","joins":["a","b"],"leaves":["c"],"member_count":4}"#
            ),
            ServerMessage::Presence {
                room: "r".into(),
                event: None,
                user: None,
                joins: vec!["a".into(), "b".into()],
                leaves: vec!["c".into()],
                member_count: Some(4),
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"members","room":"r","id":3,"members":["a"],"member_count":9,"next":"a"}"#
            ),
            ServerMessage::Members {
                room: "r".into(),
                id: Some(3),
                members: vec!["a".into()],
                member_count: 9,
                next: Some("a".into()),
            }
        );
        assert_eq!(
            ok(r#"{"type":"ack","id":2,"seq":1}"#),
            ServerMessage::Ack {
                id: 2,
                seq: Some(1),
                duplicate: false
            }
        );
        assert_eq!(
            ok(r#"{"type":"ack","id":2,"seq":1,"duplicate":true}"#),
            ServerMessage::Ack {
                id: 2,
                seq: Some(1),
                duplicate: true
            }
        );
        assert_eq!(
            ok(r#"{"type":"error","id":5,"code":"not_joined","message":"join first"}"#),
            ServerMessage::Error {
                id: Some(5),
                code: "not_joined".into(),
                message: "join first".into()
            }
        );
        assert_eq!(ok(r#"{"type":"pong"}"#), ServerMessage::Pong { id: None });
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        assert_eq!(
            ok(r#"{"type":"weather","sunny":true}"#),
            ServerMessage::Unknown
        );
        assert_eq!(
            ok(r#"{"type":"pong","id":3,"server_time":5}"#),
            ServerMessage::Pong { id: Some(3) }
        );
        assert!(decode(r#"{"room":"x"}"#).is_err());
        assert!(decode("[1]").is_err());
        assert!(decode(r#"{"type":"ack","id":-1,"seq":1}"#).is_err());
    }

    #[test]
    fn history_reply_with_json_and_binary_messages() -> Result<(), Box<dyn std::error::Error>> {
        let text = r#"{"type":"history","room":"r","id":4,"seq":3,"epoch":"00000000000000aa","messages":[
            {"type":"message","room":"r","from":"a","data":{"n":1},"seq":2,"ts":10},
            {"type":"message","room":"r","from":"b","seq":3,"ts":11,"binary":"AJ+Slv8="},
            {"type":"message","room":"r","from":"c","data":null,"seq":4,"ts":12}]}"#;
        let ServerMessage::History {
            room,
            id,
            seq,
            epoch,
            messages,
        } = decode(text)?
        else {
            return Err("not a history reply".into());
        };
        assert_eq!(id, Some(4));
        let history = history(room, seq, epoch, messages)?;
        assert_eq!(
            history,
            History {
                room: "r".into(),
                seq: 3,
                epoch: "00000000000000aa".into(),
                messages: vec![
                    HistoryMessage {
                        from: "a".into(),
                        seq: 2,
                        ts: 10,
                        body: Body::Json(serde_json::json!({"n": 1})),
                    },
                    HistoryMessage {
                        from: "b".into(),
                        seq: 3,
                        ts: 11,
                        body: Body::Binary(Bytes::from_static(&[0, 0x9f, 0x92, 0x96, 0xff])),
                    },
                    HistoryMessage {
                        from: "c".into(),
                        seq: 4,
                        ts: 12,
                        body: Body::Json(Value::Null),
                    },
                ],
            }
        );
        Ok(())
    }

    #[test]
    fn bad_base64_in_history_is_an_error() {
        let entry = HistoryEntry {
            from: "a".into(),
            seq: 1,
            ts: 1,
            data: Value::Null,
            binary: Some("!!".into()),
        };
        assert!(history("r".into(), 1, "e".into(), vec![entry]).is_err());
    }

    #[test]
    fn requests_encode_as_the_contract_says() -> Result<(), serde_json::Error> {
        let since = Since {
            seq: 41,
            epoch: "0123456789abcdef".into(),
        };
        let data = RawValue::from_string(r#"{"text":"hi"}"#.to_owned())?;
        let table = [
            (
                Request::join("lobby", 1, None),
                r#"{"type":"join","room":"lobby","id":1}"#,
            ),
            (
                Request::join("lobby", 2, Some(&since)),
                r#"{"type":"join","room":"lobby","id":2,"since":{"seq":41,"epoch":"0123456789abcdef"}}"#,
            ),
            (
                Request::Leave {
                    room: "lobby",
                    id: 3,
                },
                r#"{"type":"leave","room":"lobby","id":3}"#,
            ),
            (
                Request::Publish {
                    room: "lobby",
                    data: &data,
                    id: 4,
                    msg_id: "m-1",
                },
                r#"{"type":"publish","room":"lobby","data":{"text":"hi"},"id":4,"msg_id":"m-1"}"#,
            ),
            (
                Request::Typing { room: "lobby" },
                r#"{"type":"typing","room":"lobby"}"#,
            ),
            (
                Request::History {
                    room: "lobby",
                    limit: 50,
                    id: 5,
                },
                r#"{"type":"history","room":"lobby","limit":50,"id":5}"#,
            ),
        ];
        for (request, expected) in table {
            assert_eq!(request.encode()?, expected);
        }
        Ok(())
    }

    #[test]
    fn publish_overhead_covers_the_largest_envelope() -> Result<(), serde_json::Error> {
        let data = RawValue::from_string("0".to_owned())?;
        let msg_id = "x".repeat(64);
        let text = Request::Publish {
            room: "",
            data: &data,
            id: u64::MAX,
            msg_id: &msg_id,
        }
        .encode()?;
        assert!(text.len() - 1 <= PUBLISH_OVERHEAD, "{}", text.len());
        Ok(())
    }
}
