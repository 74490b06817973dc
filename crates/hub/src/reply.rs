//! The replies a room builds, each in one place whichever engine keeps the room: `joined`
//! (answering a join, a repeated join, or telling a member its stream restarted), `left`, and
//! `history`. Adding a field to one of them touches only its builder here.

use switchboard_protocol::ServerMessage;
use switchboard_protocol::client::RequestId;
use switchboard_protocol::server::{HistoryItem, encode_history};

use crate::outbox::Outbound;
use crate::presence;

/// Who a `joined` reply shows: the room's users in byte order (all of them, or at least the
/// list limit of them) and how many distinct users the room has.
#[derive(Debug, Clone)]
pub(crate) struct Roster<I> {
    /// The users, in byte order of their names.
    pub(crate) sorted: I,
    /// How many distinct users are present.
    pub(crate) count: u64,
}

/// A `joined` frame. Without a roster (the member lacks the presence right) it lists no one
/// and counts 0; with one, at most `limit` users, `members_truncated` when there are more.
pub(crate) fn joined<'a>(
    room: &str,
    id: Option<RequestId>,
    roster: Option<Roster<impl Iterator<Item = &'a str>>>,
    limit: usize,
    seq: u64,
    epoch: &str,
    recovered: Option<bool>,
) -> Outbound {
    let (members, members_truncated, member_count) = match roster {
        Some(roster) => {
            let (list, cut) = presence::joined_list(roster.sorted, limit);
            let more = usize::try_from(roster.count).unwrap_or(usize::MAX) > limit;
            (list, cut || more, roster.count)
        }
        None => (Vec::new(), false, 0),
    };
    let reply = ServerMessage::Joined {
        room,
        id,
        members: &members,
        member_count,
        members_truncated,
        seq,
        epoch,
        recovered,
    };
    Outbound::Text(reply.encode())
}

/// A `left` frame.
pub(crate) fn left(room: &str, id: Option<RequestId>) -> Outbound {
    Outbound::Text(ServerMessage::Left { room, id }.encode())
}

/// How many of the newest history frames (`newest_first`) fit in a `history` reply of at
/// most `budget` bytes: binary frames grow by base64 there, so each frame counts twice.
pub(crate) fn history_fit<'a>(
    newest_first: impl Iterator<Item = &'a Outbound>,
    budget: usize,
) -> usize {
    let mut bytes = 0usize;
    newest_first
        .take_while(|frame| {
            bytes = bytes.saturating_add(frame.cost().saturating_mul(2));
            bytes <= budget
        })
        .count()
}

/// A `history` frame: `frames` (oldest first) as the room was at `seq` under `epoch`.
pub(crate) fn history<'a>(
    room: &str,
    id: Option<RequestId>,
    seq: u64,
    epoch: &str,
    frames: impl Iterator<Item = &'a Outbound>,
) -> Outbound {
    // Only text and binary frames are ever kept.
    let items = frames.filter_map(|frame| match frame {
        Outbound::Binary(frame) => Some(HistoryItem::Binary(frame)),
        Outbound::Text(json) => Some(HistoryItem::Json(json)),
        Outbound::Ping | Outbound::Pong(_) | Outbound::Close(_) => None,
    });
    Outbound::Text(encode_history(room, id, seq, epoch, items))
}
