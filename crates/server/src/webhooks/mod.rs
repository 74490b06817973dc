//! Webhooks: room, presence and message events POSTed to the configured endpoints, signed,
//! at least once, in order per room (docs/webhooks.md).
//!
//! The engines report events through [`switchboard_hub::EventSink`], which [`Webhooks`]
//! implements without blocking: each endpoint has a bounded number of events waiting
//! (`queue_size`; past it the event is dropped, counted and logged) spread over
//! `concurrency` lanes by room, and each lane delivers its events one after the other,
//! retrying with backoff, so the events of one room reach the endpoint in the order they
//! happened. Every lane is a task of the [`Webhooks`]' tracker; [`Webhooks::shutdown`]
//! delivers what is queued within `drain_timeout`, then drops the rest.

mod body;
mod settings;
mod sign;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchboard_hub::{EventKind, EventSink, RoomEvent, matches_pattern};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use settings::{WebhookEndpoint, WebhooksConfig};
pub use sign::{SIGNATURE_HEADER, sign, verify};

use body::Envelope;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The counter of webhook events (docs/metrics names: /work/notes/METRICS.md).
const EVENTS_TOTAL: &str = "switchboard_webhook_events_total";
/// The gauge of events waiting, across endpoints.
const QUEUE_GAUGE: &str = "switchboard_webhook_queue_events";
/// Most bytes of a receiver's answer read (and thrown away, so the connection is reused).
const MAX_ANSWER: usize = 64 * 1024;

/// Delivery counts since start, across endpoints (the same as the metric).
#[derive(Debug, Default)]
pub struct WebhookStats {
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

impl WebhookStats {
    /// Events delivered (a 2xx answer).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Attempts that failed and were retried.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Events dropped: queue full, attempts exhausted, or still queued at the drain deadline.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn count(&self, kind: EventKind, result: &'static str, n: u64) {
        let field = match result {
            "delivered" => &self.delivered,
            "retried" => &self.retried,
            _ => &self.dropped,
        };
        field.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(EVENTS_TOTAL, "event" => kind.name(), "result" => result).increment(n);
    }
}

/// Delivery settings shared by the lanes.
#[derive(Debug)]
struct Delivery {
    max_attempts: u32,
    retry_initial: Duration,
    retry_max: Duration,
    timeout: Duration,
    client: HttpsClient,
    stats: Arc<WebhookStats>,
}

/// One receiver.
#[derive(Debug)]
struct Endpoint {
    url: http::Uri,
    secret: Vec<u8>,
    /// Which [`EventKind`]s it takes, by their index in [`EventKind::ALL`].
    events: [bool; 5],
    rooms: Vec<String>,
    lanes: Vec<mpsc::UnboundedSender<Arc<Envelope>>>,
    /// Events queued or in delivery; bounded by `capacity` (this is what bounds the lanes'
    /// channels).
    pending: AtomicUsize,
    capacity: usize,
    /// Drops not yet logged, and when the last drop was logged (ms): drops are logged at
    /// most once a second per endpoint, with their count.
    unlogged_drops: AtomicU64,
    last_drop_log: AtomicU64,
}

impl Endpoint {
    fn wants(&self, kind: EventKind, room: &str) -> bool {
        let index = EventKind::ALL.iter().position(|k| *k == kind);
        index.is_some_and(|i| self.events.get(i).copied().unwrap_or(false))
            && self
                .rooms
                .iter()
                .any(|pattern| matches_pattern(pattern, room))
    }

    fn lane_of(&self, room: &str) -> Option<&mpsc::UnboundedSender<Arc<Envelope>>> {
        let n = u64::try_from(self.lanes.len().max(1)).unwrap_or(1);
        let index = usize::try_from(LANE_HASH.hash_one(room) % n).unwrap_or(0);
        self.lanes.get(index)
    }

    fn dropped(&self, stats: &WebhookStats, kind: EventKind, room: &str, why: &'static str) {
        stats.count(kind, "dropped", 1);
        self.unlogged_drops.fetch_add(1, Ordering::Relaxed);
        let now = body::now_millis();
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let dropped = self.unlogged_drops.swap(0, Ordering::Relaxed);
            warn!(
                url = %self.url,
                dropped,
                reason = why,
                last_event = kind.name(),
                last_room = room,
                queue_size = self.capacity,
                "webhook events dropped"
            );
        }
    }
}

/// A fixed hasher: a room's lane must not change while the process runs (any seed works).
static LANE_HASH: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
    std::hash::BuildHasherDefault::new();

/// The webhook dispatcher: the engines' event sink and the delivery tasks.
#[derive(Debug)]
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
    /// Whether some endpoint takes `message.published` (and for which rooms).
    messages: bool,
    closed: AtomicBool,
    stats: Arc<WebhookStats>,
    tracker: TaskTracker,
    /// Lanes finish what is queued, then stop.
    drain: CancellationToken,
    /// Lanes stop now (the drain deadline passed).
    stop: CancellationToken,
    drain_timeout: Duration,
}

