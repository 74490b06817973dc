//! The room registry and the operations a connection performs on it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::names::validate_room;

use crate::error::HubError;
use crate::history::HistoryBudget;
use crate::outbox::OutboxPool;
use crate::policy::HistoryRules;
use crate::presence::PresenceConfig;
use crate::registry::Registry;
use crate::room::{LocalRooms, Position, Published, Room, Store};
use crate::session::{Session, SessionId};

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Byte budget of each session's outbox (see [`crate::Outbox`]).
    pub outbox_bytes: usize,
    /// History size and time-to-live per room-name pattern.
    pub history: HistoryRules,
    /// How long a publish's `msg_id` is remembered for deduplication.
    pub idempotency_window: Duration,
    /// Server-wide bytes outboxes may hold beyond their small allowance (see
    /// [`crate::OutboxPool`]); `None`: no server-wide bound.
    pub outbox_pool_bytes: Option<usize>,
    /// Server-wide bytes of history, across rooms (see [`HistoryBudget`]).
    pub history_bytes: usize,
    /// Server-wide number of idempotency ids remembered, across rooms.
    pub max_idempotency_ids: usize,
    /// Member lists and coalesced presence.
    pub presence: PresenceConfig,
    /// Where room, presence and message events go (webhooks); `None`: nowhere.
    pub events: crate::events::Events,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            outbox_bytes: 4 * 1024 * 1024,
            history: HistoryRules::default(),
            idempotency_window: Duration::from_secs(120),
            outbox_pool_bytes: Some(128 * 1024 * 1024),
            history_bytes: 64 * 1024 * 1024,
            max_idempotency_ids: 100_000,
            presence: PresenceConfig::default(),
            events: None,
        }
    }
}

/// Counters for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Rooms in the registry: with members, or with history not yet expired.
    pub rooms: usize,
    /// Sessions registered.
    pub sessions: usize,
    /// Bytes outboxes hold beyond their allowance (drawn from the server-wide pool).
    pub outbox_pool_bytes: usize,
    /// Bytes of history kept on this node.
    pub history_bytes: usize,
    /// Idempotency ids remembered on this node.
    pub idempotency_ids: usize,
}

