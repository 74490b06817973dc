//! The connection task: the one task that owns the socket.
//!
//! It runs a select loop over the socket, the commands of the [`Client`](crate::Client)
//! handles, the heartbeat deadline and the shutdown signal. When the connection drops it
//! reports it, waits (backoff with full jitter, still taking commands), reconnects, re-joins
//! every room with `since` (the last seq seen and its epoch), then re-sends what was waiting:
//! un-acked publishes (with their original `msg_id`, so the server can drop duplicates),
//! `history` requests without a reply, and requests queued while disconnected.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use serde_json::value::RawValue;
use switchboard_protocol::binary;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_websockets::{
    CloseCode, Error as WsError, MaybeTlsStream, Message, WebSocketStream, upgrade,
};
use tracing::debug;

use crate::backoff::{Attempts, STABLE_AFTER};
use crate::builder::Settings;
use crate::error::Error;
use crate::events::{CONNECT_REFUSED, Event, History, JoinInfo, MembersPage};
use crate::tracker::{JoinOutcome, JoinedReply, Tracker};
use crate::wire::{self, Request, ServerMessage};

/// Close codes after which the client does not reconnect (besides a close 1000 from either
/// side): 1008 (policy violation: too many protocol errors, ping timeout) and the
/// authentication / permission codes 4001–4003, 4401 and 4403. Reconnecting would only be
/// refused again.
pub const NO_RECONNECT_CLOSE_CODES: &[u16] = &[1008, 4001, 4002, 4003, 4401, 4403];

/// HTTP statuses of a refused reconnection after which the client stops (authentication).
const NO_RECONNECT_HTTP_STATUSES: &[u16] = &[401, 403];

/// How long the close handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one send may take when the heartbeat check is off.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket type.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

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

/// Whether the client reconnects after a connection ended with this close code (`None`: no
/// close frame).
pub(crate) fn should_reconnect(code: Option<u16>) -> bool {
    match code {
        None => true,
        Some(1000) => false,
        Some(code) => !NO_RECONNECT_CLOSE_CODES.contains(&code),
    }
}

/// Opens one connection: TCP, then the upgrade, within the connect timeout.
///
/// `token`, when set (after a `refresh`), replaces the builder's `Authorization` header.
pub(crate) async fn open(settings: Arc<Settings>, token: Option<String>) -> Result<Ws, Error> {
    let attempt = async {
        let uri = &settings.uri;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if settings.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| Error::Connect(WsError::Io(err)))?;
        // Small frames (acks, typing) should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let stream = match &settings.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(config) => {
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|err| {
                        Error::Connect(WsError::Io(std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            err,
                        )))
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|err| Error::Connect(WsError::Io(err)))?;
                MaybeTlsStream::Rustls(tls)
            }
        };
        let mut builder = tokio_websockets::ClientBuilder::from_uri(uri.clone());
        for (name, value) in &settings.headers {
            if token.is_some() && *name == http::header::AUTHORIZATION {
                continue;
            }
            builder = builder
                .add_header(name.clone(), value.clone())
                .map_err(Error::Connect)?;
        }
        if let Some(token) = &token {
            let mut value =
                http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|err| {
                    Error::Connect(WsError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        err,
                    )))
                })?;
            value.set_sensitive(true);
            builder = builder
                .add_header(http::header::AUTHORIZATION, value)
                .map_err(Error::Connect)?;
        }
        match builder.connect_on(stream).await {
            Ok((ws, _response)) => Ok(ws),
            Err(WsError::Upgrade(upgrade::Error::DidNotSwitchProtocols(status))) => {
                Err(Error::Refused { status })
            }
            Err(err) => Err(Error::Connect(err)),
        }
    };
    tokio::time::timeout(settings.connect_timeout, attempt)
        .await
        .unwrap_or(Err(Error::ConnectTimeout))
}

/// A request waiting for a connection.
#[derive(Debug)]
enum Outgoing {
    Publish(PublishRequest),
    Binary {
        room: String,
        payload: Bytes,
        reply: Reply<()>,
    },
    History(HistoryRequest),
    Members(MembersRequest),
    Refresh(RefreshRequest),
}

#[derive(Debug)]
struct RefreshRequest {
    token: String,
    /// The token reconnections used before this one, restored if the server refuses it.
    previous: Option<String>,
    reply: Reply<u64>,
}

#[derive(Debug)]
struct PublishRequest {
    room: String,
    data: Box<RawValue>,
    /// Chosen once, kept across re-sends: the server drops a publish it already accepted.
    msg_id: String,
    reply: Reply<u64>,
}

