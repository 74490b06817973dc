//! Client → server messages (JSON text frames) and their decoder.
//!
//! Decoding is one typed pass over the frame on the happy path. Only when that fails is the
//! frame parsed a second time, loosely, to say precisely what is wrong (bad JSON, unknown
//! `type`, missing field) and to recover the request `id` for the error reply.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;
use crate::position::StreamPosition;

/// A request id chosen by the client, echoed in the reply (`joined`, `left`, `ack`, `error`, `pong`).
pub type RequestId = u64;

/// A client message: decoded by [`decode`] (borrowing from the frame), or built by a client and
/// encoded with [`ClientMessage::encode`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage<'a> {
    /// `{"type":"join","room":R,"id"?:N,"since"?:{"seq":S,"epoch":E}}`
    Join {
        /// The room to join.
        room: Cow<'a, str>,
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Recover what was missed after this position.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<StreamPosition<Cow<'a, str>>>,
    },
    /// `{"type":"leave","room":R,"id"?:N}`
    Leave {
        /// The room to leave.
        room: Cow<'a, str>,
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// `{"type":"publish","room":R,"data":ANY,"id"?:N,"echo"?:BOOL,"msg_id"?:STRING}`
    Publish {
        /// The room to publish to.
        room: Cow<'a, str>,
        /// The payload, kept as the exact JSON text the client sent.
        data: &'a RawValue,
        /// Request id; when present the server answers with an `ack`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Whether the publisher also receives its own message.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        echo: bool,
        /// Client-chosen message id: a retry with the same id is not delivered twice.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<Cow<'a, str>>,
    },
    /// `{"type":"history","room":R,"limit"?:N,"id"?:N}`
    History {
        /// The room.
        room: Cow<'a, str>,
        /// How many of the latest messages (default and cap: the room's history size).
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// `{"type":"typing","room":R}`
    Typing {
        /// The room the user is typing in.
        room: Cow<'a, str>,
    },
    /// `{"type":"refresh","token":T,"id"?:N}`: a new token before the current one expires.
    Refresh {
        /// The new token.
        token: Cow<'a, str>,
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// `{"type":"members","room":R,"id"?:N,"after"?:USER,"limit"?:N}`: one page of a room's
    /// members, in byte order of their names, starting after `after`.
    Members {
        /// The room.
        room: Cow<'a, str>,
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// List the users whose names sort after this one (the previous page's `next`).
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<Cow<'a, str>>,
        /// How many users at most (1 to [`MAX_MEMBERS_PAGE`]; default [`MAX_MEMBERS_PAGE`]).
        limit: usize,
    },
    /// `{"type":"ping","id"?:N}` (an application-level ping, answered by `pong`).
    Ping {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

/// Most users one `members` reply lists.
pub const MAX_MEMBERS_PAGE: usize = 1_000;

/// Longest `msg_id`, in bytes.
pub const MAX_MSG_ID_LEN: usize = 64;

impl ClientMessage<'_> {
    /// The message's `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Publish { .. } => "publish",
            Self::Typing { .. } => "typing",
            Self::Ping { .. } => "ping",
            Self::History { .. } => "history",
            Self::Refresh { .. } => "refresh",
            Self::Members { .. } => "members",
        }
    }

    /// The text frame of the message. Serializing cannot fail (strings, integers, booleans and
    /// already-valid JSON): should it ever, the frame is a `ping` rather than a broken one.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"ping"}"#.to_owned())
    }

    /// The request id, if the message carries one.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            Self::Join { id, .. }
            | Self::Leave { id, .. }
            | Self::Publish { id, .. }
            | Self::History { id, .. }
            | Self::Refresh { id, .. }
            | Self::Members { id, .. }
            | Self::Ping { id } => *id,
            Self::Typing { .. } => None,
        }
    }
}

/// Why a text frame was not a valid client message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The machine-readable code for the `error` reply.
    pub code: ErrorCode,
    /// The request id, when the frame was an object with a numeric `id`.
    pub id: Option<RequestId>,
    /// A human-readable explanation.
    pub message: String,
}

impl DecodeError {
    fn new(code: ErrorCode, id: Option<RequestId>, message: impl Into<String>) -> Self {
        Self {
            code,
            id,
            message: message.into(),
        }
    }
}

/// The known message types, for error messages.
pub const CLIENT_TYPES: [&str; 8] = [
    "join", "leave", "publish", "typing", "ping", "history", "refresh", "members",
];

