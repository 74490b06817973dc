//! Room figures for the operator page (`/admin` in the server): each room's connections on this
//! node and its last seq, visited once per second by the server's sampler, which turns seq
//! deltas into messages per second and keeps the busiest rooms.
//!
//! A visit locks each room once, briefly, outside every registry lock (the rooms of one shard
//! are cloned out first): at 100,000 rooms, a few milliseconds of one core per second, and only
//! while the operator page is enabled.

use std::sync::Arc;

use crate::hub::Hub;
use crate::registry::Registry;
use crate::relay::Relay;
use crate::room::{Room, Stream};

/// One room as the operator page sees it.
#[derive(Debug, Clone, Copy)]
pub struct RoomActivity<'a> {
    /// The room's name.
    pub name: &'a Arc<str>,
    /// This node's connections in the room.
    pub members: usize,
    /// The room's last message seq (in its current epoch; 0 before the first message).
    pub seq: u64,
}

/// Calls `visit` with each room of `registry`.
fn visit_registry<S: Stream>(
    registry: &Registry<Room<S>>,
    visit: &mut dyn FnMut(RoomActivity<'_>),
) {
    let mut rooms: Vec<Arc<Room<S>>> = Vec::new();
    for shard in registry.shards() {
        rooms.clear();
        rooms.extend(shard.read().values().cloned());
        for room in &rooms {
            let (name, members, seq) = room.activity();
            visit(RoomActivity { name, members, seq });
        }
    }
}

impl Hub {
    /// Calls `visit` with every room on this node (see [`RoomActivity`]).
    pub fn visit_rooms(&self, visit: &mut dyn FnMut(RoomActivity<'_>)) {
        visit_registry(self.registry(), visit);
    }
}

impl Relay {
    /// Calls `visit` with every room that has members on this node (see [`RoomActivity`]).
    pub fn visit_rooms(&self, visit: &mut dyn FnMut(RoomActivity<'_>)) {
        visit_registry(self.registry(), visit);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use crate::Hub;

    #[test]
    fn a_visit_sees_each_room_with_its_members_and_last_seq() {
        let hub = Hub::default();
        let alice = hub.connect(Arc::from("alice"));
        let bob = hub.connect(Arc::from("bob"));
        for session in [&alice, &bob] {
            hub.join(session, "lobby", None, None, true, 0).unwrap();
        }
        hub.join(&alice, "quiet", None, None, true, 0).unwrap();
        let data = RawValue::from_string("1".to_owned()).unwrap();
        for _ in 0..3 {
            hub.publish(&alice, "lobby", &data, true, 0, None).unwrap();
        }
        let mut seen = Vec::new();
        hub.visit_rooms(&mut |room| seen.push((room.name.to_string(), room.members, room.seq)));
        seen.sort();
        assert_eq!(
            seen,
            [("lobby".to_owned(), 2, 3), ("quiet".to_owned(), 1, 0)]
        );
    }
}
