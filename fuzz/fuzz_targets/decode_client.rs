//! Every decoder a client can reach with one frame, on arbitrary bytes.
//!
//! - Text: `client::decode` must not panic; a decoded message must agree with a plain JSON
//!   parse of the same text (type, room, id, data, ...), and its `data` must be valid JSON
//!   within the nesting bound (`parse_json`: a former finding is tolerated only with
//!   `SWITCHBOARD_FUZZ_LENIENT` set). An error that names a request id must have read it.
//!   Re-encoded as a client would send it (`ClientMessage::encode`), a decoded message must
//!   decode again to the same message.
//! - Binary: `binary::decode_client` / `decode_server` must not panic, and what they decode
//!   must re-encode to the very same bytes. A server envelope spliced into a `history` reply
//!   must still give valid JSON, which a client decodes (`owned::decode`) to the envelope's
//!   fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_fuzz::{depth, is_json_array, parse_json, strict};
use switchboard_protocol::ErrorCode;
use switchboard_protocol::binary::{self, ServerBinary};
use switchboard_protocol::client::{self, ClientMessage, MAX_DATA_DEPTH, MAX_MSG_ID_LEN};
use switchboard_protocol::names::{MAX_ROOM_LEN, MAX_USER_LEN, validate_room, validate_user};
use switchboard_protocol::owned::{self, OwnedServerMessage};
use switchboard_protocol::server::{HistoryItem, encode_history};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        check_text(text);
    }
    check_binary(bytes);
});

fn check_text(text: &str) {
    // serde_json's own parse (recursion limit 128) as the reference. `None` when it refuses
    // the text, which the typed decoder may still accept (it skips unknown fields without
    // building them, e.g. a number out of f64 range or nesting past 128).
    let reference: Option<Value> = serde_json::from_str(text).ok();
    let _ = validate_room(text);
    let _ = validate_user(text);

    let decoded = client::decode(text);
    if is_json_array(text) && !strict() {
        return; // known finding: arrays decode positionally (see `is_json_array`)
    }
    let message = match decoded {
        Ok(message) => message,
        Err(err) => {
            assert!(!err.message.is_empty());
            if let (Some(id), Some(reference)) = (err.id, &reference) {
                // The id is only reported when it was read as an integer from an object.
                assert_eq!(reference.get("id").and_then(Value::as_u64), Some(id));
            }
            if err.code == ErrorCode::BadJson && reference.is_some() {
                // Valid JSON is only "bad" for a publish whose data nests too deep.
                assert!(
                    err.message.contains("nested deeper"),
                    "{err:?} for {text:?}"
                );
            }
            return;
        }
    };
    // A message is one JSON object.
    assert!(
        reference.as_ref().is_none_or(Value::is_object),
        "{text:?} decoded"
    );
    let object = reference.as_ref().and_then(Value::as_object);
    if let Some(object) = object {
        assert_eq!(
            object.get("type").and_then(Value::as_str),
            Some(message.kind())
        );
        if let Some(id) = message.id() {
            assert_eq!(object.get("id").and_then(Value::as_u64), Some(id));
        }
    }
    let field = |name: &str| object.and_then(|o| o.get(name));
    let same_string = |name: &str, decoded: &str| {
        if let Some(v) = field(name) {
            assert_eq!(v.as_str(), Some(decoded), "{name} of {text:?}");
        }
    };
    match &message {
        ClientMessage::Join { room, since, .. } => {
            same_string("room", room);
            if let (Some(since), Some(v)) = (since, field("since")) {
                assert_eq!(v.get("seq").and_then(Value::as_u64), Some(since.seq));
                assert_eq!(v.get("epoch").and_then(Value::as_str), Some(&*since.epoch));
            }
        }
        ClientMessage::Leave { room, .. }
        | ClientMessage::History { room, .. }
        | ClientMessage::Typing { room } => same_string("room", room),
        ClientMessage::Publish {
            room, data, msg_id, ..
        } => {
            same_string("room", room);
            if let Some(msg_id) = msg_id {
                assert!((1..=MAX_MSG_ID_LEN).contains(&msg_id.len()), "{msg_id:?}");
                same_string("msg_id", msg_id);
            }
            // The relayed payload: valid JSON that every receiver can parse with serde_json's
            // default recursion limit (128), since the decoder bounds it to MAX_DATA_DEPTH.
            let parsed: Value = match parse_json(data.get().as_bytes()) {
                Ok(parsed) => parsed,
                Err(err) => panic!("publish data {:?} is not valid JSON: {err}", data.get()),
            };
            assert!(depth(&parsed) <= MAX_DATA_DEPTH);
            if let Some(v) = field("data") {
                // (Only reached when the whole text parsed strictly, so `parsed` is exact.)
                assert_eq!(v, &parsed);
            }
        }
        ClientMessage::Members { room, after, .. } => {
            same_string("room", room);
            if let Some(after) = after {
                same_string("after", after);
            }
        }
        ClientMessage::Refresh { token, .. } => same_string("token", token),
        ClientMessage::Ping { .. } => {}
    }
    // `decode` accepts any room string (even ""); `validate_room`, which the server and the
    // hub apply before use, must only pass what the hub and the binary envelope can carry.
    if let ClientMessage::Join { room, .. }
    | ClientMessage::Leave { room, .. }
    | ClientMessage::Publish { room, .. }
    | ClientMessage::History { room, .. }
    | ClientMessage::Typing { room } = &message
        && validate_room(room).is_ok()
    {
        assert!(!room.is_empty() && room.len() <= MAX_ROOM_LEN && room.is_ascii());
    }
    // The contract both ways: what a client encodes for this message, the server decodes to
    // the same message.
    let encoded = message.encode();
    match client::decode(&encoded) {
        Ok(again) => assert_eq!(again.encode(), encoded, "{text:?}"),
        Err(err) => panic!("{encoded:?} (from {text:?}) does not decode: {err}"),
    }
}

