//! The [`Broker`] of rooms an [`Engine`] sequences outside this process (Redis): joins
//! (subscribe, then the snapshot), leaves and disconnects (and what they undo in the engine),
//! publishes, `typing`, `history` and `members` replies, and the resync worker — written once
//! here, generic over the engine, on top of this node's rooms ([`Relay`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_protocol::binary::encode_server_parts;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::names::validate_room;
use switchboard_protocol::server::{ServerMessage, encode_message_parts};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::activity::RoomActivity;
use crate::api::{Kick, Payload, RoomsPage, SourcePublish, SourcePublished, Users};
use crate::broker::{Broker, BrokerFuture, BrokerHealth, JoinRequest, PublishRequest};
use crate::engine::{Engine, Message, SnapshotRequest};
use crate::error::HubError;
use crate::hub::HubStats;
use crate::presence::{members_reply, page as members_page};
use crate::relay::{Departure, Relay};
use crate::room::{Position, Published};
use crate::session::Session;

/// A failed resync is retried after this long (Redis unreachable: the subscriber's own
/// backoff reconnects meanwhile; 500 ms keeps a room's catch-up within a second of it).
const RESYNC_RETRY: Duration = Duration::from_millis(500);

/// This node's rooms of engine `E`, as a [`Broker`].
#[derive(Debug)]
pub struct Cluster<E> {
    relay: Arc<Relay>,
    engine: Arc<E>,
    /// Stops the resync worker (also when dropped, with the cluster).
    stop: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl<E: Engine> Cluster<E> {
    /// The broker of `relay`'s rooms over `engine` (which feeds `relay` the streams it
    /// receives). Starts the resync worker: call it inside a tokio runtime.
    pub fn new(relay: Arc<Relay>, engine: E) -> Self {
        let engine = Arc::new(engine);
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(resync_worker(relay.clone(), engine.clone(), stopped));
        Self {
            relay,
            engine,
            stop,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// This node's rooms.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Undoes in the engine what a departure ended here: the room's stream (no member left)
    /// and the user's presence (its last connection in the room left). Presence writes go
    /// through one task, in order.
    fn forget(&self, departure: Departure) {
        if departure.room_empty {
            self.engine.unsubscribe(&departure.room);
        }
        if departure.last_of_user {
            self.engine.remove_presence(departure);
        }
    }

    async fn join_inner(
        &self,
        session: &Arc<Session>,
        request: JoinRequest<'_>,
    ) -> Result<(), HubError> {
        let ticket = self.relay.begin_join(
            session,
            request.room,
            request.id,
            request.since,
            request.presence,
        )?;
        let room = ticket.room().clone();
        // The engine's deadline bounds the whole join: subscription and snapshot.
        let snapshot = self
            .engine
            .bounded(Box::pin(async {
                self.engine.subscribe(&room).await?;
                let user = ticket.first_of_user.then(|| session.user().as_ref());
                self.engine
                    .snapshot(SnapshotRequest {
                        room: &room,
                        since: request.since,
                        user,
                        restore: &[],
                        skip: Some(session.id()),
                        now_ms: request.now_ms,
                        budget: session.outbox().replay_budget(),
                        op: "join",
                    })
                    .await
            }))
            .await;
        match snapshot {
            Ok(snapshot) => {
                if let Some(request) = self.relay.finish_join(&ticket, session, &snapshot) {
                    self.relay.request_resync(request);
                }
                Ok(())
            }
            Err(err) => {
                if let Some(departure) = self.relay.abort_join(&ticket, session) {
                    self.forget(departure);
                }
                Err(err)
            }
        }
    }

    /// Sends a member's message to the engine (its place in the order is fixed now) and
    /// returns the wait for its outcome.
    fn submit(
        &self,
        session: &Session,
        room: &str,
        payload: Payload<'_>,
        echo: bool,
        ts: u64,
        msg_id: Option<&str>,
    ) -> BrokerFuture<'static, Published> {
        let room = match self.relay.member_room(session, room) {
            Ok(room) => room,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let (head, tail) = encode(&room, session.user(), payload, ts);
        let published = self.engine.publish(Message {
            room: &room,
            from: session.user(),
            payload,
            head: &head,
            tail: &tail,
            skip: (!echo).then(|| session.id()),
            ts,
            msg_id,
        });
        Box::pin(async move {
            published.await.map(|published| Published {
                seq: published.seq,
                duplicate: published.duplicate,
            })
        })
    }
}

/// A message's frame, in the two parts around its seq.
fn encode(room: &str, from: &str, payload: Payload<'_>, ts: u64) -> (Bytes, Bytes) {
    match payload {
        Payload::Json(data) => encode_message_parts(room, from, data, ts),
        Payload::Binary(bytes) => encode_server_parts(room, ts, from, bytes),
    }
}

impl<E: Engine> Broker for Cluster<E> {
    fn kind(&self) -> &'static str {
        self.engine.kind()
    }

    fn connect(&self, user: Arc<str>) -> Arc<Session> {
        self.relay.connect(user)
    }

    fn disconnect(&self, session: &Arc<Session>) {
        for departure in self.relay.disconnect(session) {
            self.forget(departure);
        }
    }

    fn join<'a>(
        &'a self,
        session: &'a Arc<Session>,
        request: JoinRequest<'a>,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(self.join_inner(session, request))
    }

    fn leave<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let departure = self.relay.leave(session, room, id)?;
            self.forget(departure);
            Ok(())
        })
    }

    fn publish(
        &self,
        session: &Arc<Session>,
        request: PublishRequest<'_>,
    ) -> BrokerFuture<'static, Published> {
        self.submit(
            session,
            request.room,
            Payload::Json(request.data),
            request.echo,
            request.ts,
            request.msg_id,
        )
    }

    fn publish_binary(
        &self,
        session: &Arc<Session>,
        room: &str,
        payload: &[u8],
        ts: u64,
    ) -> BrokerFuture<'static, u64> {
        let published = self.submit(session, room, Payload::Binary(payload), false, ts, None);
        Box::pin(async move { published.await.map(|published| published.seq) })
    }

    fn typing<'a>(&'a self, session: &'a Arc<Session>, room: &'a str) -> BrokerFuture<'a, ()> {
        self.engine.bounded(Box::pin(async move {
            let room = self.relay.member_room(session, room)?;
            let frame = ServerMessage::Typing {
                room: &room,
                from: session.user(),
            }
            .encode();
            self.engine.typing(&room, &frame, session.id()).await
        }))
    }

    fn history<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) -> BrokerFuture<'a, ()> {
        self.engine.bounded(Box::pin(async move {
            validate_room(room).map_err(HubError::from)?;
            let read = self.engine.history(room, limit, now_ms).await?;
            // The relay keeps the entries that fit in the reply budget and places the reply
            // in the session's stream of the room.
            self.relay
                .place_history(session, room, id, read.seq, &read.epoch, &read.entries);
            Ok(())
        }))
    }

    /// A page of the room's users: the engine lists them all and they are sorted here.
    /// O(room) per request, bounded by the connection's rate limit; a 5,000-user room is
    /// ~60 KB from Redis.
    fn members<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, ()> {
        self.engine.bounded(Box::pin(async move {
            validate_room(room).map_err(HubError::from)?;
            let mut users = self.engine.members(room).await?;
            users.sort_unstable();
            let count = u64::try_from(users.len()).unwrap_or(u64::MAX);
            let start = after.map_or(0, |after| users.partition_point(|u| u.as_str() <= after));
            let rest = users.get(start..).unwrap_or_default();
            let (page, next) = members_page(rest.iter().map(String::as_str), limit);
            let reply = members_reply(room, id, &page, count, next);
            let _ = session.outbox().push(reply);
            Ok(())
        }))
    }

    fn flush_presence(&self, now_ms: u64) {
        self.relay.flush_presence(now_ms);
    }

    fn sweep(&self, _now_ms: u64) -> usize {
        // History and room lifetimes are the engine's (Redis TTLs).
        0
    }

    fn stats(&self) -> HubStats {
        self.relay.stats()
    }

    fn health(&self) -> BrokerHealth {
        self.engine.health()
    }

    fn publish_from(&self, request: SourcePublish<'_>) -> BrokerFuture<'static, SourcePublished> {
        if let Err(err) = validate_room(request.room) {
            return Box::pin(std::future::ready(Err(HubError::from(err))));
        }
        // JSON keeps its msg_id; binary payloads have none (as from a connection).
        let msg_id = match request.payload {
            Payload::Json(_) => request.msg_id,
            Payload::Binary(_) => None,
        };
        let (head, tail) = encode(request.room, request.from, request.payload, request.ts);
        let from: Arc<str> = Arc::from(request.from);
        self.engine.publish(Message {
            room: request.room,
            from: &from,
            payload: request.payload,
            head: &head,
            tail: &tail,
            skip: None,
            ts: request.ts,
            msg_id,
        })
    }

    fn rooms<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, RoomsPage> {
        self.engine.bounded(self.engine.rooms(prefix, after, limit))
    }

    fn users(&self) -> &Users {
        self.engine.users()
    }

    fn kick<'a>(&'a self, kick: &'a Kick, now_ms: u64) -> BrokerFuture<'a, usize> {
        self.engine.bounded(self.engine.kick(kick, now_ms))
    }

    fn visit_rooms(&self, visit: &mut dyn FnMut(RoomActivity<'_>)) {
        self.relay.visit_rooms(visit);
    }

    fn share_node_stats<'a>(
        &'a self,
        node: &'a str,
        snapshot: String,
    ) -> BrokerFuture<'a, Vec<String>> {
        self.engine.share_node_stats(node, snapshot)
    }

    /// Stops the resync worker, then the engine (after it wrote the presence removals still
    /// queued).
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let worker = self.worker.lock().take();
            if let Some(worker) = worker {
                let _ = worker.await;
            }
            self.engine.shutdown().await;
        })
    }
}

