//! Server → client messages and their encoding. Each message is encoded once into [`Bytes`]
//! that the hub then shares with every recipient.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::client::RequestId;
use crate::codes::ErrorCode;

/// A presence change in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
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
        /// The room's members, each user once: at most the server's list limit of them (then
        /// `members_truncated`). Empty without the presence right.
        members: &'a [&'a str],
        /// Distinct users in the room, the joiner included (0 without the presence right).
        member_count: u64,
        /// `members` lists only part of the room: page through the rest with `members`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        members_truncated: bool,
        /// The room's current sequence number (that of its last message; 0 if none yet).
        seq: u64,
        /// The room's epoch: changes whenever its history is reset.
        epoch: &'a str,
        /// For a join with `since`: whether every missed message follows this reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
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
    /// Several presence changes of a room at once, or only its new member count (in a room
    /// larger than the list limit): `{"type":"presence","room":R,"joins"?:[..],"leaves"?:[..],
    /// "member_count":C}`. (The single form above with a count is [`presence_single`].)
    #[serde(rename = "presence")]
    PresenceBatch {
        /// The room.
        room: &'a str,
        /// Users now present who were not.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        joins: &'a [&'a str],
        /// Users now gone who were present.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        leaves: &'a [&'a str],
        /// Distinct users in the room after these changes.
        member_count: u64,
    },
    /// The reply to `members`: one page of the room's users in byte order.
    Members {
        /// The room.
        room: &'a str,
        /// The request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The users of this page.
        members: &'a [&'a str],
        /// Distinct users in the room.
        member_count: u64,
        /// More follow: ask again with this as `after`.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<&'a str>,
    },
    /// Acknowledges a `publish` that carried an id.
    Ack {
        /// The request id of the `publish`.
        id: RequestId,
        /// The sequence number given to the message.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// The publish repeated a `msg_id` already accepted: `seq` is the original's and the
        /// message was not delivered again.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
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
    /// The reply to a successful `refresh`.
    Refreshed {
        /// The request id of the `refresh`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The new token's expiry (seconds since the Unix epoch).
        exp: u64,
    },
    /// The reply to `ping`.
    Pong {
        /// The request id of the `ping`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

/// The single-change `presence` frame with the room's member count after it:
/// `{"type":"presence","room":R,"event":E,"user":U,"member_count":C}`.
pub fn presence_single(room: &str, event: PresenceEvent, user: &str, member_count: u64) -> Bytes {
    #[derive(Serialize)]
    struct Single<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        event: PresenceEvent,
        user: &'a str,
        member_count: u64,
    }
    let single = Single {
        kind: "presence",
        room,
        event,
        user,
        member_count,
    };
    Bytes::from(serde_json::to_vec(&single).unwrap_or_default())
}

/// A binary message as it appears in a `history` reply (JSON has no bytes: base64).
#[derive(Debug, Clone, Serialize)]
pub struct BinaryRecord<'a> {
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The room.
    pub room: &'a str,
    /// The publishing user.
    pub from: &'a str,
    /// The message's sequence number.
    pub seq: u64,
    /// When it was sequenced (ms since the Unix epoch).
    pub ts: u64,
    /// The payload, base64 (standard alphabet, padded).
    pub binary: String,
}

