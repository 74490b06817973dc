//! Key and channel names, and the format of what a room's channel carries:
//! `TYPE EPOCH SEQ SKIP [@STAMP ]KIND FRAME`, space-separated, FRAME last and raw:
//! - TYPE: `m` message, `p` presence event, `t` typing;
//! - EPOCH: the room's epoch (`-` for presence and typing);
//! - SEQ: the message's seq, or the presence version (`0` for typing);
//! - SKIP: `NODE:SESSION` of a session that must not receive it (the publisher without echo,
//!   the subject of a presence event, the typist), or `-`;
//! - STAMP (messages, optional): when the publishing node handed the message to Redis for
//!   sequencing, in microseconds since the Unix epoch (`@` then digits), for the publish →
//!   socket latency (`switchboard_delivery_latency_seconds`). Nodes of one cluster run the
//!   same version: an older node does not read this field;
//! - KIND+FRAME: `j` and the JSON text frame, or `b` and the binary frame, exactly as clients
//!   receive it.

use bytes::Bytes;
use switchboard_hub::{InboundKind, Outbound, Sequenced, SessionId};

/// Names of a room's keys and channel under a prefix.
#[derive(Debug, Clone)]
pub(crate) struct RoomKeys {
    pub(crate) channel: String,
    pub(crate) meta: String,
    pub(crate) hist: String,
    pub(crate) pres: String,
    pub(crate) users: String,
}

impl RoomKeys {
    pub(crate) fn new(prefix: &str, room: &str) -> Self {
        let base = format!("{prefix}:{{{room}}}");
        Self {
            meta: format!("{base}:meta"),
            hist: format!("{base}:hist"),
            pres: format!("{base}:pres"),
            users: format!("{base}:users"),
            channel: base,
        }
    }

    /// The idempotency key of `msg_id` from `user`.
    pub(crate) fn idempotency(&self, user: &str, msg_id: &str) -> String {
        format!("{}:id:{user}\u{1f}{msg_id}", self.channel)
    }
}

/// The room a channel name carries, if it is one of ours.
pub(crate) fn room_of_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')
}

/// One decoded channel message.
#[derive(Debug, Clone)]
pub(crate) struct Frame<'a> {
    pub(crate) kind: InboundKind,
    pub(crate) epoch: &'a str,
    pub(crate) seq: u64,
    pub(crate) skip: Option<SessionId>,
    pub(crate) frame: Outbound,
    pub(crate) sequenced: Option<Sequenced>,
}

/// The SKIP field for a session of node `node`.
pub(crate) fn skip_tag(node: &str, session: SessionId) -> String {
    format!("{node}:{}", session.0)
}

/// Decodes a channel message; `node` is this node's id (SKIP naming another node's session is
/// no skip here). `None` for a message not in this format.
pub(crate) fn decode<'a>(node: &str, payload: &'a Bytes) -> Option<Frame<'a>> {
    let text = payload.as_ref();
    let mut fields = text.splitn(5, |b| *b == b' ');
    let kind = match fields.next()? {
        b"m" => InboundKind::Message,
        b"p" => InboundKind::Presence,
        b"t" => InboundKind::Typing,
        _ => return None,
    };
    let epoch = std::str::from_utf8(fields.next()?).ok()?;
    let seq = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let skip = std::str::from_utf8(fields.next()?).ok()?;
    let mut rest = fields.next()?;
    let mut sequenced = None;
    if let Some(stamped) = rest.strip_prefix(b"@") {
        let at = stamped.iter().position(|b| *b == b' ')?;
        let (digits, after) = stamped.split_at(at);
        sequenced = Some(Sequenced(std::str::from_utf8(digits).ok()?.parse().ok()?));
        rest = after.get(1..)?;
    }
    let skip = skip
        .split_once(':')
        .filter(|(of, _)| *of == node)
        .and_then(|(_, id)| id.parse().ok())
        .map(SessionId);
    let start = text.len() - rest.len();
    let (&marker, _) = rest.split_first()?;
    let frame = payload.slice(start + 1..);
    let frame = match marker {
        b'j' => Outbound::Text(frame),
        b'b' => Outbound::Binary(frame),
        _ => return None,
    };
    Some(Frame {
        kind,
        epoch,
        seq,
        skip,
        frame,
        sequenced,
    })
}

/// The payload of a typing signal.
pub(crate) fn typing(skip: &str, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + skip.len() + 10);
    out.extend_from_slice(b"t - 0 ");
    out.extend_from_slice(skip.as_bytes());
    out.extend_from_slice(b" j");
    out.extend_from_slice(frame);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_hash_tag() {
        let keys = RoomKeys::new("sb", "chat:1");
        assert_eq!(keys.channel, "sb:{chat:1}");
        assert_eq!(keys.meta, "sb:{chat:1}:meta");
        assert_eq!(room_of_channel("sb", &keys.channel), Some("chat:1"));
        assert_eq!(room_of_channel("other", &keys.channel), None);
    }

    #[test]
    fn decodes_each_type_and_only_our_skips() {
        let payload = Bytes::from_static(b"m 00ff 7 node1:42 j{\"type\":\"message\"}");
        let frame = decode("node1", &payload).unwrap();
        assert_eq!(frame.kind, InboundKind::Message);
        assert_eq!(frame.epoch, "00ff");
        assert_eq!(frame.seq, 7);
        assert_eq!(frame.skip, Some(SessionId(42)));
        assert!(
            matches!(frame.frame, Outbound::Text(ref b) if b.as_ref() == b"{\"type\":\"message\"}")
        );
        assert_eq!(decode("node2", &payload).unwrap().skip, None);

        assert_eq!(frame.sequenced, None);
        let stamped = Bytes::from_static(b"m 00ff 7 - @1700000000123456 j{}");
        let frame = decode("node1", &stamped).unwrap();
        assert_eq!(frame.sequenced, Some(Sequenced(1_700_000_000_123_456)));
        assert!(matches!(frame.frame, Outbound::Text(ref b) if b.as_ref() == b"{}"));

        let binary = Bytes::from_static(b"m e 1 - b\x01r \x00");
        assert!(
            matches!(decode("n", &binary).unwrap().frame, Outbound::Binary(ref b) if b.as_ref() == b"\x01r \x00")
        );

        let typing = Bytes::from(typing("n:3", b"{}"));
        let frame = decode("n", &typing).unwrap();
        assert_eq!(frame.kind, InboundKind::Typing);
        assert_eq!(frame.skip, Some(SessionId(3)));

        for bad in [
            &b""[..],
            b"x e 1 - j{}",
            b"m e notanumber - j{}",
            b"m e 1 - z{}",
            b"m e 1 -",
            b"m e 1 - @12j{}",
            b"m e 1 - @x j{}",
        ] {
            assert!(
                decode("n", &Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
    }
}
