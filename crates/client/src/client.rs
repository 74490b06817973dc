//! [`Client`]: the handle the application uses to send requests.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;
use switchboard_protocol::names::validate_room;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::builder::{ClientBuilder, Settings};
use crate::connection::{self, Command, Connection, Reply};
use crate::error::Error;
use crate::events::{Events, History, JoinInfo, MembersPage};
use crate::wire::PUBLISH_OVERHEAD;

/// Commands waiting for the connection task, at most.
const COMMAND_BUFFER: usize = 64;

/// A connected Switchboard client. Cheap to clone: every clone drives the same connection.
///
/// Requests are carried out by the client's connection task, which also reconnects when the
/// connection drops (see the [crate documentation](crate)). Requests made while disconnected
/// wait for the next connection (up to [`ClientBuilder::send_buffer`]). When the last clone is
/// dropped, the client closes as if [`Client::close`] had been called.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
    /// The connection task, until `close` has waited for it.
    task: Mutex<Option<JoinHandle<()>>>,
    max_message_size: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every handle is gone: the task closes the connection and ends.
        self.shutdown.cancel();
    }
}

impl Client {
    /// Starts configuring a client for the server at `url`, e.g.
    /// `ws://127.0.0.1:8080/ws`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Opens the first connection and spawns the connection task.
    pub(crate) async fn start(settings: Settings) -> Result<(Self, Events), Error> {
        let settings = Arc::new(settings);
        let ws = connection::open(settings.clone(), None).await?;
        let (commands, commands_rx) = mpsc::channel(COMMAND_BUFFER);
        let (events_tx, events_rx) = mpsc::channel(settings.event_buffer);
        let shutdown = CancellationToken::new();
        let max_message_size = settings.max_message_size;
        let connection = Connection::new(settings, commands_rx, events_tx, shutdown.clone());
        let task = tokio::spawn(connection.run(ws));
        let client = Self {
            inner: Arc::new(Inner {
                commands,
                shutdown,
                task: Mutex::new(Some(task)),
                max_message_size,
            }),
        };
        Ok((client, Events::new(events_rx)))
    }

    /// Joins `room` and keeps it joined: after a reconnect the client re-joins it by itself,
    /// asking the server to replay what was missed. Resolves with the server's `joined` reply
    /// (an [`Event::Joined`](crate::Event::Joined) is sent as well). While disconnected, it
    /// resolves once the room is joined on the next connection.
    ///
    /// Joining a room again is harmless. Fails with [`Error::InvalidRoom`] before anything is
    /// sent if the name breaks the protocol's rules, [`Error::Cancelled`] if the room is left
    /// before the join completes.
    pub async fn join(&self, room: impl Into<String>) -> Result<JoinInfo, Error> {
        let room = checked_room(room)?;
        self.request(|reply| Command::Join { room, reply }).await
    }

    /// Leaves `room`: no more events from it, no re-join. Resolves with the server's `left`
    /// reply, or at once while disconnected. Fails with the server's `not_joined` if this
    /// connection was not in the room.
    pub async fn leave(&self, room: impl Into<String>) -> Result<(), Error> {
        let room = checked_room(room)?;
        self.request(|reply| Command::Leave { room, reply }).await
    }

    /// Publishes a JSON value to `room` (which the client must have joined) and resolves to
    /// the message's sequence number from the server's `ack`.
    ///
    /// Each publish carries a unique `msg_id`. If the connection drops before the ack
    /// arrives, the publish is sent again on the next connection with the same `msg_id`, so a
    /// server with idempotent publish delivers it only once (and acks the original `seq`).
    /// The server recognizes a retry by user name and `msg_id`: this needs a stable name
    /// ([`ClientBuilder::user`] or a token), as anonymous connections get a new name each
    /// time.
    /// While disconnected, publishes wait for the next connection; more than
    /// [`ClientBuilder::send_buffer`] waiting requests fail with [`Error::BufferFull`].
    /// The publishing connection does not receive its own message.
    pub async fn publish(&self, room: impl Into<String>, data: Value) -> Result<u64, Error> {
        let room = checked_room(room)?;
        let data = RawValue::from_string(data.to_string())
            .map_err(|err| Error::Protocol(format!("cannot encode the payload: {err}")))?;
        let size = room.len() + data.get().len() + PUBLISH_OVERHEAD;
        self.check_size(size)?;
        self.request(|reply| Command::Publish { room, data, reply })
            .await
    }

