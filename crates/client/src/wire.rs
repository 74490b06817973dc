//! Glue between the wire contract (`switchboard-protocol`: requests are its
//! [`ClientMessage`], server frames its [`OwnedServerMessage`]) and the SDK's public types.

use base64::Engine as _;
use bytes::Bytes;
use switchboard_protocol::owned::HistoryEntry;
use switchboard_protocol::{ClientMessage, StreamPosition};
use tokio_websockets::Message;

use crate::events::{Body, History, HistoryMessage};

pub(crate) use switchboard_protocol::owned::{OwnedServerMessage as ServerMessage, decode};

/// Turns a `history` reply into the public type (binary payloads arrive in base64).
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

/// A `join`, recovering from `since` when given.
pub(crate) fn join<'a>(
    room: &'a str,
    id: u64,
    since: Option<&'a StreamPosition>,
) -> ClientMessage<'a> {
    ClientMessage::Join {
        room: room.into(),
        id: Some(id),
        since: since.map(|since| since.as_borrowed().into()),
    }
}

/// The text frame of a request.
pub(crate) fn frame(request: &ClientMessage<'_>) -> Message {
    Message::text(request.encode())
}

/// Bytes a `publish` frame adds around room and data (type, keys, id, msg_id), generously.
pub(crate) const PUBLISH_OVERHEAD: usize = 160;

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::*;

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
            room: "r".into(),
            from: "a".into(),
            seq: 1,
            ts: 1,
            data: Value::Null,
            binary: Some("!!".into()),
        };
        assert!(history("r".into(), 1, "e".into(), vec![entry]).is_err());
    }

    #[test]
    fn a_rejoin_asks_for_the_tracked_position() {
        let since = StreamPosition {
            seq: 41,
            epoch: "0123456789abcdef".to_owned(),
        };
        assert_eq!(
            join("lobby", 2, Some(&since)).encode(),
            r#"{"type":"join","room":"lobby","id":2,"since":{"seq":41,"epoch":"0123456789abcdef"}}"#
        );
        assert_eq!(
            join("lobby", 1, None).encode(),
            r#"{"type":"join","room":"lobby","id":1}"#
        );
    }

    #[test]
    fn publish_overhead_covers_the_largest_envelope() -> Result<(), serde_json::Error> {
        let data = RawValue::from_string("0".to_owned())?;
        let msg_id = "x".repeat(switchboard_protocol::client::MAX_MSG_ID_LEN);
        let text = ClientMessage::Publish {
            room: "".into(),
            data: &data,
            id: Some(u64::MAX),
            echo: false,
            msg_id: Some(msg_id.into()),
        }
        .encode();
        assert!(text.len() - 1 <= PUBLISH_OVERHEAD, "{}", text.len());
        Ok(())
    }
}
