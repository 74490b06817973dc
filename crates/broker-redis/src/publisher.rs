//! The node's publish path to Redis: one task sends publishes in the order they were queued,
//! in batches — every publish waiting when a round trip ends goes in the next Redis pipeline.
//! A connection's publishes are queued in the order it sent them, so they are sequenced in that
//! order even while many are on their way (pipelining); and the batch amortizes the round trip
//! over every connection of the node.

use std::sync::Arc;

use redis::{Cmd, RedisError, ServerErrorKind, Value};
use switchboard_hub::{HubError, Published};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Shared;

/// Publishes sent in one pipeline at most.
const BATCH: usize = 512;

/// One queued publish: its `EVALSHA` and who waits for the outcome.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) command: Cmd,
    pub(crate) reply: oneshot::Sender<Result<Published, HubError>>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
    stop: CancellationToken,
) {
    let mut conn = shared.conn.clone();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => 0,
            received = jobs.recv_many(&mut batch, BATCH) => received,
        };
        if received == 0 {
            break;
        }
        let outcomes = send(&shared, &mut conn, &batch).await;
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
    // Stopping: whatever is still queued is refused, not silently dropped.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(HubError::Unavailable(
            "the server is shutting down".to_owned(),
        )));
    }
}

/// Runs one batch as a pipeline; after a Redis restart (scripts flushed: `NOSCRIPT`) loads
/// the script and runs the refused publishes again — when that keeps their order (none after
/// them went through).
async fn send(
    shared: &Shared,
    conn: &mut redis::aio::ConnectionManager,
    batch: &[Job],
) -> Vec<Result<Published, HubError>> {
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut outcomes: Vec<Result<Published, HubError>> = batch
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
        let values: Vec<Value> = match pipe.query_async(conn).await {
            Ok(values) => values,
            Err(err) => {
                let err = shared.failed("publish", &err);
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
                Ok((_epoch, seq, duplicate)) => Ok(Published {
                    seq,
                    duplicate: duplicate == 1,
                }),
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
                    *slot = Err(HubError::Unavailable(
                        "Redis lost its scripts (restart?); not published, retry".to_owned(),
                    ));
                }
            }
            break;
        }
        pending = again;
    }
    outcomes
}
