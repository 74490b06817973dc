//! The Redis engine's metrics, through the `metrics` facade (names: docs/metrics.md): how long
//! its commands take, how often the Pub/Sub link came back. (Whether Redis is reachable,
//! `switchboard_broker_up`, is read from `Broker::health` when `/metrics` is scraped.)

use std::time::Instant;

/// Runs a Redis command (or a pipeline of them) and records how long it took under `op`
/// (`publish`, `join`, `leave`, `history`, `members`, `presence`, `resync`, `ping`). One
/// record per round trip, never per message delivered.
pub(crate) async fn timed<T>(op: &'static str, command: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let result = command.await;
    metrics::histogram!("switchboard_broker_command_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    result
}

/// The Pub/Sub connection was re-established after a loss.
pub(crate) fn reconnected() {
    metrics::counter!("switchboard_broker_reconnects_total").increment(1);
}
