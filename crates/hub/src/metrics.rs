//! The hub's few counters, through the `metrics` facade (names: docs/metrics.md). Only rare
//! events are counted here (a recovering join); deliveries are counted by the writer, once
//! per batch (see [`crate::BatchDone`]).

/// A join: with `since`, it is a recovery attempt; `replayed` is how many messages were
/// queued after `joined` (`None`: history could not serve it).
pub(crate) fn recovery(attempted: bool, replayed: Option<usize>) {
    if !attempted {
        return;
    }
    let result = if replayed.is_some() {
        "recovered"
    } else {
        "not_recovered"
    };
    metrics::counter!("switchboard_recoveries_total", "result" => result).increment(1);
    if let Some(count) = replayed.filter(|n| *n > 0) {
        metrics::counter!("switchboard_replayed_messages_total")
            .increment(u64::try_from(count).unwrap_or(u64::MAX));
    }
}
