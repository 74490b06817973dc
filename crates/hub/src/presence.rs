//! Presence in large rooms, shared by both engines (the in-memory [`crate::Hub`] and the
//! broker-fed [`crate::Relay`]): bounded member lists, pages of members, and coalesced
//! presence frames.
//!
//! Sending one `presence` frame to every member on every join makes presence O(N²) in
//! traffic: 3,000 joins into one room sent 855 MB. Here a room's changes are collected in a
//! [`PresenceBatch`] and handed out together once per `batch_interval` (one frame per member
//! per window, shared by every member that knew the same state), a join and a leave of the
//! same user within a window cancel, and a room with more users than the list limit gets only
//! its new member count, at most once per `count_interval`. So a member of a room receives at
//! most `1 / batch_interval` presence frames a second whatever the churn, each listing at
//! most the changes of one window, and in a room over the list limit a constant-size frame at
//! most every `count_interval`: the traffic of N joins is O(N), not O(N²).
//!
//! Each change has a version (increasing per room). A member remembers the version its view
//! started from (its `joined` snapshot): it is sent only the changes after it, so a member that
//! joined during a window does not hear again about what its `joined` already listed (its own
//! arrival included).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::client::MAX_MEMBERS_PAGE;
use switchboard_protocol::server::{PresenceEvent, ServerMessage, presence_single};

use crate::outbox::Outbound;

/// Presence settings, the same for every room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Most users a `joined` lists; past it `members_truncated` is set, and presence frames
    /// carry only the member count.
    pub max_joined_members: usize,
    /// How long a room's presence changes are collected before they go out together.
    pub batch_interval: Duration,
    /// In a room over the list limit: the least time between two count-only frames.
    pub count_interval: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            // 1,000 names of ~10 bytes: a `joined` of ~12 KB, 0.3 % of the default outbox.
            max_joined_members: 1_000,
            // Below what a person notices, and 20 frames a second per member at most.
            batch_interval: Duration::from_millis(50),
            // A count shown to people; once a second keeps 5,000 members at 5,000 frames/s.
            count_interval: Duration::from_secs(1),
        }
    }
}

impl PresenceConfig {
    /// Changes one window keeps before it is handed out at once: bounds the batch's memory
    /// (and the largest coalesced frame) in a room under heavy churn.
    fn log_cap(&self) -> usize {
        self.max_joined_members.max(64).saturating_mul(4)
    }
}

/// One presence change of a room.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    user: Arc<str>,
    event: PresenceEvent,
}

/// A room's presence changes not yet handed out.
#[derive(Debug, Default)]
pub(crate) struct PresenceBatch {
    log: Vec<Change>,
    /// The version of the window's last change (also when not logged).
    last_version: u64,
    /// Some change waits: the window goes out at the engine's next tick (every
    /// `batch_interval`), so a change waits at most that long.
    open: bool,
    /// When the last count-only frame went out (ms).
    last_count_ms: Option<u64>,
    /// Some change of the window was not logged (the room was over the list limit): the
    /// window goes out as a count-only frame.
    lossy: bool,
    /// The room is on its engine's list of rooms to flush.
    pub(crate) queued: bool,
    /// A hand-out happened since the last quiet tick: changes now wait for the tick. A cold
    /// room's first change goes out at once, so a lone join or leave is not delayed at all and
    /// only bursts are coalesced.
    hot: bool,
    /// A hand-out happened since the last tick.
    recent: bool,
}

/// What recording a change asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Nothing more: the room is already waiting for the tick.
    Waiting,
    /// Put the room on the list of rooms to flush.
    Queue,
    /// Hand the window out now (it is full; the room is already queued).
    FlushNow,
    /// Hand the window out now (the room was quiet) and queue the room, so that the tick
    /// can see it quiet again.
    FlushNowAndQueue,
}

impl PresenceBatch {
    /// Records a change of version `version` (greater than every earlier one).
    pub(crate) fn record(
        &mut self,
        config: &PresenceConfig,
        version: u64,
        user: &Arc<str>,
        event: PresenceEvent,
        users_now: usize,
    ) -> Recorded {
        self.last_version = version;
        self.open = true;
        if users_now > config.max_joined_members || self.lossy {
            // Only the count will go out: names are not kept.
            self.lossy = true;
            self.log.clear();
        } else {
            self.log.push(Change {
                version,
                user: user.clone(),
                event,
            });
            if !self.hot || self.log.len() >= config.log_cap() {
                return if std::mem::replace(&mut self.queued, true) {
                    Recorded::FlushNow
                } else {
                    Recorded::FlushNowAndQueue
                };
            }
        }
        if self.queued {
            Recorded::Waiting
        } else {
            self.queued = true;
            Recorded::Queue
        }
    }

    /// The version of the last change recorded.
    pub(crate) fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Starts counting again from `version` (nothing may wait: call after `take`).
    pub(crate) fn reset_version(&mut self, version: u64) {
        self.last_version = version;
    }

