//! The engine side of rooms that a remote broker sequences (Redis, in
//! `switchboard-broker-redis`): this node's registry of such rooms and the operations the
//! broker calls as its requests and its stream progress. Each room is the one local room type
//! ([`crate::room`]) in its general form — members pending until the broker's snapshot,
//! buffered frames merged by seq, resyncs (`room/pending.rs`); this file only finds the room,
//! numbers joins and resyncs, queues the resyncs the stream asks for ([`crate::Cluster`]
//! performs them), and tells the broker what changed here (subscribe, presence).
//!
//! Everything here is synchronous and knows nothing of the broker's transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use switchboard_protocol::client::RequestId;
use switchboard_protocol::names::validate_room;

use crate::error::HubError;
use crate::hub::HubStats;
use crate::outbox::{Outbound, OutboxPool};
use crate::presence::PresenceConfig;
use crate::registry::Registry;
use crate::reply;
use crate::room::{
    Inbound, Joining, LocalRooms, Position, Remote, ResyncRequest, Room, RoomState, Snapshot,
    Tickets,
};
use crate::session::Session;

/// A join in progress, from [`Relay::begin_join`] to [`Relay::finish_join`] or
/// [`Relay::abort_join`].
#[derive(Debug)]
pub struct JoinTicket {
    room: Arc<Room<Remote>>,
    ticket: u64,
    /// The relay's generation when the join began (see [`Relay::resync_all`]).
    generation: u64,
    /// The room had no member on this node: the broker must subscribe to it first.
    pub first_in_room: bool,
    /// The user had no other connection in the room on this node: the broker adds the
    /// user's presence.
    pub first_of_user: bool,
}

impl JoinTicket {
    /// The room's name.
    pub fn room(&self) -> &Arc<str> {
        &self.room.name
    }
}

/// What leaving changed on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The room.
    pub room: Arc<str>,
    /// The user.
    pub user: Arc<str>,
    /// No member of the room is left on this node: the broker may unsubscribe.
    pub room_empty: bool,
    /// The user's last connection in the room on this node left: the broker removes the
    /// user's presence from this node.
    pub last_of_user: bool,
}

/// This node's members of broker-sequenced rooms.
#[derive(Debug)]
pub struct Relay {
    /// The rooms (`Room<Remote>`: where the broker's stream of each stands) and sessions.
    local: LocalRooms<Remote>,
    tickets: Tickets,
    /// Counts the broker's stream interruptions ([`Relay::resync_all`]): a join that began
    /// before one may hold a snapshot older than what the stream lost.
    generation: AtomicU64,
    /// Resyncs to perform, newest per room ([`crate::Cluster`] performs them).
    resyncs: Mutex<Vec<ResyncRequest>>,
    resync_ready: Notify,
}

impl Relay {
    /// An empty relay; each session's outbox holds `outbox_bytes`.
    pub fn new(outbox_bytes: usize) -> Self {
        Self::with_pool(outbox_bytes, None)
    }

    /// An empty relay whose sessions' outboxes also draw on the server-wide `pool`.
    pub fn with_pool(outbox_bytes: usize, outbox_pool: Option<Arc<OutboxPool>>) -> Self {
        Self {
            local: LocalRooms::new(outbox_bytes, outbox_pool, PresenceConfig::default()),
            tickets: Tickets::default(),
            generation: AtomicU64::new(0),
            resyncs: Mutex::new(Vec::new()),
            resync_ready: Notify::new(),
        }
    }

    /// The same relay with these presence settings.
    #[must_use]
    pub fn with_presence(mut self, presence: PresenceConfig) -> Self {
        self.local.presence = presence;
        self
    }

    /// Registers a connection of `user`. Call [`Relay::disconnect`] when it ends.
    pub(crate) fn connect(&self, user: Arc<str>) -> Arc<Session> {
        self.local.connect(user)
    }

    /// Adds `session` to `room` as a pending member. The broker then fetches a [`Snapshot`]
    /// (after subscribing, if `first_in_room`) and calls [`Relay::finish_join`]. A session
    /// already in the room is answered from a fresh snapshot too, without a replay; it keeps
    /// its place in the stream (or in a resync) meanwhile, and stays if the join is aborted.
    pub(crate) fn begin_join(
        &self,
        session: &Arc<Session>,
        room: &str,
        id: Option<RequestId>,
        since: Option<Position<'_>>,
        presence: bool,
    ) -> Result<JoinTicket, HubError> {
        validate_room(room)?;
        let ticket = self.tickets.next();
        let (entry, begun) = self.local.with_room(
            room,
            |_| Remote::default(),
            |_, state| state.begin_join(session, ticket, id, since, presence),
        );
        session.enter(entry.name.clone(), entry.clone());
        Ok(JoinTicket {
            generation: self.generation.load(Ordering::Acquire),
            room: entry,
            ticket,
            first_in_room: begun.first_in_room,
            first_of_user: begun.first_of_user,
        })
    }