/// Why webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The system's TLS setup failed.
    #[error("cannot set up TLS for webhooks")]
    Tls(#[source] tokio_rustls::rustls::Error),
}

impl Webhooks {
    /// Starts one delivery task per lane of each endpoint; `None` when no endpoint is
    /// configured. Call it inside the runtime.
    pub fn start(config: &WebhooksConfig) -> Result<Option<Arc<Self>>, WebhookError> {
        if config.endpoints.is_empty() {
            return Ok(None);
        }
        let stats = Arc::new(WebhookStats::default());
        let delivery = Arc::new(Delivery {
            max_attempts: config.max_attempts,
            retry_initial: config.retry_initial,
            retry_max: config.retry_max,
            timeout: config.timeout,
            client: client()?,
            stats: stats.clone(),
        });
        let tracker = TaskTracker::new();
        let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
        let mut endpoints = Vec::new();
        for settings in &config.endpoints {
            // Validated: an http(s) URL with an authority.
            let Ok(url) = settings.url.parse::<http::Uri>() else {
                continue;
            };
            let mut events = [false; 5];
            for (slot, kind) in events.iter_mut().zip(EventKind::ALL) {
                *slot = settings.events.iter().any(|name| name == kind.name());
            }
            let mut lanes = Vec::new();
            let mut receivers = Vec::new();
            for _ in 0..config.concurrency.max(1) {
                let (tx, rx) = mpsc::unbounded_channel();
                lanes.push(tx);
                receivers.push(rx);
            }
            let endpoint = Arc::new(Endpoint {
                url,
                secret: settings.secret.as_bytes().to_vec(),
                events,
                rooms: settings.rooms.clone(),
                lanes,
                pending: AtomicUsize::new(0),
                capacity: config.queue_size,
                unlogged_drops: AtomicU64::new(0),
                last_drop_log: AtomicU64::new(0),
            });
            for rx in receivers {
                tracker.spawn(lane(
                    endpoint.clone(),
                    rx,
                    delivery.clone(),
                    drain.clone(),
                    stop.clone(),
                ));
            }
            info!(url = %endpoint.url, events = ?settings.events, rooms = ?settings.rooms, "webhook endpoint");
            endpoints.push(endpoint);
        }
        let messages = endpoints
            .iter()
            .any(|e| e.events.last().copied().unwrap_or(false));
        Ok(Some(Arc::new(Self {
            endpoints,
            messages,
            closed: AtomicBool::new(false),
            stats,
            tracker,
            drain,
            stop,
            drain_timeout: config.drain_timeout,
        })))
    }

    /// The engines' event sink of `webhooks` (`None`: events go nowhere): give it to the
    /// engine, and the dispatcher to the server ([`Server::with_webhooks`]).
    ///
    /// [`Server::with_webhooks`]: crate::Server::with_webhooks
    pub fn events(webhooks: &Option<Arc<Self>>) -> switchboard_hub::Events {
        webhooks
            .clone()
            .map(|webhooks| webhooks as Arc<dyn EventSink>)
    }

    /// Delivery counts.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Refuses new events, delivers the queued ones for at most `drain_timeout`, then drops
    /// (counts and logs) what is left and returns once every task has ended.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.drain.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            self.stop.cancel();
            self.tracker.wait().await;
        }
    }
}

impl Drop for Webhooks {
    /// The lanes stop with the dispatcher (after `shutdown`, they have already).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EventSink for Webhooks {
    fn wants_messages(&self, room: &str) -> bool {
        self.messages
            && self
                .endpoints
                .iter()
                .any(|e| e.wants(EventKind::MessagePublished, room))
    }

    fn emit(&self, event: RoomEvent) {
        let mut envelope: Option<Arc<Envelope>> = None;
        for endpoint in &self.endpoints {
            if !endpoint.wants(event.kind, &event.room) {
                continue;
            }
            if self.closed.load(Ordering::Acquire) {
                endpoint.dropped(&self.stats, event.kind, &event.room, "shutting down");
                continue;
            }
            if endpoint.pending.fetch_add(1, Ordering::AcqRel) >= endpoint.capacity {
                endpoint.pending.fetch_sub(1, Ordering::AcqRel);
                endpoint.dropped(&self.stats, event.kind, &event.room, "queue full");
                continue;
            }
            // One id and one body for every endpoint: the same event.
            let shared = envelope
                .get_or_insert_with(|| Arc::new(Envelope::new(event.clone())))
                .clone();
            let sent = endpoint
                .lane_of(&event.room)
                .is_some_and(|lane| lane.send(shared).is_ok());
            if sent {
                metrics::gauge!(QUEUE_GAUGE).increment(1.0);
            } else {
                endpoint.pending.fetch_sub(1, Ordering::AcqRel);
                endpoint.dropped(&self.stats, event.kind, &event.room, "shutting down");
            }
        }
    }
}