/// The wire shape of every client message: all fields optional, checked per type afterwards.
/// Unknown fields are ignored, so clients may send fields of later protocol versions.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default, borrow, deserialize_with = "crate::position::borrowed")]
    since: Option<StreamPosition<Cow<'a, str>>>,
    #[serde(default, borrow)]
    msg_id: Option<Cow<'a, str>>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    after: Option<Cow<'a, str>>,
}

/// `data` may be any JSON value, `null` included: present-but-null must not read as absent.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Decodes one text frame.
pub fn decode<'a>(text: &'a str) -> Result<ClientMessage<'a>, DecodeError> {
    // serde would also read a JSON array into the envelope, field by field: only objects are
    // messages.
    if !text.trim_start().starts_with('{') {
        return Err(diagnose(text, None));
    }
    let envelope: Envelope<'a> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(err) => return Err(diagnose(text, Some(&err))),
    };
    // `typing` has no id: its errors never carry one.
    let id = envelope.id.filter(|_| envelope.kind != "typing");
    let room = |room: Option<Cow<'a, str>>, kind: &str| {
        room.ok_or_else(|| {
            DecodeError::new(
                ErrorCode::InvalidMessage,
                id,
                format!("`{kind}` needs a `room` string"),
            )
        })
    };
    let kind = envelope.kind.as_ref();
    match kind {
        "join" => Ok(ClientMessage::Join {
            room: room(envelope.room, kind)?,
            id,
            since: envelope.since,
        }),
        "leave" => Ok(ClientMessage::Leave {
            room: room(envelope.room, kind)?,
            id,
        }),
        "publish" => {
            let room = room(envelope.room, kind)?;
            let data = envelope.data.ok_or_else(|| {
                DecodeError::new(
                    ErrorCode::InvalidMessage,
                    id,
                    "`publish` needs a `data` field",
                )
            })?;
            if nesting_depth(data.get()) > MAX_DATA_DEPTH {
                return Err(DecodeError::new(
                    ErrorCode::BadJson,
                    id,
                    format!("`data` is nested deeper than {MAX_DATA_DEPTH} levels"),
                ));
            }
            // The raw scan that kept `data` accepts what a full parser refuses (lone UTF-16
            // surrogates, numbers beyond f64): receivers parse it fully, so check it here.
            if let Err(err) = strict_check(data.get()) {
                return Err(DecodeError::new(
                    ErrorCode::BadJson,
                    id,
                    format!(
                        "`data` is not valid JSON: {}",
                        strip_position(&err.to_string())
                    ),
                ));
            }
            if envelope
                .msg_id
                .as_ref()
                .is_some_and(|m| m.is_empty() || m.len() > MAX_MSG_ID_LEN)
            {
                return Err(DecodeError::new(
                    ErrorCode::InvalidMessage,
                    id,
                    format!("`msg_id` must be 1 to {MAX_MSG_ID_LEN} bytes"),
                ));
            }
            Ok(ClientMessage::Publish {
                room,
                data,
                id,
                echo: envelope.echo.unwrap_or(false),
                msg_id: envelope.msg_id,
            })
        }
        "history" => Ok(ClientMessage::History {
            room: room(envelope.room, kind)?,
            limit: envelope.limit,
            id,
        }),
        "typing" => Ok(ClientMessage::Typing {
            room: room(envelope.room, kind)?,
        }),
        "refresh" => Ok(ClientMessage::Refresh {
            token: envelope.token.ok_or_else(|| {
                DecodeError::new(
                    ErrorCode::InvalidMessage,
                    id,
                    "`refresh` needs a `token` string",
                )
            })?,
            id,
        }),
        "members" => {
            let room = room(envelope.room, kind)?;
            let limit = match envelope.limit {
                None => MAX_MEMBERS_PAGE,
                Some(limit) => usize::try_from(limit)
                    .ok()
                    .filter(|l| (1..=MAX_MEMBERS_PAGE).contains(l))
                    .ok_or_else(|| {
                        DecodeError::new(
                            ErrorCode::InvalidMessage,
                            id,
                            format!("`limit` must be 1 to {MAX_MEMBERS_PAGE}"),
                        )
                    })?,
            };
            Ok(ClientMessage::Members {
                room,
                id,
                after: envelope.after,
                limit,
            })
        }
        "ping" => Ok(ClientMessage::Ping { id }),
        other => Err(DecodeError::new(
            ErrorCode::UnknownType,
            id,
            format!(
                "unknown message type {other:?}; expected one of {}",
                CLIENT_TYPES.join(", ")
            ),
        )),
    }
}