/// The room registry. Cheap to share (`Arc<Hub>`); several hubs can live in one process.
#[derive(Debug)]
pub struct Hub {
    /// The rooms (`Room<Store>`: each with its embedded sequencer) and sessions.
    pub(crate) local: LocalRooms<Store>,
    pub(crate) config: HubConfig,
    history_budget: Arc<HistoryBudget>,
    /// Connections by user and the deny list (the HTTP API's disconnect).
    pub(crate) users: crate::api::Users,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self {
            local: LocalRooms::new(
                config.outbox_bytes,
                config.outbox_pool_bytes.map(OutboxPool::new),
                config.presence,
            ),
            history_budget: HistoryBudget::new(config.history_bytes, config.max_idempotency_ids),
            config,
            users: crate::api::Users::default(),
        }
    }

    /// Registers a connection of `user`. Call [`Hub::disconnect`] when it ends.
    pub fn connect(&self, user: Arc<str>) -> Arc<Session> {
        self.local.connect(user)
    }

    /// Joins `room`, queuing `joined` (with `id`) on the session's outbox and, if this is the
    /// user's first connection in the room, a presence `join` for the others at the next
    /// [`Hub::flush_presence`]. Idempotent. With
    /// `since`, the messages after that position follow `joined` when history still has them
    /// all (`recovered: true`). Without `presence`, the member sees no members list and no
    /// presence events (others still see it).
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a distinct part of the request"
    )]
    pub fn join(
        &self,
        session: &Arc<Session>,
        room: &str,
        id: Option<RequestId>,
        since: Option<Position<'_>>,
        presence: bool,
        now_ms: u64,
    ) -> Result<(), HubError> {
        validate_room(room)?;
        let (entry, queue) = self.local.with_room(
            room,
            |name| self.store_for(name),
            |entry, state| state.join(&entry.name, session, id, since, presence, now_ms),
        );
        if queue {
            self.local.queue_presence(entry.clone());
        }
        session.enter(entry.name.clone(), entry);
        Ok(())
    }

    /// Leaves `room`, queuing `left` (with `id`) and a presence `leave` for the others if this
    /// was the user's last connection in the room.
    pub fn leave(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
    ) -> Result<(), HubError> {
        validate_room(room)?;
        let Some(entry) = session.exit::<Room<Store>>(room) else {
            return Err(HubError::NotJoined(room.to_owned()));
        };
        self.leave_entry(session, &entry, Some(id));
        Ok(())
    }

    /// Leaves every room (presence `leave` events, no replies) and unregisters the session.
    /// Call it once when the connection ends, however it ends.
    pub fn disconnect(&self, session: &Session) {
        for room in session.exit_all::<Room<Store>>() {
            self.leave_entry(session, &room, None);
        }
        self.local.disconnected();
    }

    /// Publishes JSON `data` to `room`: assigns the next `seq` and queues one shared encoding
    /// for every member (the publisher too when `echo`) and the history. A `msg_id` the same
    /// user already used in the room within the idempotency window is not delivered again.
    pub fn publish(
        &self,
        session: &Session,
        room: &str,
        data: &RawValue,
        echo: bool,
        ts: u64,
        msg_id: Option<&str>,
    ) -> Result<Published, HubError> {
        let entry = self.member_room(session, room)?;
        let published = entry.state.lock().publish(
            &entry.name,
            session,
            data,
            echo,
            ts,
            msg_id,
            self.config.idempotency_window,
        );
        self.enforce_history_budget();
        Ok(published)
    }

    /// Publishes a binary payload to `room` (never echoed). Returns the message's `seq`.
    pub fn publish_binary(
        &self,
        session: &Session,
        room: &str,
        payload: &[u8],
        ts: u64,
    ) -> Result<u64, HubError> {
        let entry = self.member_room(session, room)?;
        let seq = entry
            .state
            .lock()
            .publish_binary(&entry.name, session, payload, ts);
        self.enforce_history_budget();
        Ok(seq)
    }

    /// Tells the room's other connections that the session's user is typing.
    pub fn typing(&self, session: &Session, room: &str) -> Result<(), HubError> {
        let entry = self.member_room(session, room)?;
        entry.state.lock().typing(&entry.name, session);
        Ok(())
    }

    /// Queues the `history` reply for `room` (the latest `limit` messages) on the session's
    /// outbox. Membership is not required.
    pub fn history(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        limit: Option<u64>,
        now_ms: u64,
    ) -> Result<(), HubError> {
        validate_room(room)?;
        let entry = self.local.get_or_create(room, |name| self.store_for(name));
        entry
            .state
            .lock()
            .history_reply(&entry.name, session, id, limit, now_ms);
        if entry.state.lock().is_disposable(now_ms) {
            self.drop_if_empty(&entry, now_ms);
        }
        Ok(())
    }

    /// Hands out the presence changes collected since the last call: one frame per member of
    /// each changed room (see [`crate::PresenceConfig`]). Call it every
    /// [`PresenceConfig::batch_interval`].
    pub fn flush_presence(&self, now_ms: u64) {
        self.local.flush_presence(now_ms);
    }

    /// Queues the `members` reply for `room`: at most `limit` users, in byte order of their
    /// names, after `after`. Membership is not required.
    pub fn members(
        &self,
        session: &Session,
        room: &str,
        id: Option<RequestId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(), HubError> {
        validate_room(room)?;
        let entry = self.local.registry.get(room);
        match entry {
            Some(entry) => {
                entry
                    .state
                    .lock()
                    .local
                    .members_reply(&entry.name, session, id, after, limit);
            }
            None => {
                let reply = crate::presence::members_reply(room, id, &[], 0, None);
                let _ = session.outbox().push(reply);
            }
        }
        Ok(())
    }

    /// Expires history and forgets rooms with neither members nor history. Call it
    /// periodically. Returns how many rooms were dropped.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut dropped = 0;
        for shard in self.local.registry.shards() {
            shard.write().retain(|_, entry| {
                let mut state = entry.state.lock();
                if state.is_disposable(now_ms) {
                    state.local.closed = true;
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        dropped
    }

    /// The room registry, for listings (`crate::activity`).
    pub(crate) fn registry(&self) -> &Registry<Room<Store>> {
        &self.local.registry
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        self.local
            .stats(self.history_budget.used(), self.history_budget.ids())
    }

    /// Past the server-wide history budget, evicts the oldest entries of any room (empty
    /// rooms included) down to the low-water mark: a k-way merge over the rooms' oldest
    /// entries, one scan of the registry per pass. Runs outside every room lock.
    pub(crate) fn enforce_history_budget(&self) {
        let budget = &self.history_budget;
        if !budget.over() {
            return;
        }
        let Some(_pass) = budget.start_eviction() else {
            return;
        };
        let mut rooms: Vec<Arc<Room<Store>>> = Vec::new();
        for shard in self.local.registry.shards() {
            rooms.extend(shard.read().values().cloned());
        }
        let mut oldest: BinaryHeap<Reverse<(u64, usize)>> = rooms
            .iter()
            .enumerate()
            .filter_map(|(i, room)| {
                let ts = room.state.lock().oldest_history_ts()?;
                Some(Reverse((ts, i)))
            })
            .collect();
        let mut evicted = 0usize;
        while budget.used() > budget.low_water() {
            let Some(Reverse((_, i))) = oldest.pop() else {
                break;
            };
            let Some(room) = rooms.get(i) else {
                continue;
            };
            let mut state = room.state.lock();
            if state.evict_oldest_history() > 0 {
                evicted += 1;
            }
            if let Some(ts) = state.oldest_history_ts() {
                oldest.push(Reverse((ts, i)));
            }
        }
        tracing::debug!(
            evicted,
            kept = budget.used(),
            budget = budget.limit(),
            "history over its server-wide budget: oldest entries evicted"
        );
    }

    /// The room, from the session's own map: no registry lock on the publish path.
    fn member_room(&self, session: &Session, room: &str) -> Result<Arc<Room<Store>>, HubError> {
        self.local.member_room(session, room)
    }

    /// The embedded sequencer of a new room named `name`.
    pub(crate) fn store_for(&self, name: &str) -> Store {
        Store::new(
            self.config.history.policy_for(name),
            self.history_budget.clone(),
            self.config.events.clone(),
        )
    }

    fn leave_entry(
        &self,
        session: &Session,
        entry: &Arc<Room<Store>>,
        reply: Option<Option<RequestId>>,
    ) {
        let now_empty = {
            let mut state = entry.state.lock();
            if state.leave(&entry.name, session, reply) {
                self.local.queue_presence(entry.clone());
            }
            state.local.is_empty()
        };
        if now_empty {
            // History keeps an empty room (with its seq and epoch) until the history expires;
            // a room without history goes now. `sweep` expires the rest. (Time 0: expire
            // nothing here.)
            self.drop_if_empty(entry, 0);
        }
    }

    /// Removes a room with no members and no history (as of `now_ms`) from the registry, so
    /// that rooms do not outlive their last member and their history.
    pub(crate) fn drop_if_empty(&self, entry: &Arc<Room<Store>>, now_ms: u64) {
        self.local.registry.dispose(&entry.name, entry, |room| {
            let mut state = room.state.lock();
            let dispose = !state.local.closed && state.is_disposable(now_ms);
            state.local.closed |= dispose;
            dispose
        });
    }

    /// Whether `session` is currently a member of `room` according to the room itself.
    pub fn is_member(&self, session: SessionId, room: &str) -> bool {
        self.local.is_member(session, room)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::*;
    use crate::outbox::{Batch, Outbound};
    use crate::policy::HistoryPolicy;

    fn hub(history: usize, ttl: Duration) -> Hub {
        Hub::new(HubConfig {
            history: HistoryRules {
                default: HistoryPolicy { size: history, ttl },
                rules: Vec::new(),
            },
            ..HubConfig::default()
        })
    }

    /// Everything queued for `session`, as JSON (binary frames as their length).
    fn drain(session: &Session) -> Vec<Value> {
        let mut frames = std::collections::VecDeque::new();
        match session.outbox().try_batch(&mut frames) {
            None | Some(Batch::Frames) => {}
            Some(Batch::Aborted(frame)) => panic!("aborted: {frame:?}"),
        }
        frames
            .into_iter()
            .map(|frame| match frame {
                Outbound::Text(bytes) => serde_json::from_slice(&bytes).unwrap(),
                Outbound::Binary(bytes) => Value::from(bytes.len()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn data(n: u64) -> Box<RawValue> {
        RawValue::from_string(n.to_string()).unwrap()
    }

    fn publish(hub: &Hub, from: &Session, n: u64, ts: u64) -> Published {
        hub.publish(from, "r", &data(n), false, ts, None).unwrap()
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed_after_joined() {
        let hub = hub(100, Duration::from_secs(60));
        let publisher = hub.connect("p".into());
        hub.join(&publisher, "r", None, None, true, 0).unwrap();
        let sub = hub.connect("s".into());
        hub.join(&sub, "r", None, None, true, 0).unwrap();
        let joined = drain(&sub).remove(0);
        let epoch = joined["epoch"].as_str().unwrap().to_owned();
        assert_eq!(epoch.len(), 16);
        for n in 1..=3 {
            publish(&hub, &publisher, n, 1_000);
        }
        assert_eq!(drain(&sub).len(), 3);
        hub.disconnect(&sub);
        for n in 4..=6 {
            publish(&hub, &publisher, n, 1_000);
        }
        let back = hub.connect("s".into());
        let since = Position {
            seq: 3,
            epoch: &epoch,
        };
        hub.join(&back, "r", Some(1), Some(since), true, 1_000)
            .unwrap();
        publish(&hub, &publisher, 7, 1_000);
        let frames = drain(&back);
        assert_eq!(frames[0]["type"], "joined");
        assert_eq!(frames[0]["recovered"], true);
        assert_eq!(frames[0]["seq"], 6);
        let seqs: Vec<_> = frames[1..]
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![4, 5, 6, 7]);
    }

    #[test]
    fn recovery_fails_on_another_epoch_or_a_gap() {
        let hub = hub(2, Duration::from_secs(60));
        let publisher = hub.connect("p".into());
        hub.join(&publisher, "r", None, None, true, 0).unwrap();
        for n in 1..=5 {
            publish(&hub, &publisher, n, 0);
        }
        let sub = hub.connect("s".into());
        let epoch = {
            hub.join(&sub, "r", None, None, true, 0).unwrap();
            drain(&sub)[0]["epoch"].as_str().unwrap().to_owned()
        };
        for (since, recovered, replayed) in [
            (
                Position {
                    seq: 3,
                    epoch: &epoch,
                },
                true,
                2,
            ),
            (
                Position {
                    seq: 2,
                    epoch: &epoch,
                },
                false,
                0,
            ),
            (
                Position {
                    seq: 5,
                    epoch: &epoch,
                },
                true,
                0,
            ),
            (
                Position {
                    seq: 9,
                    epoch: &epoch,
                },
                false,
                0,
            ),
            (
                Position {
                    seq: 4,
                    epoch: "other",
                },
                false,
                0,
            ),
        ] {
            let fresh = hub.connect("s".into());
            hub.join(&fresh, "r", None, Some(since), true, 0).unwrap();
            let frames = drain(&fresh);
            assert_eq!(frames[0]["recovered"], recovered, "{since:?}");
            assert_eq!(frames.len() - 1, replayed, "{since:?}");
            hub.disconnect(&fresh);
        }
        // A member already has the live stream: re-joining with `since` replays nothing.
        let position = Position {
            seq: 3,
            epoch: &epoch,
        };
        hub.join(&sub, "r", None, Some(position), true, 0).unwrap();
        let frames = drain(&sub);
        assert_eq!(
            (frames.len(), &frames[0]["recovered"]),
            (1, &Value::Bool(true))
        );
    }

    #[test]
    fn replays_that_would_overflow_the_outbox_are_refused() {
        let hub = Hub::new(HubConfig {
            outbox_bytes: 64 * 1024,
            ..HubConfig::default()
        });
        let publisher = hub.connect("p".into());
        hub.join(&publisher, "r", None, None, true, 0).unwrap();
        let epoch = drain(&publisher)[0]["epoch"].as_str().unwrap().to_owned();
        let big = RawValue::from_string(format!("\"{}\"", "x".repeat(10_000))).unwrap();
        for _ in 0..5 {
            hub.publish(&publisher, "r", &big, false, 0, None).unwrap();
        }
        let sub = hub.connect("s".into());
        hub.join(
            &sub,
            "r",
            None,
            Some(Position {
                seq: 0,
                epoch: &epoch,
            }),
            true,
            0,
        )
        .unwrap();
        let frames = drain(&sub);
        assert_eq!(
            (frames.len(), &frames[0]["recovered"]),
            (1, &Value::Bool(false))
        );
        hub.history(&sub, "r", None, None, 0).unwrap();
        let reply = drain(&sub).remove(0);
        let kept = reply["messages"].as_array().unwrap();
        assert!(
            !kept.is_empty() && kept.len() < 5,
            "{} messages",
            kept.len()
        );
        assert_eq!(kept.last().unwrap()["seq"], 5, "the newest are kept");
    }

    #[test]
    fn without_the_presence_right_a_member_sees_no_one() {
        let hub = hub(0, Duration::from_secs(60));
        let alice = hub.connect("alice".into());
        hub.join(&alice, "r", None, None, true, 0).unwrap();
        let hidden = hub.connect("bob".into());
        hub.join(&hidden, "r", None, None, false, 0).unwrap();
        hub.flush_presence(0);
        assert_eq!(drain(&hidden)[0]["members"], serde_json::json!([]));
        let carol = hub.connect("carol".into());
        hub.join(&carol, "r", None, None, true, 0).unwrap();
        hub.flush_presence(0);
        assert!(drain(&hidden).is_empty(), "no presence events");
        let seen: Vec<_> = drain(&alice)
            .iter()
            .filter(|m| m["type"] == "presence")
            .map(|m| m["user"].clone())
            .collect();
        assert_eq!(seen, vec!["bob", "carol"], "others still see the member");
    }

    #[test]
    fn a_repeated_msg_id_is_acknowledged_but_not_delivered_again() {
        let hub = hub(100, Duration::from_secs(60));
        let (alice, bob) = (hub.connect("alice".into()), hub.connect("bob".into()));
        hub.join(&alice, "r", None, None, true, 0).unwrap();
        hub.join(&bob, "r", None, None, true, 0).unwrap();
        drain(&bob);
        let first = hub
            .publish(&alice, "r", &data(1), false, 10, Some("m1"))
            .unwrap();
        let retry = hub
            .publish(&alice, "r", &data(1), false, 20, Some("m1"))
            .unwrap();
        assert_eq!(
            first,
            Published {
                seq: 1,
                duplicate: false
            }
        );
        assert_eq!(
            retry,
            Published {
                seq: 1,
                duplicate: true
            }
        );
        let other_user = hub
            .publish(&bob, "r", &data(2), false, 20, Some("m1"))
            .unwrap();
        assert_eq!(
            other_user,
            Published {
                seq: 2,
                duplicate: false
            }
        );
        let after_window = hub
            .publish(&alice, "r", &data(1), false, 10 + 121_000, Some("m1"))
            .unwrap();
        assert_eq!(
            after_window,
            Published {
                seq: 3,
                duplicate: false
            }
        );
        let seqs: Vec<_> = drain(&bob)
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn history_keeps_an_empty_room_until_it_expires() {
        let hub = hub(10, Duration::from_millis(100));
        let alice = hub.connect("alice".into());
        hub.join(&alice, "r", None, None, true, 0).unwrap();
        let epoch = drain(&alice)[0]["epoch"].as_str().unwrap().to_owned();
        publish(&hub, &alice, 1, 1_000);
        hub.disconnect(&alice);
        assert_eq!(hub.stats().rooms, 1);
        assert_eq!(hub.sweep(1_050), 0);
        let reader = hub.connect("reader".into());
        hub.history(&reader, "r", Some(4), None, 1_050).unwrap();
        let reply = drain(&reader).remove(0);
        assert_eq!(reply["type"], "history");
        assert_eq!(reply["epoch"], epoch.as_str());
        assert_eq!(reply["messages"][0]["data"], 1);
        assert_eq!(hub.sweep(1_200), 1);
        assert_eq!(hub.stats().rooms, 0);
        hub.join(&reader, "r", None, None, true, 1_200).unwrap();
        let joined = drain(&reader).remove(0);
        assert_eq!(joined["seq"], 0);
        assert_ne!(joined["epoch"], epoch.as_str(), "a new incarnation");
    }

    #[test]
    fn rooms_without_history_go_with_their_last_member() {
        let hub = hub(0, Duration::from_secs(60));
        let alice = hub.connect("alice".into());
        hub.join(&alice, "r", None, None, true, 0).unwrap();
        publish(&hub, &alice, 1, 0);
        hub.leave(&alice, "r", None).unwrap();
        assert_eq!(hub.stats().rooms, 0);
    }

    #[test]
    fn presence_counts_connections_per_user() {
        let hub = hub(0, Duration::from_secs(60));
        let watcher = hub.connect("w".into());
        hub.join(&watcher, "r", None, None, true, 0).unwrap();
        let (a1, a2) = (hub.connect("alice".into()), hub.connect("alice".into()));
        hub.join(&a1, "r", None, None, true, 0).unwrap();
        hub.flush_presence(0);
        hub.join(&a2, "r", None, None, true, 0).unwrap();
        hub.flush_presence(0);
        assert_eq!(drain(&a2)[0]["members"].as_array().unwrap().len(), 2);
        hub.disconnect(&a1);
        hub.flush_presence(0);
        hub.disconnect(&a2);
        hub.flush_presence(0);
        let events: Vec<_> = drain(&watcher)
            .into_iter()
            .filter(|m| m["type"] == "presence")
            .map(|m| m["event"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(events, vec!["join", "leave"]);
    }

    /// One window: every member hears each join once (its own never), in one frame.
    #[test]
    fn f12_presence_is_coalesced_per_window() {
        let hub = hub(0, Duration::from_secs(60));
        let sessions: Vec<_> = (0..50)
            .map(|n| {
                let s = hub.connect(format!("u{n:02}").into());
                hub.join(&s, "r", None, None, true, 0).unwrap();
                s
            })
            .collect();
        hub.flush_presence(0);
        for (n, session) in sessions.iter().enumerate() {
            let frames = drain(session);
            let joined = &frames[0];
            assert_eq!(joined["member_count"], n + 1);
            let presence: Vec<&Value> = frames.iter().filter(|f| f["type"] == "presence").collect();
            if n == 49 {
                assert!(presence.is_empty(), "the last joiner knew everyone");
                continue;
            }
            assert_eq!(presence.len(), 1, "one frame per window: {presence:?}");
            let told: Vec<String> = if presence[0]["joins"].is_array() {
                serde_json::from_value(presence[0]["joins"].clone()).unwrap()
            } else {
                vec![presence[0]["user"].as_str().unwrap().to_owned()]
            };
            let expected: Vec<String> = (n + 1..50).map(|m| format!("u{m:02}")).collect();
            assert_eq!(
                told, expected,
                "member {n} hears of exactly the later joiners"
            );
            assert_eq!(presence[0]["member_count"], 50);
        }
        // A join and a leave within one window cancel.
        let ghost = hub.connect("ghost".into());
        hub.join(&ghost, "r", None, None, true, 0).unwrap();
        hub.disconnect(&ghost);
        hub.flush_presence(0);
        assert!(drain(&sessions[0]).is_empty());
    }

    #[test]
    fn f12_joined_is_bounded_and_members_pages_in_byte_order() {
        let hub = Hub::new(HubConfig {
            presence: PresenceConfig {
                max_joined_members: 10,
                ..PresenceConfig::default()
            },
            ..HubConfig::default()
        });
        let sessions: Vec<_> = (0..25)
            .map(|n| {
                let s = hub.connect(format!("u{n:02}").into());
                hub.join(&s, "r", None, None, true, 0).unwrap();
                s
            })
            .collect();
        let last = &sessions[24];
        let joined = drain(last).remove(0);
        assert_eq!(joined["members"].as_array().unwrap().len(), 10);
        assert_eq!(joined["members_truncated"], true);
        assert_eq!(joined["member_count"], 25);
        // Over the list limit, presence is the count only.
        hub.flush_presence(0);
        let first = drain(&sessions[0]);
        assert_eq!(
            first.last().unwrap(),
            &serde_json::json!({"type":"presence","room":"r","member_count":25})
        );
        let mut after: Option<String> = None;
        let mut all = Vec::new();
        loop {
            hub.members(last, "r", Some(1), after.as_deref(), 7)
                .unwrap();
            let page = drain(last).remove(0);
            assert_eq!(page["member_count"], 25);
            all.extend(
                page["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_owned()),
            );
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).map(|n| format!("u{n:02}")).collect();
        assert_eq!(all, expected);
    }
}