    /// Answers a pending join with the broker's snapshot: `joined`, the replay, then what
    /// arrived meanwhile after the snapshot. Nothing happens if the session left meanwhile.
    /// When the broker's stream was interrupted while the join was on its way, the snapshot
    /// may predate what the stream lost: the member then waits for a resync from its position,
    /// which the broker must perform (the returned request).
    pub(crate) fn finish_join(
        &self,
        join: &JoinTicket,
        session: &Session,
        snapshot: &Snapshot,
    ) -> Option<ResyncRequest> {
        let joining = Joining {
            ticket: join.ticket,
            stale: join.generation != self.generation.load(Ordering::Acquire),
        };
        join.room.state.lock().finish_join(
            &join.room.name,
            session,
            joining,
            snapshot,
            &self.tickets,
        )
    }

    /// Undoes a join the broker could not complete. Returns the departure to undo in the
    /// broker (unsubscribe when the room is now empty here).
    pub(crate) fn abort_join(&self, join: &JoinTicket, session: &Session) -> Option<Departure> {
        let first_join = join.room.state.lock().abort_join(session, join.ticket)?;
        if !first_join {
            return None;
        }
        session.exit::<Room<Remote>>(&join.room.name);
        self.remove(&join.room, session, None)
    }

    /// Leaves `room`, queuing `left` with `id`.
    pub(crate) fn leave(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
    ) -> Result<Departure, HubError> {
        validate_room(room)?;
        let Some(entry) = session.exit::<Room<Remote>>(room) else {
            return Err(HubError::NotJoined(room.to_owned()));
        };
        self.remove(&entry, session, Some(id))
            .ok_or_else(|| HubError::NotJoined(room.to_owned()))
    }

    /// Leaves every room and unregisters the session; returns what the broker must undo.
    pub(crate) fn disconnect(&self, session: &Session) -> Vec<Departure> {
        let rooms = session.exit_all::<Room<Remote>>();
        self.local.disconnected();
        rooms
            .iter()
            .filter_map(|room| self.remove(room, session, None))
            .collect()
    }

    /// The room of a session's membership (for publishing: no registry lookup).
    pub(crate) fn member_room(&self, session: &Session, room: &str) -> Result<Arc<str>, HubError> {
        Ok(self.local.member_room(session, room)?.name.clone())
    }

    /// Fans a frame of `room`'s stream out to this node's members. Returns a resync to perform
    /// when the frame shows that the room missed something.
    pub fn deliver(&self, room: &str, inbound: Inbound<'_>) -> Option<ResyncRequest> {
        let entry = self.local.registry.get(room)?;
        let mut state = entry.state.lock();
        let (resync, queue) = state.deliver(&entry.name, &inbound, &self.tickets);
        if queue {
            // Lock order: a room, then the queue (never the other way round).
            self.local.queue_presence(entry.clone());
        }
        resync
    }

    /// Hands out the presence changes collected since the last call (see
    /// [`crate::PresenceConfig`]). Call it every `batch_interval`.
    pub(crate) fn flush_presence(&self, now_ms: u64) {
        self.local.flush_presence(now_ms);
    }

    /// The room's member count as this node knows it (from snapshots and presence events).
    pub fn member_count(&self, room: &str) -> Option<u64> {
        let entry = self.local.registry.get(room)?;
        let count = entry.state.lock().local.member_count();
        Some(count)
    }

    /// Applies the snapshot of a resync: each waiting member gets what it missed from history,
    /// or an unsolicited `joined` with `recovered: false` when history cannot fill the gap,
    /// then the frames that arrived meanwhile.
    pub(crate) fn finish_resync(&self, request: &ResyncRequest, snapshot: &Snapshot) {
        let Some(entry) = self.local.registry.get(&request.room) else {
            return;
        };
        entry
            .state
            .lock()
            .finish_resync(&entry.name, request, snapshot);
    }

    /// Queues a `history` reply (`entries` oldest first, with their seqs, as the broker read
    /// them when the room was at `seq`) where it belongs in the session's stream of the room
    /// (see `RoomState::place_history`).
    pub(crate) fn place_history(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        seq: u64,
        epoch: &str,
        entries: &[(u64, Outbound)],
    ) {
        let entry = self.local.registry.get(room);
        let state = entry.as_ref().map(|entry| entry.state.lock());
        RoomState::<Remote>::place_history(
            state.as_deref(),
            session,
            room,
            id,
            seq,
            epoch,
            entries,
        );
    }

