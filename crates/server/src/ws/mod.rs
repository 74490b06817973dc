//! The WebSocket transport: the upgrade handshake, the codec seam, and one driver per
//! connection (a reader and a single writer) shared by `/ws` and `/echo`.

pub(crate) mod codec;
pub(crate) mod deflate;
pub(crate) mod driver;
pub(crate) mod echo;
pub(crate) mod endpoints;
pub(crate) mod heartbeat;
pub(crate) mod session;
pub(crate) mod upgrade;