    /// Whether the room stays on the flush list: something waits, or it was handed out
    /// recently (the next quiet tick cools it). Call at each tick after a possible hand-out.
    pub(crate) fn tick(&mut self) -> bool {
        let keep = if self.open || std::mem::take(&mut self.recent) {
            true
        } else {
            // A whole interval without a hand-out: the next change may go out at once.
            self.hot = false;
            false
        };
        self.queued = keep;
        keep
    }

    /// Whether the window should go out at this tick: a list window always, a count-only one
    /// when `count_interval` has passed since the last.
    pub(crate) fn due(&self, config: &PresenceConfig, users_now: usize, now_ms: u64) -> bool {
        if !self.open {
            return false;
        }
        if self.lossy || users_now > config.max_joined_members {
            self.last_count_ms
                .is_none_or(|last| now_ms >= last.saturating_add(millis(config.count_interval)))
        } else {
            true
        }
    }

    /// Closes the window: its frames, to hand to each member with [`Flush::frame_for`].
    pub(crate) fn take<'r>(
        &mut self,
        config: &PresenceConfig,
        room: &'r str,
        member_count: u64,
        now_ms: u64,
    ) -> Flush<'r> {
        let count_only = self.lossy
            || usize::try_from(member_count).map_or(true, |n| n > config.max_joined_members);
        if count_only {
            self.last_count_ms = Some(now_ms);
        }
        self.open = false;
        self.lossy = false;
        self.hot = true;
        self.recent = true;
        Flush {
            room,
            log: std::mem::take(&mut self.log),
            last_version: self.last_version,
            member_count,
            count_only,
            frames: HashMap::new(),
        }
    }
}

/// A closed window of presence changes.
#[derive(Debug)]
pub(crate) struct Flush<'r> {
    room: &'r str,
    log: Vec<Change>,
    last_version: u64,
    member_count: u64,
    count_only: bool,
    /// Encoded frames by the index of the first change they report: members that knew the
    /// same state share one encoding.
    frames: HashMap<usize, Option<Outbound>>,
}

impl Flush<'_> {
    /// The frame for a member whose view includes every change up to version `floor`, or
    /// `None` when nothing changed for it.
    pub(crate) fn frame_for(&mut self, floor: u64) -> Option<Outbound> {
        if floor >= self.last_version {
            return None;
        }
        let start = if self.count_only {
            0
        } else {
            self.log.partition_point(|change| change.version <= floor)
        };
        let Self {
            room,
            log,
            member_count,
            count_only,
            ..
        } = self;
        self.frames
            .entry(start)
            .or_insert_with(|| {
                if *count_only {
                    return Some(count_frame(room, *member_count));
                }
                encode(room, log.get(start..).unwrap_or_default(), *member_count)
            })
            .clone()
    }
}

/// `{"type":"presence","room":R,"member_count":C}`.
fn count_frame(room: &str, member_count: u64) -> Outbound {
    let frame = ServerMessage::PresenceBatch {
        room,
        joins: &[],
        leaves: &[],
        member_count,
    };
    Outbound::Text(frame.encode())
}

/// The net effect of `changes` (in order): a user who joined and left again (or left and came
/// back) is not mentioned. One change is sent in the single form, several in the coalesced one.
fn encode(room: &str, changes: &[Change], member_count: u64) -> Option<Outbound> {
    // first and last event per user, in order of first appearance
    let mut order: Vec<&str> = Vec::new();
    let mut seen: HashMap<&str, (PresenceEvent, PresenceEvent)> = HashMap::new();
    for change in changes {
        seen.entry(&change.user)
            .and_modify(|(_, last)| *last = change.event)
            .or_insert_with(|| {
                order.push(&change.user);
                (change.event, change.event)
            });
    }
    let mut joins = Vec::new();
    let mut leaves = Vec::new();
    for user in order {
        match seen.get(user) {
            Some((PresenceEvent::Join, PresenceEvent::Join)) => joins.push(user),
            Some((PresenceEvent::Leave, PresenceEvent::Leave)) => leaves.push(user),
            _ => {} // cancelled within the window
        }
    }
    let frame = match (joins.as_slice(), leaves.as_slice()) {
        ([], []) => return None,
        ([user], []) => presence_single(room, PresenceEvent::Join, user, member_count),
        ([], [user]) => presence_single(room, PresenceEvent::Leave, user, member_count),
        _ => ServerMessage::PresenceBatch {
            room,
            joins: &joins,
            leaves: &leaves,
            member_count,
        }
        .encode(),
    };
    Some(Outbound::Text(frame))
}

/// The `members` list of a `joined`: the first `limit` users in byte order, and whether some
/// were left out.
pub(crate) fn joined_list<'a>(
    sorted: impl Iterator<Item = &'a str>,
    limit: usize,
) -> (Vec<&'a str>, bool) {
    let mut list: Vec<&str> = sorted.take(limit.saturating_add(1)).collect();
    let truncated = list.len() > limit;
    list.truncate(limit);
    (list, truncated)
}