    /// Every room with members here, and their users: for presence heartbeats and for
    /// resubscribing after the broker's connection came back.
    pub fn rooms(&self) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let mut rooms = Vec::new();
        for shard in self.local.registry.shards() {
            for (name, room) in shard.read().iter() {
                if let Some(users) = room.state.lock().local.users_if_any() {
                    rooms.push((name.clone(), users));
                }
            }
        }
        rooms
    }

    /// After the broker's stream was interrupted: every room with members resyncs from the
    /// last seq it delivered (rooms still waiting for their first snapshot are left to it).
    pub fn resync_all(&self) -> Vec<ResyncRequest> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut requests = Vec::new();
        for shard in self.local.registry.shards() {
            for room in shard.read().values() {
                requests.extend(room.state.lock().resync(&room.name, &self.tickets));
            }
        }
        requests
    }

    /// The users `room` has on this node now (`None` without members).
    pub fn users_of(&self, room: &str) -> Option<Vec<Arc<str>>> {
        let entry = self.local.registry.get(room)?;
        entry.state.lock().local.users_if_any()
    }

    /// Whether `room` has members on this node.
    pub fn has_members(&self, room: &str) -> bool {
        self.local
            .registry
            .shard(room)
            .read()
            .get(room)
            .is_some_and(|entry| !entry.state.lock().local.is_empty())
    }

    /// Queues a resync (replacing an older one of the same room) for the engine's broker to
    /// perform.
    pub fn request_resync(&self, request: ResyncRequest) {
        let mut queue = self.resyncs.lock();
        queue.retain(|queued| queued.room != request.room);
        queue.push(request);
        drop(queue);
        self.resync_ready.notify_one();
    }

    /// Queues a resync that failed again, unless a newer one of the room is queued.
    pub(crate) fn retry_resync(&self, request: ResyncRequest) {
        let mut queue = self.resyncs.lock();
        if !queue.iter().any(|queued| queued.room == request.room) {
            queue.push(request);
        }
    }

    /// The resyncs queued now.
    pub(crate) fn take_resyncs(&self) -> Vec<ResyncRequest> {
        std::mem::take(&mut *self.resyncs.lock())
    }

    /// Waits until a resync is queued (or was queued since the last wait).
    pub(crate) async fn resync_wanted(&self) {
        self.resync_ready.notified().await;
    }

    /// The bytes a replay may fill in a session's outbox here.
    pub fn replay_budget(&self) -> usize {
        crate::outbox::replay_budget(self.local.outbox_bytes())
    }

    /// The room registry, for listings (`crate::activity`).
    pub(crate) fn registry(&self) -> &Registry<Room<Remote>> {
        &self.local.registry
    }

    /// Current counts.
    pub(crate) fn stats(&self) -> HubStats {
        // History and idempotency ids live in Redis, not on this node.
        self.local.stats(0, 0)
    }

    fn remove(
        &self,
        entry: &Arc<Room<Remote>>,
        session: &Session,
        reply: Option<Option<RequestId>>,
    ) -> Option<Departure> {
        let (room_empty, last_of_user) = {
            let mut state = entry.state.lock();
            let last_of_user = state.remove(session)?;
            (state.local.is_empty(), last_of_user)
        };
        if let Some(id) = reply {
            let _ = session.outbox().push(reply::left(&entry.name, id));
        }
        if room_empty {
            self.local.registry.dispose(&entry.name, entry, |room| {
                let mut state = room.state.lock();
                let local = &mut state.local;
                local.closed |= local.is_empty();
                local.closed
            });
        }
        Some(Departure {
            room: entry.name.clone(),
            user: session.user().clone(),
            room_empty,
            last_of_user,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;
    use crate::outbox::Batch;
    use crate::room::InboundKind;

    const BUDGET: usize = 1 << 20;

    fn frame(seq: u64) -> Outbound {
        Outbound::Text(Bytes::from(format!(
            r#"{{"type":"message","room":"r","seq":{seq}}}"#
        )))
    }

    fn snapshot(epoch: &str, seq: u64, replay: Option<&[u64]>) -> Snapshot {
        Snapshot {
            epoch: epoch.into(),
            seq,
            presence_version: 0,
            members: vec!["a".into(), "b".into()],
            member_count: 2,
            replay: replay.map(|seqs| seqs.iter().map(|&n| (n, frame(n))).collect()),
        }
    }

    /// Joins room "r" (with presence) and returns the pending join.
    fn join(
        relay: &Relay,
        session: &Arc<Session>,
        id: Option<RequestId>,
        since: Option<(u64, &str)>,
    ) -> JoinTicket {
        let since = since.map(|(seq, epoch)| Position { seq, epoch });
        relay.begin_join(session, "r", id, since, true).unwrap()
    }

    /// A relay with one member per user, each joined (without `since`) from a snapshot at
    /// `e:seq` and drained.
    fn live(seq: u64, users: &[&str]) -> (Relay, Vec<Arc<Session>>) {
        let relay = Relay::new(BUDGET);
        let sessions = users
            .iter()
            .map(|&user| {
                let session = relay.connect(user.into());
                let ticket = join(&relay, &session, None, None);
                relay.finish_join(&ticket, &session, &snapshot("e", seq, None));
                drain(&session);
                session
            })
            .collect();
        (relay, sessions)
    }

    fn deliver(
        relay: &Relay,
        kind: InboundKind,
        epoch: &str,
        seq: u64,
        skip: Option<&Session>,
        frame: Outbound,
    ) -> Option<ResyncRequest> {
        let skip = skip.map(Session::id);
        relay.deliver(
            "r",
            Inbound {
                kind,
                epoch,
                seq,
                skip,
                frame,
                sequenced: None,
            },
        )
    }

    fn msg(relay: &Relay, epoch: &str, seq: u64) -> Option<ResyncRequest> {
        deliver(relay, InboundKind::Message, epoch, seq, None, frame(seq))
    }

    /// Delivers messages `seqs` of epoch "e", none of which may ask for a resync.
    fn msgs(relay: &Relay, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            assert_eq!(msg(relay, "e", seq), None, "seq {seq}");
        }
    }

    /// Delivers presence event `version` (user `u<version>` joins) and hands it out at once,
    /// as the tick does (one event per window).
    fn presence(relay: &Relay, version: u64, skip: Option<&Session>) {
        let text =
            format!(r#"{{"type":"presence","room":"r","event":"join","user":"u{version}"}}"#);
        let frame = Outbound::Text(Bytes::from(text));
        let resync = deliver(relay, InboundKind::Presence, "", version, skip, frame);
        assert_eq!(resync, None);
        relay.flush_presence(0);
    }

    fn typing(relay: &Relay, skip: Option<&Session>) {
        let frame = Outbound::Text(Bytes::from_static(br#"{"type":"typing","room":"r"}"#));
        assert_eq!(
            deliver(relay, InboundKind::Typing, "", 0, skip, frame),
            None
        );
    }

    /// Everything queued for `session`, one compact line per frame: `m<seq>` for a message,
    /// `p<version>` for a presence event, `t` for typing, and every field of `joined`/`left`.
    fn drain(session: &Session) -> Vec<String> {
        let mut frames = std::collections::VecDeque::new();
        match session.outbox().try_batch(&mut frames) {
            None | Some(Batch::Frames) => {}
            Some(Batch::Aborted(frame)) => panic!("aborted: {frame:?}"),
        }
        frames.into_iter().map(render).collect()
    }

    fn render(frame: Outbound) -> String {
        let Outbound::Text(bytes) = frame else {
            panic!("{frame:?}");
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["room"], "r", "{v}");
        let opt = |field: &str| v.get(field).map_or("-".to_owned(), Value::to_string);
        match v["type"].as_str().unwrap() {
            "message" => format!("m{}", v["seq"]),
            "presence" => match v["user"].as_str() {
                Some(user) => format!("p{}", user.trim_start_matches('u')),
                None => format!("p{}", v["joins"]),
            },
            "typing" => "t".to_owned(),
            "left" => format!("left id={}", opt("id")),
            "history" => {
                let seqs: Vec<String> = v["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["seq"].to_string())
                    .collect();
                format!(
                    "history {}:{} [{}]",
                    v["epoch"].as_str().unwrap(),
                    v["seq"],
                    seqs.join(",")
                )
            }
            "joined" => {
                let known = [
                    "type",
                    "room",
                    "id",
                    "members",
                    "member_count",
                    "seq",
                    "epoch",
                    "recovered",
                ];
                let fields = v.as_object().unwrap().keys();
                assert!(fields.into_iter().all(|k| known.contains(&&**k)), "{v}");
                let members: Vec<&str> = v["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap())
                    .collect();
                format!(
                    "joined id={} {}:{} recovered={} [{}]",
                    opt("id"),
                    v["epoch"].as_str().unwrap(),
                    v["seq"],
                    opt("recovered"),
                    members.join(",")
                )
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }

    #[test]
    fn joined_from_the_snapshot_then_the_stream_after_it() {
        let relay = Relay::new(BUDGET);
        let a = relay.connect("a".into());
        let ticket = join(&relay, &a, Some(1), None);
        assert!(ticket.first_in_room && ticket.first_of_user);
        assert_eq!(&**ticket.room(), "r");
        assert!(a.is_member("r"));
        relay.finish_join(&ticket, &a, &snapshot("e", 5, None));
        msgs(&relay, 6..=8);
        assert_eq!(
            drain(&a),
            ["joined id=1 e:5 recovered=- [a,b]", "m6", "m7", "m8"]
        );
        // A second finish of the same join is ignored, live or resyncing.
        relay.finish_join(&ticket, &a, &snapshot("e", 5, None));
        let request = msg(&relay, "e", 10).unwrap();
        relay.finish_join(&ticket, &a, &snapshot("e", 10, None));
        assert!(drain(&a).is_empty());
        relay.finish_resync(&request, &snapshot("e", 10, Some(&[9, 10])));
        assert_eq!(drain(&a), ["m9", "m10"]);
    }

    #[test]
    fn a_pending_join_gets_joined_then_the_replay_then_what_came_after_the_snapshot() {
        let (relay, live) = live(2, &["b"]);
        let a = relay.connect("a".into());
        let ticket = join(&relay, &a, Some(1), Some((2, "e")));
        assert!(!ticket.first_in_room);
        // 3..=5 are in the snapshot (and buffered too), 6 and 7 only in the stream.
        msgs(&relay, 3..=7);
        assert!(drain(&a).is_empty());
        // The replay's entry at or below `since` is not sent.
        relay.finish_join(&ticket, &a, &snapshot("e", 5, Some(&[2, 3, 4, 5])));
        assert_eq!(
            drain(&a),
            [
                "joined id=1 e:5 recovered=true [a,b]",
                "m3",
                "m4",
                "m5",
                "m6",
                "m7"
            ]
        );
        msgs(&relay, [7, 8]);
        assert_eq!(drain(&a), ["m8"]);
        assert_eq!(drain(&live[0]), ["m3", "m4", "m5", "m6", "m7", "m8"]);
    }

    #[test]
    fn recovered_only_when_the_replay_is_there_and_in_the_same_epoch() {
        /// The epoch of `since`, the snapshot's replay, what the joiner gets.
        type Case = (
            &'static str,
            Option<&'static [u64]>,
            &'static [&'static str],
        );
        let cases: [Case; 3] = [
            ("e", None, &["joined id=- e:5 recovered=false [a,b]", "m6"]),
            (
                "old",
                Some(&[4, 5]),
                &["joined id=- e:5 recovered=false [a,b]", "m6"],
            ),
            (
                "e",
                Some(&[4, 5]),
                &["joined id=- e:5 recovered=true [a,b]", "m4", "m5", "m6"],
            ),
        ];
        for (epoch, replay, expected) in cases {
            let relay = Relay::new(BUDGET);
            let a = relay.connect("a".into());
            let ticket = join(&relay, &a, None, Some((3, epoch)));
            msgs(&relay, [5, 6]);
            relay.finish_join(&ticket, &a, &snapshot("e", 5, replay));
            assert_eq!(drain(&a), expected, "since in {epoch}, replay {replay:?}");
            msgs(&relay, [7]); // follows the buffered 6: no resync
            assert_eq!(drain(&a), ["m7"]);
        }
    }

    #[test]
    fn a_gap_resyncs_from_history_then_continues_with_what_came_meanwhile() {
        let (relay, members) = live(5, &["a", "b"]);
        msgs(&relay, [6]);
        let request = msg(&relay, "e", 8).unwrap();
        assert_eq!(
            request,
            ResyncRequest {
                room: "r".into(),
                since: 6,
                epoch: "e".into(),
                ticket: request.ticket,
            }
        );
        let stale = ResyncRequest {
            ticket: request.ticket + 100,
            ..request.clone()
        };
        relay.finish_resync(&stale, &snapshot("e", 7, Some(&[7])));
        msgs(&relay, [9]); // buffered, no second resync (the stale snapshot was ignored)
        for member in &members {
            assert_eq!(drain(member), ["m6"]);
        }
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[7, 8])));
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[7, 8])));
        msgs(&relay, [9, 10]);
        for member in &members {
            assert_eq!(drain(member), ["m7", "m8", "m9", "m10"]);
        }
    }

    #[test]
    fn a_resync_history_cannot_fill_sends_an_unsolicited_joined() {
        let new_epoch: [(&str, Option<&[u64]>); 2] = [("e2", None), ("e2", Some(&[1]))];
        let expired_history = [("e", None)];
        for (epoch, replay) in new_epoch.into_iter().chain(expired_history) {
            let (relay, members) = live(5, &["a"]);
            let request = msg(&relay, epoch, 7).unwrap();
            assert_eq!((request.since, &*request.epoch), (5, "e"));
            assert_eq!(msg(&relay, epoch, 8), None);
            relay.finish_resync(&request, &snapshot(epoch, 7, replay));
            assert_eq!(msg(&relay, epoch, 9), None);
            assert_eq!(
                drain(&members[0]),
                [
                    &*format!("joined id=- {epoch}:7 recovered=false [a,b]"),
                    "m8",
                    "m9"
                ],
                "{epoch}, replay {replay:?}"
            );
        }
    }

    #[test]
    fn a_new_epoch_resyncs() {
        let (relay, members) = live(5, &["a"]);
        let request = msg(&relay, "e2", 1).unwrap();
        assert_eq!((request.since, &*request.epoch), (5, "e"));
        assert_eq!(msg(&relay, "e2", 2), None);
        relay.finish_resync(&request, &snapshot("e2", 1, None));
        assert_eq!(msg(&relay, "e2", 3), None);
        assert_eq!(
            drain(&members[0]),
            ["joined id=- e2:1 recovered=false [a,b]", "m2", "m3"]
        );
    }

    #[test]
    fn duplicates_are_not_delivered_again() {
        let (relay, members) = live(5, &["a"]);
        msgs(&relay, [5, 3, 6, 6, 4, 7]);
        assert_eq!(drain(&members[0]), ["m6", "m7"]);
    }

    #[test]
    fn skip_presence_and_typing_reach_the_right_members() {
        let relay = Relay::new(BUDGET);
        let [a, b, quiet] = ["a", "b", "c"].map(|user| relay.connect(user.into()));
        for (session, presence) in [(&a, true), (&b, true), (&quiet, false)] {
            let ticket = relay
                .begin_join(session, "r", None, None, presence)
                .unwrap();
            relay.finish_join(&ticket, session, &snapshot("e", 0, None));
        }
        assert_eq!(drain(&quiet), ["joined id=- e:0 recovered=- []"]);
        drain(&a);
        drain(&b);
        let pending = relay.connect("d".into());
        let join_d = join(&relay, &pending, None, None);

        // a publishes 1 without echo.
        let skip_a = deliver(&relay, InboundKind::Message, "e", 1, Some(&a), frame(1));
        assert_eq!(skip_a, None);
        presence(&relay, 1, Some(&b));
        typing(&relay, Some(&a));
        relay.finish_join(&join_d, &pending, &snapshot("e", 0, None));
        assert_eq!(drain(&a), ["p1"]);
        assert_eq!(drain(&b), ["m1", "t"]);
        assert_eq!(drain(&quiet), ["m1", "t"]);
        assert_eq!(
            drain(&pending),
            ["joined id=- e:0 recovered=- [a,b]", "m1", "p1"]
        );

        // a's position moved past its own message: a resync does not send it back, nor its
        // message buffered meanwhile.
        let request = msg(&relay, "e", 3).unwrap();
        let skip_a = deliver(&relay, InboundKind::Message, "e", 4, Some(&a), frame(4));
        assert_eq!(skip_a, None);
        relay.finish_resync(&request, &snapshot("e", 3, Some(&[1, 2, 3])));
        assert_eq!(drain(&a), ["m2", "m3"]);
        for member in [&b, &quiet, &pending] {
            assert_eq!(drain(member), ["m2", "m3", "m4"]);
        }
    }

    #[test]
    fn presence_buffered_while_joining_follows_only_if_newer_than_the_snapshot() {
        let (relay, _) = live(5, &["b"]);
        let a = relay.connect("a".into());
        let quiet = relay.connect("q".into());
        let join_a = join(&relay, &a, None, None);
        let join_quiet = relay.begin_join(&quiet, "r", None, None, false).unwrap();
        presence(&relay, 1, None);
        presence(&relay, 2, None);
        msgs(&relay, [6]);
        presence(&relay, 3, None);
        presence(&relay, 4, Some(&a));
        presence(&relay, 5, None);
        typing(&relay, None);
        let snapshot = Snapshot {
            presence_version: 2,
            ..snapshot("e", 5, None)
        };
        relay.finish_join(&join_a, &a, &snapshot);
        relay.finish_join(&join_quiet, &quiet, &snapshot);
        assert_eq!(
            drain(&a),
            ["joined id=- e:5 recovered=- [a,b]", "m6", "p3", "p5"]
        );
        assert_eq!(drain(&quiet), ["joined id=- e:5 recovered=- []", "m6"]);
    }

    #[test]
    fn leaving_reports_what_changed_and_drops_the_empty_room() {
        let relay = Relay::new(BUDGET);
        let [a1, a2, b] = ["a", "a", "b"].map(|user| relay.connect(user.into()));
        let mut firsts = Vec::new();
        for session in [&a1, &a2, &b] {
            let ticket = join(&relay, session, None, None);
            firsts.push((ticket.first_in_room, ticket.first_of_user));
            relay.finish_join(&ticket, session, &snapshot("e", 0, None));
            drain(session);
        }
        assert_eq!(firsts, [(true, true), (false, false), (false, true)]);
        assert_eq!(relay.stats().rooms, 1);
        let departure = |user: &str, room_empty, last_of_user| Departure {
            room: "r".into(),
            user: user.into(),
            room_empty,
            last_of_user,
        };

        assert_eq!(
            relay.leave(&a1, "r", Some(7)).unwrap(),
            departure("a", false, false)
        );
        assert_eq!(drain(&a1), ["left id=7"]);
        assert!(!a1.is_member("r"));
        assert!(matches!(
            relay.leave(&a1, "r", None),
            Err(HubError::NotJoined(_))
        ));
        assert_eq!(relay.disconnect(&a2), [departure("a", false, true)]);
        assert!(drain(&a2).is_empty());
        assert!(relay.has_members("r"));
        assert_eq!(relay.rooms(), [("r".into(), vec!["b".into()])]);
        assert_eq!(
            relay.leave(&b, "r", None).unwrap(),
            departure("b", true, true)
        );
        assert_eq!(drain(&b), ["left id=-"]);
        assert_eq!(relay.stats().rooms, 0);
        assert_eq!(relay.stats().sessions, 2);
        assert!(!relay.has_members("r"));
        assert_eq!(msg(&relay, "e", 1), None);
        assert!(drain(&b).is_empty());

        // An aborted join leaves nothing behind, and its snapshot comes too late.
        let ticket = join(&relay, &a1, Some(8), None);
        assert!(ticket.first_in_room && ticket.first_of_user);
        assert_eq!(relay.stats().rooms, 1);
        assert_eq!(
            relay.abort_join(&ticket, &a1),
            Some(departure("a", true, true))
        );
        assert_eq!(relay.abort_join(&ticket, &a1), None);
        assert!(!a1.is_member("r"));
        assert_eq!(relay.stats().rooms, 0);
        relay.finish_join(&ticket, &a1, &snapshot("e", 0, None));
        assert!(drain(&a1).is_empty());
        // A later join starts afresh.
        let again = join(&relay, &a1, None, None);
        assert!(again.first_in_room && again.first_of_user);
        assert_eq!(relay.abort_join(&ticket, &a1), None);
        assert!(a1.is_member("r"));
    }

    #[test]
    fn a_repeated_join_is_answered_in_place_without_replay_or_gap() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        msgs(&relay, [6]);
        let ticket = join(&relay, a, Some(2), Some((6, "e")));
        assert!(!ticket.first_in_room && !ticket.first_of_user);
        msgs(&relay, [7, 8]); // the stream goes on meanwhile
        // The snapshot is older than the stream: `joined` comes at the member's place (8).
        relay.finish_join(&ticket, a, &snapshot("e", 7, Some(&[7])));
        msgs(&relay, [8, 9]);
        assert_eq!(
            drain(a),
            [
                "m6",
                "m7",
                "m8",
                "joined id=2 e:8 recovered=true [a,b]",
                "m9"
            ]
        );
        // The snapshot is ahead of the stream: 10 and 11 still follow `joined`.
        let ticket = join(&relay, a, Some(3), Some((9, "old")));
        relay.finish_join(&ticket, a, &snapshot("e", 11, Some(&[10, 11])));
        msgs(&relay, [10, 11]);
        assert_eq!(
            drain(a),
            ["joined id=3 e:9 recovered=false [a,b]", "m10", "m11"]
        );
        // A repeated join that fails leaves the membership as it was.
        let ticket = join(&relay, a, Some(4), None);
        assert_eq!(relay.abort_join(&ticket, a), None);
        relay.finish_join(&ticket, a, &snapshot("e", 11, None));
        msgs(&relay, [12]);
        assert_eq!(drain(a), ["m12"]);
        assert!(a.is_member("r"));
        // Still counted once.
        let departures = relay.disconnect(a);
        assert!(departures[0].room_empty && departures[0].last_of_user);
    }

    #[test]
    fn a_repeated_join_overlapping_a_resync_still_gets_the_gap() {
        // (join again before the gap shows, answer the join before the resync, expected)
        let cases: [(bool, bool, &[&str]); 3] = [
            (
                true,
                true,
                &["joined id=2 e:7 recovered=- [a,b]", "m6", "m7", "m8"],
            ),
            (
                false,
                true,
                &["joined id=2 e:7 recovered=- [a,b]", "m6", "m7", "m8"],
            ),
            (
                false,
                false,
                &["m6", "m7", "joined id=2 e:7 recovered=- [a,b]", "m8"],
            ),
        ];
        for (join_first, answer_first, expected) in cases {
            let (relay, members) = live(5, &["a"]);
            let a = &members[0];
            let early = join_first.then(|| join(&relay, a, Some(2), None));
            let request = msg(&relay, "e", 7).unwrap();
            let ticket = early.unwrap_or_else(|| join(&relay, a, Some(2), None));
            let answer = || relay.finish_join(&ticket, a, &snapshot("e", 7, None));
            let resync = || relay.finish_resync(&request, &snapshot("e", 7, Some(&[6, 7])));
            if answer_first {
                answer();
                resync();
            } else {
                resync();
                answer();
            }
            msgs(&relay, [7, 8]);
            assert_eq!(drain(a), expected, "{join_first} {answer_first}");
        }
    }

    #[test]
    fn a_join_during_a_resync_is_left_out_of_it() {
        let (relay, members) = live(5, &["a"]);
        let request = msg(&relay, "e", 7).unwrap();
        let b = relay.connect("b".into());
        let ticket = join(&relay, &b, None, None);
        msgs(&relay, [8]);
        relay.finish_join(&ticket, &b, &snapshot("e", 8, None));
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[6, 7, 8])));
        msgs(&relay, [8, 9]);
        assert_eq!(drain(&members[0]), ["m6", "m7", "m8", "m9"]);
        assert_eq!(drain(&b), ["joined id=- e:8 recovered=- [a,b]", "m9"]);
    }

    #[test]
    fn resync_all_resumes_every_synced_room_from_its_last_seq() {
        let (relay, members) = live(5, &["a"]);
        msgs(&relay, [6]);
        let waiting = relay.connect("w".into());
        let _first = relay.begin_join(&waiting, "s", None, None, true).unwrap();
        let requests = relay.resync_all();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!((&*requests[0].room, requests[0].since), ("r", 6));
        msgs(&relay, [8]); // buffered
        relay.finish_resync(&requests[0], &snapshot("e", 7, Some(&[7])));
        msgs(&relay, [8, 9]);
        assert_eq!(drain(&members[0]), ["m6", "m7", "m8", "m9"]);
    }

    #[test]
    fn a_pending_member_buffering_more_than_half_its_budget_is_cut_off() {
        let cost = frame(1).cost();
        // (budget, frames that fit in half of it)
        for (budget, fit) in [(10 * cost, 5), (10 * cost - 1, 4)] {
            let relay = Relay::new(budget);
            let (live, slow) = (relay.connect("a".into()), relay.connect("b".into()));
            let ticket = join(&relay, &live, None, None);
            relay.finish_join(&ticket, &live, &snapshot("e", 0, None));
            drain(&live);
            let _pending = join(&relay, &slow, None, None);
            msgs(&relay, 1..=fit);
            assert!(!slow.outbox().is_aborted(), "budget {budget}");
            msgs(&relay, [fit + 1]);
            assert!(slow.outbox().is_aborted(), "budget {budget}");
            match slow
                .outbox()
                .try_batch(&mut std::collections::VecDeque::new())
            {
                Some(Batch::Aborted(Some(frame))) => assert_eq!(frame.code, 1013),
                other => panic!("{other:?}"),
            }
            assert_eq!(drain(&live).len(), usize::try_from(fit + 1).unwrap());
        }
    }

    #[test]
    fn a_history_reply_sits_at_the_members_place_in_the_stream() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        let entries: Vec<(u64, Outbound)> = (3..=7).map(|n| (n, frame(n))).collect();
        // Redis is at 7, this member has seen 5: 6 and 7 come live, after the reply.
        relay.place_history(a, "r", Some(1), 7, "e", &entries);
        msgs(&relay, [6, 7]);
        assert_eq!(drain(a), ["history e:5 [3,4,5]", "m6", "m7"]);
        // Someone not in the room gets what Redis had.
        let reader = relay.connect("reader".into());
        relay.place_history(&reader, "r", None, 7, "e", &entries);
        assert_eq!(drain(&reader), ["history e:7 [3,4,5,6,7]"]);
    }

    #[test]
    fn a_resync_that_missed_presence_events_refreshes_the_members_list() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        // Live presence events keep the room's presence version.
        presence(&relay, 1, None);
        assert_eq!(drain(a), ["p1"]);
        // A gap: the resync's snapshot is at presence version 3 (events 2 and 3 were lost
        // with the subscription).
        let request = msg(&relay, "e", 7).expect("a gap");
        let mut fresh = snapshot("e", 7, Some(&[6, 7]));
        fresh.presence_version = 3;
        relay.finish_resync(&request, &fresh);
        assert_eq!(
            drain(a),
            ["m6", "m7", "joined id=- e:7 recovered=true [a,b]"]
        );
        // Nothing missed: no refresh.
        let request = msg(&relay, "e", 9).expect("a gap");
        let mut same = snapshot("e", 9, Some(&[8, 9]));
        same.presence_version = 3;
        relay.finish_resync(&request, &same);
        assert_eq!(drain(a), ["m8", "m9"]);
    }

    #[test]
    fn a_join_that_outlived_a_stream_interruption_catches_up_from_history() {
        let (relay, members) = live(5, &["a"]);
        let a = &members[0];
        let b = relay.connect("b".into());
        // b's join begins; its snapshot (seq 6) is read before the stream drops.
        let ticket = join(&relay, &b, Some(1), None);
        msgs(&relay, [6]);
        assert_eq!(drain(a), ["m6"]);
        // The stream drops (7 and 8 are lost) and comes back: the room resyncs.
        let requests = relay.resync_all();
        assert_eq!(requests.len(), 1);
        // b's old snapshot arrives now: b must not go live at 6 and miss 7 and 8.
        let request = relay
            .finish_join(&ticket, &b, &snapshot("e", 6, None))
            .expect("a stale join asks for a resync");
        assert_eq!(request.since, 6);
        assert_eq!(drain(&b), ["joined id=1 e:6 recovered=- [a,b]"]);
        // The room-wide resync from before is superseded by this one (it covers a too).
        relay.finish_resync(&requests[0], &snapshot("e", 8, Some(&[6, 7, 8])));
        assert!(drain(a).is_empty());
        relay.finish_resync(&request, &snapshot("e", 8, Some(&[7, 8])));
        assert_eq!(drain(&b), ["m7", "m8"]);
        assert_eq!(drain(a), ["m7", "m8"]);
        msgs(&relay, [9]);
        assert_eq!(drain(&b), ["m9"]);
        assert_eq!(drain(a), ["m9"]);
    }
}
