//! Stable, machine-readable error codes (the `code` of an `error` message) and the WebSocket
//! close codes Switchboard uses. Both lists are part of the wire contract (`docs/protocol.md`).

use std::fmt;

/// The `code` field of an `error` message. The string forms never change within protocol v1.
///
/// A code this version does not know (from a later server) decodes as [`ErrorCode::Other`], so
/// clients keep working when codes are added.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text frame is not valid JSON (syntax error, or nested deeper than the decoder allows).
    BadJson,
    /// Valid JSON, but not a valid message: not an object, no `type`, or a field missing or of
    /// the wrong type.
    InvalidMessage,
    /// The `type` is not one this protocol version knows.
    UnknownType,
    /// The room name is empty, too long, or has characters outside the allowed set.
    InvalidRoom,
    /// The request needs the connection to be a member of the room (publish, typing, leave).
    NotJoined,
    /// The token's rights do not allow this (join, publish or presence in that room).
    Forbidden,
    /// The connection sends faster than its rate limit; the message was dropped.
    RateLimited,
    /// The connection is already in as many rooms as it may be.
    TooManyRooms,
    /// A `refresh` carried a token that is malformed, badly signed or expired.
    InvalidToken,
    /// The server failed to handle a valid request; the connection stays usable.
    Internal,
    /// A service the request needs (the cluster's broker) is unreachable for now; nothing was
    /// done. The connection stays usable; retry later.
    Unavailable,
    /// A code this protocol version does not know, as received. The server never sends one.
    Other(String),
}

impl ErrorCode {
    /// Every code protocol v1 defines (not [`ErrorCode::Other`]).
    pub const ALL: [Self; 11] = [
        Self::BadJson,
        Self::InvalidMessage,
        Self::UnknownType,
        Self::InvalidRoom,
        Self::NotJoined,
        Self::Forbidden,
        Self::RateLimited,
        Self::TooManyRooms,
        Self::InvalidToken,
        Self::Internal,
        Self::Unavailable,
    ];

    /// The wire form of the code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadJson => "bad_json",
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::InvalidRoom => "invalid_room",
            Self::NotJoined => "not_joined",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::InvalidToken => "invalid_token",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Other(code) => code,
        }
    }

    /// The code of a wire string: a known one, or [`ErrorCode::Other`].
    pub fn parse(code: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
            .unwrap_or_else(|| Self::Other(code.to_owned()))
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::parse(&code))
    }
}

/// WebSocket close codes (RFC 6455 section 7.4) as Switchboard uses them.
pub mod close {
    /// The client or server ended the session normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (or the connection is being moved away).
    pub const GOING_AWAY: u16 = 1001;
    /// A framing error: unmasked client frame, reserved bits, bad opcode, fragmented control frame.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A frame of a kind the endpoint does not accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame (or close reason) that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: repeated protocol violations, unresponsive peer.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The connection's outbound queue overflowed (slow consumer): reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The connection's token expired without a `refresh`: reconnect with a new token.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// A policy forbids this connection to continue (e.g. a `refresh` naming another user):
    /// do not reconnect with the same credentials.
    pub const FORBIDDEN: u16 = 4003;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn every_code_decodes_to_itself_and_unknown_ones_to_other() -> Result<(), serde_json::Error> {
        for code in ErrorCode::ALL
            .into_iter()
            .chain([ErrorCode::Other("later".to_owned())])
        {
            let json = serde_json::to_string(&code)?;
            assert_eq!(serde_json::from_str::<ErrorCode>(&json)?, code);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>(r#""quota_exceeded""#)?,
            ErrorCode::Other("quota_exceeded".to_owned())
        );
        // An escaped string is still the known code.
        assert_eq!(
            serde_json::from_str::<ErrorCode>(r#""not\u005fjoined""#)?,
            ErrorCode::NotJoined
        );
        assert!(ErrorCode::NotJoined == "not_joined");
        Ok(())
    }
}
