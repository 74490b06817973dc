use switchboard_protocol::ErrorCode;
use switchboard_protocol::names::NameError;

/// Why the hub refused a request. Each maps to a wire [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The room name is not valid.
    #[error("invalid room name: {0}")]
    InvalidRoom(#[from] NameError),
    /// The session is not a member of the room.
    #[error("not a member of room {0:?}; join it first")]
    NotJoined(String),
    /// The broker that shares rooms between nodes cannot be reached (or did not answer in
    /// time); the reason says whether anything may have been done.
    #[error("the cluster broker is unavailable: {0}; retry later")]
    Unavailable(String),
}

impl HubError {
    /// The error code sent to the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRoom(_) => ErrorCode::InvalidRoom,
            Self::NotJoined(_) => ErrorCode::NotJoined,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}
