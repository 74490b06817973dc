// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Bad input over real sockets: every refused request gets the documented error code (and
//! its id when readable), the connection stays open and usable, another member of the same
//! room is unaffected, and only the max-violations-th error closes the connection
//! (docs/protocol.md section 6, 7.3).

use bytes::Bytes;
use serde_json::json;
use switchboard_protocol::binary::encode_client;
use switchboard_server::Config;
use testkit::{Client, TestServer};
use tokio_websockets::Message;

/// A server with an offender (eve) and a bystander (bob), both in `room`.
struct Scene {
    _server: TestServer,
    eve: Client,
    bob: Client,
}

impl Scene {
    async fn new() -> Self {
        let server = TestServer::default_config().await;
        let mut eve = Client::connect(&server, "eve").await;
        let mut bob = Client::connect(&server, "bob").await;
        eve.join("room").await;
        bob.join("room").await;
        eve.expect_presence("room", "join", "bob").await;
        Self {
            _server: server,
            eve,
            bob,
        }
    }

    /// After an error: eve's connection still answers and can publish, and bob received
    /// nothing but that message (no error, no presence leave, no close).
    async fn still_fine(&mut self) {
        self.eve.sync().await;
        let seq = self.eve.publish("room", json!({"still": "fine"})).await;
        assert_eq!(
            self.bob
                .expect_message("room", "eve", &json!({"still": "fine"}))
                .await,
            seq
        );
        self.bob.sync().await;
    }
}

/// Sends `frame` from eve, expects `error` `code` with exactly `id`, then checks that eve
/// and bob carry on.
async fn rejected(frame: Message, code: &str, id: Option<u64>) {
    let mut scene = Scene::new().await;
    scene.eve.send(frame).await;
    scene.eve.expect_error(code, id).await;
    scene.still_fine().await;
}

async fn rejected_text(text: &str, code: &str, id: Option<u64>) {
    rejected(Message::text(text.to_owned()), code, id).await;
}

