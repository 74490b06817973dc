//! The node's traffic counters for the operator page, by their Prometheus names
//! (docs/metrics.md, docs/admin.md), and the per-second rates and latency quantiles
//! made from two readings a second apart. Pure: readings and elapsed time are passed in.
//!
//! Where readings come from is [`read`]: the process's metrics recorder (the `/metrics`
//! endpoint). Without one (`metrics.enabled = false`), the operator page shows the figures it
//! gets from the broker and the server state (connections, rooms, members, room messages per
//! second) and leaves these out.

use std::time::Duration;

use serde::Serialize;

use crate::state::AppState;

/// One reading of the counters the operator page charts. Each is cumulative since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    /// `switchboard_messages_published_total`, summed over `source`.
    pub(crate) published: u64,
    /// `switchboard_deliveries_total`.
    pub(crate) deliveries: u64,
    /// `switchboard_bytes_received_total`.
    pub(crate) bytes_received: u64,
    /// `switchboard_bytes_sent_total`.
    pub(crate) bytes_sent: u64,
    /// `switchboard_connections_closed_total{reason="slow_consumer"}`.
    pub(crate) slow_consumer_closes: u64,
    /// `switchboard_delivery_latency_seconds`: (upper bound in seconds, cumulative count), by
    /// ascending bound, `+Inf` last, as Prometheus exposes a histogram.
    pub(crate) latency_buckets: Vec<(f64, u64)>,
}

/// Reads this node's counters from the `/metrics` recorder's text exposition (what a scrape
/// answers); `None` while the process has no recorder (`metrics.enabled = false`, or another
/// recorder installed by the embedding program).
pub(crate) fn read(state: &AppState) -> Option<Counters> {
    crate::metrics::exporter::render(&*state.broker).map(|text| from_exposition(&text))
}

/// The counters in a Prometheus text exposition (what `GET /metrics` answers), read with a
/// real parser. Series absent from the text count 0; label sets are summed, except the close
/// reason, of which only `slow_consumer` is kept.
pub(crate) fn from_exposition(text: &str) -> Counters {
    use prometheus_parse::{Scrape, Value};
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let Ok(scrape) = Scrape::parse(lines) else {
        return Counters::default();
    };
    let mut counters = Counters::default();
    for sample in &scrape.samples {
        let value = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) if sample.metric == names::DELIVERY_LATENCY => {
                for bucket in buckets {
                    let count = as_count(bucket.count);
                    match counters
                        .latency_buckets
                        .iter_mut()
                        .find(|(bound, _)| bound.total_cmp(&bucket.less_than).is_eq())
                    {
                        Some((_, total)) => *total = total.saturating_add(count),
                        None => counters.latency_buckets.push((bucket.less_than, count)),
                    }
                }
                continue;
            }
            _ => continue,
        };
        let count = as_count(value);
        let target = match sample.metric.as_str() {
            names::MESSAGES_PUBLISHED => &mut counters.published,
            names::DELIVERIES => &mut counters.deliveries,
            names::BYTES_RECEIVED => &mut counters.bytes_received,
            names::BYTES_SENT => &mut counters.bytes_sent,
            names::CONNECTIONS_CLOSED if sample.labels.get("reason") == Some("slow_consumer") => {
                &mut counters.slow_consumer_closes
            }
            _ => continue,
        };
        *target = target.saturating_add(count);
    }
    counters.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    counters
}

/// A counter's value as a count (exposed as a float; negative or NaN: 0).
fn as_count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a finite non-negative count, saturating at u64::MAX"
        )]
        let count = value as u64;
        count
    } else {
        0
    }
}

/// The metric names read here (docs/metrics.md).
mod names {
    pub(super) const MESSAGES_PUBLISHED: &str = "switchboard_messages_published_total";
    pub(super) const DELIVERIES: &str = "switchboard_deliveries_total";
    pub(super) const BYTES_RECEIVED: &str = "switchboard_bytes_received_total";
    pub(super) const BYTES_SENT: &str = "switchboard_bytes_sent_total";
    pub(super) const CONNECTIONS_CLOSED: &str = "switchboard_connections_closed_total";
    pub(super) const DELIVERY_LATENCY: &str = "switchboard_delivery_latency_seconds";
}

