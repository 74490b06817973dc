//! Per-room position tracking: the last sequence number delivered to the application, the
//! epoch it belongs to, and the dedupe rule built on them.
//!
//! Pure code, driven by the connection task:
//!
//! - [`Tracker::joined`] when a `joined` reply arrives: decides whether the position carries
//!   over (first join, recovery) or the application must re-sync.
//! - [`Tracker::deliver`] for every room message (JSON or binary): `false` means "already
//!   delivered, drop it" (seq ≤ last seen).
//! - [`Tracker::own`] for the seq of an acked publish: the server does not echo our own
//!   messages, so without this the position would lag behind and a recovery would replay them.
//! - [`Tracker::since`] for the `since` of a re-join after a reconnect.

use std::collections::{BTreeSet, HashMap};

use switchboard_protocol::StreamPosition;

/// Own seqs remembered ahead of the position, per room, at most. (They are absorbed as soon as
/// the messages before them arrive; the bound only matters for a room with a permanent gap.)
const MAX_PENDING_OWN: usize = 1024;

/// What a `joined` reply means for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    /// A first join, a repeated join, or a re-join that missed nothing: the position is valid.
    Continued,
    /// The server recovered the gap: missed messages follow, then live ones.
    Recovered,
    /// The gap cannot be filled (new epoch, history expired, or a server without recovery that
    /// sequenced messages we did not see): the position is now `seq`, the app must re-sync.
    Resync {
        /// The room's current seq, the new position.
        seq: u64,
        /// The room's epoch, if the server sent one.
        epoch: Option<String>,
    },
}

/// The `joined` reply, as far as positions are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinedReply<'a> {
    /// The room's current seq.
    pub(crate) seq: u64,
    /// The room's epoch (absent from servers without recovery).
    pub(crate) epoch: Option<&'a str>,
    /// The answer to `since` (absent when the join did not ask).
    pub(crate) recovered: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Position {
    /// The last seq delivered to the application (or acked as our own).
    last: u64,
    epoch: Option<String>,
    /// Acked own seqs above `last + 1`, absorbed once the messages before them arrive.
    own_ahead: BTreeSet<u64>,
}

impl Position {
    fn advance_to(&mut self, seq: u64) {
        self.last = self.last.max(seq);
        // Absorb own messages that now continue the sequence.
        while self
            .own_ahead
            .first()
            .is_some_and(|&s| s <= self.last.saturating_add(1))
        {
            if let Some(s) = self.own_ahead.pop_first() {
                self.last = self.last.max(s);
            }
        }
    }
}

/// The positions of the rooms the client is in.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    rooms: HashMap<String, Position>,
}

