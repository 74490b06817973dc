// Tests fail loudly by design.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Fan-out must not allocate per recipient: a publish to a room of N members encodes the
//! message once and hands every member a reference-counted handle to the same bytes. This
//! test counts the heap allocations of publishes (and of every member's writer taking its
//! frame) with a counting global allocator.

use std::alloc::System;
use std::sync::Arc;

use serde_json::value::RawValue;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use switchboard_hub::{Hub, HubConfig, Session};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn room(hub: &Hub, members: usize) -> (Arc<Session>, Vec<Arc<Session>>) {
    let publisher = hub.connect("publisher".into());
    hub.join(&publisher, "r", None, None, true, 0).unwrap();
    let subscribers = (0..members)
        .map(|i| {
            let s = hub.connect(format!("user{i}").into());
            hub.join(&s, "r", None, None, true, 0).unwrap();
            s
        })
        .collect();
    (publisher, subscribers)
}

#[test]
fn fan_out_does_not_allocate_per_member() {
    const MEMBERS: usize = 1_000;
    const PUBLISHES: usize = 50;
    let hub = Hub::new(HubConfig::default());
    let (publisher, subscribers) = room(&hub, MEMBERS);
    let data = RawValue::from_string(
        "\"64 bytes of payload, more or less, for a realistic frame\"".into(),
    )
    .unwrap();
    let mut batch = std::collections::VecDeque::with_capacity(PUBLISHES + 2);
    let drain = |batch: &mut std::collections::VecDeque<_>| {
        for s in &subscribers {
            batch.clear();
            let _ = s.outbox().try_batch(batch);
        }
    };
    // Warm up: queues, history and buffers reach their steady size. The first drain also
    // takes the burst of presence events from everyone joining, after which each outbox
    // drops its oversized queue (idle connections keep no large buffers).
    drain(&mut batch);
    for _ in 0..PUBLISHES {
        hub.publish(&publisher, "r", &data, false, 1, None).unwrap();
    }
    drain(&mut batch);
    let region = Region::new(GLOBAL);
    for _ in 0..PUBLISHES {
        hub.publish(&publisher, "r", &data, false, 1, None).unwrap();
    }
    drain(&mut batch);
    let stats = region.change();
    let allocations = stats.allocations + stats.reallocations;
    let deliveries = PUBLISHES * MEMBERS;
    println!("{allocations} allocations for {PUBLISHES} publishes, {deliveries} deliveries");
    // Per publish: the encoding buffer and its growth (a few). Per delivery: none.
    assert!(
        allocations <= PUBLISHES * 4,
        "{allocations} allocations for {deliveries} deliveries: fan-out allocates per member"
    );
}
