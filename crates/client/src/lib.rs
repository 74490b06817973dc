//! Rust client SDK for Switchboard, the real-time WebSocket messaging server (protocol v1,
//! `docs/protocol.md`, with the recovery additions: `since`/`epoch`, `history`, `msg_id`).
//!
//! - [`Client::builder`] → [`ClientBuilder`] → [`connect`](ClientBuilder::connect) gives a
//!   [`Client`] (cheap to clone; requests: [`join`](Client::join),
//!   [`publish`](Client::publish), [`history`](Client::history), ...) and [`Events`], the
//!   stream of typed [`Event`]s.
//! - **Reconnection.** When the connection drops (network error, no frame from the server for
//!   [`heartbeat_timeout`](ClientBuilder::heartbeat_timeout), a close such as 1001, 1011 or
//!   1013), the client reconnects with exponential [`Backoff`] and full jitter, re-joins every
//!   room it was in and re-sends the requests that had no reply yet. It does not reconnect
//!   after a close 1000 (from either side) or a close code in [`NO_RECONNECT_CLOSE_CODES`]
//!   (policy and authentication failures).
//! - **Exactly once, in order.** The client tracks, per room, the last `seq` it delivered and
//!   the room's epoch. A re-join asks the server to replay from there (`since`); whatever
//!   arrives twice around that boundary is dropped, so each room's messages reach the
//!   application once, in `seq` order. If the server cannot replay (new epoch after a
//!   restart, history expired), the client sends [`Event::Resync`]: fetch
//!   [`history`](Client::history) or otherwise re-sync. Publishes carry a `msg_id` and are
//!   re-sent with it, so a publish whose ack was lost is not delivered twice.
//!
//! Only `ws://` URLs are supported for now.
//!
//! # Example
//!
//! Two users in a room (the hidden lines start a server in-process):
//!
//! ```
//! use serde_json::json;
//! use switchboard_client::{Client, Event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let settings = switchboard_server::Settings::new(switchboard_server::Config {
//! #     listen: "127.0.0.1:0".parse()?,
//! #     ..Default::default()
//! # })?;
//! # let engine = settings.memory_engine(None);
//! # let server = switchboard_server::Server::bind(settings, engine).await?;
//! # let url = format!("ws://{}/ws", server.local_addr()?);
//! # let stop = switchboard_server::CancellationToken::new();
//! # let running = tokio::spawn(server.run(stop.clone()));
//! let (alice, _alice_events) = Client::builder(&url).user("alice").connect().await?;
//! let (bob, mut bob_events) = Client::builder(&url).user("bob").connect().await?;
//! alice.join("lobby").await?;
//! let joined = bob.join("lobby").await?;
//! assert_eq!(joined.members.len(), 2);
//!
//! let seq = alice.publish("lobby", json!({"text": "hi bob"})).await?;
//! while let Some(event) = bob_events.next().await {
//!     if let Event::Message { from, data, seq: got, .. } = event {
//!         assert_eq!((from.as_str(), got), ("alice", seq));
//!         println!("{from}: {}", data["text"]);
//!         break;
//!     }
//! }
//! alice.close().await;
//! bob.close().await;
//! # stop.cancel();
//! # running.await?;
//! # Ok(())
//! # }
//! ```
//!
//! A typical application reads events in their own task (the event channel is bounded; see
//! [`Events`]):
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_client::{Client, Event};
//!
//! # async fn run() -> Result<(), switchboard_client::Error> {
//! let (client, mut events) = Client::builder("ws://127.0.0.1:8080/ws")
//!     .user("alice")
//!     .token("secret")
//!     .heartbeat_timeout(Duration::from_secs(60))
//!     .connect()
//!     .await?;
//! let reader = tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Message { room, from, data, .. } => println!("[{room}] {from}: {data}"),
//!             Event::Resync { room, .. } => println!("[{room}] missed messages; re-sync"),
//!             Event::Reconnecting { attempt, delay } => println!("reconnecting (#{attempt}) in {delay:?}"),
//!             Event::Closed => break,
//!             _ => {}
//!         }
//!     }
//! });
//! client.join("lobby").await?;
//! client.publish("lobby", serde_json::json!({"text": "hello"})).await?;
//! client.close().await;
//! let _ = reader.await;
//! # Ok(())
//! # }
//! ```
//!
//! See also `examples/chat.rs`: `cargo run -p switchboard-client --example chat --
//! ws://127.0.0.1:8080/ws alice lobby`.

mod backoff;
mod builder;
mod client;
mod connection;
mod error;
mod events;
mod tracker;
mod wire;

pub use backoff::{Backoff, STABLE_AFTER};
pub use builder::{
    ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENT_BUFFER, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEND_BUFFER,
};
pub use client::Client;
pub use connection::NO_RECONNECT_CLOSE_CODES;
pub use error::Error;
pub use events::{
    Body, CONNECT_REFUSED, Event, Events, History, HistoryMessage, JoinInfo, MembersPage,
    PresenceEvent,
};
pub use switchboard_protocol::names::NameError;
