//! The broker seam: what a connection asks of the rooms, whoever keeps them.
//!
//! Two types implement [`Broker`]: [`crate::Hub`], in this process (a single node; the
//! default), and [`crate::Cluster`], this node's rooms ([`crate::Relay`]) over an
//! [`crate::Engine`] that shares rooms, sequence numbers, history and presence between nodes
//! (Redis, `switchboard-broker-redis`). The transport sees only this trait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::value::RawValue;
use switchboard_protocol::client::RequestId;

use crate::activity::RoomActivity;
use crate::api::{Kick, RoomsPage, SourcePublish, SourcePublished, Users};
use crate::error::HubError;
use crate::hub::{Hub, HubStats};
use crate::room::{Position, Published};
use crate::session::Session;

/// The future a broker operation returns.
pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HubError>> + Send + 'a>>;

/// A `join` request.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    /// The room.
    pub room: &'a str,
    /// The request id, echoed in `joined`.
    pub id: Option<RequestId>,
    /// Where a recovering client left off.
    pub since: Option<Position<'a>>,
    /// Whether the member may see presence (members list and events).
    pub presence: bool,
    /// The server clock, ms since the Unix epoch.
    pub now_ms: u64,
}

/// A JSON `publish` request.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    /// The room.
    pub room: &'a str,
    /// The payload, as sent.
    pub data: &'a RawValue,
    /// Whether the publisher receives its own message.
    pub echo: bool,
    /// The server clock, ms since the Unix epoch (the message's `ts`).
    pub ts: u64,
    /// The idempotency key.
    pub msg_id: Option<&'a str>,
}

/// Whether a broker can serve requests now (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerHealth {
    /// Serving.
    Ready,
    /// Not serving room operations now (the reason, for logs and `/readyz`); connections stay
    /// open and requests get `unavailable`.
    Unavailable(String),
}

/// What a transport asks of the rooms. Every operation queues its replies and the frames it
/// causes on the sessions' outboxes; errors map to wire error codes ([`HubError::code`]).
pub trait Broker: Send + Sync + fmt::Debug {
    /// A short name for logs and `/readyz` (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Registers a connection of `user`. Call [`Broker::disconnect`] when it ends.
    fn connect(&self, user: Arc<str>) -> Arc<Session>;

    /// Leaves every room and unregisters the session. Never blocks: what needs the network
    /// happens in the background.
    fn disconnect(&self, session: &Arc<Session>);

