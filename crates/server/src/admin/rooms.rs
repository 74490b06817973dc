//! The busiest rooms, from one visit of the broker's rooms per second: messages per second come
//! from each room's seq delta since the previous visit. Pure: the caller passes the elapsed time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchboard_hub::RoomActivity;

/// Rooms listed in each of the two tables (by messages, by members): enough to spot a hot room,
/// and a snapshot stays a few KB (room names are at most 128 bytes).
pub(crate) const TOP_ROOMS: usize = 10;

/// One row of a rooms table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RoomRow {
    /// The room's name.
    #[serde(serialize_with = "as_str")]
    pub(crate) room: Arc<str>,
    /// This node's connections in it.
    pub(crate) members: usize,
    /// Messages sequenced in it per second over the last interval.
    pub(crate) messages_per_s: f64,
    /// Its last seq.
    pub(crate) seq: u64,
}

/// Serializes a shared name as a string (serde's `rc` feature is not on).
fn as_str<S: serde::Serializer>(name: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(name)
}

/// What one visit found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RoomFigures {
    /// Rooms on this node.
    pub(crate) rooms: usize,
    /// Connections in rooms, summed over rooms (a connection in three rooms counts three times).
    pub(crate) room_members: usize,
    /// Messages sequenced per second in this node's rooms (the sum of their seq deltas). On one
    /// node: every message published; in a cluster: the messages of rooms with members here,
    /// whichever node received them.
    pub(crate) room_messages_per_s: f64,
    /// The rooms with the most messages per second (ties: most members), at most [`TOP_ROOMS`].
    pub(crate) busiest_rooms: Vec<RoomRow>,
    /// The rooms with the most connections on this node, at most [`TOP_ROOMS`].
    pub(crate) largest_rooms: Vec<RoomRow>,
}

/// Remembers each room's seq between visits.
#[derive(Debug, Default)]
pub(crate) struct RoomSampler {
    /// Seqs at the previous visit; `None` before the first (whose rates are all 0).
    last: Option<HashMap<Arc<str>, u64>>,
}

/// A visit in progress: feed it every room, then [`Visit::finish`].
#[derive(Debug)]
pub(crate) struct Visit<'s> {
    sampler: &'s mut RoomSampler,
    seqs: HashMap<Arc<str>, u64>,
    rooms: usize,
    room_members: usize,
    messages: u64,
    busiest: Vec<(u64, RoomRow)>,
    largest: Vec<RoomRow>,
}

impl RoomSampler {
    /// Starts a visit.
    pub(crate) fn visit(&mut self) -> Visit<'_> {
        let capacity = self.last.as_ref().map_or(0, HashMap::len);
        Visit {
            sampler: self,
            seqs: HashMap::with_capacity(capacity),
            rooms: 0,
            room_members: 0,
            messages: 0,
            busiest: Vec::with_capacity(TOP_ROOMS + 1),
            largest: Vec::with_capacity(TOP_ROOMS + 1),
        }
    }
}

/// Inserts `item` into `top` (kept sorted best first by `better`) if it ranks among the first
/// [`TOP_ROOMS`].
fn keep_top<T>(top: &mut Vec<T>, item: T, better: impl Fn(&T, &T) -> bool) {
    if top.len() == TOP_ROOMS && top.last().is_some_and(|last| !better(&item, last)) {
        return;
    }
    let at = top
        .iter()
        .position(|kept| better(&item, kept))
        .unwrap_or(top.len());
    top.insert(at, item);
    top.truncate(TOP_ROOMS);
}