fn check_binary(bytes: &[u8]) {
    if let Ok(envelope) = binary::decode_client(bytes) {
        assert!(!envelope.room.is_empty());
        assert_eq!(
            &binary::encode_client(envelope.room, envelope.payload)[..],
            bytes
        );
    }
    if let Ok(message) = binary::decode_server(bytes) {
        if message.room.len() <= MAX_ROOM_LEN && message.from.len() <= MAX_USER_LEN {
            let again = ServerBinary { ..message }.encode();
            assert_eq!(&again[..], bytes);
        }
        // Replayed in a history reply as base64: the reply must be valid JSON, with the
        // envelope's fields intact.
        let reply = encode_history("r", Some(1), 2, "e", [HistoryItem::Binary(bytes)]);
        let reply: Value = match parse_json(&reply) {
            Ok(reply) => reply,
            Err(err) => panic!("history reply is not JSON: {err}"),
        };
        let record = &reply["messages"][0];
        assert_eq!(record["room"].as_str(), Some(message.room));
        assert_eq!(record["from"].as_str(), Some(message.from));
        assert_eq!(record["seq"].as_u64(), Some(message.seq));
        assert_eq!(record["ts"].as_u64(), Some(message.ts));
        match owned::decode(&reply.to_string()) {
            Ok(OwnedServerMessage::History { messages, .. }) => match messages.as_slice() {
                [entry] => {
                    assert_eq!(
                        (
                            entry.room.as_str(),
                            entry.from.as_str(),
                            entry.seq,
                            entry.ts
                        ),
                        (message.room, message.from, message.seq, message.ts)
                    );
                    assert!(entry.binary.is_some());
                }
                other => panic!("one binary message in, {} out", other.len()),
            },
            other => panic!("a history reply decodes as {other:?}"),
        }
    }
}