/// Performs the resyncs that rooms ask for (after a gap or the engine's reconnection),
/// retrying while the engine is unreachable.
async fn resync_worker<E: Engine>(
    relay: Arc<Relay>,
    engine: Arc<E>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let batch = relay.take_resyncs();
        if batch.is_empty() {
            tokio::select! {
                _ = stop.changed() => return,
                () = relay.resync_wanted() => continue,
            }
        }
        let mut failed = false;
        for request in batch {
            // This node's users of the room are listed again in the snapshot's members (and
            // their presence restored) even when the engine lost its data (F17).
            let local = relay.users_of(&request.room).unwrap_or_default();
            let snapshot = engine.snapshot(SnapshotRequest {
                room: &request.room,
                since: Some(Position {
                    seq: request.since,
                    epoch: &request.epoch,
                }),
                user: None,
                restore: &local,
                skip: None,
                now_ms: now_millis(),
                budget: relay.replay_budget(),
                op: "resync",
            });
            match engine.bounded(snapshot).await {
                Ok(snapshot) => {
                    debug!(room = %request.room, since = request.since, seq = snapshot.seq, recovered = snapshot.replay.is_some(), "room resynced");
                    relay.finish_resync(&request, &snapshot);
                }
                Err(_) => {
                    failed = true;
                    relay.retry_resync(request);
                }
            }
        }
        if failed {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(RESYNC_RETRY) => {}
            }
        }
    }
}

/// The wall clock for resync snapshots (presence entries' timestamps), which no request
/// carries.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
