//! Resyncs: a room that missed frames (a gap in its stream, a new epoch, the subscriber's
//! reconnection) asks for a snapshot from its last delivered seq; one worker performs them,
//! retrying while Redis is unreachable.

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{Position, ResyncRequest};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{Shared, now_millis};

impl Shared {
    /// Queues a resync (replacing an older one of the same room).
    pub(crate) fn request_resync(&self, request: ResyncRequest) {
        let mut queue = self.resyncs.lock();
        queue.retain(|queued| queued.room != request.room);
        queue.push(request);
        drop(queue);
        self.resync_ready.notify_one();
    }
}

/// Performs the resyncs that rooms ask for (after a gap or a reconnection), retrying while
/// Redis is unreachable.
pub(crate) async fn resync_worker(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let batch: Vec<ResyncRequest> = std::mem::take(&mut *shared.resyncs.lock());
        if batch.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.resync_ready.notified() => continue,
            }
        }
        let mut failed = false;
        for request in batch {
            let since = Position {
                seq: request.since,
                epoch: &request.epoch,
            };
            let budget = switchboard_hub::replay_budget(shared.config.outbox_bytes);
            // This node's users of the room are listed again in the snapshot's members (and
            // their presence restored) even when Redis lost its data (F17).
            let local = shared.relay.users_of(&request.room).unwrap_or_default();
            let snapshot = shared.snapshot(
                &request.room,
                Some(since),
                None,
                &local,
                "-",
                now_millis(),
                budget,
            );
            match shared
                .bounded(crate::metrics::timed("resync", snapshot))
                .await
            {
                Ok(snapshot) => {
                    debug!(room = %request.room, since = request.since, seq = snapshot.seq, recovered = snapshot.replay.is_some(), "room resynced");
                    shared.relay.finish_resync(&request, &snapshot);
                }
                Err(_) => {
                    failed = true;
                    let mut queue = shared.resyncs.lock();
                    if !queue.iter().any(|queued| queued.room == request.room) {
                        queue.push(request);
                    }
                }
            }
        }
        if failed {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
