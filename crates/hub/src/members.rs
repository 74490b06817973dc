//! A room's members on this node and its per-user presence counts, kept together so that they
//! never disagree: presence changes only on a user's first connection in and last one out.
//! Used by the one local room type (`crate::room`), whichever engine sequences the room.

use std::collections::btree_map::{self, BTreeMap};
use std::collections::hash_map::{self, HashMap};
use std::sync::Arc;

use crate::session::{Session, SessionId};

#[derive(Debug)]
pub(crate) struct Members<M> {
    members: HashMap<SessionId, M>,
    /// Connections per user, in byte order of the names (for `joined` lists and `members`
    /// pages).
    users: BTreeMap<Arc<str>, u32>,
}

impl<M> Default for Members<M> {
    fn default() -> Self {
        Self {
            members: HashMap::new(),
            users: BTreeMap::new(),
        }
    }
}

impl<M> Members<M> {
    /// Adds `session` (which must not be a member yet) with its state; returns whether it is
    /// its user's first connection here (a presence `join`).
    pub(crate) fn add(&mut self, session: &Session, member: M) -> bool {
        self.members.insert(session.id(), member);
        let count = self.users.entry(session.user().clone()).or_insert(0);
        *count = count.saturating_add(1);
        *count == 1
    }

    /// Removes `session`; returns its state and whether it was its user's last connection
    /// here (a presence `leave`). `None` if it was not a member.
    pub(crate) fn remove(&mut self, session: &Session) -> Option<(M, bool)> {
        let member = self.members.remove(&session.id())?;
        let mut last_of_user = false;
        if let btree_map::Entry::Occupied(mut count) = self.users.entry(session.user().clone()) {
            *count.get_mut() = count.get().saturating_sub(1);
            if *count.get() == 0 {
                count.remove();
                last_of_user = true;
            }
        }
        Some((member, last_of_user))
    }

    pub(crate) fn get(&self, session: &SessionId) -> Option<&M> {
        self.members.get(session)
    }

    pub(crate) fn get_mut(&mut self, session: &SessionId) -> Option<&mut M> {
        self.members.get_mut(session)
    }

    pub(crate) fn contains(&self, session: &SessionId) -> bool {
        self.members.contains_key(session)
    }

    /// This node's connections in the room.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn iter(&self) -> hash_map::Iter<'_, SessionId, M> {
        self.members.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> hash_map::IterMut<'_, SessionId, M> {
        self.members.iter_mut()
    }

    pub(crate) fn values_mut(&mut self) -> hash_map::ValuesMut<'_, SessionId, M> {
        self.members.values_mut()
    }

    /// The users present, in byte order, with their connection counts.
    pub(crate) fn users(&self) -> &BTreeMap<Arc<str>, u32> {
        &self.users
    }

    /// How many distinct users are present.
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }
}