#[derive(Debug)]
struct HistoryRequest {
    room: String,
    limit: u32,
    reply: Reply<History>,
}

#[derive(Debug)]
struct MembersRequest {
    room: String,
    after: Option<String>,
    limit: u32,
    reply: Reply<MembersPage>,
}

/// A request sent on the current connection, waiting for its reply.
#[derive(Debug)]
enum InFlight {
    /// `rejoin`: the automatic re-join after a reconnect (the waiters are in `join_waiters`).
    Join {
        room: String,
        rejoin: bool,
    },
    Leave {
        reply: Reply<()>,
    },
    Publish(PublishRequest),
    History(HistoryRequest),
    Members(MembersRequest),
    Refresh(RefreshRequest),
}

/// Why a connection ended.
#[derive(Debug)]
enum Ending {
    /// `close()` was called or every `Client` was dropped; the close handshake is done.
    Shutdown,
    /// The connection was lost or closed by the server.
    Lost { code: Option<u16>, reason: String },
}

fn lost(reason: impl Into<String>) -> Ending {
    Ending::Lost {
        code: None,
        reason: reason.into(),
    }
}

/// What woke the session loop.
enum Wake {
    Shutdown,
    Frame(Option<Result<Message, WsError>>),
    Command(Option<Command>),
    Heartbeat,
}

/// The socket of one connection, with its heartbeat deadline.
struct Link {
    ws: Ws,
    heartbeat: Heartbeat,
    /// Ends a blocked send when the client is closed.
    shutdown: CancellationToken,
}

