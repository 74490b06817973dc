//! The Prometheus recorder: installed once per process (the `metrics` facade has one global
//! recorder), every metric described and, where its label values are known, registered at
//! zero so that it is there from the first scrape.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchboard_hub::{Broker, BrokerHealth};
use tracing::warn;

use super::*;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the recorder (once per process); `false` when another recorder was installed
/// first by the embedding program (then `/metrics` answers 503 and nothing is counted here).
pub(crate) fn install() -> bool {
    HANDLE
        .get_or_init(|| {
            let recorder = match PrometheusBuilder::new().set_buckets(BUCKETS) {
                Ok(builder) => builder.build_recorder(),
                Err(err) => {
                    warn!(error = %err, "metrics: cannot configure the Prometheus recorder");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("metrics: another metrics recorder is installed; /metrics is not served");
                return None;
            }
            ENABLED.store(true, Ordering::Relaxed);
            describe();
            Some(handle)
        })
        .is_some()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        CONNECTIONS,
        "Open WebSocket connections, by transport (ws, echo)."
    );
    describe_counter!(
        CONNECTIONS_OPENED,
        "WebSocket connections upgraded, by transport."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "WebSocket connections ended, by reason."
    );
    describe_counter!(
        HANDSHAKES_REJECTED,
        "WebSocket upgrades refused, by HTTP status."
    );
    describe_gauge!(
        ROOMS,
        "Rooms on this node (with members, or with history kept)."
    );
    describe_gauge!(ROOM_MEMBERS, "Room memberships of this node's connections.");
    describe_counter!(
        MESSAGES_PUBLISHED,
        "Messages published through this node, by source (ws, binary, api)."
    );
    describe_counter!(
        DELIVERIES,
        "Room messages written to subscribers' sockets (live and replayed)."
    );
    describe_counter!(
        BYTES_SENT,
        Unit::Bytes,
        "Bytes written to WebSocket connections."
    );
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes of messages received on WebSocket connections."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from a message's sequencing (on any node) to its frame being handed to the subscriber's socket; sampled."
    );
    describe_counter!(
        ERRORS,
        "Requests answered with an error, by protocol error code."
    );
    describe_counter!(
        RATE_LIMITED,
        "Messages dropped by a connection's rate limit."
    );
    describe_counter!(
        RECOVERIES,
        "Joins with `since`, by result (recovered, not_recovered)."
    );
    describe_counter!(REPLAYED, "Messages replayed to recovering joiners.");
    describe_gauge!(BROKER_UP, "1 while the broker can serve room operations.");
    describe_histogram!(
        BROKER_COMMAND_DURATION,
        Unit::Seconds,
        "Round trips to the Redis broker, by operation."
    );
    describe_counter!(
        BROKER_RECONNECTS,
        "Times the Redis Pub/Sub connection was re-established."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");

    // Known label values at zero: a dashboard sees every series from the first scrape.
    for transport in ["ws", "echo"] {
        metrics::gauge!(CONNECTIONS, "transport" => transport).increment(0.0);
        metrics::counter!(CONNECTIONS_OPENED, "transport" => transport).absolute(0);
    }
    for reason in conn::CLOSE_REASONS {
        metrics::counter!(CONNECTIONS_CLOSED, "reason" => *reason).absolute(0);
    }
    for status in ["400", "401", "403", "426", "429", "503"] {
        metrics::counter!(HANDSHAKES_REJECTED, "status" => status).absolute(0);
    }
    for code in &conn::ERROR_CODES {
        metrics::counter!(ERRORS, "code" => code.as_str()).absolute(0);
    }
    for result in ["recovered", "not_recovered"] {
        metrics::counter!(RECOVERIES, "result" => result).absolute(0);
    }
    for op in [
        "publish", "join", "leave", "history", "members", "presence", "resync", "ping",
    ] {
        let _ = metrics::histogram!(BROKER_COMMAND_DURATION, "op" => op);
    }
    let _ = metrics::histogram!(DELIVERY_LATENCY);
    metrics::gauge!(ROOM_MEMBERS).increment(0.0);
    metrics::counter!(RATE_LIMITED).absolute(0);
    metrics::counter!(REPLAYED).absolute(0);
    metrics::counter!(BROKER_RECONNECTS).absolute(0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let process = PROCESS.get_or_init(metrics_process::Collector::default);
    process.describe();
}

/// The text exposition, with the values read at scrape time refreshed first.
pub(crate) fn render(broker: &dyn Broker) -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    counters::publish();
    let stats = broker.stats();
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    metrics::gauge!(ROOMS).set(stats.rooms as f64);
    let up = matches!(broker.health(), BrokerHealth::Ready);
    metrics::gauge!(BROKER_UP).set(if up { 1.0 } else { 0.0 });
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    Some(handle.render())
}

/// Periodic housekeeping of the recorder (drains histogram samples into their buckets).
pub(crate) fn upkeep() {
    if let Some(Some(handle)) = HANDLE.get() {
        handle.run_upkeep();
    }
}
