//! Room rights (the `rooms` claim).

use super::*;

/// {"chat:*": ["join","publish","presence"], "news:*": ["join"]}
fn limited_rooms() -> Value {
    json!({"chat:*": ["join", "publish", "presence"], "news:*": ["join"]})
}

/// An HS256 server, a watcher with every right, and `lim` with [`limited_rooms`].
async fn rights_scene() -> (TestServer, Client, Client) {
    let server = TestServer::start(hs256_config()).await;
    let watcher = connect_token(&server, &token("watcher", 60, None), "watcher").await;
    let lim = connect_token(&server, &token("lim", 60, Some(limited_rooms())), "lim").await;
    (server, watcher, lim)
}

#[tokio::test]
async fn the_rooms_claim_allows_joining_matching_rooms_and_forbids_the_others() {
    let (_server, _watcher, mut lim) = rights_scene().await;
    assert_eq!(whoami(&mut lim, "chat:x").await, ["lim"]);
    lim.join("news:x").await;
    for (id, room) in [(5, "other"), (6, "chat"), (7, "chatroom:x"), (8, "xchat:x")] {
        lim.send_json(json!({"type": "join", "room": room, "id": id}))
            .await;
        let error = lim.expect_error("forbidden", Some(id)).await;
        assert!(error["message"].as_str().unwrap().contains(room), "{error}");
    }
    // Invalid names are reported as such, before rights.
    lim.send_json(json!({"type": "join", "room": "a b", "id": 9}))
        .await;
    lim.expect_error("invalid_room", Some(9)).await;
    lim.sync().await;
}

#[tokio::test]
async fn join_only_rights_forbid_publish_typing_and_binary_publish() {
    let (_server, mut watcher, mut lim) = rights_scene().await;
    watcher.join("news:x").await;
    lim.join("news:x").await;
    watcher.expect_presence("news:x", "join", "lim").await;

    lim.send_json(json!({"type": "publish", "room": "news:x", "data": "no", "id": 6}))
        .await;
    lim.expect_error("forbidden", Some(6)).await;
    lim.send_json(json!({"type": "typing", "room": "news:x"}))
        .await;
    lim.expect_error("forbidden", None).await;
    lim.send_binary(encode_client("news:x", b"no")).await;
    lim.expect_error("forbidden", None).await;
    // Rights come before membership: forbidden, not not_joined, in a room it is not in.
    lim.send_json(json!({"type": "publish", "room": "news:y", "data": "no", "id": 7}))
        .await;
    lim.expect_error("forbidden", Some(7)).await;
    lim.send_json(json!({"type": "typing", "room": "news:y"}))
        .await;
    lim.expect_error("forbidden", None).await;
    // Nothing reached the room.
    watcher.sync().await;

    // The same connection may publish where it has the right.
    watcher.join("chat:x").await;
    lim.join("chat:x").await;
    watcher.expect_presence("chat:x", "join", "lim").await;
    lim.publish("chat:x", json!("yes")).await;
    watcher.expect_message("chat:x", "lim", &json!("yes")).await;
    // And receives in the join-only room.
    watcher.publish("news:x", json!("news")).await;
    lim.expect_message("news:x", "watcher", &json!("news"))
        .await;
}

#[tokio::test]
async fn without_the_presence_right_members_and_presence_are_hidden_but_the_user_is_seen() {
    let (server, mut watcher, mut lim) = rights_scene().await;
    watcher.join("news:x").await;
    let joined = lim.join("news:x").await;
    assert_eq!(joined["members"], json!([]), "{joined}");
    watcher.expect_presence("news:x", "join", "lim").await;

    let mut third = connect_token(&server, &token("third", 60, None), "third").await;
    assert_eq!(
        whoami(&mut third, "news:x").await,
        ["lim", "third", "watcher"]
    );
    watcher.expect_presence("news:x", "join", "third").await;
    third.close().await;
    watcher.expect_presence("news:x", "leave", "third").await;
    // lim saw neither the join nor the leave.
    lim.sync().await;

    // With the presence right (chat:*), the same connection sees everyone.
    watcher.join("chat:x").await;
    assert_eq!(whoami(&mut lim, "chat:x").await, ["lim", "watcher"]);
    watcher.expect_presence("chat:x", "join", "lim").await;
}

#[tokio::test]
async fn history_requires_the_join_right() {
    let (_server, mut watcher, mut lim) = rights_scene().await;
    watcher.join("news:x").await;
    watcher.publish("news:x", json!("kept")).await;
    lim.send_json(json!({"type": "history", "room": "other", "id": 3}))
        .await;
    lim.expect_error("forbidden", Some(3)).await;
    // Join right without being a member: allowed.
    lim.send_json(json!({"type": "history", "room": "news:x", "id": 4}))
        .await;
    let history = lim.expect("history").await;
    assert_eq!(history["id"], 4, "{history}");
    assert_eq!(history["messages"][0]["data"], "kept", "{history}");
}
