//! A room's presence on this node, for both engines: recording each change (with its version)
//! for the next coalesced hand-out, handing windows out to the live members that may see
//! presence (each the changes after its floor), and the engines' queue of rooms with changes
//! waiting. What a window's frames look like is [`crate::presence`]'s job.

use std::sync::Arc;

use parking_lot::Mutex;
use switchboard_protocol::server::PresenceEvent;

use super::{Local, Room, SessionId};
use crate::presence::Recorded;

impl Local {
    /// Records presence change `version` (`event` of `user`) for the next hand-out and keeps
    /// the member count. `subject` is the member the change is about, if it is here: it is not
    /// told of its own change. Returns whether the room must be put on the list of rooms with
    /// presence to hand out.
    pub(super) fn record_presence(
        &mut self,
        room: &str,
        version: u64,
        user: &Arc<str>,
        event: PresenceEvent,
        subject: Option<SessionId>,
    ) -> bool {
        if version > self.count_version {
            self.member_count = match event {
                PresenceEvent::Join => self.member_count.saturating_add(1),
                PresenceEvent::Leave => self.member_count.saturating_sub(1),
            };
            self.count_version = version;
        }
        if version <= self.batch.last_version() {
            // Versions went back (a broker lost the room and started again; never in memory):
            // what waits goes out first, then everyone hears of changes from this one on.
            self.hand_out_presence(room, 0);
            self.batch.reset_version(version.saturating_sub(1));
            for member in self.members.values_mut() {
                member.floor = member.floor.min(version.saturating_sub(1));
            }
        }
        // The subject's snapshot normally includes its own join already; if not and it missed
        // nothing else, skip it.
        if let Some(subject) = subject.and_then(|id| self.members.get_mut(&id))
            && subject.is_live()
            && subject.floor.saturating_add(1) == version
        {
            subject.floor = version;
        }
        let users = usize::try_from(self.member_count).unwrap_or(usize::MAX);
        match self.batch.record(&self.config, version, user, event, users) {
            Recorded::Waiting => false,
            Recorded::Queue => true,
            // A list window (count-only windows keep no names): the clock only matters to
            // count-only windows.
            Recorded::FlushNow => {
                self.hand_out_presence(room, 0);
                false
            }
            Recorded::FlushNowAndQueue => {
                self.hand_out_presence(room, 0);
                true
            }
        }
    }

    /// Queues the window's frames for the live members that may see presence, each the
    /// changes after its floor.
    pub(super) fn hand_out_presence(&mut self, room: &str, now_ms: u64) {
        let last = self.batch.last_version();
        let mut flush = self
            .batch
            .take(&self.config, room, self.member_count, now_ms);
        for member in self.members.values_mut() {
            if !member.is_live() {
                continue;
            }
            if member.presence
                && let Some(frame) = flush.frame_for(member.floor)
            {
                let _ = member.session.outbox().push(frame);
            }
            member.floor = member.floor.max(last);
        }
    }

    /// Hands out the presence window if it is due. Returns whether the room stays on the
    /// list (presence waits, or it was handed out recently).
    fn flush_presence(&mut self, room: &str, now_ms: u64) -> bool {
        let users = usize::try_from(self.member_count).unwrap_or(usize::MAX);
        if self.batch.due(&self.config, users, now_ms) {
            self.hand_out_presence(room, now_ms);
        }
        self.batch.tick()
    }
}

/// An engine's rooms with presence changes waiting for the next tick.
#[derive(Debug)]
pub(crate) struct PresenceQueue<S> {
    rooms: Mutex<Vec<Arc<Room<S>>>>,
}

impl<S> Default for PresenceQueue<S> {
    fn default() -> Self {
        Self {
            rooms: Mutex::new(Vec::new()),
        }
    }
}

impl<S> PresenceQueue<S> {
    /// Puts `room` on the list. Lock order: a room, then the queue (never the other way
    /// round).
    pub(crate) fn push(&self, room: Arc<Room<S>>) {
        self.rooms.lock().push(room);
    }

    /// Hands out the presence changes collected since the last call: one frame per member of
    /// each changed room (see [`crate::PresenceConfig`]).
    pub(crate) fn flush(&self, now_ms: u64) {
        let rooms = std::mem::take(&mut *self.rooms.lock());
        let mut waiting = Vec::new();
        for entry in rooms {
            let keep = entry.state.lock().local.flush_presence(&entry.name, now_ms);
            if keep {
                waiting.push(entry);
            }
        }
        if !waiting.is_empty() {
            self.rooms.lock().extend(waiting);
        }
    }
}
