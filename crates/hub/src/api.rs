//! What the HTTP API asks of the rooms beyond what a connection does: publishing from a source
//! that is not a connection (through the same room code as a member's publish), listing rooms,
//! and closing a user's connections — with a deny list that keeps them out for a while.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde_json::value::RawValue;
use switchboard_protocol::names::validate_room;

use crate::error::HubError;
use crate::hub::Hub;
use crate::outbox::CloseFrame;
use crate::room::Published;
use crate::session::{Session, SessionId};

/// What a source publishes.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A JSON value, as sent.
    Json(&'a RawValue),
    /// Opaque bytes (delivered as a binary frame).
    Binary(&'a [u8]),
}

/// A publish from a source that is not a connection (the HTTP API).
#[derive(Debug, Clone, Copy)]
pub struct SourcePublish<'a> {
    /// The room; it need not have members (the message is kept in its history).
    pub room: &'a str,
    /// The user name the message is `from`; with `msg_id`, the deduplication scope, shared
    /// with that user's WebSocket publishes (protocol §5.9).
    pub from: &'a str,
    /// The message.
    pub payload: Payload<'a>,
    /// The server clock, ms since the Unix epoch (the message's `ts`).
    pub ts: u64,
    /// The idempotency key (JSON payloads only, like a WebSocket binary publish).
    pub msg_id: Option<&'a str>,
}

/// The outcome of a source's publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePublished {
    /// The message's seq (the original one for a duplicate).
    pub seq: u64,
    /// The `msg_id` had already been accepted: nothing was delivered.
    pub duplicate: bool,
    /// The room's epoch the seq belongs to.
    pub epoch: Arc<str>,
}

/// One page of rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomsPage {
    /// Room names in byte order, with their member counts (users, not connections).
    pub rooms: Vec<(String, u64)>,
    /// The name to pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

impl RoomsPage {
    /// The page of `names` (with counts) after `after`, at most `limit`: sorts and pages.
    pub fn of(mut all: Vec<(String, u64)>, after: Option<&str>, limit: usize) -> Self {
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let start = after.map_or(0, |after| {
            all.partition_point(|(name, _)| name.as_str() <= after)
        });
        let mut rooms: Vec<(String, u64)> = all
            .into_iter()
            .skip(start)
            .take(limit.saturating_add(1))
            .collect();
        let next = if rooms.len() > limit {
            rooms.truncate(limit);
            rooms.last().map(|(name, _)| name.clone())
        } else {
            None
        };
        Self { rooms, next }
    }
}

/// Closing a user's connections (`POST /api/v1/users/{user}/disconnect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// The user.
    pub user: String,
    /// The close code and reason the connections get.
    pub close: CloseFrame,
    /// Until when (ms since the Unix epoch) the user is refused at the upgrade and on
    /// `refresh`; `None`: free to reconnect at once.
    pub deny_until_ms: Option<u64>,
}

/// Most users on a node's deny list at once: ~100 bytes each, so at most ~10 MB. Past it the
/// entry that expires first is forgotten to make room (documented in docs/security.md).
pub const MAX_DENIED: usize = 100_000;

/// This node's connections by user, and the users denied entry until a time. The engines hold
/// one each; the transport registers every connection (and unregisters it when it ends).
#[derive(Debug, Default)]
pub struct Users {
    connections: Mutex<HashMap<Arc<str>, Vec<Weak<Session>>>>,
    denied: Mutex<HashMap<Box<str>, u64>>,
}

impl Users {
    /// Records a connection of its user.
    pub fn register(&self, session: &Arc<Session>) {
        self.connections
            .lock()
            .entry(session.user().clone())
            .or_default()
            .push(Arc::downgrade(session));
    }

    /// Forgets a connection (call it when the connection ends).
    pub fn unregister(&self, session: &Session) {
        let mut connections = self.connections.lock();
        if let Entry::Occupied(mut list) = connections.entry(session.user().clone()) {
            list.get_mut()
                .retain(|weak| weak.upgrade().is_some_and(|s| s.id() != session.id()));
            if list.get().is_empty() {
                list.remove();
            }
        }
    }

