//! Prometheus metrics (docs/metrics.md): the names, the exporter, and the hooks the transport
//! calls — each a one-line call site in the code it measures.
//!
//! - [`exporter`]: installs the `metrics` facade's Prometheus recorder once per process
//!   (histogram buckets set: no summaries) and renders `GET /metrics`.
//! - [`counters`]: per-thread counters for what every delivery or message touches, summed
//!   when scraped: no shared atomic per delivery.
//! - [`delivery`]: the writer's per-batch accounting and the sampled publish → socket latency.
//! - [`conn`]: connections (gauge, opened, closed by reason, the closing log line), handshake
//!   refusals, protocol errors, room memberships.
//! - [`http`]: the `/metrics` handler and the optional separate listener.

pub(crate) mod conn;
pub(crate) mod counters;
pub(crate) mod delivery;
pub(crate) mod exporter;
pub(crate) mod http;

use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) const CONNECTIONS: &str = "switchboard_connections";
pub(crate) const CONNECTIONS_OPENED: &str = "switchboard_connections_opened_total";
pub(crate) const CONNECTIONS_CLOSED: &str = "switchboard_connections_closed_total";
pub(crate) const HANDSHAKES_REJECTED: &str = "switchboard_handshakes_rejected_total";
pub(crate) const ROOMS: &str = "switchboard_rooms";
pub(crate) const ROOM_MEMBERS: &str = "switchboard_room_members";
pub(crate) const MESSAGES_PUBLISHED: &str = "switchboard_messages_published_total";
pub(crate) const DELIVERIES: &str = "switchboard_deliveries_total";
pub(crate) const BYTES_SENT: &str = "switchboard_bytes_sent_total";
pub(crate) const BYTES_RECEIVED: &str = "switchboard_bytes_received_total";
pub(crate) const DELIVERY_LATENCY: &str = "switchboard_delivery_latency_seconds";
pub(crate) const ERRORS: &str = "switchboard_errors_total";
pub(crate) const RATE_LIMITED: &str = "switchboard_rate_limited_total";
pub(crate) const RECOVERIES: &str = "switchboard_recoveries_total";
pub(crate) const REPLAYED: &str = "switchboard_replayed_messages_total";
pub(crate) const BROKER_UP: &str = "switchboard_broker_up";
pub(crate) const BROKER_COMMAND_DURATION: &str = "switchboard_broker_command_duration_seconds";
pub(crate) const BROKER_RECONNECTS: &str = "switchboard_broker_reconnects_total";
pub(crate) const BUILD_INFO: &str = "switchboard_build_info";

/// Buckets of every histogram, in seconds (Prometheus histograms, never summaries: they add
/// up across nodes). From 0.5 ms (a delivery on an idle node) to 10 s (a stalled consumer).
pub(crate) const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Set once a recorder is installed: until then (and with `metrics.enabled = false`) the hooks
/// return at once.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are being collected in this process.
#[inline]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}
