//! The message-handling path without sockets: a `Hub`, four sessions, and a script of frames
//! applied the way `crates/server/src/ws/session.rs` applies them (room names validated
//! first, errors answered with an `error` frame; tokens, rights and rate limits left out).
//!
//! Input: lines (split on `\n`), each one operation:
//!
//! | line        | operation                                                            |
//! |-------------|----------------------------------------------------------------------|
//! | `N<text>`   | session N (`0`-`3`) sends the text frame `<text>`                     |
//! | `BN<bytes>` | session N sends the binary frame `<bytes>`                            |
//! | `DN`        | session N disconnects; a new connection of the same user takes its slot |
//! | `PN`        | session N stops (or resumes) reading its outbox: a slow consumer      |
//! | `T<ms>`     | the clock moves on by `<ms>` milliseconds                             |
//! | `S`         | `Hub::sweep`                                                          |
//!
//! Epochs are random, so a join's `"since":{"seq":N,"epoch":"$E"}` stands for the epoch of
//! that room last seen in a `joined` or `history` reply (by any session).
//!
//! After every operation the outbox of every reading session is drained and checked:
//! - every text frame is valid JSON and a server message of the contract (it decodes into
//!   `OwnedServerMessage`, as a client reads it; error codes are known ones), every binary
//!   frame a valid server envelope;
//! - per session and room, message seqs (text and binary) strictly increase: a fresh `joined`
//!   resets the expectation to its `seq`, or, when `recovered`, to the join's `since`, and the
//!   frames right after it are then exactly the messages `since+1 ..= seq`; a repeated join
//!   and a `history` reply only raise it (nothing older may follow them);
//! - messages, typing and presence only for rooms the session is in (between `joined` and
//!   `left`); no presence for a session without the presence right, nor about its own user;
//! - `history` replies: that room's messages, consecutive, the newest being the reply's seq;
//! - membership as the hub, the session and the replies tell it agree with the model;
//! - a session that reads its outbox is never aborted as a slow consumer.
//!
//! At the end everyone disconnects, a sweep far in the future runs, and the hub must be empty.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_fuzz::parse_json;
use switchboard_hub::{
    Batch, HistoryPolicy, HistoryRule, HistoryRules, Hub, HubConfig, HubError, Outbound, Position,
    Session,
};
use switchboard_protocol::client::{self, ClientMessage, RequestId};
use switchboard_protocol::names::validate_room;
use switchboard_protocol::{ErrorCode, OwnedServerMessage, ServerMessage, binary};

/// Users of the four session slots: two connections of alice, and one without presence.
const USERS: [&str; 4] = ["alice", "bob", "alice", "zoë"];
const PRESENCE: [bool; 4] = [true, true, true, false];
/// The server's per-connection room limit, small here so that it is reached.
const MAX_ROOMS: usize = 8;
/// The server's `max_message_size`: a longer frame closes the connection (1009).
const MAX_FRAME: usize = 1024;
/// The server's `outbox_bytes`: small, so that replays and history replies hit their bound.
const OUTBOX_BYTES: usize = 4 * MAX_FRAME;
/// Operations per input: enough for interesting interleavings, bounded for speed.
const MAX_OPS: usize = 256;
const START_MS: u64 = 1_700_000_000_000;

fn config() -> HubConfig {
    let policy = |size, secs| HistoryPolicy {
        size,
        ttl: Duration::from_secs(secs),
    };
    HubConfig {
        outbox_bytes: OUTBOX_BYTES,
        history: HistoryRules {
            default: policy(4, 2),
            rules: vec![
                HistoryRule {
                    pattern: "nohist*".to_owned(),
                    policy: policy(0, 2),
                },
                HistoryRule {
                    pattern: "big*".to_owned(),
                    policy: policy(64, 60),
                },
            ],
        },
        idempotency_window: Duration::from_secs(1),
    }
}

/// The epoch last seen of each room (from `joined` and `history`).
type Epochs = HashMap<String, String>;

/// One session slot: the hub's session and what the model expects of it.
struct Client {
    slot: usize,
    session: Arc<Session>,
    /// Not reading its outbox (a slow consumer).
    paused: bool,
    /// Rooms joined, as the hub calls answered.
    members: BTreeSet<String>,
    /// Rooms joined, as the replies tell it (`joined` to `left`), with the last seq seen.
    rooms: BTreeMap<String, u64>,
    /// The `since.seq` of each join not yet answered, in order.
    since: VecDeque<Option<u64>>,
    /// A replay in progress: room, next seq expected, last seq of the replay.
    replay: Option<(String, u64, u64)>,
}