/// The dead-server check: resolves when nothing has arrived for the timeout.
struct Heartbeat {
    timer: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Heartbeat {
    /// Something arrived: the server is alive.
    fn alive(&mut self) {
        if let Some((timeout, sleep)) = &mut self.timer {
            sleep.as_mut().reset(Instant::now() + *timeout);
        }
    }

    /// Resolves when nothing has arrived for the timeout (never if the check is off).
    async fn expired(&mut self) {
        match &mut self.timer {
            Some((_, sleep)) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

impl Link {
    fn new(ws: Ws, timeout: Option<Duration>, shutdown: CancellationToken) -> Self {
        Self {
            ws,
            heartbeat: Heartbeat {
                timer: timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
            },
            shutdown,
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), Ending> {
        let limit = self
            .heartbeat
            .timer
            .as_ref()
            .map_or(SEND_TIMEOUT, |(t, _)| *t);
        // A send blocks while the socket takes no more (a stalled peer): bounded like the
        // server's silence, and cut short by `close`.
        let sent = tokio::select! {
            sent = tokio::time::timeout(limit, self.ws.send(message)) => sent,
            () = self.shutdown.cancelled() => return Err(Ending::Shutdown),
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(lost(format!("send failed: {err}"))),
            Err(_) => Err(lost(format!("send timed out after {limit:?}"))),
        }
    }

    /// Sends our close 1000 and waits (briefly) for the server's reply.
    async fn close(&mut self) {
        let handshake = async {
            self.ws
                .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
                .await?;
            while let Some(frame) = self.ws.next().await {
                frame?;
            }
            Ok::<_, WsError>(())
        };
        if let Ok(Err(err)) = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await {
            debug!(error = %err, "close handshake failed");
        }
    }
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
    /// Requests waiting for a connection, oldest first.
    outbox: VecDeque<Outgoing>,
    /// Requests sent on the current connection, by id (ids only grow, so this is send order).
    inflight: BTreeMap<u64, InFlight>,
    next_id: u64,
    /// Random per client; `msg_id` = prefix + counter.
    msg_id_prefix: String,
    msg_count: u64,
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
            settings,
            commands,
            events,
            shutdown,
            rooms: BTreeSet::new(),
            tracker: Tracker::default(),
            join_waiters: HashMap::new(),
            outbox: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_id: 1,
            msg_id_prefix: format!("{:016x}", fastrand::u64(..)),
            msg_count: 0,
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
            self.requeue_inflight();
            match ending {
                Ending::Shutdown => {
                    self.emit(Event::Disconnected {
                        code: Some(1000),
                        reason: "closed by the client".to_owned(),
                    })
                    .await;
                }
                Ending::Lost { code, reason } => {
                    debug!(code, %reason, "disconnected");
                    // 1013 (slow consumer) soon after a recovering join: the replay may not
                    // have fit; the protocol asks to join again without `since` (and re-sync).
                    self.skip_recovery =
                        code == Some(1013) && self.sent_since && uptime < STABLE_AFTER;
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
        self.outbox.clear();
        self.inflight.clear();
        self.join_waiters.clear();
        // If the channel is full, `Events` reports `Closed` itself when the channel ends.
        let _ = self.events.try_send(Event::Closed);
        debug!("client closed");
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
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
        while let Some(outgoing) = self.outbox.pop_front() {
            self.send_outgoing(outgoing, link).await?;
        }
        Ok(())
    }

    /// After a connection ended: replies that will never come. A leave is done (the
    /// connection's memberships are gone); publishes and history requests go back to the
    /// front of the outbox, in the order they were sent; joins are redone by the re-join.
    fn requeue_inflight(&mut self) {
        let inflight = std::mem::take(&mut self.inflight);
        let mut resend = Vec::new();
        for request in inflight.into_values() {
            match request {
                InFlight::Join { .. } => {}
                InFlight::Leave { reply } => {
                    let _ = reply.send(Ok(()));
                }
                InFlight::Publish(publish) => resend.push(Outgoing::Publish(publish)),
                InFlight::History(history) => resend.push(Outgoing::History(history)),
                InFlight::Members(members) => resend.push(Outgoing::Members(members)),
                InFlight::Refresh(refresh) => resend.push(Outgoing::Refresh(refresh)),
            }
        }
        for outgoing in resend.into_iter().rev() {
            self.outbox.push_front(outgoing);
        }
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

    /// Takes a request in, or refuses it when too many are waiting.
    fn accept(&mut self, command: Command) -> Option<Outgoing> {
        let waiting = self.outbox.len() + self.inflight.len();
        let full = waiting >= self.settings.send_buffer;
        match command {
            Command::Publish { room, data, reply } => {
                if full {
                    let _ = reply.send(Err(Error::BufferFull));
                    return None;
                }
                self.msg_count += 1;
                let msg_id = format!("{}-{}", self.msg_id_prefix, self.msg_count);
                Some(Outgoing::Publish(PublishRequest {
                    room,
                    data,
                    msg_id,
                    reply,
                }))
            }
            Command::PublishBinary {
                room,
                payload,
                reply,
            } => {
                if full {
                    let _ = reply.send(Err(Error::BufferFull));
                    return None;
                }
                Some(Outgoing::Binary {
                    room,
                    payload,
                    reply,
                })
            }
            Command::History { room, limit, reply } => {
                if full {
                    let _ = reply.send(Err(Error::BufferFull));
                    return None;
                }
                Some(Outgoing::History(HistoryRequest { room, limit, reply }))
            }
            Command::Members {
                room,
                after,
                limit,
                reply,
            } => {
                if full {
                    let _ = reply.send(Err(Error::BufferFull));
                    return None;
                }
                Some(Outgoing::Members(MembersRequest {
                    room,
                    after,
                    limit,
                    reply,
                }))
            }
            Command::Refresh { token, reply } => {
                if full {
                    let _ = reply.send(Err(Error::BufferFull));
                    return None;
                }
                // Reconnections use it from now on: the old token may expire before the
                // server has confirmed the new one.
                let previous = self.token.replace(token.clone());
                Some(Outgoing::Refresh(RefreshRequest {
                    token,
                    previous,
                    reply,
                }))
            }
            Command::Join { .. } | Command::Leave { .. } | Command::Typing { .. } => None,
        }
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
                if let Some(outgoing) = self.accept(request) {
                    self.outbox.push_back(outgoing);
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
                let id = self.next_id();
                let text = encode(&Request::Leave { room: &room, id });
                self.inflight.insert(id, InFlight::Leave { reply });
                link.send(text).await
            }
            Command::Typing { room } => link.send(encode(&Request::Typing { room: &room })).await,
            request => match self.accept(request) {
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
        let id = self.next_id();
        let since = if rejoin && recover {
            self.tracker.since(&room)
        } else {
            None
        };
        self.sent_since |= since.is_some();
        let text = encode(&Request::join(&room, id, since.as_ref()));
        self.inflight.insert(id, InFlight::Join { room, rejoin });
        link.send(text).await
    }

    async fn send_outgoing(&mut self, outgoing: Outgoing, link: &mut Link) -> Result<(), Ending> {
        match outgoing {
            Outgoing::Publish(publish) => {
                let id = self.next_id();
                let text = encode(&Request::Publish {
                    room: &publish.room,
                    data: &publish.data,
                    id,
                    msg_id: &publish.msg_id,
                });
                self.inflight.insert(id, InFlight::Publish(publish));
                link.send(text).await
            }
            Outgoing::History(history) => {
                let id = self.next_id();
                let text = encode(&Request::History {
                    room: &history.room,
                    limit: history.limit,
                    id,
                });
                self.inflight.insert(id, InFlight::History(history));
                link.send(text).await
            }
            Outgoing::Members(members) => {
                let id = self.next_id();
                let text = encode(&Request::Members {
                    room: &members.room,
                    id,
                    after: members.after.as_deref(),
                    limit: members.limit,
                });
                self.inflight.insert(id, InFlight::Members(members));
                link.send(text).await
            }
            Outgoing::Refresh(refresh) => {
                let id = self.next_id();
                let text = encode(&Request::Refresh {
                    token: &refresh.token,
                    id,
                });
                self.inflight.insert(id, InFlight::Refresh(refresh));
                link.send(text).await
            }
            Outgoing::Binary {
                room,
                payload,
                reply,
            } => {
                let frame = binary::encode_client(&room, &payload);
                match link.send(Message::binary(frame)).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                        Ok(())
                    }
                    Err(ending) => {
                        // Not sent: it goes out on the next connection.
                        self.outbox.push_front(Outgoing::Binary {
                            room,
                            payload,
                            reply,
                        });
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
            // Keep polling so that the library sends its close reply, until the server drops
            // the TCP connection.
            let drain = async { while let Some(Ok(_)) = link.ws.next().await {} };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
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

    /// Takes the in-flight request `id` if it is of the expected kind.
    fn take_inflight(&mut self, id: Option<u64>, kind: fn(&InFlight) -> bool) -> Option<InFlight> {
        let id = id?;
        if self.inflight.get(&id).is_some_and(kind) {
            self.inflight.remove(&id)
        } else {
            None
        }
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
                    self.take_inflight(id, |f| matches!(f, InFlight::Join { .. })),
                    Some(InFlight::Join { rejoin: true, .. })
                );
                // A server before member counts: the list is the whole room.
                let member_count = member_count.unwrap_or(members.len() as u64);
                let count = (member_count, members_truncated);
                self.on_joined(room, members, count, seq, epoch, recovered, rejoin)
                    .await;
            }
            ServerMessage::Left { room, id } => {
                if let Some(InFlight::Leave { reply }) =
                    self.take_inflight(id, |f| matches!(f, InFlight::Leave { .. }))
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
                    self.take_inflight(id, |f| matches!(f, InFlight::Members(_)))
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
                if let Some(InFlight::Publish(publish)) =
                    self.take_inflight(Some(id), |f| matches!(f, InFlight::Publish(_)))
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
                    self.take_inflight(id, |f| matches!(f, InFlight::History(_)))
                {
                    let result = wire::history(room, seq, epoch, messages)
                        .map_err(|err| Error::Protocol(format!("bad history message: {err}")));
                    let _ = history.reply.send(result);
                }
            }
            ServerMessage::Refreshed { id, exp } => {
                if let Some(InFlight::Refresh(refresh)) =
                    self.take_inflight(id, |f| matches!(f, InFlight::Refresh(_)))
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

    async fn on_error(&mut self, id: Option<u64>, code: String, message: String) {
        let server_error = || Error::Server {
            code: code.clone(),
            message: message.clone(),
        };
        match id.and_then(|id| self.inflight.remove(&id)) {
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

/// The text frame of a request. Our request types always serialize (strings, integers and
/// already-valid JSON); should that ever fail, a `ping` goes out instead of a broken frame.
fn encode(request: &Request<'_>) -> Message {
    match request.encode() {
        Ok(text) => Message::text(text),
        Err(err) => {
            debug!(error = %err, "cannot encode a request");
            Message::text(r#"{"type":"ping"}"#)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_policy() {
        let table = [
            (None, true),
            (Some(1000), false),
            (Some(1001), true),
            (Some(1005), true),
            (Some(1006), true),
            (Some(1008), false),
            (Some(1009), true),
            (Some(1011), true),
            (Some(1013), true),
            (Some(4000), true),
            (Some(4001), false),
            (Some(4002), false),
            (Some(4003), false),
            (Some(4004), true),
            (Some(4401), false),
            (Some(4403), false),
        ];
        for (code, reconnect) in table {
            assert_eq!(should_reconnect(code), reconnect, "{code:?}");
        }
    }
}