/// What the operator page charts from two readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Rates {
    /// Messages published per second (in).
    pub(crate) published_per_s: f64,
    /// Messages handed to subscribers' sockets per second (out).
    pub(crate) deliveries_per_s: f64,
    /// Bytes received per second.
    pub(crate) bytes_in_per_s: f64,
    /// Bytes sent per second.
    pub(crate) bytes_out_per_s: f64,
    /// Connections closed as slow consumers per second.
    pub(crate) slow_consumer_cuts_per_s: f64,
    /// Connections closed as slow consumers since start.
    pub(crate) slow_consumer_cuts_total: u64,
    /// Median delivery latency over the interval, in ms (`None`: no delivery sampled).
    pub(crate) latency_p50_ms: Option<f64>,
    /// 99th percentile of delivery latency over the interval, in ms.
    pub(crate) latency_p99_ms: Option<f64>,
}

/// Rates between the readings `before` and `now`, `elapsed` apart. A counter that went down
/// (a restarted recorder) counts from 0.
pub(crate) fn rates(before: &Counters, now: &Counters, elapsed: Duration) -> Rates {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let per_s = |before: u64, now: u64| {
        let delta = if now >= before { now - before } else { now };
        delta as f64 / seconds
    };
    let interval = bucket_deltas(&before.latency_buckets, &now.latency_buckets);
    let to_ms = |seconds: f64| seconds * 1000.0;
    Rates {
        published_per_s: per_s(before.published, now.published),
        deliveries_per_s: per_s(before.deliveries, now.deliveries),
        bytes_in_per_s: per_s(before.bytes_received, now.bytes_received),
        bytes_out_per_s: per_s(before.bytes_sent, now.bytes_sent),
        slow_consumer_cuts_per_s: per_s(before.slow_consumer_closes, now.slow_consumer_closes),
        slow_consumer_cuts_total: now.slow_consumer_closes,
        latency_p50_ms: quantile(&interval, 0.5).map(to_ms),
        latency_p99_ms: quantile(&interval, 0.99).map(to_ms),
    }
}

/// The interval's histogram: `now`'s cumulative counts minus `before`'s, bucket by bucket
/// (`now` alone when the bounds differ).
fn bucket_deltas(before: &[(f64, u64)], now: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let same_bounds = before.len() == now.len()
        && before
            .iter()
            .zip(now)
            .all(|((a, _), (b, _))| a.total_cmp(b).is_eq());
    if !same_bounds {
        return now.to_vec();
    }
    now.iter()
        .zip(before)
        .map(|(&(bound, count), &(_, earlier))| (bound, count.saturating_sub(earlier)))
        .collect()
}