impl Client {
    fn new(hub: &Hub, slot: usize) -> Self {
        Self {
            slot,
            session: hub.connect(Arc::from(USERS[slot])),
            paused: false,
            members: BTreeSet::new(),
            rooms: BTreeMap::new(),
            since: VecDeque::new(),
            replay: None,
        }
    }

    fn reply(&self, message: &ServerMessage<'_>) {
        let _ = self.session.outbox().push(Outbound::Text(message.encode()));
    }

    fn reject(&self, id: Option<RequestId>, code: ErrorCode, message: &str) {
        self.reply(&ServerMessage::Error { id, code, message });
    }

    fn hub_error(&self, id: Option<RequestId>, err: &HubError) {
        self.reject(id, err.code(), &err.to_string());
    }

    /// `SessionHandler::on_text`, less tokens and rights.
    fn on_text(&mut self, hub: &Hub, text: &str, now: u64, epochs: &Epochs) {
        let message = match client::decode(text) {
            Ok(message) => message,
            Err(err) => return self.reject(err.id, err.code, &err.message),
        };
        let id = message.id();
        // Every request naming a room but `leave` is checked first (`SessionHandler::check`).
        let room = match &message {
            ClientMessage::Join { room, .. }
            | ClientMessage::Publish { room, .. }
            | ClientMessage::History { room, .. }
            | ClientMessage::Typing { room } => Some(room),
            _ => None,
        };
        if let Some(Err(err)) = room.map(|room| validate_room(room)) {
            return self.hub_error(id, &err.into());
        }
        let result = match message {
            ClientMessage::Join { room, id, since } => {
                if !self.session.is_member(&room) && self.session.room_count() >= MAX_ROOMS {
                    return self.reject(id, ErrorCode::TooManyRooms, "too many rooms");
                }
                let position = since.as_ref().map(|s| Position {
                    seq: s.seq,
                    epoch: match &*s.epoch {
                        "$E" => epochs.get(&*room).map_or("$E", String::as_str),
                        epoch => epoch,
                    },
                });
                let presence = PRESENCE[self.slot];
                let joined = hub.join(&self.session, &room, id, position, presence, now);
                if joined.is_ok() {
                    self.members.insert(room.into_owned());
                    self.since.push_back(since.map(|s| s.seq));
                }
                joined
            }
            ClientMessage::Leave { room, id } => {
                let left = hub.leave(&self.session, &room, id);
                assert_eq!(left.is_ok(), self.members.remove(&*room), "leave {room}");
                left
            }
            ClientMessage::Publish {
                room,
                data,
                id,
                echo,
                msg_id,
            } => hub
                .publish(&self.session, &room, data, echo, now, msg_id.as_deref())
                .map(|published| {
                    assert!(published.seq > 0);
                    assert!(!published.duplicate || msg_id.is_some());
                    if let Some(id) = id {
                        self.reply(&ServerMessage::Ack {
                            id,
                            seq: Some(published.seq),
                            duplicate: published.duplicate,
                        });
                    }
                }),
            ClientMessage::History { room, limit, id } => {
                hub.history(&self.session, &room, id, limit, now)
            }
            ClientMessage::Typing { room } => hub.typing(&self.session, &room),
            ClientMessage::Refresh { id, .. } => {
                return self.reject(id, ErrorCode::InvalidToken, "no tokens here");
            }
            ClientMessage::Ping { id } => return self.reply(&ServerMessage::Pong { id }),
        };
        if let Err(err) = result {
            self.hub_error(id, &err);
        }
    }

    /// `SessionHandler::on_binary`.
    fn on_binary(&self, hub: &Hub, frame: &[u8], now: u64) {
        let envelope = match binary::decode_client(frame) {
            Ok(envelope) => envelope,
            Err(err) => return self.reject(None, ErrorCode::InvalidMessage, &err.to_string()),
        };
        if let Err(err) = validate_room(envelope.room) {
            return self.hub_error(None, &err.into());
        }
        if let Err(err) = hub.publish_binary(&self.session, envelope.room, envelope.payload, now) {
            self.hub_error(None, &err);
        }
    }

