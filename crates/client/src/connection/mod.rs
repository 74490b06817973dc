//! The connection task: the one task that owns the socket.
//!
//! It runs a select loop over the socket, the commands of the [`Client`](crate::Client)
//! handles, the heartbeat deadline and the shutdown signal. When the connection drops it
//! reports it, waits (backoff with full jitter, still taking commands), reconnects, re-joins
//! every room with `since` (the last seq seen and its epoch), then re-sends what was waiting:
//! un-acked publishes (with their original `msg_id`, so the server can drop duplicates),
//! `history` requests without a reply, and requests queued while disconnected.
//!
//! - [`dial`]: opening a connection, and whether to open another after one ended;
//! - [`link`]: the open socket with its heartbeat, bounded sends and the close handshake;
//! - [`ledger`]: requests waiting for a connection or for their reply;
//! - this file: the loop, and what each server frame means for the rooms and the application.

mod dial;
mod ledger;
mod link;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::value::RawValue;
use switchboard_protocol::codes::close;
use switchboard_protocol::{ClientMessage, ErrorCode, binary};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_websockets::{Error as WsError, Message};
use tracing::debug;

use crate::backoff::{Attempts, STABLE_AFTER};
use crate::builder::Settings;
use crate::error::Error;
use crate::events::{CONNECT_REFUSED, Event, History, JoinInfo, MembersPage};
use crate::tracker::{JoinOutcome, JoinedReply, Tracker};
use crate::wire::{self, ServerMessage};

pub use dial::NO_RECONNECT_CLOSE_CODES;
pub(crate) use dial::open;
pub(crate) use link::Ws;

use dial::{NO_RECONNECT_HTTP_STATUSES, should_reconnect};
use ledger::{Frame, InFlight, Ledger};
use link::{Ending, Link, lost};

/// Where a request's reply goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What a [`Client`](crate::Client) handle asks the connection task to do.
#[derive(Debug)]
pub(crate) enum Command {
    Join {
        room: String,
        reply: Reply<JoinInfo>,
    },
    Leave {
        room: String,
        reply: Reply<()>,
    },
    Publish {
        room: String,
        data: Box<RawValue>,
        reply: Reply<u64>,
    },
    PublishBinary {
        room: String,
        payload: Bytes,
        reply: Reply<()>,
    },
    Typing {
        room: String,
    },
    History {
        room: String,
        limit: u32,
        reply: Reply<History>,
    },
    Members {
        room: String,
        after: Option<String>,
        limit: u32,
        reply: Reply<MembersPage>,
    },
    Refresh {
        token: String,
        reply: Reply<u64>,
    },
}

/// What woke the session loop.
enum Wake {
    Shutdown,
    Frame(Option<Result<Message, WsError>>),
    Command(Option<Command>),
    Heartbeat,
}

/// The state of one client, owned by its connection task.
#[derive(Debug)]
pub(crate) struct Connection {
    settings: Arc<Settings>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    /// Rooms the application is in: re-joined after every reconnect.
    rooms: BTreeSet<String>,
    tracker: Tracker,
    /// Callers of `join` waiting for the room's `joined`.
    join_waiters: HashMap<String, Vec<Reply<JoinInfo>>>,
    /// Requests waiting for a connection or for their reply.
    ledger: Ledger,
    attempts: Attempts,
    /// The current connection sent a recovering join (`since`).
    sent_since: bool,
    /// The last connection ended with 1013 (slow consumer) after a recovering join: the replay
    /// may not have fit the server's outbound queue, so the next re-join asks for none.
    skip_recovery: bool,
    /// The latest token given to `refresh`: reconnections present it instead of the
    /// builder's (which may have expired).
    token: Option<String>,
}

