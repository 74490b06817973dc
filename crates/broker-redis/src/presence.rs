//! Presence in Redis: each node refreshes its users' entries every `presence_interval` (and
//! reaps the entries of nodes that stopped doing so), and writes removals as users leave.

use std::sync::Arc;

use switchboard_hub::{Departure, EventKind, RoomEvent};
use switchboard_protocol::server::{PresenceEvent, ServerMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::wire::RoomKeys;
use crate::{Shared, millis, new_epoch, now_millis};

impl Shared {
    /// Removes a user's presence on this node.
    pub(crate) async fn leave_presence(
        &self,
        departure: &Departure,
    ) -> Result<(), redis::RedisError> {
        let keys = RoomKeys::new(&self.config.prefix, &departure.room);
        let (_, leave_head) = presence_heads(&departure.room);
        let mut invocation = self.scripts.leave.key(&keys.meta);
        invocation
            .key(&keys.pres)
            .key(&keys.users)
            .arg(&keys.channel)
            .arg(&self.node)
            .arg(departure.user.as_ref())
            .arg(leave_head)
            .arg("-");
        let events: Vec<String> =
            crate::metrics::timed("leave", invocation.invoke_async(&mut self.conn.clone())).await?;
        self.report(&departure.room, &events);
        Ok(())
    }

    /// Hands the presence transitions a script saw (`KIND USER PV` triples, see
    /// `scripts::PRELUDE`) to the event sink, in the script's order.
    pub(crate) fn report(&self, room: &str, events: &[String]) {
        let Some(sink) = &self.config.events else {
            return;
        };
        for event in events.chunks_exact(3) {
            let [kind, user, version] = event else {
                continue;
            };
            let kind = match kind.as_str() {
                "o" => EventKind::RoomOccupied,
                "v" => EventKind::RoomVacated,
                "j" => EventKind::MemberJoined,
                "l" => EventKind::MemberLeft,
                _ => continue,
            };
            let user: Option<Arc<str>> = (!user.is_empty()).then(|| Arc::from(user.as_str()));
            let version = version.parse().unwrap_or(0);
            sink.emit(RoomEvent::presence(kind, room, user.as_ref(), version));
        }
    }

    /// Refreshes this node's presence in every room it has members in, and reaps the entries
    /// of nodes that stopped doing so.
    pub(crate) async fn refresh_presence(&self) {
        for (room, _) in self.relay.rooms() {
            // Read again now: a leave since the list was taken must not be undone.
            let Some(users) = self.relay.users_of(&room) else {
                continue;
            };
            let now = now_millis();
            let keys = RoomKeys::new(&self.config.prefix, &room);
            let policy = self.config.history.policy_for(&room);
            let (join_head, leave_head) = presence_heads(&room);
            let mut invocation = self.scripts.refresh.key(&keys.meta);
            invocation
                .key(&keys.hist)
                .key(&keys.pres)
                .key(&keys.users)
                .arg(&keys.channel)
                .arg(&self.node)
                .arg(now)
                .arg(now.saturating_add(millis(self.config.presence_ttl)))
                .arg(self.keep_ms(policy.ttl))
                .arg(join_head)
                .arg(leave_head)
                .arg(new_epoch());
            for user in &users {
                invocation.arg(user.as_ref());
            }
            let result: Result<Vec<String>, _> =
                crate::metrics::timed("presence", invocation.invoke_async(&mut self.conn.clone()))
                    .await;
            match result {
                Ok(events) => self.report(&room, &events),
                Err(err) => {
                    debug!(room = %room, error = %err, "presence refresh failed");
                    return;
                }
            }
        }
    }
}

/// Refreshes presence every `presence_interval` and writes presence removals as they come.
pub(crate) async fn heartbeat(
    shared: Arc<Shared>,
    mut leaves: mpsc::Receiver<Departure>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.config.presence_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => shared.refresh_presence().await,
            Some(departure) = leaves.recv() => {
                // The user may be back on this node since (a reconnect): its entry stays.
                let back = shared
                    .relay
                    .users_of(&departure.room)
                    .is_some_and(|users| users.contains(&departure.user));
                if back {
                    continue;
                }
                if let Err(err) = shared.leave_presence(&departure).await {
                    debug!(room = %departure.room, error = %err, "presence removal failed; the entry will expire by its TTL");
                }
            }
        }
    }
    // Shutting down: write the removals already queued (each bounded by the command timeout).
    leaves.close();
    while let Ok(departure) = leaves.try_recv() {
        if shared.leave_presence(&departure).await.is_err() {
            break;
        }
    }
}

/// The JSON before the user name of a presence `join` and `leave` frame of `room`
/// (`…"user":`); the scripts append the JSON-encoded user and `}`.
pub(crate) fn presence_heads(room: &str) -> (Vec<u8>, Vec<u8>) {
    let head = |event| {
        let mut frame = ServerMessage::Presence {
            room,
            event,
            user: "",
        }
        .encode()
        .to_vec();
        frame.truncate(frame.len().saturating_sub(3)); // `""}`
        frame
    };
    (head(PresenceEvent::Join), head(PresenceEvent::Leave))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_heads_complete_into_presence_frames() {
        let (join, _) = presence_heads("r");
        let mut frame = join;
        frame.extend_from_slice(b"\"al\\\"ice\"}");
        let value: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(value["type"], "presence");
        assert_eq!(value["event"], "join");
        assert_eq!(value["user"], "al\"ice");
    }
}