    /// Drains the outbox (unless paused) and checks every frame. Returns false when the
    /// outbox was aborted (the connection is gone).
    fn drain(&mut self, epochs: &mut Epochs) -> bool {
        if self.paused {
            return !self.session.outbox().is_aborted();
        }
        let mut frames = Vec::new();
        match self.session.outbox().try_batch(&mut frames) {
            None | Some(Batch::Frames) => {}
            Some(Batch::Aborted(_)) => return false,
        }
        let debug = std::env::var_os("FUZZ_DEBUG").is_some();
        for frame in frames {
            match frame {
                Outbound::Text(bytes) => {
                    let value: Value = match parse_json(&bytes) {
                        Ok(value) => value,
                        Err(err) => panic!(
                            "text frame is not JSON ({err}): {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                    };
                    if debug {
                        eprintln!("[{}] {value}", self.slot);
                    }
                    self.on_frame(&value, epochs);
                }
                Outbound::Binary(bytes) => {
                    let message = match binary::decode_server(&bytes) {
                        Ok(message) => message,
                        Err(err) => panic!("binary frame {bytes:?} does not decode: {err}"),
                    };
                    if debug {
                        eprintln!("[{}] binary {message:?}", self.slot);
                    }
                    self.on_message(message.room, message.seq);
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(
            self.replay.is_none(),
            "replay incomplete: {:?}",
            self.replay
        );
        assert!(
            self.since.is_empty(),
            "joins not answered: {:?}",
            self.since
        );
        let replied: BTreeSet<&String> = self.rooms.keys().collect();
        assert_eq!(replied, self.members.iter().collect(), "rooms per replies");
        true
    }

    fn on_frame(&mut self, value: &Value, epochs: &mut Epochs) {
        // Every frame is a message of the contract, as a client decodes it.
        let frame = match serde_json::from_value::<OwnedServerMessage>(value.clone()) {
            Ok(frame) => frame,
            Err(err) => panic!("{value} is not a server message: {err}"),
        };
        if let Some((room, next, _)) = &self.replay {
            assert!(
                matches!(frame, OwnedServerMessage::Message { .. }),
                "expected replay of {room} #{next}, got {value}"
            );
        }
        match frame {
            OwnedServerMessage::Joined {
                room,
                members,
                seq,
                epoch,
                recovered,
                ..
            } => {
                let epoch = epoch.expect("joined has an epoch");
                epochs.insert(room.clone(), epoch);
                if PRESENCE[self.slot] {
                    assert!(members.iter().any(|m| m == USERS[self.slot]), "{value}");
                    let unique: BTreeSet<_> = members.iter().collect();
                    assert_eq!(unique.len(), members.len(), "{value}");
                } else {
                    assert!(members.is_empty(), "{value}");
                }
                let since = self.since.pop_front().expect("a join for this joined");
                assert_eq!(recovered.is_some(), since.is_some(), "{value}");
                let last = match (self.rooms.get(&room), recovered, since) {
                    // A repeated join: the stream goes on, nothing is replayed.
                    (Some(&last), _, _) => {
                        assert!(last <= seq, "{value} after #{last}");
                        seq
                    }
                    (None, Some(true), Some(since)) => {
                        assert!(since <= seq, "{value} recovered from {since}");
                        if since < seq {
                            self.replay = Some((room.clone(), since + 1, seq));
                        }
                        since
                    }
                    (None, _, _) => seq,
                };
                self.rooms.insert(room, last);
            }
            OwnedServerMessage::Left { room, .. } => {
                assert!(
                    self.rooms.remove(&room).is_some(),
                    "left {room} never joined"
                );
            }
            OwnedServerMessage::Message { room, seq, .. } => {
                assert!(value.get("data").is_some(), "{value}");
                self.on_message(&room, seq);
            }
            OwnedServerMessage::Typing { room, .. } => {
                assert!(
                    self.rooms.contains_key(&room),
                    "typing in {room}, not joined"
                );
            }
            OwnedServerMessage::Presence { room, user, .. } => {
                assert!(PRESENCE[self.slot], "presence without the right: {value}");
                assert!(
                    self.rooms.contains_key(&room),
                    "presence in {room}, not joined"
                );
                assert_ne!(
                    user.as_deref(),
                    Some(USERS[self.slot]),
                    "presence about self: {value}"
                );
            }
            OwnedServerMessage::History {
                room,
                seq: head,
                epoch,
                messages,
                ..
            } => {
                epochs.insert(room.clone(), epoch);
                let seqs: Vec<u64> = messages
                    .iter()
                    .map(|m| {
                        assert_eq!(m.room, room, "{value}");
                        m.seq
                    })
                    .collect();
                if let Some(&newest) = seqs.last() {
                    assert_eq!(newest, head, "{value}");
                    assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "{value}");
                }
                // Queued under the room lock: whatever follows in the stream is newer.
                if let Some(last) = self.rooms.get_mut(&room) {
                    assert!(*last <= head, "{value} after #{last}");
                    *last = head;
                }
            }
            OwnedServerMessage::Ack { seq, .. } => assert!(seq > Some(0), "{value}"),
            OwnedServerMessage::Error { code, .. } => {
                assert!(!matches!(code, ErrorCode::Other(_)), "{value}");
            }
            OwnedServerMessage::Pong { .. } => {}
            other => panic!("unexpected frame {other:?}: {value}"),
        }
    }

    fn on_message(&mut self, room: &str, seq: u64) {
        if let Some((replaying, next, until)) = &mut self.replay {
            assert!(
                replaying == room && seq == *next,
                "expected replay of {replaying} #{next}, got #{seq} in {room}"
            );
            if *next == *until {
                self.replay = None;
            } else {
                *next += 1;
            }
        }
        let last = self
            .rooms
            .get_mut(room)
            .unwrap_or_else(|| panic!("message #{seq} in {room}, not joined"));
        assert!(seq > *last, "message #{seq} in {room} after #{last}");
        *last = seq;
    }
}

fuzz_target!(|input: &[u8]| {
    let hub = Hub::new(config());
    let mut clients: Vec<Client> = (0..USERS.len())
        .map(|slot| Client::new(&hub, slot))
        .collect();
    let mut now = START_MS;
    let mut epochs = Epochs::new();

    for line in input.split(|&b| b == b'\n').take(MAX_OPS) {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let slot = usize::from(rest.first().copied().unwrap_or(b'0')) % USERS.len();
        match op {
            b'0'..=b'3' | b'B' if rest.len() > MAX_FRAME => {
                // Too big: the server closes the connection (1009).
                let slot = if op == b'B' {
                    slot
                } else {
                    usize::from(op - b'0')
                };
                hub.disconnect(&clients[slot].session);
                clients[slot] = Client::new(&hub, slot);
            }
            b'0'..=b'3' => {
                let Ok(text) = std::str::from_utf8(rest) else {
                    continue; // the WebSocket layer only delivers UTF-8 text frames
                };
                clients[usize::from(op - b'0')].on_text(&hub, text, now, &epochs);
            }
            b'B' => {
                let frame = rest.get(1..).unwrap_or_default();
                clients[slot].on_binary(&hub, frame, now);
            }
            b'D' => {
                hub.disconnect(&clients[slot].session);
                clients[slot] = Client::new(&hub, slot);
            }
            b'P' => clients[slot].paused = !clients[slot].paused,
            b'T' => {
                let ms = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(1_000);
                now = now.saturating_add(ms.min(3_600_000));
            }
            b'S' => {
                hub.sweep(now);
            }
            _ => continue,
        }
        for slot in 0..clients.len() {
            let reading = !clients[slot].paused;
            if !clients[slot].drain(&mut epochs) {
                // A session read after every operation holds at most one operation's frames.
                assert!(!reading, "session {slot} aborted as a slow consumer");
                if std::env::var_os("FUZZ_DEBUG").is_some() {
                    eprintln!("[{slot}] aborted as a slow consumer");
                }
                hub.disconnect(&clients[slot].session);
                clients[slot] = Client::new(&hub, slot);
            }
        }
        let rooms: BTreeSet<&String> = epochs.keys().collect();
        for client in &clients {
            for &room in &rooms {
                let modelled = client.members.contains(room);
                assert_eq!(client.session.is_member(room), modelled, "{room}");
                assert_eq!(hub.is_member(client.session.id(), room), modelled, "{room}");
            }
            assert_eq!(client.session.room_count(), client.members.len());
        }
        assert_eq!(hub.stats().sessions, clients.len());
    }

    for client in &clients {
        hub.disconnect(&client.session);
    }
    hub.sweep(u64::MAX);
    let stats = hub.stats();
    assert_eq!((stats.rooms, stats.sessions), (0, 0), "{stats:?}");
});