#[tokio::test]
async fn malformed_json_is_bad_json_without_id() {
    for text in [
        r#"{"type":"ping","id":1"#,
        "{not json",
        "",
        r#"{"type":"ping","id":1}}"#,
    ] {
        rejected_text(text, "bad_json", None).await;
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_invalid_message() {
    for text in ["[1,2]", r#""ping""#, "42", "null", "true"] {
        rejected_text(text, "invalid_message", None).await;
    }
}

#[tokio::test]
async fn missing_or_mistyped_type_is_invalid_message_with_id() {
    rejected_text(r#"{"room":"room","id":3}"#, "invalid_message", Some(3)).await;
    rejected_text(r#"{"type":5,"id":4}"#, "invalid_message", Some(4)).await;
    rejected_text(r#"{"type":null,"id":4}"#, "invalid_message", Some(4)).await;
}

#[tokio::test]
async fn unknown_type_is_unknown_type_with_id() {
    rejected_text(r#"{"type":"dance","id":5}"#, "unknown_type", Some(5)).await;
    rejected_text(r#"{"type":"JOIN","room":"room"}"#, "unknown_type", None).await;
}

#[tokio::test]
async fn missing_room_is_invalid_message_with_id() {
    for kind in ["join", "leave", "publish"] {
        let text = format!(r#"{{"type":"{kind}","data":1,"id":6}}"#);
        rejected_text(&text, "invalid_message", Some(6)).await;
    }
    rejected_text(r#"{"type":"typing"}"#, "invalid_message", None).await;
    // null counts as absent.
    rejected_text(
        r#"{"type":"join","room":null,"id":6}"#,
        "invalid_message",
        Some(6),
    )
    .await;
}

#[tokio::test]
async fn room_of_the_wrong_type_is_invalid_message_with_id() {
    for room in ["7", "[\"room\"]", "{\"name\":\"room\"}", "true"] {
        let text = format!(r#"{{"type":"join","room":{room},"id":7}}"#);
        rejected_text(&text, "invalid_message", Some(7)).await;
    }
}

#[tokio::test]
async fn publish_without_data_or_with_bad_echo_is_invalid_message_with_id() {
    rejected_text(
        r#"{"type":"publish","room":"room","id":8}"#,
        "invalid_message",
        Some(8),
    )
    .await;
    rejected_text(
        r#"{"type":"publish","room":"room","data":1,"echo":"yes","id":9}"#,
        "invalid_message",
        Some(9),
    )
    .await;
}

#[tokio::test]
async fn mistyped_id_is_invalid_message_without_id_and_not_carried_out() {
    for id in [
        r#""7""#,
        "-1",
        "1.5",
        "1.0",
        "1e3",
        "true",
        "[1]",
        "18446744073709551616",
    ] {
        let mut scene = Scene::new().await;
        scene
            .eve
            .send_text(&format!(r#"{{"type":"join","room":"other","id":{id}}}"#))
            .await;
        scene.eve.expect_error("invalid_message", None).await;
        // The join did not happen.
        scene
            .eve
            .send_json(json!({"type": "leave", "room": "other", "id": 2}))
            .await;
        scene.eve.expect_error("not_joined", Some(2)).await;
        scene.still_fine().await;
    }
}

#[tokio::test]
async fn largest_id_is_accepted() {
    let mut scene = Scene::new().await;
    scene
        .eve
        .send_text(r#"{"type":"ping","id":18446744073709551615}"#)
        .await;
    assert_eq!(scene.eve.expect("pong").await["id"], u64::MAX);
    scene.still_fine().await;
}

#[tokio::test]
async fn invalid_room_names_are_invalid_room() {
    let too_long = "a".repeat(129);
    for room in ["", too_long.as_str(), "a b", "caf\u{e9}", "a#b", "a\u{0}b"] {
        let join = json!({"type": "join", "room": room, "id": 11});
        rejected(Message::text(join.to_string()), "invalid_room", Some(11)).await;
        let publish = json!({"type": "publish", "room": room, "data": 1, "id": 12});
        rejected(Message::text(publish.to_string()), "invalid_room", Some(12)).await;
    }
    // 128 bytes of every allowed character class is fine.
    let longest = format!("{}{}", "aZ0_-.:@/=+", "b".repeat(117));
    assert_eq!(longest.len(), 128);
    let mut scene = Scene::new().await;
    scene.eve.join(&longest).await;
    // Escapes are decoded before the check: "\u0062" is "b".
    scene
        .eve
        .send_text(r#"{"type":"join","room":"a\u0062","id":13}"#)
        .await;
    let joined = scene.eve.expect("joined").await;
    assert_eq!((&joined["room"], &joined["id"]), (&json!("ab"), &json!(13)));
    scene.still_fine().await;
}

#[tokio::test]
async fn requests_for_a_room_not_joined_are_not_joined() {
    rejected(
        Message::text(
            json!({"type": "publish", "room": "elsewhere", "data": 1, "id": 21}).to_string(),
        ),
        "not_joined",
        Some(21),
    )
    .await;
    rejected(
        Message::text(json!({"type": "leave", "room": "elsewhere", "id": 22}).to_string()),
        "not_joined",
        Some(22),
    )
    .await;
    rejected(
        Message::text(json!({"type": "typing", "room": "elsewhere"}).to_string()),
        "not_joined",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_failed_publish_takes_no_seq() {
    let mut scene = Scene::new().await;
    scene
        .eve
        .send_json(json!({"type": "publish", "room": "elsewhere", "data": 1, "id": 1}))
        .await;
    scene.eve.expect_error("not_joined", Some(1)).await;
    scene
        .eve
        .send_text(&format!(
            r#"{{"type":"publish","room":"room","data":{},"id":2}}"#,
            "[".repeat(65) + &"]".repeat(65)
        ))
        .await;
    scene.eve.expect_error("bad_json", Some(2)).await;
    assert_eq!(scene.eve.publish("room", json!("first")).await, 1);
    assert_eq!(
        scene
            .bob
            .expect_message("room", "eve", &json!("first"))
            .await,
        1
    );
}

#[tokio::test]
async fn data_nested_deeper_than_64_is_bad_json_and_64_is_fine() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    for deep in [nested(65), objects(65), nested(1000)] {
        let text = format!(r#"{{"type":"publish","room":"room","data":{deep},"id":31}}"#);
        rejected_text(&text, "bad_json", Some(31)).await;
    }

    let mut scene = Scene::new().await;
    for (i, data) in [nested(64), objects(64)].into_iter().enumerate() {
        let id = 40 + u64::try_from(i).unwrap();
        scene
            .eve
            .send_text(&format!(
                r#"{{"type":"publish","room":"room","data":{data},"id":{id}}}"#
            ))
            .await;
        assert_eq!(scene.eve.expect("ack").await["id"], id);
        let frame = scene.bob.recv().await;
        let text = frame.as_text().expect("text frame");
        assert!(text.contains(&data), "64 levels relayed unchanged: {text}");
    }
    // Brackets inside strings do not count.
    let stringy = format!(r#"["{}"]"#, "[".repeat(100));
    scene
        .eve
        .send_text(&format!(
            r#"{{"type":"publish","room":"room","data":{stringy},"id":50}}"#
        ))
        .await;
    assert_eq!(scene.eve.expect("ack").await["id"], 50);
    let frame = scene.bob.recv().await;
    assert!(frame.as_text().unwrap().contains(&stringy));
}

#[tokio::test]
async fn bad_binary_envelopes_are_invalid_message_without_id() {
    let frames: [&'static [u8]; 4] = [
        b"",                    // empty frame
        b"\x05ab",              // room length past the end of the frame
        b"\x00payload",         // empty room name
        b"\x02\xff\xfepayload", // room bytes not UTF-8
    ];
    for frame in frames {
        rejected(
            Message::binary(Bytes::from_static(frame)),
            "invalid_message",
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn binary_to_a_room_not_joined_or_invalid_is_refused_without_id() {
    rejected(
        Message::binary(encode_client("elsewhere", b"data")),
        "not_joined",
        None,
    )
    .await;
    rejected(
        Message::binary(encode_client("a b", b"data")),
        "invalid_room",
        None,
    )
    .await;
    rejected(
        Message::binary(encode_client(&"a".repeat(129), b"data")),
        "invalid_room",
        None,
    )
    .await;
}

#[tokio::test]
async fn the_tenth_violation_closes_with_1008_and_the_first_nine_do_not() {
    let mut scene = Scene::new().await;
    let bad: [Message; 9] = [
        Message::text("{oops"),
        Message::text("[]"),
        Message::text(r#"{"type":"dance","id":1}"#),
        Message::text(r#"{"type":"join","id":2}"#),
        Message::text(r#"{"type":"join","room":"a b","id":3}"#),
        Message::text(r#"{"type":"publish","room":"elsewhere","data":1,"id":4}"#),
        Message::text(r#"{"type":"ping","id":-1}"#),
        Message::binary(Bytes::from_static(b"")),
        Message::binary(encode_client("elsewhere", b"x")),
    ];
    for frame in bad {
        scene.eve.send(frame).await;
        scene.eve.expect("error").await;
    }
    // Nine violations: still open, still working, bob unaffected.
    scene.still_fine().await;

    scene.eve.send_text(r#"{"type":"dance","id":10}"#).await;
    scene.eve.expect_error("unknown_type", Some(10)).await;
    assert_eq!(
        scene.eve.expect_close().await,
        (1008, "too many protocol errors".to_owned())
    );
    // Closing by the server is a disconnect like any other.
    scene.bob.expect_presence("room", "leave", "eve").await;
}

#[tokio::test]
async fn max_violations_is_configurable() {
    let server = TestServer::start(Config {
        max_violations: 3,
        ..Config::default()
    })
    .await;
    let mut eve = Client::connect(&server, "eve").await;
    for id in 1..=2 {
        eve.send_json(json!({"type": "leave", "room": "nowhere", "id": id}))
            .await;
        eve.expect_error("not_joined", Some(id)).await;
    }
    eve.sync().await;
    eve.send_json(json!({"type": "leave", "room": "nowhere", "id": 3}))
        .await;
    eve.expect_error("not_joined", Some(3)).await;
    assert_eq!(
        eve.expect_close().await,
        (1008, "too many protocol errors".to_owned())
    );
}

#[tokio::test]
async fn errors_are_reported_in_the_documented_order() {
    // JSON syntax, object shape, id, type, fields (including data depth), room, membership.
    let deep = format!(
        r#"{{"type":"publish","room":"a b","data":{}{},"id":4}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    let cases = [
        // A mistyped id beats an unknown type and a bad room: no id in the error.
        (r#"{"type":"dance","id":"x"}"#, "invalid_message", None),
        (
            r#"{"type":"join","room":"a b","id":-1}"#,
            "invalid_message",
            None,
        ),
        // The type beats the fields.
        (
            r#"{"type":"dance","room":5,"id":1}"#,
            "unknown_type",
            Some(1),
        ),
        // Fields beat the room name and membership.
        (
            r#"{"type":"publish","room":"a b","id":2}"#,
            "invalid_message",
            Some(2),
        ),
        (
            r#"{"type":"publish","room":"elsewhere","data":1,"echo":1,"id":3}"#,
            "invalid_message",
            Some(3),
        ),
        // Data depth beats the room name; the room name beats membership.
        (deep.as_str(), "bad_json", Some(4)),
        (
            r#"{"type":"publish","room":"a b","data":1,"id":5}"#,
            "invalid_room",
            Some(5),
        ),
    ];
    let mut scene = Scene::new().await;
    for (text, code, id) in cases {
        scene.eve.send_text(text).await;
        scene.eve.expect_error(code, id).await;
    }
    scene.still_fine().await;
}

#[tokio::test]
async fn typing_errors_never_carry_an_id() {
    // docs/protocol.md 6.2: `error` has no `id` for `typing` requests (typing takes no id),
    // even when the client sends one anyway.
    rejected_text(
        r#"{"type":"typing","room":"elsewhere","id":5}"#,
        "not_joined",
        None,
    )
    .await;
    rejected_text(
        r#"{"type":"typing","room":"a b","id":5}"#,
        "invalid_room",
        None,
    )
    .await;
    rejected_text(r#"{"type":"typing","id":5}"#, "invalid_message", None).await;
    rejected_text(
        r#"{"type":"typing","room":5,"id":5}"#,
        "invalid_message",
        None,
    )
    .await;
}
