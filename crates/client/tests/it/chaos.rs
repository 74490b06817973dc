// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Chaos over real sockets: connections cut without a close frame while a publisher keeps
//! going, and a crowd reconnecting after a restart.

use std::time::Duration;

use serde_json::json;
use switchboard_client::{Backoff, Client, Event};
use switchboard_server::Config;
use testkit::TestServer;
use testkit::sdk::{EVENT_TIMEOUT, Proxy, builder, connect};
use tokio::time::{Instant, timeout};

/// A server whose limits do not get in the way of a load test.
fn unthrottled() -> Config {
    let mut config = Config::default();
    config.limits.messages_per_second = 1_000_000;
    config.limits.message_burst = 1_000_000;
    config.limits.connections_per_ip_per_second = 1_000_000;
    config.limits.connection_burst_per_ip = 1_000_000;
    // Thousands of clients from one loopback address (the per-address cap is 1,000 by default).
    config.limits.max_connections_per_ip = Some(1_000_000);
    config.history.size = 10_000;
    config
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A publisher sends MESSAGES at a steady pace while the subscriber's connection is cut
/// abruptly again and again. The subscriber's application must see every message exactly
/// once and in order, recovering each time (never a resync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_exactly_once_in_order_across_repeated_abrupt_cuts() {
    const MESSAGES: u64 = 10_000;
    const CUT_EVERY: Duration = Duration::from_millis(80);
    let server = TestServer::start(unthrottled()).await;
    let proxy = Proxy::start(server.addr()).await;
    let (publisher, _publisher_events) = connect(builder(&server.url("/ws"), "publisher")).await;
    let (subscriber, mut events) = connect(builder(&proxy.url(), "subscriber")).await;
    publisher.join("chaos").await.unwrap();
    subscriber.join("chaos").await.unwrap();

    let publishing = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(500));
        for n in 1..=MESSAGES {
            tick.tick().await;
            assert_eq!(publisher.publish("chaos", json!(n)).await.unwrap(), n);
        }
        publisher
    });
    let cutting = tokio::spawn(async move {
        let mut cuts = 0u32;
        loop {
            tokio::time::sleep(CUT_EVERY.mul_f64(0.5 + fastrand::f64())).await;
            proxy.cut_all();
            cuts += 1;
            if cuts >= 1_000 {
                return (proxy, cuts);
            }
        }
    });

    let mut seen = Vec::with_capacity(MESSAGES as usize);
    let (mut disconnects, mut recoveries) = (0u32, Vec::new());
    // (when the connection came back, the seq the re-join said to catch up to)
    let mut catching_up: Option<(Instant, Option<u64>)> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.last() != Some(&MESSAGES) {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} messages", seen.len()))
            .expect("events");
        match event {
            Event::Disconnected { .. } => disconnects += 1,
            Event::Connected => catching_up = Some((Instant::now(), None)),
            Event::Joined { seq, recovered, .. } => {
                assert_ne!(recovered, Some(false), "recovery must succeed");
                if let Some((_, target)) = &mut catching_up {
                    *target = Some(seq);
                }
            }
            Event::Resync { .. } => panic!("a resync: messages were lost"),
            Event::Message { seq, data, .. } => {
                assert_eq!(data, json!(seq));
                seen.push(seq);
                if let Some((since, Some(target))) = catching_up
                    && seq >= target
                {
                    recoveries.push(since.elapsed());
                    catching_up = None;
                }
            }
            _ => {}
        }
    }
    cutting.abort();
    let publisher = publishing.await.unwrap();
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    assert_eq!(seen, expected, "every message exactly once, in order");
    assert!(
        disconnects >= 10,
        "only {disconnects} disconnects: the test did not cut enough"
    );
    recoveries.sort();
    println!(
        "{MESSAGES} messages, {disconnects} abrupt disconnects, {} recoveries measured: \
         catch-up after reconnect p50 {:?} p99 {:?} max {:?}",
        recoveries.len(),
        percentile(&recoveries, 0.5),
        percentile(&recoveries, 0.99),
        recoveries.last().copied().unwrap_or_default(),
    );
    publisher.close().await;
    subscriber.close().await;
}

