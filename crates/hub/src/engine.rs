//! The engine seam: what a store outside this process (Redis, in `switchboard-broker-redis`)
//! does for rooms it sequences — and nothing else. An engine sequences and stores; the rooms
//! on this node, their members, joins, leaves, resyncs and replies are the hub's
//! ([`crate::Cluster`] over [`crate::Relay`]), written once for every such engine.
//!
//! An engine also feeds the room streams it receives into the [`crate::Relay`] it was given
//! ([`crate::Relay::deliver`], [`crate::Relay::resync_all`]) and asks for resyncs there
//! ([`crate::Relay::request_resync`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::api::{Kick, Payload, RoomsPage, SourcePublished, Users};
use crate::broker::{BrokerFuture, BrokerHealth};
use crate::outbox::Outbound;
use crate::relay::Departure;
use crate::room::{Position, Snapshot};
use crate::session::SessionId;

/// What a join or a resync asks the engine for.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRequest<'a> {
    /// The room.
    pub room: &'a str,
    /// Where the stream stands for the asker: the replay starts after it (if history covers
    /// it, in the same epoch).
    pub since: Option<Position<'a>>,
    /// Adds this user's presence on this node (its first connection in the room here).
    pub user: Option<&'a str>,
    /// This node's users of the room, whose presence is restored (a resync, even after the
    /// store lost its data).
    pub restore: &'a [Arc<str>],
    /// The session whose presence `join` the engine's stream must not echo back to it.
    pub skip: Option<SessionId>,
    /// The server clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// The bytes the replay may fill: a larger one is left out (`recovered: false`).
    pub budget: usize,
    /// `join` or `resync`, for the engine's metrics.
    pub op: &'static str,
}

/// A message to sequence, encoded once by the node it was published on.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The room.
    pub room: &'a str,
    /// The publisher.
    pub from: &'a Arc<str>,
    /// The payload as published (for the `message.published` event, if wanted).
    pub payload: Payload<'a>,
    /// The frame before the seq (see `switchboard_protocol::server::encode_message_parts`).
    pub head: &'a [u8],
    /// The frame after the seq.
    pub tail: &'a [u8],
    /// The session that does not receive the message (no echo); `None`: every member.
    pub skip: Option<SessionId>,
    /// The server clock, ms since the Unix epoch (the message's `ts`).
    pub ts: u64,
    /// The idempotency key, deduplicated per `(from, msg_id)`.
    pub msg_id: Option<&'a str>,
}

/// A room's latest messages, as the engine read them.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    /// The room's epoch (a new one if the room has none yet).
    pub epoch: String,
    /// The room's seq when read.
    pub seq: u64,
    /// The messages, oldest first, with their seqs.
    pub entries: Vec<(u64, Outbound)>,
}

/// A store that sequences rooms for several nodes. Every operation is raw: the hub bounds
/// requests with [`Engine::bounded`] (a join bounds its subscription and snapshot together).
pub trait Engine: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and `/readyz` (`redis`).
    fn kind(&self) -> &'static str;

    /// `request` bounded by the engine's answer deadline (past it, `unavailable`).
    fn bounded<'a, T: Send + 'a>(&'a self, request: BrokerFuture<'a, T>) -> BrokerFuture<'a, T>;

    /// Makes sure this node receives the room's stream (into the relay).
    fn subscribe<'a>(&'a self, room: &'a Arc<str>) -> BrokerFuture<'a, ()>;

    /// Stops receiving the room's stream (its last member here left). Never blocks.
    fn unsubscribe(&self, room: &Arc<str>);

    /// The room's snapshot: seq, epoch, members, presence version and the replay after
    /// `since`; adds `user`'s presence.
    fn snapshot<'a>(&'a self, request: SnapshotRequest<'a>) -> BrokerFuture<'a, Snapshot>;

    /// Removes the departed user's presence on this node (its last connection in the room
    /// here left). Never blocks: written in order in the background.
    fn remove_presence(&self, departure: Departure);

    /// Sequences and stores a message and sends it to the room's stream; its place among this
    /// node's publishes is fixed when the call returns. Bounded by the engine itself.
    fn publish(&self, message: Message<'_>) -> BrokerFuture<'static, SourcePublished>;

    /// Sends a typing frame to the room's stream (not sequenced, not stored).
    fn typing<'a>(
        &'a self,
        room: &'a str,
        frame: &'a [u8],
        skip: SessionId,
    ) -> BrokerFuture<'a, ()>;

    /// The room's latest `limit` messages (at most its history size).
    fn history<'a>(
        &'a self,
        room: &'a str,
        limit: Option<u64>,
        now_ms: u64,
    ) -> BrokerFuture<'a, HistoryRead>;

    /// Every user in the room, on every node, in any order.
    fn members<'a>(&'a self, room: &'a str) -> BrokerFuture<'a, Vec<String>>;

    /// Whether requests can be served now.
    fn health(&self) -> BrokerHealth;

    /// A page of the rooms (see [`crate::Broker::rooms`]). Bounded by the caller.
    fn rooms<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, RoomsPage>;

    /// This node's connections by user, and its deny list.
    fn users(&self) -> &Users;

    /// See [`crate::Broker::kick`]. Bounded by the caller.
    fn kick<'a>(&'a self, kick: &'a Kick, now_ms: u64) -> BrokerFuture<'a, usize>;

    /// See [`crate::Broker::share_node_stats`].
    fn share_node_stats<'a>(
        &'a self,
        node: &'a str,
        snapshot: String,
    ) -> BrokerFuture<'a, Vec<String>>;

    /// Stops the engine's background work after writing what it still holds.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
