//! The binary envelope: how a binary frame names its room.
//!
//! Client → server: `[room_len: u8][room: room_len bytes][payload]`.
//!
//! Server → client: `[room_len: u8][room][seq: u64 BE][ts: u64 BE][from_len: u8][from][payload]`.
//!
//! The payload is carried byte for byte. Binary messages share the room's sequence with JSON
//! messages.

use bytes::{BufMut, Bytes, BytesMut};

use crate::names::{MAX_ROOM_LEN, MAX_USER_LEN};

/// A binary frame from a client, split into room and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientBinary<'a> {
    /// The room name bytes (validate them with [`crate::names::validate_room`]).
    pub room: &'a str,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a binary frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Empty frame, or shorter than its room length says.
    #[error("binary frame too short for its envelope (room length byte, then the room name)")]
    Truncated,
    /// The room length byte is 0.
    #[error("binary envelope has an empty room name")]
    EmptyRoom,
    /// The room bytes are not UTF-8.
    #[error("binary envelope's room name is not UTF-8")]
    RoomNotUtf8,
}

/// Splits a client binary frame into room and payload.
pub fn decode_client(frame: &[u8]) -> Result<ClientBinary<'_>, EnvelopeError> {
    let (&len, rest) = frame.split_first().ok_or(EnvelopeError::Truncated)?;
    if len == 0 {
        return Err(EnvelopeError::EmptyRoom);
    }
    let len = usize::from(len);
    if rest.len() < len {
        return Err(EnvelopeError::Truncated);
    }
    let (room, payload) = rest.split_at(len);
    let room = std::str::from_utf8(room).map_err(|_| EnvelopeError::RoomNotUtf8)?;
    Ok(ClientBinary { room, payload })
}

/// Builds a client binary frame (for clients and tests). Room names longer than 255 bytes are
/// cut to fit the length byte (the server refuses any room name over 128 bytes anyway).
pub fn encode_client(room: &str, payload: &[u8]) -> Bytes {
    let room = room.as_bytes().get(..255).unwrap_or(room.as_bytes());
    let mut out = BytesMut::with_capacity(1 + room.len() + payload.len());
    out.put_u8(u8::try_from(room.len()).unwrap_or(u8::MAX));
    out.put_slice(room);
    out.put_slice(payload);
    out.freeze()
}

/// A binary message as the server delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerBinary<'a> {
    /// The room.
    pub room: &'a str,
    /// The message's sequence number in the room.
    pub seq: u64,
    /// The server's clock when it sequenced the message, in ms since the Unix epoch.
    pub ts: u64,
    /// The publishing user.
    pub from: &'a str,
    /// The payload, byte for byte.
    pub payload: &'a [u8],
}

impl ServerBinary<'_> {
    /// Encodes the server → client envelope. Room (≤ 128 bytes) and user (≤ 64 bytes) names
    /// are validated before they get here, so the length bytes always fit.
    pub fn encode(&self) -> Bytes {
        let room = self
            .room
            .as_bytes()
            .get(..MAX_ROOM_LEN)
            .unwrap_or(self.room.as_bytes());
        let from = self
            .from
            .as_bytes()
            .get(..MAX_USER_LEN)
            .unwrap_or(self.from.as_bytes());
        let mut out =
            BytesMut::with_capacity(2 + room.len() + 16 + from.len() + self.payload.len());
        out.put_u8(u8::try_from(room.len()).unwrap_or(u8::MAX));
        out.put_slice(room);
        out.put_u64(self.seq);
        out.put_u64(self.ts);
        out.put_u8(u8::try_from(from.len()).unwrap_or(u8::MAX));
        out.put_slice(from);
        out.put_slice(self.payload);
        out.freeze()
    }
}

/// A server → client binary frame split around its `seq`: `head ‖ seq (u64 BE) ‖ tail`. A
/// broker that assigns the seq elsewhere (in Redis) splices it in without re-encoding.
pub fn encode_server_parts(room: &str, ts: u64, from: &str, payload: &[u8]) -> (Bytes, Bytes) {
    let frame = ServerBinary {
        room,
        seq: 0,
        ts,
        from,
        payload,
    }
    .encode();
    let head = 1 + usize::from(frame.first().copied().unwrap_or(0));
    let head = head.min(frame.len());
    (
        frame.slice(..head),
        frame.slice((head + 8).min(frame.len())..),
    )
}

/// Reads a server → client binary frame (for clients and tests).
pub fn decode_server(frame: &[u8]) -> Result<ServerBinary<'_>, EnvelopeError> {
    let (&room_len, rest) = frame.split_first().ok_or(EnvelopeError::Truncated)?;
    let (room, rest) = rest
        .split_at_checked(usize::from(room_len))
        .ok_or(EnvelopeError::Truncated)?;
    let (seq, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(EnvelopeError::Truncated)?;
    let (ts, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(EnvelopeError::Truncated)?;
    let (&from_len, rest) = rest.split_first().ok_or(EnvelopeError::Truncated)?;
    let (from, payload) = rest
        .split_at_checked(usize::from(from_len))
        .ok_or(EnvelopeError::Truncated)?;
    Ok(ServerBinary {
        room: std::str::from_utf8(room).map_err(|_| EnvelopeError::RoomNotUtf8)?,
        seq: u64::from_be_bytes(*seq),
        ts: u64::from_be_bytes(*ts),
        from: std::str::from_utf8(from).map_err(|_| EnvelopeError::RoomNotUtf8)?,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_splice_into_the_whole_frame() {
        let (head, tail) = encode_server_parts("room", 9, "bob", b"\x00payload");
        let mut spliced = head.to_vec();
        spliced.extend_from_slice(&77u64.to_be_bytes());
        spliced.extend_from_slice(&tail);
        let whole = ServerBinary {
            room: "room",
            seq: 77,
            ts: 9,
            from: "bob",
            payload: b"\x00payload",
        }
        .encode();
        assert_eq!(spliced, whole.to_vec());
    }

    #[test]
    fn client_round_trip() {
        let frame = encode_client("files", &[0, 159, 146, 150, 255]);
        assert_eq!(&frame[..], b"\x05files\x00\x9f\x92\x96\xff");
        assert_eq!(
            decode_client(&frame),
            Ok(ClientBinary {
                room: "files",
                payload: &[0, 159, 146, 150, 255]
            })
        );
    }

    #[test]
    fn client_errors() {
        assert_eq!(decode_client(b""), Err(EnvelopeError::Truncated));
        assert_eq!(decode_client(b"\x00abc"), Err(EnvelopeError::EmptyRoom));
        assert_eq!(decode_client(b"\x09abc"), Err(EnvelopeError::Truncated));
        assert_eq!(
            decode_client(b"\x02\xff\xfe"),
            Err(EnvelopeError::RoomNotUtf8)
        );
        assert_eq!(
            decode_client(b"\x02ab"),
            Ok(ClientBinary {
                room: "ab",
                payload: b""
            })
        );
    }

    #[test]
    fn server_round_trip() {
        let msg = ServerBinary {
            room: "r",
            seq: 258,
            ts: 1_700_000_000_000,
            from: "alice",
            payload: b"\x00\x01bytes",
        };
        let frame = msg.encode();
        assert_eq!(decode_server(&frame), Ok(msg));
        assert_eq!(frame.get(..2), Some(&b"\x01r"[..]));
        assert_eq!(
            decode_server(frame.get(..10).unwrap_or_default()),
            Err(EnvelopeError::Truncated)
        );
    }
}