/// 2,000 clients lose their server at once (it restarts) and come back. With full jitter,
/// the first reconnection delays must be spread uniformly over [0, base], not bunched: the
/// test checks the distribution of the delays the clients chose, and that all of them got
/// back in and re-joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_reconnect_spread_by_full_jitter() {
    const CLIENTS: usize = 2_000;
    const BUCKETS: usize = 10;
    let base = Duration::from_millis(500);
    let first = TestServer::start(unthrottled()).await;
    let second = TestServer::start(unthrottled()).await;
    let proxy = Proxy::start(first.addr()).await;
    let url = proxy.url();

    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 100 {
        let batch = (0..100).map(|i| {
            let url = url.clone();
            async move {
                let backoff = Backoff {
                    base,
                    factor: 2.0,
                    cap: Duration::from_secs(30),
                };
                let user = format!("u{}", chunk * 100 + i);
                let (client, mut events): (Client, _) = timeout(
                    EVENT_TIMEOUT,
                    Client::builder(url).user(user).backoff(backoff).connect(),
                )
                .await
                .unwrap()
                .unwrap();
                assert_eq!(events.next().await, Some(Event::Connected));
                client.join("crowd").await.unwrap();
                (client, events)
            }
        });
        clients.extend(futures_util::future::join_all(batch).await);
    }

    // Each client's first reconnection delay, once it is back in the room.
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|(client, mut events)| {
            tokio::spawn(async move {
                let mut delay = None;
                loop {
                    match timeout(Duration::from_secs(30), events.next()).await {
                        Ok(Some(Event::Reconnecting { attempt, delay: d })) if delay.is_none() => {
                            assert_eq!(attempt, 1, "the first attempt after the loss");
                            delay = Some(d);
                        }
                        Ok(Some(Event::Joined { recovered, .. })) if delay.is_some() => {
                            assert_eq!(recovered, Some(false), "a restarted server has new epochs");
                            return (client, delay);
                        }
                        Ok(Some(_)) => {}
                        other => panic!("no reconnection: {other:?}"),
                    }
                }
            })
        })
        .collect();

    // The restart: new connections go to the second server, the first closes everyone (1001).
    proxy.set_target(second.addr());
    first.shutdown().await;

    let restarted = Instant::now();
    let mut delays = Vec::with_capacity(CLIENTS);
    let mut back = Vec::with_capacity(CLIENTS);
    for watcher in watchers {
        let (client, delay) = watcher.await.unwrap();
        delays.push(delay.unwrap());
        back.push(client);
    }
    assert_eq!(delays.len(), CLIENTS, "every client came back");
    assert!(
        delays.iter().all(|d| *d <= base),
        "full jitter stays within [0, base]"
    );
    let mut histogram = [0usize; BUCKETS];
    for d in &delays {
        let bucket = (d.as_secs_f64() / base.as_secs_f64() * BUCKETS as f64) as usize;
        histogram[bucket.min(BUCKETS - 1)] += 1;
    }
    // Uniform: 200 expected per bucket; ±80 is about six standard deviations.
    let expected = CLIENTS / BUCKETS;
    for (i, count) in histogram.iter().enumerate() {
        assert!(
            count.abs_diff(expected) <= 80,
            "bucket {i} has {count} of {CLIENTS}: not uniform {histogram:?}"
        );
    }
    let mean = delays.iter().map(Duration::as_secs_f64).sum::<f64>() / CLIENTS as f64;
    assert!(
        (mean / base.as_secs_f64() - 0.5).abs() < 0.05,
        "mean delay {mean:.3}s is not half the base"
    );
    println!(
        "{CLIENTS} clients back and re-joined {:?} after the restart; first-attempt delays over \
         {BUCKETS} buckets of {:?}: {histogram:?}",
        restarted.elapsed(),
        base / 10
    );
    futures_util::future::join_all(back.iter().map(Client::close)).await;
    second.shutdown().await;
}