/// The `q` quantile of a cumulative histogram, interpolated linearly inside its bucket as
/// Prometheus's `histogram_quantile` does; the highest finite bound when it falls in `+Inf`.
/// `None` when the histogram is empty.
pub(crate) fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = (count - lower.1) as f64;
            let fraction = if in_bucket > 0.0 {
                (rank - lower.1 as f64) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(counts: &[u64]) -> Vec<(f64, u64)> {
        [0.001, 0.005, 0.01, f64::INFINITY]
            .into_iter()
            .zip(counts.iter().copied())
            .collect()
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        // 100 samples: 50 under 1 ms, 40 in 1-5 ms, 10 in 5-10 ms.
        let histogram = buckets(&[50, 90, 100, 100]);
        assert_eq!(quantile(&histogram, 0.5), Some(0.001));
        let p99 = quantile(&histogram, 0.99).unwrap();
        assert!((p99 - 0.0095).abs() < 1e-9, "{p99}");
        let p70 = quantile(&histogram, 0.7).unwrap();
        assert!((p70 - 0.003).abs() < 1e-9, "{p70}");
        assert_eq!(quantile(&buckets(&[0, 0, 0, 0]), 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
        // Beyond the last finite bound: that bound.
        assert_eq!(quantile(&buckets(&[0, 0, 0, 5]), 0.99), Some(0.01));
    }

    #[test]
    fn rates_are_deltas_per_second_and_latency_is_the_intervals() {
        let before = Counters {
            published: 100,
            deliveries: 1_000,
            bytes_received: 10_000,
            bytes_sent: 50_000,
            slow_consumer_closes: 1,
            latency_buckets: buckets(&[1_000, 1_000, 1_000, 1_000]),
        };
        let now = Counters {
            published: 300,
            deliveries: 3_000,
            bytes_received: 30_000,
            bytes_sent: 150_000,
            slow_consumer_closes: 3,
            // This interval: 100 deliveries, all between 5 and 10 ms (the 1,000 older ones,
            // all under 1 ms, must not pull the median down).
            latency_buckets: buckets(&[1_000, 1_000, 1_100, 1_100]),
        };
        let rates = rates(&before, &now, Duration::from_secs(2));
        assert_eq!(rates.published_per_s, 100.0);
        assert_eq!(rates.deliveries_per_s, 1_000.0);
        assert_eq!(rates.bytes_in_per_s, 10_000.0);
        assert_eq!(rates.bytes_out_per_s, 50_000.0);
        assert_eq!(rates.slow_consumer_cuts_per_s, 1.0);
        assert_eq!(rates.slow_consumer_cuts_total, 3);
        let p50 = rates.latency_p50_ms.unwrap();
        assert!((p50 - 7.5).abs() < 1e-9, "{p50}");
    }

    /// What metrics-exporter-prometheus renders for the names this page reads.
    const EXPOSITION: &str = r#"# HELP switchboard_messages_published_total Messages published.
# TYPE switchboard_messages_published_total counter
switchboard_messages_published_total{source="ws"} 120
switchboard_messages_published_total{source="binary"} 5
switchboard_messages_published_total{source="api"} 0
# TYPE switchboard_deliveries_total counter
switchboard_deliveries_total 2400
# TYPE switchboard_bytes_sent_total counter
switchboard_bytes_sent_total 99000
# TYPE switchboard_bytes_received_total counter
switchboard_bytes_received_total 15000
# TYPE switchboard_connections_closed_total counter
switchboard_connections_closed_total{reason="normal"} 7
switchboard_connections_closed_total{reason="slow_consumer"} 2
# TYPE switchboard_delivery_latency_seconds histogram
switchboard_delivery_latency_seconds_bucket{le="0.0005"} 10
switchboard_delivery_latency_seconds_bucket{le="0.001"} 40
switchboard_delivery_latency_seconds_bucket{le="0.0025"} 90
switchboard_delivery_latency_seconds_bucket{le="+Inf"} 100
switchboard_delivery_latency_seconds_sum 0.12
switchboard_delivery_latency_seconds_count 100
# TYPE switchboard_rooms gauge
switchboard_rooms 3
"#;

    #[test]
    fn counters_are_read_from_the_prometheus_exposition_by_name() {
        let counters = from_exposition(EXPOSITION);
        assert_eq!(counters.published, 125);
        assert_eq!(counters.deliveries, 2400);
        assert_eq!(counters.bytes_sent, 99_000);
        assert_eq!(counters.bytes_received, 15_000);
        assert_eq!(counters.slow_consumer_closes, 2);
        assert_eq!(
            counters.latency_buckets,
            [
                (0.0005, 10),
                (0.001, 40),
                (0.0025, 90),
                (f64::INFINITY, 100)
            ]
        );
        let p50 = quantile(&counters.latency_buckets, 0.5).unwrap();
        assert!((p50 - 0.0013).abs() < 1e-9, "{p50}");
        assert_eq!(from_exposition(""), Counters::default());
    }

    #[test]
    fn a_counter_that_went_down_counts_from_zero() {
        let before = Counters {
            published: 500,
            ..Counters::default()
        };
        let now = Counters {
            published: 20,
            ..Counters::default()
        };
        let rates = rates(&before, &now, Duration::from_secs(1));
        assert_eq!(rates.published_per_s, 20.0);
        assert_eq!(rates.latency_p50_ms, None);
    }
}
