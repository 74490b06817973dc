//! The node's publish path to Redis: one task sends publishes in the order they were queued,
//! in batches — every publish waiting when a round trip ends goes in the next Redis pipeline.
//! A connection's publishes are queued in the order it sent them, so they are sequenced in that
//! order even while many are on their way (pipelining); and the batch amortizes the round trip
//! over every connection of the node.

//!
//! Every publish has a deadline (`redis_timeout` after it was queued) and a [`Fate`] shared
//! with the connection waiting for it. A publish still queued at its deadline is never sent:
//! the connection answers `unavailable` and it is *not* sequenced. A publish already sent
//! when its deadline passes may still be run by Redis (a hung Redis runs what is in its socket
//! when it wakes up): its `unavailable` says so (see docs/protocol.md, `unavailable`).
//! The bytes of queued and sent publishes are counted against the node's publish budget
//! ([`crate::RedisConfig::publish_queue_bytes`]); past it, publishes are refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use redis::{Cmd, RedisError, ServerErrorKind, Value};
use switchboard_hub::{HubError, Published};

/// A publish's outcome: the result and the room's epoch it was sequenced under.
pub(crate) type Sequenced = (Published, String);
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Shared;

/// Publishes sent in one pipeline at most.
const BATCH: usize = 512;

/// Where a queued publish is: decided once, by whichever side gets there first.
#[derive(Debug, Default)]
pub(crate) struct Fate(AtomicU8);

const QUEUED: u8 = 0;
const SENT: u8 = 1;
const ABANDONED: u8 = 2;

impl Fate {
    /// The publish task takes the publish for sending; false if its waiter gave up first.
    fn send(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, SENT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The waiter gives up (deadline): true if the publish will never be sent, false if it
    /// was sent already (its outcome is unknown).
    pub(crate) fn abandon(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Bytes of publishes queued or on their way to Redis, node-wide, against a budget.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes in use now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or `None` when that would pass the limit.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes held in a [`Budget`]; released when dropped (with the job that holds them).
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// One queued publish: its `EVALSHA`, who waits for the outcome, until when, and its bytes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) command: Cmd,
    pub(crate) reply: oneshot::Sender<Result<Sequenced, HubError>>,
    pub(crate) deadline: Instant,
    pub(crate) fate: Arc<Fate>,
    /// Its `message.published` event, when webhooks want it (seq filled in on success).
    pub(crate) event: Option<switchboard_hub::RoomEvent>,
    pub(crate) _bytes: Reservation,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
    stop: CancellationToken,
) {
    let mut conn = shared.conn.clone();
    let mut queued = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    // Set when a pipeline (or another request: `Shared::stalled`) got no answer in time:
    // Redis may be hung, and whatever is written to it now would run when it wakes up, long
    // after its sender was answered. Until Redis answers a PING (behind what hung), nothing
    // more is sent and new requests are refused at once ("not published"): the breaker.
    let mut suspect = false;
    // The publish script is loaded before the first batch: on a fresh Redis, nodes that start
    // publishing at once would each meet `NOSCRIPT`, and the publishes another node's load
    // overtook would be answered `unavailable` (39 of 200 in a 3-node burst in the cluster
    // order test). A Redis that loses its scripts later (restart) is still handled by `send`.
    let invocation = shared.scripts.publish.prepare_invoke();
    let load = invocation.load_async(&mut conn);
    tokio::select! {
        () = stop.cancelled() => {}
        loaded = tokio::time::timeout(shared.config.timeout, load) => match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => debug!(error = %err, "loading the publish script at start failed"),
            Err(_) => debug!("loading the publish script at start timed out"),
        },
    }
    loop {
        if suspect {
            shared.set_stalled(true);
            warn!("redis is not answering; refusing publishes until it answers a PING");
            tokio::select! {
                () = stop.cancelled() => break,
                () = responds(&mut conn) => {}
            }
            shared.set_stalled(false);
            suspect = false;
        }
        let received = tokio::select! {
            () = stop.cancelled() => 0,
            () = shared.probe.notified() => {
                suspect = true;
                continue;
            }
            received = jobs.recv_many(&mut queued, BATCH) => received,
        };
        if received == 0 {
            break;
        }
        // Publishes whose deadline passed while they were queued (behind a hung pipeline)
        // are not sent: they are answered `unavailable`, not published. Those whose waiter
        // gave up already are dropped.
        let now = Instant::now();
        for job in queued.drain(..) {
            if job.deadline <= now && job.fate.abandon() {
                let _ = job
                    .reply
                    .send(Err(not_published("Redis did not take it in time")));
            } else if job.fate.send() {
                batch.push(job);
            }
        }
        if batch.is_empty() {
            continue;
        }
        // The pipeline's own bound: the earliest deadline of the batch, and never more than
        // `redis_timeout` (the connection manager's response timeout is the same).
        let until = batch
            .iter()
            .map(|job| job.deadline)
            .min()
            .unwrap_or(now)
            .max(now + shared.config.timeout / 4);
        let outcomes = match tokio::time::timeout_at(until, send(&shared, &mut conn, &batch)).await
        {
            Ok(outcomes) => outcomes,
            Err(_) => batch
                .iter()
                .map(|_| Err(maybe_published(shared.config.timeout)))
                .collect(),
        };
        suspect = outcomes.iter().any(|outcome| {
            matches!(outcome, Err(HubError::Unavailable(reason)) if reason.contains(MAYBE))
        });
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // Reported here, in the pipeline's order, which is the order of the seqs.
            if let (Some(mut event), Ok((published, _)), Some(sink)) =
                (job.event, &outcome, &shared.config.events)
                && !published.duplicate
            {
                event.version = published.seq;
                sink.emit(event);
            }
            let _ = job.reply.send(outcome);
        }
    }
    // Stopping: whatever is still queued is refused, not silently dropped.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job
            .reply
            .send(Err(not_published("the server is shutting down")));
    }
}

