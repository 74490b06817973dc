//! Fan-out: one publish to a room of N members, including every member's writer taking the
//! frame from its outbox. Run: `cargo bench -p switchboard-hub --bench fanout`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use switchboard_hub::{Hub, HubConfig, Session};

fn room_of(hub: &Hub, members: usize) -> (Arc<Session>, Vec<Arc<Session>>) {
    let publisher = hub.connect("publisher".into());
    hub.join(&publisher, "bench", None, None, true, 0).unwrap();
    let subscribers: Vec<_> = (0..members)
        .map(|i| {
            let s = hub.connect(format!("user{i}").into());
            hub.join(&s, "bench", None, None, true, 0).unwrap();
            s
        })
        .collect();
    (publisher, subscribers)
}

fn fanout(c: &mut Criterion) {
    let data = RawValue::from_string(format!("\"{}\"", "x".repeat(62))).unwrap();
    let mut group = c.benchmark_group("publish_64B");
    for members in [1usize, 100, 1_000, 5_000] {
        let hub = Hub::new(HubConfig {
            outbox_bytes: 1 << 30,
            ..HubConfig::default()
        });
        let (publisher, subscribers) = room_of(&hub, members);
        let mut batch = std::collections::VecDeque::with_capacity(4);
        for s in &subscribers {
            let _ = s.outbox().try_batch(&mut batch);
        }
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                hub.publish(&publisher, "bench", &data, false, 1_700_000_000_000, None)
                    .unwrap();
                for s in &subscribers {
                    batch.clear();
                    black_box(s.outbox().try_batch(&mut batch));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