/// One entry of a `history` reply.
#[derive(Debug, Clone, Copy)]
pub enum HistoryItem<'a> {
    /// The encoded `message` object exactly as it was delivered.
    Json(&'a [u8]),
    /// A server binary envelope (see [`crate::binary`]).
    Binary(&'a [u8]),
}

/// A `message` frame split around its `seq`: `head ‖ seq (decimal) ‖ tail`, so that a broker
/// that assigns the seq elsewhere (in Redis) splices it in without re-encoding.
pub fn encode_message_parts(room: &str, from: &str, data: &RawValue, ts: u64) -> (Bytes, Bytes) {
    let frame = ServerMessage::Message {
        room,
        from,
        data,
        seq: 0,
        ts,
    }
    .encode();
    // `seq` and `ts` are the last two fields, after `data`: the last match is theirs.
    let marker = b"\"seq\":0,";
    let at = frame
        .windows(marker.len())
        .rposition(|window| window == marker)
        .map_or(frame.len(), |at| at + marker.len() - 2);
    (frame.slice(..at), frame.slice((at + 1).min(frame.len())..))
}

/// Encodes `{"type":"history","room":R,"id"?:N,"seq":S,"epoch":E,"messages":[...]}`. JSON
/// messages are spliced in as stored (no re-serialization).
pub fn encode_history<'a>(
    room: &str,
    id: Option<RequestId>,
    seq: u64,
    epoch: &str,
    items: impl IntoIterator<Item = HistoryItem<'a>>,
) -> Bytes {
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        seq: u64,
        epoch: &'a str,
    }
    let head = Head {
        kind: "history",
        room,
        id,
        seq,
        epoch,
    };
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    out.pop(); // the closing brace: the messages array follows
    out.extend_from_slice(br#","messages":["#);
    let mut first = true;
    for item in items {
        let record;
        let json: &[u8] = match item {
            HistoryItem::Json(json) => json,
            HistoryItem::Binary(frame) => match crate::binary::decode_server(frame) {
                Ok(message) => {
                    record = serde_json::to_vec(&BinaryRecord {
                        kind: "message",
                        room: message.room,
                        from: message.from,
                        seq: message.seq,
                        ts: message.ts,
                        binary: base64_encode(message.payload),
                    })
                    .unwrap_or_default();
                    &record
                }
                Err(_) => continue,
            },
        };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(json);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Standard base64 with padding (RFC 4648 section 4); small enough not to need a crate here.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| {
        char::from(
            ALPHABET
                .get(((n >> shift) & 63) as usize)
                .copied()
                .unwrap_or(b'A'),
        )
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
    out
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
        let data_with_marker = RawValue::from_string(r#"{"seq":0,"x":1}"#.to_owned())?;
        let (head, tail) = encode_message_parts("r", "alice", &data_with_marker, 1700);
        let mut spliced = head.to_vec();
        spliced.extend_from_slice(b"42");
        spliced.extend_from_slice(&tail);
        assert_eq!(
            String::from_utf8_lossy(&spliced),
            r#"{"type":"message","room":"r","from":"alice","data":{"seq":0,"x":1},"seq":42,"ts":1700}"#
        );
        assert_eq!(
            text(&ServerMessage::Joined {
                room: "r",
                id: Some(1),
                members: &["a", "b"],
                member_count: 2,
                members_truncated: false,
                seq: 0,
                epoch: "e",
                recovered: None,
            }),
            r#"{"type":"joined","room":"r","id":1,"members":["a","b"],"member_count":2,"seq":0,"epoch":"e"}"#
        );
        assert_eq!(
            text(&ServerMessage::Joined {
                room: "r",
                id: None,
                members: &["a"],
                member_count: 3,
                members_truncated: true,
                seq: 4,
                epoch: "e",
                recovered: Some(false),
            }),
            r#"{"type":"joined","room":"r","members":["a"],"member_count":3,"members_truncated":true,"seq":4,"epoch":"e","recovered":false}"#
        );
        assert_eq!(
            text(&ServerMessage::PresenceBatch {
                room: "r",
                joins: &["a", "b"],
                leaves: &[],
                member_count: 7,
            }),
            r#"{"type":"presence","room":"r","joins":["a","b"],"member_count":7}"#
        );
        assert_eq!(
            text(&ServerMessage::PresenceBatch {
                room: "r",
                joins: &[],
                leaves: &[],
                member_count: 7,
            }),
            r#"{"type":"presence","room":"r","member_count":7}"#
        );
        assert_eq!(
            &presence_single("r", PresenceEvent::Join, "a", 2)[..],
            br#"{"type":"presence","room":"r","event":"join","user":"a","member_count":2}"#
        );
        assert_eq!(
            text(&ServerMessage::Members {
                room: "r",
                id: Some(3),
                members: &["a", "b"],
                member_count: 5,
                next: Some("b"),
            }),
            r#"{"type":"members","room":"r","id":3,"members":["a","b"],"member_count":5,"next":"b"}"#
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
                seq: Some(9),
                duplicate: false
            }),
            r#"{"type":"ack","id":4,"seq":9}"#
        );
        assert_eq!(
            text(&ServerMessage::Ack {
                id: 4,
                seq: Some(9),
                duplicate: true
            }),
            r#"{"type":"ack","id":4,"seq":9,"duplicate":true}"#
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

    #[test]
    fn history_splices_stored_messages() {
        let json = br#"{"type":"message","room":"r","from":"a","data":1,"seq":1,"ts":5}"#;
        let binary = crate::binary::ServerBinary {
            room: "r",
            seq: 2,
            ts: 6,
            from: "b",
            payload: b"\x00\xffab",
        }
        .encode();
        let reply = encode_history(
            "r",
            Some(3),
            2,
            "ep",
            [HistoryItem::Json(json), HistoryItem::Binary(&binary)],
        );
        let value: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"history","room":"r","id":3,"seq":2,"epoch":"ep","messages":[
                {"type":"message","room":"r","from":"a","data":1,"seq":1,"ts":5},
                {"type":"message","room":"r","from":"b","seq":2,"ts":6,"binary":"AP9hYg=="}
            ]})
        );
        let empty = encode_history("r", None, 0, "ep", []);
        assert_eq!(
            &empty[..],
            br#"{"type":"history","room":"r","seq":0,"epoch":"ep","messages":[]}"#
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), output);
        }
    }
}