/// Runs one batch as a pipeline; after a Redis restart (scripts flushed: `NOSCRIPT`) loads
/// the script and runs the refused publishes again — when that keeps their order (none after
/// them went through).
async fn send(
    shared: &Shared,
    conn: &mut redis::aio::ConnectionManager,
    batch: &[Job],
) -> Vec<Result<Sequenced, HubError>> {
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut outcomes: Vec<Result<Sequenced, HubError>> = batch
        .iter()
        .map(|_| Err(HubError::Unavailable("not sent".to_owned())))
        .collect();
    let mut pending = all;
    for attempt in 0..2 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &index in &pending {
            if let Some(job) = batch.get(index) {
                pipe.add_command(job.command.clone());
            }
        }
        let values: Vec<Value> =
            match crate::metrics::timed("publish", pipe.query_async(conn)).await {
                Ok(values) => values,
                Err(err) => {
                    shared.failed("publish", &err);
                    // Refused before anything was written: not published. Otherwise (timeout,
                    // connection dropped mid-way) Redis may have run some of them.
                    let err = if err.is_connection_refusal() {
                        not_published(&format!("Redis unreachable ({err})"))
                    } else {
                        maybe_published(shared.config.timeout)
                    };
                    for &index in &pending {
                        if let Some(outcome) = outcomes.get_mut(index) {
                            *outcome = Err(err.clone());
                        }
                    }
                    return outcomes;
                }
            };
        let mut again = Vec::new();
        // Whether a publish after a refused one went through: retrying the refused one
        // would then sequence it after a later publish (another node loaded the script
        // in between), so it is answered `unavailable` instead (the client retries it).
        let mut overtaken = false;
        for (&index, value) in pending.iter().zip(values) {
            if let Value::ServerError(err) = &value
                && err.kind() == Some(ServerErrorKind::NoScript)
            {
                again.push(index);
                continue;
            }
            overtaken |= !again.is_empty();
            let outcome = match redis::from_redis_value::<(String, u64, u8)>(value) {
                Ok((epoch, seq, duplicate)) => Ok((
                    Published {
                        seq,
                        duplicate: duplicate == 1,
                    },
                    epoch,
                )),
                Err(err) => Err(shared.failed("publish", &RedisError::from(err))),
            };
            if let Some(slot) = outcomes.get_mut(index) {
                *slot = outcome;
            }
        }
        if again.is_empty() {
            break;
        }
        if let Err(err) = shared
            .scripts
            .publish
            .prepare_invoke()
            .load_async(conn)
            .await
        {
            warn!(error = %err, "loading the publish script failed");
        }
        if overtaken || attempt == 1 {
            for index in again {
                if let Some(slot) = outcomes.get_mut(index) {
                    *slot = Err(not_published("Redis lost its scripts (restart?)"));
                }
            }
            break;
        }
        pending = again;
    }
    outcomes
}

/// Until Redis answers a PING (retried while the answer is an error other than a refused
/// connection: a refused one means Redis is down, and a publish sent now fails at once, not
/// later).
async fn responds(conn: &mut redis::aio::ConnectionManager) {
    loop {
        match redis::cmd("PING").query_async::<Value>(conn).await {
            Ok(_) => return,
            Err(err) if err.is_connection_refusal() => return,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// What the `unavailable` of a publish whose outcome is unknown says.
const MAYBE: &str = "may have been published";

/// The answer to a publish sent to Redis whose outcome did not come back in time.
pub(crate) fn maybe_published(timeout: std::time::Duration) -> HubError {
    HubError::Unavailable(format!(
        "Redis did not answer within {} ms; the message {MAYBE}: retry it with the same msg_id",
        timeout.as_millis()
    ))
}

/// The answer to a publish that never left this node.
pub(crate) fn not_published(reason: &str) -> HubError {
    HubError::Unavailable(format!("{reason}; the message was not published"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fate_is_decided_once() {
        let fate = Fate::default();
        assert!(fate.send());
        assert!(!fate.abandon(), "sent: its outcome is unknown");
        let fate = Fate::default();
        assert!(fate.abandon());
        assert!(!fate.send(), "abandoned: never sent");
    }

    #[test]
    fn the_budget_refuses_past_its_limit_and_frees_on_drop() {
        let budget = Arc::new(Budget::new(100));
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