/// How deeply `data` may nest arrays and objects. Receivers parse what the server relays; a
/// bound keeps every one of them safe from stack exhaustion.
pub const MAX_DATA_DEPTH: usize = 64;

/// The deepest nesting of arrays/objects in a JSON text already known to be valid.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The slow path: explain why `text` did not decode.
fn diagnose(text: &str, err: Option<&serde_json::Error>) -> DecodeError {
    // Syntax first, with a scan that neither converts numbers nor recurses: huge numbers and
    // deep nesting are valid JSON, just not valid messages.
    if let Err(syntax) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return DecodeError::new(ErrorCode::BadJson, None, format!("invalid JSON: {syntax}"));
    }
    let Ok(object) = serde_json::from_str::<HashMap<String, Box<RawValue>>>(text) else {
        return DecodeError::new(
            ErrorCode::InvalidMessage,
            None,
            "a message must be a JSON object with a `type` field",
        );
    };
    let kind = object
        .get("type")
        .map(|raw| serde_json::from_str::<String>(raw.get()));
    let typing = matches!(&kind, Some(Ok(kind)) if kind == "typing");
    let raw_id = object.get("id").filter(|raw| raw.get() != "null");
    let id = raw_id.and_then(|raw| serde_json::from_str::<RequestId>(raw.get()).ok());
    if raw_id.is_some() && id.is_none() {
        return DecodeError::new(
            ErrorCode::InvalidMessage,
            None,
            "`id` must be an integer between 0 and 2^64-1",
        );
    }
    let id = id.filter(|_| !typing);
    match kind {
        None => DecodeError::new(ErrorCode::InvalidMessage, id, "missing `type` field"),
        Some(Ok(kind)) if !CLIENT_TYPES.contains(&kind.as_str()) => DecodeError::new(
            ErrorCode::UnknownType,
            id,
            format!(
                "unknown message type {kind:?}; expected one of {}",
                CLIENT_TYPES.join(", ")
            ),
        ),
        Some(Ok(_)) => DecodeError::new(
            ErrorCode::InvalidMessage,
            id,
            err.map_or_else(|| "invalid message".to_owned(), field_error),
        ),
        Some(Err(_)) => DecodeError::new(ErrorCode::InvalidMessage, id, "`type` must be a string"),
    }
}

/// serde's message without its " at line 1 column 42" suffix, which means nothing to a client
/// that sent one frame.
fn field_error(err: &serde_json::Error) -> String {
    strip_position(&err.to_string())
}

fn strip_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(at) => text.get(..at).unwrap_or(text).to_owned(),
        None => text.to_owned(),
    }
}