impl Tracker {
    /// Whether the room has a position (it was joined and not left since).
    pub(crate) fn contains(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The `since` for re-joining `room`: only when its epoch is known (a server that sends no
    /// epoch cannot recover).
    pub(crate) fn since(&self, room: &str) -> Option<StreamPosition> {
        let pos = self.rooms.get(room)?;
        Some(StreamPosition {
            seq: pos.last,
            epoch: pos.epoch.clone()?,
        })
    }

    /// The last seq delivered in `room`.
    #[cfg(test)]
    pub(crate) fn last(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(|p| p.last)
    }

    /// Applies a `joined` reply. `rejoin` is true for the re-join after a reconnect (whether
    /// or not it carried `since`), false for a join the application asked for.
    pub(crate) fn joined(
        &mut self,
        room: &str,
        reply: JoinedReply<'_>,
        rejoin: bool,
    ) -> JoinOutcome {
        let Some(pos) = self.rooms.get_mut(room) else {
            self.rooms.insert(
                room.to_owned(),
                Position {
                    last: reply.seq,
                    epoch: reply.epoch.map(str::to_owned),
                    own_ahead: BTreeSet::new(),
                },
            );
            return JoinOutcome::Continued;
        };
        let same_epoch = pos.epoch.as_deref() == reply.epoch;
        let outcome = match (rejoin, reply.recovered) {
            // The server says the stream cannot be continued from here: a failed recovery, or
            // an unsolicited `joined` after the server itself lost its place (a cluster node
            // whose broker could not fill a gap).
            (_, Some(false)) => JoinOutcome::Resync {
                seq: reply.seq,
                epoch: reply.epoch.map(str::to_owned),
            },
            // Joining a room this connection is already in: nothing was missed.
            (false, _) if same_epoch || pos.epoch.is_none() => JoinOutcome::Continued,
            (true, Some(true)) => JoinOutcome::Recovered,
            // A server without recovery: fine only if nothing happened meanwhile.
            (true, None) if same_epoch && reply.seq == pos.last => JoinOutcome::Continued,
            _ => JoinOutcome::Resync {
                seq: reply.seq,
                epoch: reply.epoch.map(str::to_owned),
            },
        };
        match &outcome {
            JoinOutcome::Resync { seq, epoch } => {
                *pos = Position {
                    last: *seq,
                    epoch: epoch.clone(),
                    own_ahead: BTreeSet::new(),
                };
            }
            JoinOutcome::Continued | JoinOutcome::Recovered => {
                if pos.epoch.is_none() {
                    pos.epoch = reply.epoch.map(str::to_owned);
                }
            }
        }
        outcome
    }

    /// A room message with `seq` arrived: `true` to deliver it (and advance), `false` if it
    /// was already delivered or the room is not tracked (left).
    pub(crate) fn deliver(&mut self, room: &str, seq: u64) -> bool {
        match self.rooms.get_mut(room) {
            Some(pos) if seq > pos.last => {
                pos.advance_to(seq);
                true
            }
            _ => false,
        }
    }

    /// Our own publish was acked with `seq`: the server will not send it to us live, and a
    /// recovery replay of it must be dropped.
    pub(crate) fn own(&mut self, room: &str, seq: u64) {
        let Some(pos) = self.rooms.get_mut(room) else {
            return;
        };
        if seq == pos.last.saturating_add(1) {
            pos.advance_to(seq);
        } else if seq > pos.last {
            pos.own_ahead.insert(seq);
            if pos.own_ahead.len() > MAX_PENDING_OWN {
                pos.own_ahead.pop_first();
            }
        }
    }

    /// Forgets the room (it was left).
    pub(crate) fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a scenario.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// `joined` with (seq, epoch, recovered, rejoin) → expected outcome (`R` for resync).
        Joined(u64, Option<&'static str>, Option<bool>, bool, Expect),
        /// A message with seq → delivered?
        Msg(u64, bool),
        /// Own publish acked with seq.
        Own(u64),
        /// Leave.
        Forget,
        /// Expected `last`.
        Last(Option<u64>),
        /// Expected `since` (seq, epoch).
        Since(Option<(u64, &'static str)>),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        Continued,
        Recovered,
        Resync,
    }

    use Expect::{Continued, Recovered, Resync};
    use Step::{Forget, Joined, Last, Msg, Own};

    fn run(name: &str, steps: &[Step]) {
        let mut t = Tracker::default();
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{name}, step {i}: {step:?}");
            match *step {
                Joined(seq, epoch, recovered, rejoin, expect) => {
                    let reply = JoinedReply {
                        seq,
                        epoch,
                        recovered,
                    };
                    let got = match t.joined("r", reply, rejoin) {
                        JoinOutcome::Continued => Continued,
                        JoinOutcome::Recovered => Recovered,
                        JoinOutcome::Resync { seq: s, epoch: e } => {
                            assert_eq!((s, e.as_deref()), (seq, epoch), "{at}");
                            Resync
                        }
                    };
                    assert_eq!(got, expect, "{at}");
                }
                Msg(seq, deliver) => assert_eq!(t.deliver("r", seq), deliver, "{at}"),
                Own(seq) => t.own("r", seq),
                Forget => t.forget("r"),
                Last(last) => assert_eq!(t.last("r"), last, "{at}"),
                Step::Since(since) => assert_eq!(
                    t.since("r"),
                    since.map(|(seq, epoch)| StreamPosition {
                        seq,
                        epoch: epoch.to_owned()
                    }),
                    "{at}"
                ),
            }
        }
    }

    const E1: Option<&str> = Some("00000000000000e1");
    const E2: Option<&str> = Some("00000000000000e2");

    #[test]
    fn in_order_delivery() {
        run(
            "in order",
            &[
                Joined(3, E1, None, false, Continued),
                Msg(4, true),
                Msg(5, true),
                Msg(6, true),
                Last(Some(6)),
                Step::Since(Some((6, "00000000000000e1"))),
            ],
        );
    }

    #[test]
    fn duplicates_and_old_messages_are_dropped() {
        run(
            "duplicates",
            &[
                Joined(0, E1, None, false, Continued),
                Msg(1, true),
                Msg(1, false),
                Msg(2, true),
                Msg(1, false),
                Msg(2, false),
                Msg(3, true),
                Last(Some(3)),
            ],
        );
    }

    #[test]
    fn messages_of_the_join_snapshot_are_dropped() {
        // joined.seq = 5: messages up to 5 came before the join.
        run(
            "snapshot",
            &[
                Joined(5, E1, None, false, Continued),
                Msg(5, false),
                Msg(6, true),
            ],
        );
    }

    #[test]
    fn boundary_after_recovery_is_exactly_once() {
        run(
            "recovery",
            &[
                Joined(0, E1, None, false, Continued),
                Msg(1, true),
                Msg(2, true),
                // Disconnected; 3..=5 published meanwhile. Re-join with since 2.
                Step::Since(Some((2, "00000000000000e1"))),
                Joined(5, E1, Some(true), true, Recovered),
                Last(Some(2)),
                // A replay that overlaps the boundary by one is deduped.
                Msg(2, false),
                Msg(3, true),
                Msg(4, true),
                Msg(5, true),
                // Live again; a late duplicate of the replay is dropped.
                Msg(5, false),
                Msg(6, true),
                Last(Some(6)),
            ],
        );
    }

    #[test]
    fn an_unsolicited_joined_that_cannot_continue_means_resync() {
        run(
            "server lost its place",
            &[
                Joined(4, E1, None, false, Continued),
                Msg(5, true),
                // Same epoch, but the gap could not be filled: resync from seq 9.
                Joined(9, E1, Some(false), false, Resync),
                Last(Some(9)),
                Msg(9, false),
                Msg(10, true),
                // A members refresh after a filled gap: the stream simply continues.
                Joined(10, E1, Some(true), false, Continued),
                Msg(11, true),
                // A new epoch (the broker lost its data): resync from there.
                Joined(0, E2, Some(false), false, Resync),
                Msg(1, true),
            ],
        );
    }

    #[test]
    fn recovery_with_nothing_missed() {
        run(
            "nothing missed",
            &[
                Joined(4, E1, None, false, Continued),
                Joined(4, E1, Some(true), true, Recovered),
                Msg(4, false),
                Msg(5, true),
            ],
        );
    }

    #[test]
    fn epoch_change_means_resync() {
        run(
            "epoch change",
            &[
                Joined(0, E1, None, false, Continued),
                Msg(1, true),
                Msg(2, true),
                // Server restarted: new epoch, seq starts over.
                Joined(0, E2, Some(false), true, Resync),
                Last(Some(0)),
                Step::Since(Some((0, "00000000000000e2"))),
                // Seq 1 of the new epoch is a new message, not a duplicate.
                Msg(1, true),
                Last(Some(1)),
            ],
        );
    }

    #[test]
    fn history_expired_means_resync_at_the_current_seq() {
        run(
            "expired",
            &[
                Joined(0, E1, None, false, Continued),
                Msg(1, true),
                Joined(500, E1, Some(false), true, Resync),
                Msg(500, false),
                Msg(501, true),
            ],
        );
    }

    #[test]
    fn server_without_recovery() {
        run(
            "no epochs",
            &[
                Joined(0, None, None, false, Continued),
                Step::Since(None),
                Msg(1, true),
                // Re-join, nothing happened meanwhile.
                Joined(1, None, None, true, Continued),
                Msg(2, true),
                // Re-join, messages were missed.
                Joined(7, None, None, true, Resync),
                Msg(7, false),
                Msg(8, true),
                // Room re-created (seq went back): resync to 0, seq 1 is new.
                Joined(0, None, None, true, Resync),
                Msg(1, true),
            ],
        );
    }

    #[test]
    fn own_messages_advance_the_position() {
        run(
            "own",
            &[
                Joined(0, E1, None, false, Continued),
                Msg(1, true),
                Own(2),
                Last(Some(2)),
                // Ack of 4 arrives before message 3 from someone else.
                Own(4),
                Last(Some(2)),
                Msg(3, true),
                Last(Some(4)),
                // A recovery replay of our own 4 is dropped.
                Msg(4, false),
                Msg(5, true),
                // Acks at or below the position change nothing.
                Own(5),
                Own(1),
                Last(Some(5)),
            ],
        );
    }

    #[test]
    fn gaps_are_delivered_and_skip_owns() {
        run(
            "gap",
            &[
                Joined(0, E1, None, false, Continued),
                Own(3),
                // 1 and 2 never come (e.g. our own binary publishes, which get no ack).
                Msg(5, true),
                Last(Some(5)),
                Msg(3, false),
            ],
        );
    }

    #[test]
    fn repeated_join_keeps_the_position() {
        run(
            "repeat",
            &[
                Joined(2, E1, None, false, Continued),
                Msg(3, true),
                Joined(3, E1, None, false, Continued),
                Last(Some(3)),
                Msg(3, false),
            ],
        );
    }

    #[test]
    fn left_rooms_are_forgotten_and_drop_messages() {
        run(
            "forget",
            &[
                Joined(0, E1, None, false, Continued),
                Msg(1, true),
                Forget,
                Last(None),
                Step::Since(None),
                Msg(2, false),
                // Joining again starts from the new snapshot.
                Joined(9, E1, None, false, Continued),
                Msg(10, true),
            ],
        );
    }

    #[test]
    fn own_ahead_is_bounded() {
        let mut t = Tracker::default();
        t.joined(
            "r",
            JoinedReply {
                seq: 0,
                epoch: E1,
                recovered: None,
            },
            false,
        );
        for seq in 10..(10 + 2 * MAX_PENDING_OWN as u64) {
            t.own("r", seq);
        }
        let pending = t.rooms.get("r").map_or(0, |p| p.own_ahead.len());
        assert_eq!(pending, MAX_PENDING_OWN);
    }
}
