//! The hub: rooms, presence, per-room sequence numbers and fan-out.
//!
//! The hub knows nothing of sockets or HTTP. A transport registers each connection as a
//! [`Session`] and drains the session's [`Outbox`], a bounded, byte-budgeted queue of
//! already-encoded frames. Publishing encodes a message once and shares the same
//! [`bytes::Bytes`] with every member's outbox.
//!
//! - [`Hub`]: the room registry, sharded so that publishing to different rooms never contends
//!   on a global lock; each room has its own lock, which also gives the room its total order.
//! - [`Session`]: one connection's identity, its outbox and the rooms it has joined.
//! - [`Outbox`]: the per-connection queue; a consumer that falls behind its byte budget is
//!   aborted with a close reason instead of growing memory.
//!
//! Each room keeps a bounded history of the frames it delivered, under an `epoch` that names
//! this incarnation of its sequence, so that a client coming back with `since: {seq, epoch}`
//! gets exactly what it missed, queued atomically ahead of the live stream.
//!
//! ## Layout
//!
//! Modules depend on each other in one direction only (no import circle):
//!
//! - `outbox` ← `session`: a connection and its queue. A session holds the rooms it is in as
//!   opaque handles of its engine (`Session::room::<T>`), so it knows nothing of rooms.
//! - `members`: a room's members and per-user presence counts (first in, last out).
//! - `reply`: the replies rooms build, one builder each: `joined` (every join, repeated join
//!   and resync notice of both engines), `left`, `history` (and how many entries fit one).
//!   Add a field to `joined` there and nowhere else.
//! - `registry`: rooms by name, sharded; [`Registry::dispose`](registry) is the one place a
//!   room leaves it.
//! - `room`: the one local room type, `Room<S>`, for both engines: members (live or pending)
//!   with their presence rights, coalesced presence, fan-out, `joined`/`left`/`history`
//!   placement, all under the room's one lock beside the engine's part `S`.
//!   `room/mod.rs` (the room, its members, fan-out), `room/presence.rs` (presence counting,
//!   hand-outs, the engines' flush queue), `room/pending.rs` (the general form of a join:
//!   pending members, buffered frames merged by seq, resyncs; `S = Remote`),
//!   `room/store.rs` (the in-memory engine's embedded sequencer: seq, epoch, history, recent
//!   msg ids; `S = Store`; its joins are atomic, live at once), `room/rooms.rs`
//!   (`LocalRooms<S>`: an engine's rooms and sessions on this node — registry, session ids,
//!   outbox settings, presence queue).
//! - `hub`: the in-memory engine over `LocalRooms<Store>` (history budget, sweep). It is not an
//!   [`Engine`] under [`Cluster`] on purpose: its sequencer sits under the room lock, so a join
//!   is atomic (live at once) and a publish is one lock and one encoding. Through `Cluster` it
//!   would pay the remote path on every call — a two-part encoding, a boxed future and a
//!   second lock (store, then room) per publish, a snapshot and the pending/merge machinery
//!   per join — for an order the room lock already gives. What the two
//!   share (members, presence, fan-out, replies, registry) is `room`, written once.
//! - `relay`: this node's rooms of an engine outside the process, over `LocalRooms<Remote>`:
//!   numbers joins and resyncs, queues the resyncs the stream asks for, and reports what the
//!   engine must undo (unsubscribe, presence).
//! - `engine`: the narrow [`Engine`] trait such an engine implements (Redis, in
//!   `switchboard-broker-redis`): subscribe/unsubscribe, snapshot, presence removal, publish of
//!   pre-encoded parts, typing, history and members reads, and its cluster extras (rooms page,
//!   kicks, node stats, health). It sequences and stores; it knows nothing of sessions.
//! - `cluster`: [`Cluster<E>`](Cluster), the one [`Broker`] over [`Relay`] + an [`Engine`]:
//!   join (subscribe, then the snapshot), leave, disconnect, publish, `typing`, `history`,
//!   `members`, and the resync worker, written once, generic over the engine.
//! - `broker`: the [`Broker`] seam the transports call, implemented by [`Hub`] here and by
//!   [`Cluster`]. To add an operation: a method on [`Broker`], its body for [`Hub`] in
//!   `broker.rs` (usually a call into `hub.rs`), and its body in `cluster.rs` (with a method on
//!   [`Engine`] if it needs the store).
//! - `outbox::replay_budget`: the share of an outbox one reply may fill (replays, `history`,
//!   a joiner's buffer), computed in one place.

mod activity;
mod api;
mod broker;
mod cluster;
pub mod deadline;
mod delivery;
mod engine;
mod error;
pub mod events;
mod history;
mod hub;
mod idempotency;
mod members;
mod metrics;
mod outbox;
mod policy;
mod presence;
mod registry;
mod relay;
mod reply;
mod room;
mod session;

pub use activity::RoomActivity;
pub use api::{Kick, MAX_DENIED, Payload, RoomsPage, SourcePublish, SourcePublished, Users};
pub use broker::{Broker, BrokerFuture, BrokerHealth, JoinRequest, PublishRequest};
pub use cluster::Cluster;
pub use delivery::{BatchDone, Sequenced};
pub use engine::{Engine, HistoryRead, Message, SnapshotRequest};
pub use error::HubError;
pub use events::{EventKind, EventSink, Events, RoomEvent};
pub use history::HistoryBudget;
pub use hub::{Hub, HubConfig, HubStats};
pub use outbox::{
    Batch, CloseFrame, Outbound, Outbox, OutboxPool, POOL_ALLOWANCE, PushError, replay_budget,
};
pub use policy::{HistoryPolicy, HistoryRule, HistoryRules, matches_pattern};
pub use presence::{PresenceConfig, members_reply, page as members_page};
pub use relay::{Departure, JoinTicket, Relay};
pub use room::{Inbound, InboundKind, Position, Published, ResyncRequest, Snapshot};
pub use session::{Session, SessionId};