impl Visit<'_> {
    /// Counts one room.
    pub(crate) fn room(&mut self, room: RoomActivity<'_>) {
        self.rooms += 1;
        self.room_members += room.members;
        // A room first seen now gets 0 (its seq may be old: a room this node just joined in a
        // cluster); a seq below the last one is a new epoch, counted from 0.
        let delta = match self
            .sampler
            .last
            .as_ref()
            .and_then(|last| last.get(room.name))
        {
            Some(&before) if room.seq >= before => room.seq - before,
            Some(_) => room.seq,
            None => 0,
        };
        self.messages = self.messages.saturating_add(delta);
        self.seqs.insert(room.name.clone(), room.seq);
        let row = RoomRow {
            room: room.name.clone(),
            members: room.members,
            messages_per_s: 0.0,
            seq: room.seq,
        };
        if delta > 0 {
            keep_top(&mut self.busiest, (delta, row.clone()), |a, b| {
                (a.0, a.1.members) > (b.0, b.1.members)
            });
        }
        if room.members > 0 {
            keep_top(&mut self.largest, row, |a, b| a.members > b.members);
        }
    }

    /// Ends the visit: rates over `elapsed` (the time since the previous visit).
    pub(crate) fn finish(self, elapsed: Duration) -> RoomFigures {
        let seconds = elapsed.as_secs_f64().max(0.001);
        let per_s = |count: u64| count as f64 / seconds;
        let busiest = self
            .busiest
            .into_iter()
            .map(|(delta, row)| RoomRow {
                messages_per_s: per_s(delta),
                ..row
            })
            .collect::<Vec<_>>();
        let largest = self
            .largest
            .into_iter()
            .map(|row| {
                let delta = busiest
                    .iter()
                    .find(|busy| busy.room == row.room)
                    .map_or(0.0, |busy| busy.messages_per_s);
                RoomRow {
                    messages_per_s: delta,
                    ..row
                }
            })
            .collect();
        let first = self.sampler.last.is_none();
        self.sampler.last = Some(self.seqs);
        RoomFigures {
            rooms: self.rooms,
            room_members: self.room_members,
            room_messages_per_s: if first { 0.0 } else { per_s(self.messages) },
            busiest_rooms: busiest,
            largest_rooms: largest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(sampler: &mut RoomSampler, rooms: &[(&str, usize, u64)]) -> RoomFigures {
        let names: Vec<Arc<str>> = rooms.iter().map(|(name, _, _)| Arc::from(*name)).collect();
        let mut visit = sampler.visit();
        for (name, (_, members, seq)) in names.iter().zip(rooms) {
            visit.room(RoomActivity {
                name,
                members: *members,
                seq: *seq,
            });
        }
        visit.finish(Duration::from_secs(2))
    }

    #[test]
    fn rates_come_from_seq_deltas_and_the_first_visit_counts_nothing() {
        let mut sampler = RoomSampler::default();
        let first = visit(&mut sampler, &[("a", 3, 100), ("b", 1, 5)]);
        assert_eq!(first.room_messages_per_s, 0.0);
        assert!(first.busiest_rooms.is_empty());
        assert_eq!((first.rooms, first.room_members), (2, 4));
        assert_eq!(first.largest_rooms[0].room.as_ref(), "a");
        // Two seconds later: a +10, b +40, c new (its old seq is not counted).
        let second = visit(&mut sampler, &[("a", 3, 110), ("b", 1, 45), ("c", 9, 7000)]);
        assert_eq!(second.room_messages_per_s, 25.0);
        let busiest: Vec<(&str, f64)> = second
            .busiest_rooms
            .iter()
            .map(|row| (row.room.as_ref(), row.messages_per_s))
            .collect();
        assert_eq!(busiest, [("b", 20.0), ("a", 5.0)]);
        let largest: Vec<(&str, f64)> = second
            .largest_rooms
            .iter()
            .map(|row| (row.room.as_ref(), row.messages_per_s))
            .collect();
        assert_eq!(largest, [("c", 0.0), ("a", 5.0), ("b", 20.0)]);
        // c's seq went back: a new epoch, counted from 0.
        let third = visit(&mut sampler, &[("c", 9, 4)]);
        assert_eq!(third.room_messages_per_s, 2.0);
    }

    #[test]
    fn only_the_top_rooms_are_kept_in_order() {
        let mut sampler = RoomSampler::default();
        let rooms: Vec<(String, usize, u64)> = (0..50).map(|i| (format!("r{i}"), i, 0)).collect();
        let names: Vec<(&str, usize, u64)> = rooms
            .iter()
            .map(|(name, members, seq)| (name.as_str(), *members, *seq))
            .collect();
        visit(&mut sampler, &names);
        let later: Vec<(&str, usize, u64)> = names
            .iter()
            .map(|(name, members, _)| (*name, *members, (*members as u64) * 2))
            .collect();
        let figures = visit(&mut sampler, &later);
        assert_eq!(figures.busiest_rooms.len(), TOP_ROOMS);
        assert_eq!(figures.largest_rooms.len(), TOP_ROOMS);
        assert_eq!(figures.busiest_rooms[0].room.as_ref(), "r49");
        assert_eq!(figures.largest_rooms[TOP_ROOMS - 1].room.as_ref(), "r40");
    }
}
