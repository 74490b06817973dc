//! The protocol codec on the hot path: decoding a client `publish`, encoding the `message`
//! every member receives. Run: `cargo bench -p switchboard-protocol --bench codec`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::value::RawValue;
use switchboard_protocol::ServerMessage;
use switchboard_protocol::client::decode;

fn codec(c: &mut Criterion) {
    let publish =
        r#"{"type":"publish","room":"chat:lobby","data":{"text":"hello, world","n":42},"id":17}"#;
    c.bench_function("decode_publish", |b| {
        b.iter(|| black_box(decode(black_box(publish)).unwrap()));
    });
    let data = RawValue::from_string(r#"{"text":"hello, world","n":42}"#.to_owned()).unwrap();
    c.bench_function("encode_message", |b| {
        b.iter(|| {
            black_box(
                ServerMessage::Message {
                    room: "chat:lobby",
                    from: "alice",
                    data: &data,
                    seq: 123_456,
                    ts: 1_700_000_000_000,
                }
                .encode(),
            )
        });
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
