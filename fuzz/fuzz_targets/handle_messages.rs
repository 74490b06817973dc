//! The message-handling path without sockets: a `Hub`, four sessions, and a script of frames
//! handed to the server's own protocol-v1 handler (`switchboard_server::session`, which the
//! WebSocket transport also uses), with rate and violation limits out of the way, every
//! right but presence for `zoë`, no tokens, and the script's clock.
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
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_fuzz::parse_json;
use switchboard_hub::{
    Batch, Broker, HistoryPolicy, HistoryRule, HistoryRules, Hub, HubConfig, Outbound, Session,
};
use switchboard_protocol::client::{self, ClientMessage};
use switchboard_protocol::{ErrorCode, OwnedServerMessage, binary};
use switchboard_server::Config;
use switchboard_server::auth::grants::{Grants, Rights};
use switchboard_server::auth::{AuthError, Identity};
use switchboard_server::session::{Message, SessionContext, SessionHandler};
use tokio::time::Instant;

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

fn hub_config() -> HubConfig {
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
        ..HubConfig::default()
    }
}

/// The server as a session sees it: the hub, the limits (rates and violations out of the
/// way), no tokens, and the script's clock.
struct Server {
    hub: Hub,
    config: Config,
    now_ms: AtomicU64,
}

impl Server {
    fn new() -> Self {
        let mut config = Config::default();
        config.limits.max_rooms_per_connection = MAX_ROOMS;
        config.limits.messages_per_second = u32::MAX;
        config.limits.message_burst = u32::MAX;
        config.max_violations = u32::MAX;
        Self {
            hub: Hub::new(hub_config()),
            config,
            now_ms: AtomicU64::new(START_MS),
        }
    }
}

impl SessionContext for Server {
    fn broker(&self) -> &dyn Broker {
        &self.hub
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn verify(&self, _token: &str) -> Result<Identity, AuthError> {
        Err(AuthError::Invalid("no tokens here".to_owned()))
    }

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }
}

/// The epoch last seen of each room (from `joined` and `history`).
type Epochs = HashMap<String, String>;

/// One session slot: the hub's session and what the model expects of it.
struct Client {
    slot: usize,
    session: Arc<Session>,
    /// The server's handler of the session's connection.
    handler: SessionHandler,
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
    fn new(server: &Arc<Server>, slot: usize) -> Self {
        let session = server.hub.connect(Arc::from(USERS[slot]));
        let identity = Identity {
            user: session.user().clone(),
            expires_at: None,
            grants: if PRESENCE[slot] {
                Grants::All
            } else {
                let rights = Rights {
                    presence: false,
                    ..Rights::ALL
                };
                Grants::Rules(vec![("*".to_owned(), rights)])
            },
        };
        let handler = SessionHandler::new(server.clone(), session.clone(), identity);
        Self {
            slot,
            handler,
            session,
            paused: false,
            members: BTreeSet::new(),
            rooms: BTreeMap::new(),
            since: VecDeque::new(),
            replay: None,
        }
    }

    /// Hands a message to the server's own protocol-v1 handler
    /// (`switchboard_server::session`), as the WebSocket adapter does, and follows the
    /// membership it changed in the model. The in-process hub answers at once, so the
    /// handler's future is ready when first polled. Returns false when the handler closed the
    /// connection.
    fn send(&mut self, message: Message<'_>, epochs: &Epochs) -> bool {
        let mut text = None;
        // The room a join or leave names, and whether the session was in it before.
        let mut joining = None;
        let mut leaving = None;
        if let Message::Text(frame) = message
            && let Ok(request) = client::decode(frame)
        {
            match request {
                ClientMessage::Join { room, since, .. } => {
                    // `$E`: the epoch of the room last seen.
                    if since.as_ref().is_some_and(|s| s.epoch == "$E")
                        && let Some(epoch) = epochs.get(&*room)
                    {
                        text = Some(frame.replace("\"$E\"", &format!("\"{epoch}\"")));
                    }
                    joining = Some((room.into_owned(), since.map(|s| s.seq)));
                }
                ClientMessage::Leave { room, .. } => {
                    let was = self.session.is_member(&room);
                    leaving = Some((room.into_owned(), was));
                }
                _ => {}
            }
        }
        let message = match &text {
            Some(text) => Message::Text(text),
            None => message,
        };
        let handled = self.handler.on_message(message, Instant::now());
        let Poll::Ready(close) =
            pin!(handled).poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("the in-process hub answers at once");
        };
        if let Some((room, since)) = joining
            && self.session.is_member(&room)
        {
            self.members.insert(room);
            self.since.push_back(since);
        }
        if let Some((room, was)) = leaving {
            assert_eq!(was, self.members.remove(&room), "leave {room}");
            assert!(!self.session.is_member(&room), "left {room}");
        }
        close.is_none()
    }

    /// Drains the outbox (unless paused) and checks every frame. Returns false when the
    /// outbox was aborted (the connection is gone).
    fn drain(&mut self, epochs: &mut Epochs) -> bool {
        if self.paused {
            return !self.session.outbox().is_aborted();
        }
        let mut frames = VecDeque::new();
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
            OwnedServerMessage::Members { room, .. } => {
                assert!(PRESENCE[self.slot], "members of {room} without the right: {value}");
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
    let server = Arc::new(Server::new());
    let hub = &server.hub;
    let mut clients: Vec<Client> = (0..USERS.len())
        .map(|slot| Client::new(&server, slot))
        .collect();
    let mut epochs = Epochs::new();

    for line in input.split(|&b| b == b'\n').take(MAX_OPS) {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let slot = usize::from(rest.first().copied().unwrap_or(b'0')) % USERS.len();
        let now = server.now_ms.load(Ordering::Relaxed);
        // The slot whose connection the server closed.
        let mut closed = None;
        match op {
            b'0'..=b'3' | b'B' if rest.len() > MAX_FRAME => {
                // Too big: the server closes the connection (1009).
                closed = Some(if op == b'B' {
                    slot
                } else {
                    usize::from(op - b'0')
                });
            }
            b'0'..=b'3' => {
                let Ok(text) = std::str::from_utf8(rest) else {
                    continue; // the WebSocket layer only delivers UTF-8 text frames
                };
                let slot = usize::from(op - b'0');
                if !clients[slot].send(Message::Text(text), &epochs) {
                    closed = Some(slot);
                }
            }
            b'B' => {
                let frame = rest.get(1..).unwrap_or_default();
                if !clients[slot].send(Message::Binary(frame), &epochs) {
                    closed = Some(slot);
                }
            }
            b'D' => closed = Some(slot),
            b'P' => clients[slot].paused = !clients[slot].paused,
            b'T' => {
                let ms = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(1_000);
                let now = now.saturating_add(ms.min(3_600_000));
                server.now_ms.store(now, Ordering::Relaxed);
            }
            b'S' => {
                hub.sweep(now);
            }
            _ => continue,
        }
        if let Some(slot) = closed {
            hub.disconnect(&clients[slot].session);
            clients[slot] = Client::new(&server, slot);
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
                clients[slot] = Client::new(&server, slot);
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