/// Parses JSON fully (every string unescaped, every number converted) without building it.
/// Depth is already bounded by [`MAX_DATA_DEPTH`], below serde_json's recursion limit.
fn strict_check(json: &str) -> Result<(), serde_json::Error> {
    struct Strict;

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }

    struct StrictVisitor;

    impl<'de> serde::de::Visitor<'de> for StrictVisitor {
        type Value = Strict;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            while seq.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            while map.next_entry::<Strict, Strict>()?.is_some() {}
            Ok(Strict)
        }
    }

    serde_json::from_str::<Strict>(json).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> DecodeError {
        match decode(text) {
            Ok(msg) => panic!("{text} decoded as {msg:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn decodes_every_type() -> Result<(), DecodeError> {
        assert!(matches!(
            decode(r#"{"type":"join","room":"a","id":1}"#)?,
            ClientMessage::Join { room, id: Some(1), since: None } if room == "a"
        ));
        assert!(matches!(
            decode(r#"{"type":"join","room":"a","since":{"seq":41,"epoch":"e1"}}"#)?,
            ClientMessage::Join { since: Some(StreamPosition { seq: 41, epoch: Cow::Borrowed(epoch) }), .. } if epoch == "e1"
        ));
        assert!(matches!(
            decode(r#"{"type":"history","room":"a","limit":5,"id":2}"#)?,
            ClientMessage::History { room, limit: Some(5), id: Some(2) } if room == "a"
        ));
        assert!(matches!(
            decode(r#"{"type":"leave","room":"a"}"#)?,
            ClientMessage::Leave { room, id: None } if room == "a"
        ));
        assert!(matches!(
            decode(r#"{"type":"typing","room":"a"}"#)?,
            ClientMessage::Typing { room } if room == "a"
        ));
        assert!(matches!(
            decode(r#"{"type":"members","room":"a","id":4,"after":"bob","limit":10}"#)?,
            ClientMessage::Members { room, id: Some(4), after: Some(after), limit: 10 }
                if room == "a" && after == "bob"
        ));
        assert!(matches!(
            decode(r#"{"type":"members","room":"a"}"#)?,
            ClientMessage::Members {
                after: None,
                limit: MAX_MEMBERS_PAGE,
                ..
            }
        ));
        assert_eq!(
            err(r#"{"type":"members","room":"a","id":5,"limit":1001}"#).code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(err(r#"{"type":"members","room":"a","limit":0}"#).id, None);
        assert!(matches!(
            decode(r#"{"type":"ping","id":9}"#)?,
            ClientMessage::Ping { id: Some(9) }
        ));
        match decode(
            r#"{"type":"publish","room":"r","data":{"t":"hi \"x\""},"id":3,"echo":true,"msg_id":"m-1"}"#,
        )? {
            ClientMessage::Publish {
                room,
                data,
                id,
                echo,
                msg_id,
            } => {
                assert_eq!(msg_id.as_deref(), Some("m-1"));
                assert_eq!(room, "r");
                assert_eq!(data.get(), r#"{"t":"hi \"x\""}"#);
                assert_eq!(id, Some(3));
                assert!(echo);
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn every_request_a_client_encodes_decodes_on_the_server()
    -> Result<(), Box<dyn std::error::Error>> {
        let data = RawValue::from_string(r#"{"text":"hi \"x\""}"#.to_owned())?;
        let since = StreamPosition {
            seq: 41,
            epoch: Cow::Borrowed("0123456789abcdef"),
        };
        let table = [
            (
                ClientMessage::Join {
                    room: "lobby".into(),
                    id: Some(1),
                    since: None,
                },
                r#"{"type":"join","room":"lobby","id":1}"#,
            ),
            (
                ClientMessage::Join {
                    room: "lobby".into(),
                    id: Some(2),
                    since: Some(since.clone()),
                },
                r#"{"type":"join","room":"lobby","id":2,"since":{"seq":41,"epoch":"0123456789abcdef"}}"#,
            ),
            (
                ClientMessage::Leave {
                    room: "lobby".into(),
                    id: Some(3),
                },
                r#"{"type":"leave","room":"lobby","id":3}"#,
            ),
            (
                ClientMessage::Publish {
                    room: "lobby".into(),
                    data: &data,
                    id: Some(4),
                    echo: false,
                    msg_id: Some("m-1".into()),
                },
                r#"{"type":"publish","room":"lobby","data":{"text":"hi \"x\""},"id":4,"msg_id":"m-1"}"#,
            ),
            (
                ClientMessage::Publish {
                    room: "lobby".into(),
                    data: &data,
                    id: None,
                    echo: true,
                    msg_id: None,
                },
                r#"{"type":"publish","room":"lobby","data":{"text":"hi \"x\""},"echo":true}"#,
            ),
            (
                ClientMessage::Typing {
                    room: "lobby".into(),
                },
                r#"{"type":"typing","room":"lobby"}"#,
            ),
            (
                ClientMessage::History {
                    room: "lobby".into(),
                    limit: Some(50),
                    id: Some(5),
                },
                r#"{"type":"history","room":"lobby","limit":50,"id":5}"#,
            ),
            (
                ClientMessage::Members {
                    room: "lobby".into(),
                    id: Some(6),
                    after: Some("bob".into()),
                    limit: 10,
                },
                r#"{"type":"members","room":"lobby","id":6,"after":"bob","limit":10}"#,
            ),
            (
                ClientMessage::Refresh {
                    token: "t.k.n".into(),
                    id: Some(7),
                },
                r#"{"type":"refresh","token":"t.k.n","id":7}"#,
            ),
            (
                ClientMessage::Ping { id: Some(8) },
                r#"{"type":"ping","id":8}"#,
            ),
        ];
        for (request, expected) in table {
            let text = request.encode();
            assert_eq!(text, expected);
            let decoded = decode(&text)?;
            // The server reads back what the client meant: same type, same id, same fields.
            assert_eq!(
                (decoded.kind(), decoded.id()),
                (request.kind(), request.id())
            );
            assert_eq!(decoded.encode(), text);
        }
        match decode(
            &ClientMessage::Join {
                room: "r".into(),
                id: None,
                since: Some(since),
            }
            .encode(),
        )? {
            ClientMessage::Join {
                since: Some(got), ..
            } => {
                assert_eq!(
                    got.as_borrowed(),
                    StreamPosition {
                        seq: 41,
                        epoch: "0123456789abcdef"
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn null_data_is_data() -> Result<(), DecodeError> {
        match decode(r#"{"type":"publish","room":"r","data":null}"#)? {
            ClientMessage::Publish { data, echo, .. } => {
                assert_eq!(data.get(), "null");
                assert!(!echo);
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn escaped_room_names_decode() -> Result<(), DecodeError> {
        assert!(matches!(
            decode(r#"{"type":"join","room":"a\u0062"}"#)?,
            ClientMessage::Join { room, id: None, .. } if room == "ab"
        ));
        Ok(())
    }

    #[test]
    fn unknown_fields_are_ignored() -> Result<(), DecodeError> {
        assert!(matches!(
            decode(r#"{"type":"ping","future":[1,2]}"#)?,
            ClientMessage::Ping { id: None }
        ));
        Ok(())
    }

    #[test]
    fn classifies_errors() {
        let e = err("{not json");
        assert_eq!((e.code, e.id), (ErrorCode::BadJson, None));
        let e = err("[1,2]");
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        let e = err(r#"{"room":"a","id":4}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(4)));
        let e = err(r#"{"type":"dance","id":5}"#);
        assert_eq!((e.code, e.id), (ErrorCode::UnknownType, Some(5)));
        let e = err(r#"{"type":"join","id":6}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(6)));
        let e = err(r#"{"type":"join","room":7,"id":7}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(7)));
        assert!(!e.message.contains("line 1"), "{}", e.message);
        let e = err(r#"{"type":"publish","room":"a","id":8}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(8)));
        let e = err(r#"{"type":"typing","id":5}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#"{"type":"typing","room":5,"id":5}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#"{"type":5}"#);
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        let e = err(r#"{"type":"ping","id":"x"}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#"{"type":"ping","id":1e400}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#"{"type":"history","room":"a","limit":1e400,"id":12}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(12)));
        let deep_frame = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
        assert_eq!(err(&deep_frame).code, ErrorCode::InvalidMessage);
        let e = err(r#"{"type":"ping","id":null,"limit":"x"}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#"{"type":"ping","id":18446744073709551616}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#"{"type":"publish","room":"a","echo":"yes","data":1}"#);
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        let e = err(r#"{"type":"publish","room":"a","data":1,"msg_id":"","id":9}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(9)));
        let e = err(r#"{"type":"join","room":"a","since":{"seq":"x","epoch":"e"},"id":10}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(10)));
        let e = err(r#"{"type":"join","room":"a","since":{"seq":1},"id":11}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(11)));
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"["[[[\"[[", {}]"#), 2);
        let limit = format!(
            "{}{}",
            "[".repeat(MAX_DATA_DEPTH),
            "]".repeat(MAX_DATA_DEPTH)
        );
        assert!(
            decode(&format!(
                r#"{{"type":"publish","room":"a","data":{limit}}}"#
            ))
            .is_ok()
        );
    }

    #[test]
    fn arrays_are_not_messages() {
        let e = err(r#"["join","lobby"]"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, None));
        let e = err(r#" ["publish","lobby",3,{"text":"hi"},true]"#);
        assert_eq!(e.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn data_a_full_parser_refuses_is_bad_json() {
        for data in [
            r#""\ud800""#,
            "1e400",
            r#"{"a":["\udfff"]}"#,
            r#"{"\ud800":1}"#,
        ] {
            let e = err(&format!(
                r#"{{"type":"publish","room":"a","data":{data},"id":1}}"#
            ));
            assert_eq!((e.code, e.id), (ErrorCode::BadJson, Some(1)), "{data}");
        }
        for data in [
            r#""\ud83d\ude00""#,
            "-1.5e300",
            r#"{"a":[1,"x",null,true,{}]}"#,
        ] {
            decode(&format!(r#"{{"type":"publish","room":"a","data":{data}}}"#)).unwrap();
        }
    }

    #[test]
    fn deep_nesting_is_bad_json_not_a_crash() {
        let deep = format!(
            r#"{{"type":"publish","room":"a","data":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(err(&deep).code, ErrorCode::BadJson);
    }
}
