// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! permessage-deflate (RFC 7692) over real sockets: negotiation answers, a room message
//! compressed once and sent as the same bytes to every member that negotiated deflate (plain
//! to the others), compressed publishes inflated, and the bounds on inflation (a zip bomb gets
//! 1009, bad data 1007). Clients are the vendored codec's client with RSV1 allowed; the test
//! compresses and inflates with flate2 itself.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use http::{HeaderValue, header};
use serde_json::{Value, json};
use switchboard_server::{CompressionMode, Config};
use testkit::{Client, RECV_TIMEOUT, TestServer};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_websockets::{ClientBuilder, Limits, Message, Payload};

const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Connects to `path` offering `offer`; returns the client and the server's extension answer.
async fn connect_offering(
    server: &TestServer,
    path: &str,
    name: &str,
    offer: &str,
) -> (Client, Option<String>) {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (ws, response) = timeout(
        RECV_TIMEOUT,
        ClientBuilder::new()
            .uri(&server.url(path))
            .unwrap()
            .limits(Limits::default().allow_compressed(true))
            .add_header(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(offer).unwrap(),
            )
            .unwrap()
            .connect_on(tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = response
        .headers()
        .get(header::SEC_WEBSOCKET_EXTENSIONS)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        Client {
            ws,
            name: name.to_owned(),
        },
        answer,
    )
}

/// A server with the default configuration and `/echo`.
async fn server() -> TestServer {
    TestServer::start(Config {
        echo_endpoint: true,
        ..Config::default()
    })
    .await
}

fn deflate(data: &[u8]) -> Bytes {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let before = compress.total_in() as usize;
        compress
            .compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if compress.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    Bytes::from(out)
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut inflater = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(inflater.total_in() as usize, input.len());
    out
}

/// A message of a few KiB of repetitive JSON (compresses well).
fn ticker() -> Value {
    let rows: Vec<Value> = (0..40)
        .map(|i| json!({"symbol": format!("SYM{i}"), "bid": 100.25 + f64::from(i), "ask": 100.5 + f64::from(i), "volume": 12_000 + i}))
        .collect();
    json!({"rows": rows})
}

#[tokio::test]
async fn answers_offers_with_both_no_context_takeover_flags() {
    let server = server().await;
    let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    for (offer, answer) in [
        (CHROMIUM_OFFER, Some(both.to_owned())),
        ("permessage-deflate", Some(both.to_owned())),
        (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            Some(format!("{both}; server_max_window_bits=12")),
        ),
        ("permessage-deflate; bogus", None),
    ] {
        let (client, got) = connect_offering(&server, "/ws?user=a", "a", offer).await;
        assert_eq!(got, answer, "offer {offer}");
        drop(client);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn room_message_is_compressed_once_for_deflate_members_and_plain_for_others() {
    let server = server().await;
    let (mut alice, answer) =
        connect_offering(&server, "/ws?user=alice", "alice", CHROMIUM_OFFER).await;
    assert!(answer.is_some());
    let (mut bob, _) = connect_offering(&server, "/ws?user=bob", "bob", CHROMIUM_OFFER).await;
    let mut carol = Client::connect(&server, "carol").await;
    alice.join("r").await;
    bob.join("r").await;
    carol.join("r").await;
    // The joins' presence events (short: sent uncompressed).
    alice
        .expect_presence_of("r", "join", &["bob", "carol"])
        .await;
    bob.expect_presence("r", "join", "carol").await;

    let data = ticker();
    carol.publish("r", data.clone()).await;
    let mut packed = Vec::new();
    for member in [&mut alice, &mut bob] {
        let frame = member.recv().await;
        assert!(
            frame.is_text() && frame.is_compressed(),
            "{}: {frame:?}",
            member.name
        );
        let payload = Bytes::from(frame.into_payload());
        let message: Value = serde_json::from_slice(&inflate(&payload)).unwrap();
        assert_eq!(message["type"], "message");
        assert_eq!(message["data"], data);
        packed.push(payload);
    }
    // The same compressed bytes for both (compressed once), and much smaller than the JSON.
    assert_eq!(packed[0], packed[1]);
    let plain_len = serde_json::to_vec(&data).unwrap().len();
    assert!(
        packed[0].len() * 3 < plain_len,
        "{} vs {plain_len}",
        packed[0].len()
    );

    // A compressed publish from alice reaches carol (no deflate) as plain JSON.
    let publish = json!({"type": "publish", "room": "r", "data": data, "id": 7});
    let packed = deflate(&serde_json::to_vec(&publish).unwrap());
    alice
        .send(Message::text(Payload::from(packed)).into_compressed())
        .await;
    carol.expect_message("r", "alice", &data).await;
    drop((alice, bob, carol));
    server.shutdown().await;
}

#[tokio::test]
async fn echo_round_trips_compressed_messages_of_every_size() {
    let server = server().await;
    let (mut client, answer) = connect_offering(&server, "/echo", "echo", CHROMIUM_OFFER).await;
    assert!(answer.is_some());
    for size in [0, 10, 300, 70_000, 1 << 20] {
        let text: String = (0..size)
            .map(|i| char::from(b'a' + (i % 7) as u8))
            .collect();
        client
            .send(Message::text(Payload::from(deflate(text.as_bytes()))).into_compressed())
            .await;
        let echoed = client.recv().await;
        let body = if echoed.is_compressed() {
            inflate(echoed.as_payload())
        } else {
            echoed.as_payload().to_vec()
        };
        assert_eq!(body.len(), size);
        assert_eq!(body, text.as_bytes());
        // Over the threshold and compressible: sent compressed.
        assert_eq!(echoed.is_compressed(), size >= 300, "size {size}");
    }
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn zip_bomb_gets_1009_without_inflating_it() {
    let server = server().await;
    let (mut client, _) =
        connect_offering(&server, "/ws?user=bomber", "bomber", CHROMIUM_OFFER).await;
    // 16 MiB of spaces inside a JSON string: ~16 KiB compressed, far under the 64 KiB frame
    // limit, 256 times over the 64 KiB message limit once inflated.
    let mut bomb = b"{\"type\":\"publish\",\"room\":\"r\",\"data\":\"".to_vec();
    bomb.resize(bomb.len() + (16 << 20), b' ');
    bomb.extend_from_slice(b"\"}");
    let packed = deflate(&bomb);
    assert!(packed.len() < 64 * 1024, "{}", packed.len());
    client
        .send(Message::text(Payload::from(packed)).into_compressed())
        .await;
    assert_eq!(client.expect_close().await.0, 1009);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_compressed_data_and_invalid_utf8_get_1007() {
    let server = server().await;
    let (mut client, _) = connect_offering(&server, "/echo", "garbage", CHROMIUM_OFFER).await;
    client
        .send(
            Message::binary(Payload::from(Bytes::from_static(b"\xff\xff\xff\xff\xff")))
                .into_compressed(),
        )
        .await;
    assert_eq!(client.expect_close().await.0, 1007);

    let (mut client, _) = connect_offering(&server, "/echo", "latin1", CHROMIUM_OFFER).await;
    client
        .send(Message::text(Payload::from(deflate(b"caf\xe9 au lait"))).into_compressed())
        .await;
    assert_eq!(client.expect_close().await.0, 1007);
    server.shutdown().await;
}

#[tokio::test]
async fn compression_off_declines_and_rsv1_is_a_protocol_error() {
    let server = TestServer::start(Config {
        compression: CompressionMode::Off,
        echo_endpoint: true,
        ..Config::default()
    })
    .await;
    let (mut client, answer) = connect_offering(&server, "/echo", "off", CHROMIUM_OFFER).await;
    assert_eq!(answer, None);
    client
        .send(Message::text(Payload::from(deflate(b"hello hello hello"))).into_compressed())
        .await;
    assert_eq!(client.expect_close().await.0, 1002);
    server.shutdown().await;
}
