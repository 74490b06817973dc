//! Once a second: this node's snapshot (connections, rooms, rates, busiest rooms), shared with
//! the other nodes through the broker, and the cluster view `/admin/api/stats` answers with.
//! One task per node, only while the operator page is enabled; every viewer reads the same
//! view, so viewers cost the node nothing but the HTTP request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::counters::{self, Counters, Rates};
use super::rooms::{RoomFigures, RoomSampler};
use crate::state::AppState;

/// How often snapshots are taken (and the page refreshes).
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// The operator page's state on this node.
#[derive(Debug)]
pub(crate) struct AdminState {
    /// This node's name in the cluster view: `HOST:PORT`.
    pub(crate) node: String,
    started: Instant,
    /// The latest `/admin/api/stats` body.
    view: Mutex<Arc<str>>,
}

impl AdminState {
    /// `port`: the port the server listens on (names the node beside the host name).
    pub(crate) fn new(port: u16) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let node = format!("{host}:{port}");
        let view = empty_view(&node);
        Self {
            node,
            started: Instant::now(),
            view: Mutex::new(view),
        }
    }

    /// The latest `/admin/api/stats` body.
    pub(crate) fn view(&self) -> Arc<str> {
        self.view.lock().clone()
    }
}

fn empty_view(node: &str) -> Arc<str> {
    serde_json::to_string(&View {
        node,
        interval_ms: 1000,
        cluster_error: None,
        nodes: Vec::new(),
    })
    .unwrap_or_default()
    .into()
}

/// One node's snapshot, as `/admin/api/stats` lists it (docs/admin.md).
#[derive(Debug, Serialize)]
struct NodeSnapshot<'a> {
    node: &'a str,
    /// `memory` or `redis`.
    broker: &'static str,
    /// When it was taken, ms since the Unix epoch (the node's clock).
    time_ms: u64,
    uptime_s: u64,
    /// Open WebSocket connections (`/ws` and `/echo`).
    connections: usize,
    /// Sessions the broker has registered.
    sessions: usize,
    #[serde(flatten)]
    rooms: RoomFigures,
    /// Rates from the traffic counters; `null` without a metrics recorder.
    metrics: Option<Rates>,
}

/// The `/admin/api/stats` body.
#[derive(Debug, Serialize)]
struct View<'a> {
    /// The node that answered.
    node: &'a str,
    interval_ms: u64,
    /// Why other nodes' snapshots are missing (the broker is unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_error: Option<String>,
    /// Every live node's latest snapshot, by name.
    nodes: Vec<Box<RawValue>>,
}

/// Takes a snapshot every [`INTERVAL`] until `shutdown`.
pub(crate) async fn run(state: Arc<AppState>, admin: Arc<AdminState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(node = %admin.node, "operator page on: /admin and GET /admin/api/stats (admin key set)");
    let mut rooms = RoomSampler::default();
    let mut last: Option<(Instant, Option<Counters>)> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let elapsed = last.as_ref().map_or(INTERVAL, |(at, _)| now - *at);
        let reading = counters::read(&state);
        let rates = match (&last, &reading) {
            (Some((_, Some(before))), Some(current)) => {
                Some(counters::rates(before, current, elapsed))
            }
            _ => None,
        };
        last = Some((now, reading));
        let mut visit = rooms.visit();
        state.broker.visit_rooms(&mut |room| visit.room(room));
        let figures = visit.finish(elapsed);
        let stats = state.broker.stats();
        let snapshot = NodeSnapshot {
            node: &admin.node,
            broker: state.broker.kind(),
            time_ms: crate::session::now_millis(),
            uptime_s: admin.started.elapsed().as_secs(),
            connections: state
                .config
                .limits
                .max_connections
                .saturating_sub(state.connections.available_permits()),
            sessions: stats.sessions,
            rooms: figures,
            metrics: rates,
        };
        let Ok(own) = serde_json::to_string(&snapshot) else {
            continue;
        };
        let shared = tokio::select! {
            () = shutdown.cancelled() => return,
            shared = state.broker.share_node_stats(&admin.node, own.clone()) => shared,
        };
        let (snapshots, cluster_error) = match shared {
            Ok(snapshots) => (snapshots, None),
            Err(err) => {
                debug!(error = %err, "admin: cannot share node stats");
                (vec![own], Some(err.to_string()))
            }
        };
        let mut nodes: Vec<Box<RawValue>> = snapshots
            .into_iter()
            .filter_map(|text| RawValue::from_string(text).ok())
            .collect();
        nodes.sort_by(|a, b| a.get().cmp(b.get()));
        let view = View {
            node: &admin.node,
            interval_ms: u64::try_from(INTERVAL.as_millis()).unwrap_or(1000),
            cluster_error,
            nodes,
        };
        if let Ok(body) = serde_json::to_string(&view) {
            *admin.view.lock() = body.into();
        }
    }
}
