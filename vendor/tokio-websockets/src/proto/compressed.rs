//! Switchboard patch: what permessage-deflate (RFC 7692) needs from the codec, and nothing
//! more. The codec only carries the RSV1 bit: compressing and inflating are the caller's
//! (Switchboard does both in its `ws/deflate.rs`, with a compressor per worker thread and a
//! frame compressed once for every recipient).
//!
//! - receiving: with [`Limits::allow_compressed`], RSV1 is accepted on the first frame of a
//!   data message (still a protocol error on control and continuation frames, and always
//!   without the flag); such a message comes out whole with [`Message::is_compressed`] set and
//!   its text not yet validated: [`Message::inflated`] builds the plain message and validates it.
//! - sending: [`Message::into_compressed`] marks a message whose payload is already deflate
//!   data; its first frame goes out with RSV1.

use bytes::Bytes;

use super::types::{Limits, Message, OpCode, Payload};
use crate::{Error, proto::ProtocolError, utf8};

impl Limits {
    /// Accepts RSV1 on the first frame of data messages (permessage-deflate negotiated).
    /// Off by default: RSV1 is then a protocol error, as in upstream.
    #[must_use]
    pub fn allow_compressed(mut self, allow: bool) -> Self {
        self.allow_rsv1 = allow;
        self
    }
}

impl Message {
    /// Whether the message arrived with RSV1 set: its payload is deflate data, and a text
    /// message's UTF-8 has not been checked yet (see [`Message::inflated`]).
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Marks a text or binary message whose payload is already deflate data (RFC 7692
    /// section 7.2.1: trailing `00 00 ff ff` removed): it is sent with RSV1 on its first frame.
    /// Control messages are left as they are (they cannot be compressed).
    #[must_use]
    pub fn into_compressed(mut self) -> Self {
        self.compressed = !self.opcode.is_control();
        self
    }

    /// The message with `payload` (the inflated data) in place of its compressed payload.
    ///
    /// # Errors
    ///
    /// A text message whose inflated payload is not valid UTF-8.
    pub fn inflated(&self, payload: Bytes) -> Result<Self, Error> {
        let mut payload = Payload::from(payload);
        if self.opcode == OpCode::Text {
            utf8::parse_str(&payload).map_err(|_| Error::Protocol(ProtocolError::InvalidUtf8))?;
            payload.set_utf8_validated(true);
        }
        Ok(Self {
            opcode: self.opcode,
            payload,
            compressed: false,
        })
    }
}