/// An HTTP/1.1 client for http and https URLs (rustls, the Mozilla roots of webpki-roots).
fn client() -> Result<HttpsClient, WebhookError> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(WebhookError::Tls)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        // Receivers often sit behind proxies that close idle connections after 60 s.
        .pool_idle_timeout(Duration::from_secs(50))
        .build(connector))
}

/// One lane of an endpoint: its events one after the other, each until delivered or given
/// up, so a room's events (always on the same lane) arrive in order.
async fn lane(
    endpoint: Arc<Endpoint>,
    mut events: mpsc::UnboundedReceiver<Arc<Envelope>>,
    delivery: Arc<Delivery>,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let envelope = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = events.recv() => match next {
                Some(envelope) => envelope,
                None => break,
            },
            () = drain.cancelled() => break,
        };
        let delivered = deliver(&endpoint, &envelope, &delivery, &stop).await;
        endpoint.pending.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(QUEUE_GAUGE).decrement(1.0);
        if !delivered && stop.is_cancelled() {
            endpoint.dropped(
                &delivery.stats,
                envelope.event.kind,
                &envelope.event.room,
                "drain deadline",
            );
            break;
        }
    }
    // Stopped: what is still queued is dropped, counted and logged.
    events.close();
    while let Ok(envelope) = events.try_recv() {
        endpoint.pending.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(QUEUE_GAUGE).decrement(1.0);
        endpoint.dropped(
            &delivery.stats,
            envelope.event.kind,
            &envelope.event.room,
            "drain deadline",
        );
    }
}

/// Attempts one event until a 2xx answer, `max_attempts`, or `stop`. Returns whether it was
/// delivered.
async fn deliver(
    endpoint: &Endpoint,
    envelope: &Envelope,
    delivery: &Delivery,
    stop: &CancellationToken,
) -> bool {
    let kind = envelope.event.kind;
    let body = envelope.body();
    for attempt in 1..=delivery.max_attempts {
        let outcome = tokio::select! {
            () = stop.cancelled() => return false,
            outcome = tokio::time::timeout(delivery.timeout, post(endpoint, envelope, &body, attempt, &delivery.client)) => outcome,
        };
        let failure = match outcome {
            Ok(Ok(status)) if status.is_success() => {
                delivery.stats.count(kind, "delivered", 1);
                return true;
            }
            Ok(Ok(status)) => format!("answered {status}"),
            Ok(Err(err)) => err,
            Err(_) => format!("no answer within {} ms", delivery.timeout.as_millis()),
        };
        if attempt == delivery.max_attempts {
            warn!(url = %endpoint.url, id = %envelope.id, event = kind.name(), room = %envelope.event.room, attempts = attempt, error = %failure, "webhook event given up");
            endpoint.dropped(
                &delivery.stats,
                kind,
                &envelope.event.room,
                "attempts exhausted",
            );
            return false;
        }
        delivery.stats.count(kind, "retried", 1);
        let wait = backoff(
            delivery.retry_initial,
            delivery.retry_max,
            attempt,
            fastrand::f64(),
        );
        debug!(url = %endpoint.url, id = %envelope.id, attempt, error = %failure, wait_ms = wait.as_millis(), "webhook attempt failed; retrying");
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
    }
    false
}

/// One POST; the answer's status (its body is read, bounded, and thrown away).
async fn post(
    endpoint: &Endpoint,
    envelope: &Envelope,
    body: &Bytes,
    attempt: u32,
    client: &HttpsClient,
) -> Result<http::StatusCode, String> {
    let timestamp = body::now_millis() / 1_000;
    let signature = sign(&endpoint.secret, timestamp, body);
    let request = http::Request::post(endpoint.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("switchboard/", env!("CARGO_PKG_VERSION")),
        )
        .header(SIGNATURE_HEADER, signature)
        .header("switchboard-event-id", &*envelope.id)
        .header("switchboard-event-type", envelope.event.kind.name())
        .header("switchboard-attempt", attempt)
        .body(Full::new(body.clone()))
        .map_err(|err| err.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    let status = response.status();
    let _ = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await;
    Ok(status)
}

/// The wait before retry number `attempt` (1 = after the first failure): exponential from
/// `initial`, capped at `max`, with "equal jitter" (half fixed, half random by `random` in
/// [0, 1)), so that endpoints coming back are not hit by every node at once yet a retry never
/// comes at once.
fn backoff(initial: Duration, max: Duration, attempt: u32, random: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let cap = initial.saturating_mul(1u32 << exponent).min(max);
    let half = cap / 2;
    half + half.mul_f64(random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (initial, max) = (Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(backoff(initial, max, 1, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(initial, max, 1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(initial, max, 3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(initial, max, 20, 1.0), max);
        assert_eq!(backoff(initial, max, 40, 0.0), max / 2, "no overflow");
    }
}