    /// Joins a room (see [`Hub::join`] for the replies).
    fn join<'a>(
        &'a self,
        session: &'a Arc<Session>,
        request: JoinRequest<'a>,
    ) -> BrokerFuture<'a, ()>;

    /// Leaves a room, queuing `left`.
    fn leave<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
    ) -> BrokerFuture<'a, ()>;

    /// Publishes JSON to a room the session is in. The message's place among this session's
    /// publishes is fixed when the call returns; the future only reports the outcome. So a
    /// connection may have several publishes on their way at once (pipelining) without
    /// reordering them.
    fn publish(
        &self,
        session: &Arc<Session>,
        request: PublishRequest<'_>,
    ) -> BrokerFuture<'static, Published>;

    /// Publishes a binary payload to a room the session is in; returns its seq. Ordered like
    /// [`Broker::publish`].
    fn publish_binary(
        &self,
        session: &Arc<Session>,
        room: &str,
        payload: &[u8],
        ts: u64,
    ) -> BrokerFuture<'static, u64>;

    /// Tells the room's other members that the session's user is typing.
    fn typing<'a>(&'a self, session: &'a Arc<Session>, room: &'a str) -> BrokerFuture<'a, ()>;

    /// Queues the `history` reply (the latest `limit` messages).
    fn history<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) -> BrokerFuture<'a, ()>;

    /// Queues the `members` reply: one page of the room's users in byte order after `after`,
    /// at most `limit` of them.
    fn members<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, ()>;

    /// Hands out the presence changes collected since the last call (coalesced presence).
    /// Call it every [`crate::PresenceConfig::batch_interval`].
    fn flush_presence(&self, now_ms: u64);

    /// Periodic housekeeping (expiring history kept in this process). Returns the rooms
    /// dropped.
    fn sweep(&self, now_ms: u64) -> usize;

    /// Rooms and sessions on this node.
    fn stats(&self) -> HubStats;

    /// Whether room operations can be served now.
    fn health(&self) -> BrokerHealth;

    /// Publishes on behalf of a source that is not a connection (the HTTP API): sequenced,
    /// kept in history, delivered and deduplicated on `(from, msg_id)` through the same room
    /// code as [`Broker::publish`]; the room need not have members.
    fn publish_from(&self, request: SourcePublish<'_>) -> BrokerFuture<'static, SourcePublished>;

    /// A page of the rooms (with members or history) whose names start with `prefix`, in
    /// byte order after `after`: the same on every node.
    fn rooms<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, RoomsPage>;

    /// This node's connections by user, and its deny list. The transport registers every
    /// connection and checks the deny list at the upgrade and on `refresh`.
    fn users(&self) -> &Users;

    /// Closes the user's connections on every node and, with a deny deadline, keeps the user
    /// out until then. Returns how many connections were closed on this node.
    fn kick<'a>(&'a self, kick: &'a Kick, now_ms: u64) -> BrokerFuture<'a, usize>;

    /// Calls `visit` with every room that has members (or, in this process, history) on this
    /// node, for the operator page (see [`RoomActivity`]).
    fn visit_rooms(&self, visit: &mut dyn FnMut(RoomActivity<'_>));

    /// The operator page's cluster view: stores this node's latest `snapshot` (opaque JSON,
    /// written by the server once per second under the name `node`) where the other nodes read
    /// it, and returns the latest snapshot of every live node, this one's included. The
    /// in-memory engine has no other node: it returns `snapshot` alone.
    fn share_node_stats<'a>(
        &'a self,
        node: &'a str,
        snapshot: String,
    ) -> BrokerFuture<'a, Vec<String>> {
        let _ = node;
        ready(Ok(vec![snapshot]))
    }

    /// Stops background work, after writing what connections that ended left behind (their
    /// presence). Call it once every connection has ended.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

fn ready<'a, T: Send + 'a>(result: Result<T, HubError>) -> BrokerFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

/// The in-memory engine: everything happens in this process, synchronously.
impl Broker for Hub {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn connect(&self, user: Arc<str>) -> Arc<Session> {
        Hub::connect(self, user)
    }

    fn disconnect(&self, session: &Arc<Session>) {
        Hub::disconnect(self, session);
    }

    fn join<'a>(
        &'a self,
        session: &'a Arc<Session>,
        request: JoinRequest<'a>,
    ) -> BrokerFuture<'a, ()> {
        ready(Hub::join(
            self,
            session,
            request.room,
            request.id,
            request.since,
            request.presence,
            request.now_ms,
        ))
    }

    fn leave<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
    ) -> BrokerFuture<'a, ()> {
        ready(Hub::leave(self, session, room, id))
    }

    fn publish(
        &self,
        session: &Arc<Session>,
        request: PublishRequest<'_>,
    ) -> BrokerFuture<'static, Published> {
        ready(Hub::publish(
            self,
            session,
            request.room,
            request.data,
            request.echo,
            request.ts,
            request.msg_id,
        ))
    }

    fn publish_binary(
        &self,
        session: &Arc<Session>,
        room: &str,
        payload: &[u8],
        ts: u64,
    ) -> BrokerFuture<'static, u64> {
        ready(Hub::publish_binary(self, session, room, payload, ts))
    }

    fn typing<'a>(&'a self, session: &'a Arc<Session>, room: &'a str) -> BrokerFuture<'a, ()> {
        ready(Hub::typing(self, session, room))
    }

    fn history<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) -> BrokerFuture<'a, ()> {
        ready(Hub::history(self, session, room, id, limit, now_ms))
    }

    fn members<'a>(
        &'a self,
        session: &'a Arc<Session>,
        room: &'a str,
        id: Option<RequestId>,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, ()> {
        ready(Hub::members(self, session, room, id, after, limit))
    }

    fn flush_presence(&self, now_ms: u64) {
        Hub::flush_presence(self, now_ms);
    }

    fn sweep(&self, now_ms: u64) -> usize {
        Hub::sweep(self, now_ms)
    }

    fn stats(&self) -> HubStats {
        Hub::stats(self)
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth::Ready
    }

    fn publish_from(&self, request: SourcePublish<'_>) -> BrokerFuture<'static, SourcePublished> {
        ready(Hub::publish_from(self, &request))
    }

    fn rooms<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, RoomsPage> {
        ready(Ok(Hub::rooms_page(self, prefix, after, limit)))
    }

    fn users(&self) -> &Users {
        &self.users
    }

    fn kick<'a>(&'a self, kick: &'a Kick, now_ms: u64) -> BrokerFuture<'a, usize> {
        ready(Ok(self.users.kick(kick, now_ms)))
    }

    fn visit_rooms(&self, visit: &mut dyn FnMut(RoomActivity<'_>)) {
        Hub::visit_rooms(self, visit);
    }
}