/// One page of a `members` reply: at most `limit` (≤ [`MAX_MEMBERS_PAGE`]) of the users that
/// sort after the asked name (`after_sorted` yields them in order), and the `next` to ask from.
pub fn page<'a>(
    after_sorted: impl Iterator<Item = &'a str>,
    limit: usize,
) -> (Vec<&'a str>, Option<&'a str>) {
    let limit = limit.clamp(1, MAX_MEMBERS_PAGE);
    let (list, more) = joined_list(after_sorted, limit);
    let next = if more { list.last().copied() } else { None };
    (list, next)
}

/// Encodes a `members` reply.
pub fn members_reply(
    room: &str,
    id: Option<switchboard_protocol::client::RequestId>,
    members: &[&str],
    member_count: u64,
    next: Option<&str>,
) -> Outbound {
    let reply = ServerMessage::Members {
        room,
        id,
        members,
        member_count,
        next,
    };
    Outbound::Text(reply.encode())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn config(limit: usize) -> PresenceConfig {
        PresenceConfig {
            max_joined_members: limit,
            batch_interval: Duration::from_millis(50),
            count_interval: Duration::from_secs(1),
        }
    }

    fn json(frame: Option<Outbound>) -> Value {
        match frame {
            Some(Outbound::Text(bytes)) => serde_json::from_slice(&bytes).unwrap(),
            None => Value::Null,
            Some(other) => panic!("{other:?}"),
        }
    }

    fn record(batch: &mut PresenceBatch, c: &PresenceConfig, v: u64, user: &str, join: bool) {
        let event = if join {
            PresenceEvent::Join
        } else {
            PresenceEvent::Leave
        };
        batch.record(c, v, &Arc::from(user), event, 3);
    }

    #[test]
    fn a_window_coalesces_and_cancels() {
        let c = config(10);
        let mut batch = PresenceBatch::default();
        record(&mut batch, &c, 1, "a", true);
        record(&mut batch, &c, 2, "b", true);
        record(&mut batch, &c, 3, "b", false); // b came and went: cancelled
        record(&mut batch, &c, 4, "c", false);
        assert!(batch.due(&c, 3, 0), "a list window goes at the next tick");
        let mut flush = batch.take(&c, "r", 2, 50);
        let all = json(flush.frame_for(0));
        assert_eq!(
            all,
            json!({"type":"presence","room":"r","joins":["a"],"leaves":["c"],"member_count":2})
        );
        // Joined after b came: it listed b, so it hears of b's leave; it never saw c leave.
        assert_eq!(
            json(flush.frame_for(2)),
            json!({"type":"presence","room":"r","leaves":["b","c"],"member_count":2})
        );
        assert_eq!(
            json(flush.frame_for(3)),
            json!({"type":"presence","room":"r","event":"leave","user":"c","member_count":2})
        );
        assert_eq!(json(flush.frame_for(4)), Value::Null);
        assert!(!batch.open);
    }

    #[test]
    fn over_the_list_limit_only_the_count_goes_out_once_per_interval() {
        let c = config(2);
        let mut batch = PresenceBatch::default();
        batch.record(&c, 1, &Arc::from("a"), PresenceEvent::Join, 3);
        assert!(batch.due(&c, 3, 0), "the first count goes at the next tick");
        let mut flush = batch.take(&c, "r", 3, 0);
        assert_eq!(
            json(flush.frame_for(0)),
            json!({"type":"presence","room":"r","member_count":3})
        );
        batch.record(&c, 2, &Arc::from("b"), PresenceEvent::Join, 4);
        assert!(!batch.due(&c, 4, 999));
        assert!(batch.due(&c, 4, 1_000));
    }

    #[test]
    fn a_full_window_asks_to_flush_now() {
        let c = config(64); // a window keeps 256 changes
        let mut batch = PresenceBatch::default();
        let outcomes: Vec<Recorded> = (1..=256)
            .map(|v| batch.record(&c, v, &Arc::from(format!("u{v}")), PresenceEvent::Join, 1))
            .collect();
        assert_eq!(
            outcomes.first(),
            Some(&Recorded::FlushNowAndQueue),
            "a quiet room"
        );
        // (The test does not hand out: the room stays cold, and a full window is a list one.)
        let c2 = config(64);
        let mut hot = PresenceBatch {
            hot: true,
            ..PresenceBatch::default()
        };
        assert_eq!(
            hot.record(&c2, 1, &Arc::from("x"), PresenceEvent::Join, 1),
            Recorded::Queue
        );
        assert_eq!(
            hot.record(&c2, 2, &Arc::from("y"), PresenceEvent::Join, 1),
            Recorded::Waiting
        );
        assert_eq!(outcomes.last(), Some(&Recorded::FlushNow));
    }

    #[test]
    fn pages_follow_byte_order() {
        let users = ["a", "b", "c", "d", "e"];
        let (list, next) = page(users.iter().copied(), 2);
        assert_eq!((list, next), (vec!["a", "b"], Some("b")));
        let (list, next) = page(users.iter().copied().skip(4), 2);
        assert_eq!((list, next), (vec!["e"], None));
        assert_eq!(
            joined_list(users.iter().copied(), 5),
            (users.to_vec(), false)
        );
        assert!(joined_list(users.iter().copied(), 4).1);
    }
}
