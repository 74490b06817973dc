//! The SDK's error type.

use switchboard_protocol::names::NameError;

/// Why connecting or a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL given to [`Client::builder`](crate::Client::builder) is not a usable
    /// `ws://` URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (with the `user` parameter, if any).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The user name breaks the protocol's rules (1 to 64 bytes, no control characters).
    #[error("invalid user name: {0}")]
    InvalidUser(NameError),
    /// A header given to the builder cannot be sent.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The room name breaks the protocol's rules (1 to 128 bytes of ASCII letters, digits
    /// and `_ - . : @ / = +`). Checked before anything is sent.
    #[error("invalid room name {room:?}: {source}")]
    InvalidRoom {
        /// The room name.
        room: String,
        /// The rule it breaks.
        source: NameError,
    },
    /// The request would be larger than the server accepts (it would close the connection).
    #[error("message of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The size of the frame, in bytes (approximate for JSON publishes).
        size: usize,
        /// The limit set with [`ClientBuilder::max_message_size`](crate::ClientBuilder::max_message_size).
        max: usize,
    },
    /// The first connection attempt did not complete within the connect timeout.
    #[error("cannot connect: timed out")]
    ConnectTimeout,
    /// The server answered the upgrade request with this HTTP status instead of switching
    /// to WebSocket (400: bad user name, 401/403: refused, 404: wrong path...).
    #[error("cannot connect: the server refused the upgrade with HTTP {status}")]
    Refused {
        /// The HTTP status code.
        status: u16,
    },
    /// The first connection attempt failed (DNS, TCP, handshake).
    #[error("cannot connect: {0}")]
    Connect(#[source] tokio_websockets::Error),
    /// Too many requests are waiting (for a connection or for their reply); see
    /// [`ClientBuilder::send_buffer`](crate::ClientBuilder::send_buffer).
    #[error("send buffer full: too many requests waiting for a connection or a reply")]
    BufferFull,
    /// The server refused the request with an `error` reply.
    #[error("server error {code}: {message}")]
    Server {
        /// The machine-readable code (`not_joined`, `invalid_room`, ...).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The room was left before its pending join completed.
    #[error("cancelled: the room was left before the join completed")]
    Cancelled,
    /// The server's reply could not be understood.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
    /// The client is closed (or closing): no more requests are carried out.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// The server's error code, for [`Error::Server`].
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}