    /// Applies a kick on this node: records the deny (if any) and closes the user's
    /// connections here. Returns how many were closed.
    pub fn kick(&self, kick: &Kick, now_ms: u64) -> usize {
        if let Some(until) = kick.deny_until_ms {
            self.deny(&kick.user, until, now_ms);
        }
        let sessions: Vec<Arc<Session>> = self
            .connections
            .lock()
            .get(kick.user.as_str())
            .map(|list| list.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        for session in &sessions {
            // After what is already queued (an outbox too full to take it aborts with 1013;
            // one already closing, e.g. by this kick arriving twice, is left alone).
            let _ = session.outbox().close(kick.close.clone());
        }
        sessions.len()
    }

    /// Whether `user` is on the deny list at `now_ms`.
    pub fn is_denied(&self, user: &str, now_ms: u64) -> bool {
        let mut denied = self.denied.lock();
        match denied.get(user) {
            Some(until) if *until > now_ms => true,
            Some(_) => {
                denied.remove(user);
                false
            }
            None => false,
        }
    }

    /// Users on the deny list (expired entries included until looked at or swept).
    pub fn denied_count(&self) -> usize {
        self.denied.lock().len()
    }

    fn deny(&self, user: &str, until: u64, now_ms: u64) {
        let mut denied = self.denied.lock();
        if denied.len() >= MAX_DENIED && !denied.contains_key(user) {
            denied.retain(|_, until| *until > now_ms);
            if denied.len() >= MAX_DENIED
                && let Some(first) = denied
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(user, _)| user.clone())
            {
                denied.remove(&first);
            }
        }
        let entry = denied.entry(Box::from(user)).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// The session a source publishes as: never a member (no room has id 0), nothing queued on it.
fn source_session(from: &str) -> Session {
    Session::new(SessionId(0), Arc::from(from), 0, None)
}

impl Hub {
    /// Publishes on behalf of a source that is not a connection: sequenced, kept in history,
    /// delivered to every member and deduplicated on `(from, msg_id)` exactly like a member's
    /// publish (the same room code), without needing membership. A room with no members is
    /// created for it (and dropped again if it keeps no history).
    pub fn publish_from(&self, request: &SourcePublish<'_>) -> Result<SourcePublished, HubError> {
        validate_room(request.room)?;
        let source = source_session(request.from);
        let (entry, (published, epoch)) = self.local.with_room(
            request.room,
            |name| self.store_for(name),
            |entry, state| {
                let published = match request.payload {
                    Payload::Json(data) => state.publish(
                        &entry.name,
                        &source,
                        data,
                        true,
                        request.ts,
                        request.msg_id,
                        self.config.idempotency_window,
                    ),
                    Payload::Binary(bytes) => Published {
                        seq: state.publish_binary(&entry.name, &source, bytes, request.ts),
                        duplicate: false,
                    },
                };
                (published, state.epoch().clone())
            },
        );
        self.enforce_history_budget();
        self.drop_if_empty(&entry, 0);
        Ok(SourcePublished {
            seq: published.seq,
            duplicate: published.duplicate,
            epoch,
        })
    }

    /// A page of this hub's rooms (with members or history) whose names start with `prefix`.
    pub fn rooms_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> RoomsPage {
        let mut all = Vec::new();
        for shard in self.local.registry.shards() {
            for (name, room) in shard.read().iter() {
                if name.starts_with(prefix) && after.is_none_or(|after| &**name > after) {
                    all.push((name.to_string(), room.state.lock().local.member_count()));
                }
            }
        }
        RoomsPage::of(all, after, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;

    #[test]
    fn rooms_page_sorts_and_pages_after_a_name() {
        let page = RoomsPage::of(
            vec![("c".into(), 1), ("a".into(), 2), ("b".into(), 0)],
            None,
            2,
        );
        assert_eq!(page.rooms, vec![("a".into(), 2), ("b".into(), 0)]);
        assert_eq!(page.next.as_deref(), Some("b"));
        let rest = RoomsPage::of(vec![("c".into(), 1), ("a".into(), 2)], Some("b"), 2);
        assert_eq!((rest.rooms.len(), rest.next), (1, None));
    }

    #[test]
    fn a_source_publish_shares_msg_id_dedup_with_the_same_users_connection() {
        let hub = Hub::new(HubConfig::default());
        let data = RawValue::from_string("1".into()).unwrap();
        let request = SourcePublish {
            room: "r",
            from: "backend",
            payload: Payload::Json(&data),
            ts: 10,
            msg_id: Some("m1"),
        };
        let first = hub.publish_from(&request).unwrap();
        assert_eq!((first.seq, first.duplicate), (1, false));
        let session = hub.connect("backend".into());
        hub.join(&session, "r", None, None, true, 10).unwrap();
        let retry = hub
            .publish(&session, "r", &data, false, 20, Some("m1"))
            .unwrap();
        assert_eq!((retry.seq, retry.duplicate), (1, true));
        assert_eq!(hub.rooms_page("", None, 10).rooms, vec![("r".into(), 1)]);
        assert!(hub.rooms_page("x", None, 10).rooms.is_empty());
    }

    #[test]
    fn a_kick_closes_the_users_connections_and_denies_until_its_deadline() {
        let hub = Hub::new(HubConfig::default());
        let users = Users::default();
        let (a, b) = (hub.connect("alice".into()), hub.connect("bob".into()));
        users.register(&a);
        users.register(&b);
        let kick = Kick {
            user: "alice".into(),
            close: CloseFrame::new(4003, "bye"),
            deny_until_ms: Some(1_000),
        };
        assert_eq!(users.kick(&kick, 0), 1);
        assert!(users.is_denied("alice", 999));
        assert!(!users.is_denied("alice", 1_000));
        assert!(!users.is_denied("bob", 0));
        users.unregister(&a);
        assert_eq!(users.kick(&kick, 0), 0);
    }
}