    /// Publishes bytes to `room` as a binary frame. Binary publishes get no ack and no
    /// `seq`: this resolves once the frame is written to the socket (after the next
    /// reconnect, if disconnected). A binary publish cut off by a disconnect is not re-sent.
    pub async fn publish_binary(
        &self,
        room: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let room = checked_room(room)?;
        let payload = payload.into();
        self.check_size(1 + room.len() + payload.len())?;
        self.request(|reply| Command::PublishBinary {
            room,
            payload,
            reply,
        })
        .await
    }

    /// Tells the room's other members that this user is typing. Fire and forget: no reply,
    /// and dropped while disconnected (typing is a hint that fades). Send it at most every
    /// few seconds.
    pub async fn typing(&self, room: impl Into<String>) -> Result<(), Error> {
        let room = checked_room(room)?;
        self.send(Command::Typing { room }).await
    }

    /// Fetches the latest `limit` messages the server keeps for `room` (capped by the
    /// server's history size; the client need not be a member). Use it to re-sync after an
    /// [`Event::Resync`](crate::Event::Resync). Needs a server with history support (older
    /// ones answer with the error `unknown_type`).
    pub async fn history(&self, room: impl Into<String>, limit: u32) -> Result<History, Error> {
        let room = checked_room(room)?;
        self.request(|reply| Command::History { room, limit, reply })
            .await
    }

    /// One page of `room`'s users in byte order of their names, after `after` (the previous
    /// page's `next`), at most `limit` (1 to 1,000). Needs the presence right in the room (not
    /// membership). Needs a server with member paging (older ones answer `unknown_type`).
    pub async fn members(
        &self,
        room: impl Into<String>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MembersPage, Error> {
        let room = checked_room(room)?;
        let after = after.map(str::to_owned);
        self.request(|reply| Command::Members {
            room,
            after,
            limit,
            reply,
        })
        .await
    }

    /// Every user of `room`, by paging with [`Client::members`] (1,000 per request).
    pub async fn all_members(&self, room: impl Into<String>) -> Result<Vec<String>, Error> {
        let room = room.into();
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.members(room.clone(), after.as_deref(), 1_000).await?;
            all.extend(page.members);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Replaces the connection's token before it expires (the server's `refresh`): resolves
    /// to the new token's expiry (seconds since the Unix epoch) once the server has accepted
    /// it. The token must name the same user (otherwise the server closes with 4003 and the
    /// client stops). Reconnections present this token from now on instead of the builder's.
    pub async fn refresh(&self, token: impl Into<String>) -> Result<u64, Error> {
        let token = token.into();
        self.request(|reply| Command::Refresh { token, reply })
            .await
    }

    /// Closes the client: sends a close frame 1000, stops reconnecting, and waits for the
    /// connection task to end. Pending requests fail with [`Error::Closed`]; the last events
    /// are [`Event::Disconnected`](crate::Event::Disconnected) (if connected) and
    /// [`Event::Closed`](crate::Event::Closed). Calling it again (or on a clone) just waits.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        let mut task = self.inner.task.lock().await;
        if let Some(handle) = task.take() {
            let _ = handle.await;
        }
    }

    /// Whether [`close`](Self::close) was called or the client stopped by itself.
    pub fn is_closed(&self) -> bool {
        self.inner.shutdown.is_cancelled() || self.inner.commands.is_closed()
    }

    fn check_size(&self, size: usize) -> Result<(), Error> {
        let max = self.inner.max_message_size;
        if size > max {
            return Err(Error::TooLarge { size, max });
        }
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::Closed);
        }
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| Error::Closed)
    }

    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (reply, response) = oneshot::channel();
        self.send(command(reply)).await?;
        // A dropped reply means the task ended first.
        response.await.unwrap_or(Err(Error::Closed))
    }
}

fn checked_room(room: impl Into<String>) -> Result<String, Error> {
    let room = room.into();
    match validate_room(&room) {
        Ok(()) => Ok(room),
        Err(source) => Err(Error::InvalidRoom { room, source }),
    }
}
