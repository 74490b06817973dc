//! The request ledger: requests waiting for a connection (the outbox) and requests sent on the
//! current one waiting for their reply (in flight, by id). It gives each request its id and its
//! frame, bounds how many may wait, and after a lost connection puts what got no reply back in
//! front of the outbox, in the order it was sent.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_protocol::{ClientMessage, StreamPosition};
use tokio_websockets::Message;

use super::{Command, Reply};
use crate::error::Error;
use crate::events::{History, MembersPage};
use crate::wire;

/// A request waiting for a connection.
#[derive(Debug)]
pub(super) enum Outgoing {
    Publish(PublishRequest),
    Binary(BinaryRequest),
    History(HistoryRequest),
    Members(MembersRequest),
    Refresh(RefreshRequest),
}

#[derive(Debug)]
pub(super) struct RefreshRequest {
    pub(super) token: String,
    /// The token reconnections used before this one, restored if the server refuses it.
    pub(super) previous: Option<String>,
    pub(super) reply: Reply<u64>,
}

#[derive(Debug)]
pub(super) struct PublishRequest {
    pub(super) room: String,
    data: Box<RawValue>,
    /// Chosen once, kept across re-sends: the server drops a publish it already accepted.
    pub(super) msg_id: String,
    pub(super) reply: Reply<u64>,
}

/// A binary publish: no reply to wait for, done once sent.
#[derive(Debug)]
pub(super) struct BinaryRequest {
    pub(super) room: String,
    pub(super) payload: Bytes,
    pub(super) reply: Reply<()>,
}

#[derive(Debug)]
pub(super) struct HistoryRequest {
    room: String,
    limit: u32,
    pub(super) reply: Reply<History>,
}

#[derive(Debug)]
pub(super) struct MembersRequest {
    room: String,
    after: Option<String>,
    limit: u32,
    pub(super) reply: Reply<MembersPage>,
}

/// A request sent on the current connection, waiting for its reply.
#[derive(Debug)]
pub(super) enum InFlight {
    /// `rejoin`: the automatic re-join after a reconnect (the waiters are kept by the loop).
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

/// What to send for a queued request.
#[derive(Debug)]
pub(super) enum Frame {
    /// A request now in flight under its id.
    Request(Message),
    /// A binary publish, answered as soon as it is sent.
    Binary(BinaryRequest),
}

/// The outbox and the in-flight requests of one client.
#[derive(Debug)]
pub(super) struct Ledger {
    /// Requests waiting for a connection, oldest first.
    outbox: VecDeque<Outgoing>,
    /// Requests sent on the current connection, by id (ids only grow, so this is send order).
    inflight: BTreeMap<u64, InFlight>,
    next_id: u64,
    /// Random per client; `msg_id` = prefix + counter.
    msg_id_prefix: String,
    msg_count: u64,
    /// Most requests waiting (queued and in flight) at once.
    capacity: usize,
}

impl Ledger {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            outbox: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_id: 1,
            msg_id_prefix: format!("{:016x}", fastrand::u64(..)),
            msg_count: 0,
            capacity,
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes a request in, or refuses it ([`Error::BufferFull`]) when too many are waiting.
    /// A `refresh` makes its token the one reconnections present (`token`): the old one may
    /// expire before the server has confirmed the new one. Joins, leaves and typing are not
    /// requests of the ledger (`None`).
    pub(super) fn accept(
        &mut self,
        command: Command,
        token: &mut Option<String>,
    ) -> Option<Outgoing> {
        if self.outbox.len() + self.inflight.len() >= self.capacity {
            match command {
                Command::Publish { reply, .. } | Command::Refresh { reply, .. } => {
                    let _ = reply.send(Err(Error::BufferFull));
                }
                Command::PublishBinary { reply, .. } => {
                    let _ = reply.send(Err(Error::BufferFull));
                }
                Command::History { reply, .. } => {
                    let _ = reply.send(Err(Error::BufferFull));
                }
                Command::Members { reply, .. } => {
                    let _ = reply.send(Err(Error::BufferFull));
                }
                Command::Join { .. } | Command::Leave { .. } | Command::Typing { .. } => {}
            }
            return None;
        }
        match command {
            Command::Publish { room, data, reply } => {
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
            } => Some(Outgoing::Binary(BinaryRequest {
                room,
                payload,
                reply,
            })),
            Command::History { room, limit, reply } => {
                Some(Outgoing::History(HistoryRequest { room, limit, reply }))
            }
            Command::Members {
                room,
                after,
                limit,
                reply,
            } => Some(Outgoing::Members(MembersRequest {
                room,
                after,
                limit,
                reply,
            })),
            Command::Refresh { token: new, reply } => {
                let previous = token.replace(new.clone());
                Some(Outgoing::Refresh(RefreshRequest {
                    token: new,
                    previous,
                    reply,
                }))
            }
            Command::Join { .. } | Command::Leave { .. } | Command::Typing { .. } => None,
        }
    }