impl Connection {
    pub(crate) fn new(
        settings: Arc<Settings>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            ledger: Ledger::new(settings.send_buffer),
            settings,
            commands,
            events,
            shutdown,
            rooms: BTreeSet::new(),
            tracker: Tracker::default(),
            join_waiters: HashMap::new(),
            attempts: Attempts::default(),
            sent_since: false,
            skip_recovery: false,
            token: None,
        }
    }

    /// Runs the client until it is closed: sessions, separated by reconnections.
    pub(crate) async fn run(mut self, first: Ws) {
        let mut next = Some(first);
        while let Some(ws) = next.take() {
            let started = Instant::now();
            let ending = self.session(ws).await;
            let uptime = started.elapsed();
            self.attempts.disconnected_after(uptime);
            self.ledger.requeue_inflight();
            match ending {
                Ending::Shutdown => {
                    self.emit(Event::Disconnected {
                        code: Some(close::NORMAL),
                        reason: "closed by the client".to_owned(),
                    })
                    .await;
                }
                Ending::Lost { code, reason } => {
                    debug!(code, %reason, "disconnected");
                    // 1013 (slow consumer) soon after a recovering join: the replay may not
                    // have fit; the protocol asks to join again without `since` (and re-sync).
                    self.skip_recovery = code == Some(close::TRY_AGAIN_LATER)
                        && self.sent_since
                        && uptime < STABLE_AFTER;
                    let reconnect = should_reconnect(code);
                    self.emit(Event::Disconnected { code, reason }).await;
                    if reconnect && !self.shutdown.is_cancelled() {
                        next = self.reconnect().await;
                    }
                }
            }
        }
        self.finish();
    }

    /// Hands an event to the application. Waits while the channel is full (backpressure),
    /// unless the client is shutting down; events nobody listens to are dropped.
    async fn emit(&self, event: Event) {
        if self.shutdown.is_cancelled() {
            let _ = self.events.try_send(event);
            return;
        }
        tokio::select! {
            _ = self.events.send(event) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// The end: pending requests fail with [`Error::Closed`] (their reply senders are
    /// dropped), and `Closed` is the last event.
    fn finish(&mut self) {
        self.commands.close();
        while self.commands.try_recv().is_ok() {}
        self.ledger.clear();
        self.join_waiters.clear();
        // If the channel is full, `Events` reports `Closed` itself when the channel ends.
        let _ = self.events.try_send(Event::Closed);
        debug!("client closed");
    }

    /// One connection, from `Connected` until it ends.
    async fn session(&mut self, ws: Ws) -> Ending {
        self.emit(Event::Connected).await;
        let mut link = Link::new(ws, self.settings.heartbeat_timeout, self.shutdown.clone());
        let mut result = self.resume(&mut link).await;
        while result.is_ok() {
            let wake = tokio::select! {
                () = self.shutdown.cancelled() => Wake::Shutdown,
                frame = link.ws.next() => Wake::Frame(frame),
                command = self.commands.recv() => Wake::Command(command),
                () = link.heartbeat.expired() => Wake::Heartbeat,
            };
            result = match wake {
                Wake::Shutdown => Err(Ending::Shutdown),
                Wake::Command(None) => {
                    // Every `Client` was dropped.
                    self.shutdown.cancel();
                    Err(Ending::Shutdown)
                }
                Wake::Frame(frame) => self.on_frame(frame, &mut link).await,
                Wake::Command(Some(command)) => self.on_command(command, &mut link).await,
                Wake::Heartbeat => {
                    // A frame may have been waiting while the task was busy (on a full
                    // event channel, say): only silence counts.
                    match link.ws.next().now_or_never() {
                        Some(frame) => self.on_frame(frame, &mut link).await,
                        None => Err(lost(format!(
                            "heartbeat timeout: nothing from the server for {:?}",
                            self.settings.heartbeat_timeout.unwrap_or_default()
                        ))),
                    }
                }
            };
        }
        let ending = match result {
            Err(ending) => ending,
            Ok(()) => Ending::Shutdown,
        };
        if matches!(ending, Ending::Shutdown) || self.shutdown.is_cancelled() {
            link.close().await;
            return Ending::Shutdown;
        }
        ending
    }

    /// After connecting: re-join the rooms, then send what waited for a connection.
    async fn resume(&mut self, link: &mut Link) -> Result<(), Ending> {
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        let recover = !std::mem::take(&mut self.skip_recovery);
        self.sent_since = false;
        for room in rooms {
            let rejoin = self.tracker.contains(&room);
            self.send_join(room, rejoin, recover, link).await?;
        }
        while let Some(outgoing) = self.ledger.next_queued() {
            self.send_outgoing(outgoing, link).await?;
        }
        Ok(())
    }

    /// Waits out the backoff and reconnects, taking commands meanwhile. `None`: stop.
    async fn reconnect(&mut self) -> Option<Ws> {
        loop {
            let attempt = self.attempts.next();
            let delay = self.settings.backoff.delay(attempt, fastrand::f64());
            debug!(attempt, ?delay, "reconnecting");
            self.emit(Event::Reconnecting { attempt, delay }).await;
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                let wake = tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    () = &mut sleep => break,
                    command = self.commands.recv() => command,
                };
                self.on_command_offline(self.command_or_stop(wake)?);
            }
            let opening = open(self.settings.clone(), self.token.clone());
            tokio::pin!(opening);
            let opened = loop {
                let wake = tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    opened = &mut opening => break opened,
                    command = self.commands.recv() => command,
                };
                self.on_command_offline(self.command_or_stop(wake)?);
            };
            match opened {
                Ok(ws) => return Some(ws),
                Err(Error::Refused { status }) if NO_RECONNECT_HTTP_STATUSES.contains(&status) => {
                    self.emit(Event::Error {
                        id: None,
                        code: CONNECT_REFUSED.to_owned(),
                        message: format!("the server refused the reconnection with HTTP {status}"),
                    })
                    .await;
                    return None;
                }
                Err(err) => debug!(attempt, error = %err, "reconnection attempt failed"),
            }
        }
    }

    /// `None` when every `Client` was dropped: the client stops.
    fn command_or_stop(&self, command: Option<Command>) -> Option<Command> {
        if command.is_none() {
            self.shutdown.cancel();
        }
        command
    }

    /// Remembers that the application wants to be in `room`.
    fn want_room(&mut self, room: &str, reply: Reply<JoinInfo>) {
        self.rooms.insert(room.to_owned());
        self.join_waiters
            .entry(room.to_owned())
            .or_default()
            .push(reply);
    }

    /// Forgets `room`: no re-join, no position; pending joins are cancelled.
    fn drop_room(&mut self, room: &str) {
        self.rooms.remove(room);
        self.tracker.forget(room);
        for waiter in self.join_waiters.remove(room).unwrap_or_default() {
            let _ = waiter.send(Err(Error::Cancelled));
        }
    }

    /// A command while disconnected: membership changes are recorded, requests queued,
    /// typing dropped.
    fn on_command_offline(&mut self, command: Command) {
        match command {
            Command::Join { room, reply } => self.want_room(&room, reply),
            Command::Leave { room, reply } => {
                self.drop_room(&room);
                let _ = reply.send(Ok(()));
            }
            Command::Typing { .. } => {}
            request => {
                if let Some(outgoing) = self.ledger.accept(request, &mut self.token) {
                    self.ledger.queue(outgoing);
                }
            }
        }
    }

    /// A command while connected: sent right away.
    async fn on_command(&mut self, command: Command, link: &mut Link) -> Result<(), Ending> {
        match command {
            Command::Join { room, reply } => {
                self.want_room(&room, reply);
                self.send_join(room, false, false, link).await
            }
            Command::Leave { room, reply } => {
                self.drop_room(&room);
                let frame = self.ledger.leave(&room, reply);
                link.send(frame).await
            }
            Command::Typing { room } => {
                let typing = ClientMessage::Typing { room: room.into() };
                link.send(wire::frame(&typing)).await
            }
            request => match self.ledger.accept(request, &mut self.token) {
                Some(outgoing) => self.send_outgoing(outgoing, link).await,
                None => Ok(()),
            },
        }
    }

    /// Sends a `join`. `rejoin`: the automatic re-join after a reconnect, which asks for the
    /// missed messages (`since`) when `recover` and the room's epoch is known.
    async fn send_join(
        &mut self,
        room: String,
        rejoin: bool,
        recover: bool,
        link: &mut Link,
    ) -> Result<(), Ending> {
        let since = if rejoin && recover {
            self.tracker.since(&room)
        } else {
            None
        };
        self.sent_since |= since.is_some();
        let frame = self.ledger.join(room, rejoin, since.as_ref());
        link.send(frame).await
    }

    /// Sends a request that waited for a connection.
    async fn send_outgoing(
        &mut self,
        outgoing: ledger::Outgoing,
        link: &mut Link,
    ) -> Result<(), Ending> {
        match self.ledger.send(outgoing) {
            Frame::Request(frame) => link.send(frame).await,
            Frame::Binary(request) => {
                let frame = binary::encode_client(&request.room, &request.payload);
                match link.send(Message::binary(frame)).await {
                    Ok(()) => {
                        let _ = request.reply.send(Ok(()));
                        Ok(())
                    }
                    Err(ending) => {
                        // Not sent: it goes out on the next connection.
                        self.ledger.requeue(ledger::Outgoing::Binary(request));
                        Err(ending)
                    }
                }
            }
        }
    }

    /// A frame (or the end of the stream) from the server.
    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, WsError>>,
        link: &mut Link,
    ) -> Result<(), Ending> {
        let message = match frame {
            None => return Err(lost("connection closed without a close frame")),
            Some(Err(err)) => return Err(lost(format!("connection error: {err}"))),
            Some(Ok(message)) => message,
        };
        link.heartbeat.alive();
        if let Some((code, reason)) = message.as_close() {
            let code = u16::from(code);
            let reason = reason.to_owned();
            link.drain_after_close().await;
            return Err(Ending::Lost {
                code: Some(code),
                reason,
            });
        }
        if let Some(text) = message.as_text() {
            match wire::decode(text) {
                Ok(server_message) => self.on_server_message(server_message).await,
                Err(err) => {
                    debug!(error = %err, "ignoring a text frame that is not a server message")
                }
            }
        } else if message.is_binary() {
            self.on_binary(Bytes::from(message.into_payload())).await;
        }
        Ok(())
    }

    async fn on_binary(&mut self, frame: Bytes) {
        let decoded = match binary::decode_server(&frame) {
            Ok(decoded) => decoded,
            Err(err) => {
                debug!(error = %err, "ignoring a malformed binary frame");
                return;
            }
        };
        if !self.tracker.deliver(decoded.room, decoded.seq) {
            return;
        }
        let start = frame.len() - decoded.payload.len();
        let event = Event::Binary {
            room: decoded.room.to_owned(),
            from: decoded.from.to_owned(),
            payload: frame.slice(start..),
            seq: decoded.seq,
            ts: decoded.ts,
        };
        self.emit(event).await;
    }

    async fn on_server_message(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Joined {
                room,
                id,
                members,
                member_count,
                members_truncated,
                seq,
                epoch,
                recovered,
            } => {
                let rejoin = matches!(
                    self.ledger.take(id, |f| matches!(f, InFlight::Join { .. })),
                    Some(InFlight::Join { rejoin: true, .. })
                );
                // A server before member counts: the list is the whole room.
                let member_count = member_count.unwrap_or(members.len() as u64);
                let count = (member_count, members_truncated);
                self.on_joined(room, members, count, seq, epoch, recovered, rejoin)
                    .await;
            }
            ServerMessage::Left { room, id } => {
                if let Some(InFlight::Leave { reply }) = self
                    .ledger
                    .take(id, |f| matches!(f, InFlight::Leave { .. }))
                {
                    let _ = reply.send(Ok(()));
                }
                if !self.rooms.contains(&room) {
                    self.tracker.forget(&room);
                }
            }
            ServerMessage::Message {
                room,
                from,
                data,
                seq,
                ts,
            } => {
                if self.tracker.deliver(&room, seq) {
                    self.emit(Event::Message {
                        room,
                        from,
                        data,
                        seq,
                        ts,
                    })
                    .await;
                }
            }
            ServerMessage::Typing { room, from } => self.emit(Event::Typing { room, from }).await,
            ServerMessage::Presence {
                room,
                event,
                user,
                joins,
                leaves,
                member_count,
            } => {
                // The single form, then the coalesced one, each user as its own event; a
                // frame with only a count (a room over the server's list limit) means the
                // names are no longer all told.
                let only_count = event.is_none() && joins.is_empty() && leaves.is_empty();
                if let (Some(event), Some(user)) = (event, user) {
                    let room = room.clone();
                    self.emit(Event::Presence { room, event, user }).await;
                }
                for (event, users) in [
                    (crate::PresenceEvent::Join, joins),
                    (crate::PresenceEvent::Leave, leaves),
                ] {
                    for user in users {
                        let room = room.clone();
                        self.emit(Event::Presence { room, event, user }).await;
                    }
                }
                if let Some(member_count) = member_count {
                    self.emit(Event::MemberCount {
                        room,
                        member_count,
                        truncated: only_count,
                    })
                    .await;
                }
            }
            ServerMessage::Members {
                room,
                id,
                members,
                member_count,
                next,
            } => {
                if let Some(InFlight::Members(request)) =
                    self.ledger.take(id, |f| matches!(f, InFlight::Members(_)))
                {
                    let _ = request.reply.send(Ok(MembersPage {
                        room,
                        members,
                        member_count,
                        next,
                    }));
                }
            }
            ServerMessage::Ack { id, seq, duplicate } => {
                if let Some(InFlight::Publish(publish)) = self
                    .ledger
                    .take(Some(id), |f| matches!(f, InFlight::Publish(_)))
                {
                    let result = match seq {
                        Some(seq) => {
                            debug!(seq, duplicate, msg_id = %publish.msg_id, "publish acked");
                            self.tracker.own(&publish.room, seq);
                            Ok(seq)
                        }
                        None => Err(Error::Protocol("ack without seq".to_owned())),
                    };
                    let _ = publish.reply.send(result);
                }
            }
            ServerMessage::Error { id, code, message } => self.on_error(id, code, message).await,
            ServerMessage::History {
                room,
                id,
                seq,
                epoch,
                messages,
            } => {
                if let Some(InFlight::History(history)) =
                    self.ledger.take(id, |f| matches!(f, InFlight::History(_)))
                {
                    let result = wire::history(room, seq, epoch, messages)
                        .map_err(|err| Error::Protocol(format!("bad history message: {err}")));
                    let _ = history.reply.send(result);
                }
            }
            ServerMessage::Refreshed { id, exp } => {
                if let Some(InFlight::Refresh(refresh)) =
                    self.ledger.take(id, |f| matches!(f, InFlight::Refresh(_)))
                {
                    debug!(exp, "token refreshed");
                    let _ = refresh.reply.send(Ok(exp));
                }
            }
            ServerMessage::Pong { .. } | ServerMessage::Unknown => {}
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, the parts of one reply"
    )]
    async fn on_joined(
        &mut self,
        room: String,
        members: Vec<String>,
        (member_count, members_truncated): (u64, bool),
        seq: u64,
        epoch: Option<String>,
        recovered: Option<bool>,
        rejoin: bool,
    ) {
        if !self.rooms.contains(&room) {
            // Left while the join was on its way: the `left` follows.
            return;
        }
        self.attempts.reset();
        let reply = JoinedReply {
            seq,
            epoch: epoch.as_deref(),
            recovered,
        };
        let outcome = self.tracker.joined(&room, reply, rejoin);
        debug!(%room, seq, epoch = epoch.as_deref(), recovered, rejoin, ?outcome, "joined");
        for waiter in self.join_waiters.remove(&room).unwrap_or_default() {
            let _ = waiter.send(Ok(JoinInfo {
                room: room.clone(),
                members: members.clone(),
                member_count,
                members_truncated,
                seq,
                epoch: epoch.clone(),
            }));
        }
        self.emit(Event::Joined {
            room: room.clone(),
            members,
            seq,
            epoch,
            recovered,
        })
        .await;
        if let JoinOutcome::Resync { seq, epoch } = outcome {
            self.emit(Event::Resync { room, seq, epoch }).await;
        }
    }

    async fn on_error(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        let code = code.as_str().to_owned();
        let server_error = || Error::Server {
            code: code.clone(),
            message: message.clone(),
        };
        match self.ledger.remove(id) {
            Some(InFlight::Join { room, rejoin }) => {
                let waiters = self.join_waiters.remove(&room).unwrap_or_default();
                let report = rejoin || waiters.is_empty();
                for waiter in waiters {
                    let _ = waiter.send(Err(server_error()));
                }
                self.rooms.remove(&room);
                self.tracker.forget(&room);
                if report {
                    self.emit(Event::Error { id, code, message }).await;
                }
            }
            Some(InFlight::Leave { reply }) => {
                let _ = reply.send(Err(server_error()));
            }
            Some(InFlight::Publish(publish)) => {
                let _ = publish.reply.send(Err(server_error()));
            }
            Some(InFlight::History(history)) => {
                let _ = history.reply.send(Err(server_error()));
            }
            Some(InFlight::Members(members)) => {
                let _ = members.reply.send(Err(server_error()));
            }
            Some(InFlight::Refresh(refresh)) => {
                if self.token.as_deref() == Some(refresh.token.as_str()) {
                    self.token = refresh.previous;
                }
                let _ = refresh.reply.send(Err(server_error()));
            }
            None => self.emit(Event::Error { id, code, message }).await,
        }
    }
}
