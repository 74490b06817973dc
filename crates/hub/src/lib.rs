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

mod broker;
pub mod deadline;
mod delivery;
mod error;
mod history;
mod hub;
mod idempotency;
mod metrics;
mod outbox;
mod policy;
mod presence;
mod registry;
mod relay;
mod room;
mod session;

pub use broker::{Broker, BrokerFuture, BrokerHealth, JoinRequest, PublishRequest};
pub use delivery::{BatchDone, Sequenced};
pub use error::HubError;
pub use history::HistoryBudget;
pub use hub::{Hub, HubConfig, HubStats};
pub use outbox::{Batch, CloseFrame, Outbound, Outbox, OutboxPool, POOL_ALLOWANCE, PushError};
pub use policy::{HistoryPolicy, HistoryRule, HistoryRules, matches_pattern};
pub use presence::{PresenceConfig, members_reply, page as members_page};
pub use relay::{
    Departure, Inbound, InboundKind, JoinTicket, Relay, RelayRoom, ResyncRequest, Snapshot,
};
pub use room::{Position, Published};
pub use session::{Session, SessionId};