    /// Queues a request until there is a connection.
    pub(super) fn queue(&mut self, outgoing: Outgoing) {
        self.outbox.push_back(outgoing);
    }

    /// Puts back a request that could not be sent: it goes first on the next connection.
    pub(super) fn requeue(&mut self, outgoing: Outgoing) {
        self.outbox.push_front(outgoing);
    }

    /// The oldest queued request.
    pub(super) fn next_queued(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    /// A `join` (with `since` for a recovering re-join), now in flight.
    pub(super) fn join(
        &mut self,
        room: String,
        rejoin: bool,
        since: Option<&StreamPosition>,
    ) -> Message {
        let id = self.next_id();
        let frame = wire::frame(&wire::join(&room, id, since));
        self.inflight.insert(id, InFlight::Join { room, rejoin });
        frame
    }

    /// A `leave`, now in flight.
    pub(super) fn leave(&mut self, room: &str, reply: Reply<()>) -> Message {
        let id = self.next_id();
        let frame = wire::frame(&ClientMessage::Leave {
            room: room.into(),
            id: Some(id),
        });
        self.inflight.insert(id, InFlight::Leave { reply });
        frame
    }

    /// The frame of a queued request; a request that expects a reply is now in flight.
    pub(super) fn send(&mut self, outgoing: Outgoing) -> Frame {
        let (id, message, inflight) = match outgoing {
            Outgoing::Binary(binary) => return Frame::Binary(binary),
            Outgoing::Publish(publish) => {
                let id = self.next_id();
                (
                    id,
                    ClientMessage::Publish {
                        room: publish.room.as_str().into(),
                        data: &publish.data,
                        id: Some(id),
                        echo: false,
                        msg_id: Some(publish.msg_id.as_str().into()),
                    }
                    .encode(),
                    InFlight::Publish(publish),
                )
            }
            Outgoing::History(history) => {
                let id = self.next_id();
                (
                    id,
                    ClientMessage::History {
                        room: history.room.as_str().into(),
                        limit: Some(u64::from(history.limit)),
                        id: Some(id),
                    }
                    .encode(),
                    InFlight::History(history),
                )
            }
            Outgoing::Members(members) => {
                let id = self.next_id();
                (
                    id,
                    ClientMessage::Members {
                        room: members.room.as_str().into(),
                        id: Some(id),
                        after: members.after.as_deref().map(Into::into),
                        limit: members.limit as usize,
                    }
                    .encode(),
                    InFlight::Members(members),
                )
            }
            Outgoing::Refresh(refresh) => {
                let id = self.next_id();
                (
                    id,
                    ClientMessage::Refresh {
                        token: refresh.token.as_str().into(),
                        id: Some(id),
                    }
                    .encode(),
                    InFlight::Refresh(refresh),
                )
            }
        };
        self.inflight.insert(id, inflight);
        Frame::Request(Message::text(message))
    }

    /// Takes the in-flight request `id` if it is of the expected kind.
    pub(super) fn take(
        &mut self,
        id: Option<u64>,
        kind: fn(&InFlight) -> bool,
    ) -> Option<InFlight> {
        let id = id?;
        if self.inflight.get(&id).is_some_and(kind) {
            self.inflight.remove(&id)
        } else {
            None
        }
    }

    /// Takes the in-flight request `id`, whatever its kind.
    pub(super) fn remove(&mut self, id: Option<u64>) -> Option<InFlight> {
        self.inflight.remove(&id?)
    }

    /// After a connection ended: replies that will never come. A leave is done (the
    /// connection's memberships are gone); publishes, history, members and refresh requests
    /// go back to the front of the outbox, in the order they were sent; joins are redone by
    /// the re-join.
    pub(super) fn requeue_inflight(&mut self) {
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

    /// The end: every pending request fails with [`Error::Closed`] (its reply is dropped).
    pub(super) fn clear(&mut self) {
        self.outbox.clear();
        self.inflight.clear();
    }
}
