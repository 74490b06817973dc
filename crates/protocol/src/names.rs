//! Room and user names: what the server accepts.

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 128;
/// Longest user name, in bytes (so it always fits the binary envelope's one-byte length).
pub const MAX_USER_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero length.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// The length of the name, in bytes.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// Has a character outside the allowed set.
    #[error("contains the character {0:?}, which is not allowed")]
    BadChar(char),
}

/// A room name is 1 to [`MAX_ROOM_LEN`] bytes of ASCII letters, digits and `_ - . : @ / = +`.
pub fn validate_room(name: &str) -> Result<(), NameError> {
    check_len(name, MAX_ROOM_LEN)?;
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.:@/=+".contains(*c)))
    {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

/// A user name is 1 to [`MAX_USER_LEN`] bytes of UTF-8 with no control characters.
pub fn validate_user(name: &str) -> Result<(), NameError> {
    check_len(name, MAX_USER_LEN)?;
    match name.chars().find(|c| c.is_control()) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

fn check_len(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.len() > max {
        Err(NameError::TooLong {
            len: name.len(),
            max,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms() {
        assert_eq!(validate_room("chat:lobby/1.2_a-b@c=d+e"), Ok(()));
        assert_eq!(validate_room(""), Err(NameError::Empty));
        assert_eq!(validate_room("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(validate_room("é"), Err(NameError::BadChar('é')));
        let long = "a".repeat(MAX_ROOM_LEN + 1);
        assert!(matches!(
            validate_room(&long),
            Err(NameError::TooLong { .. })
        ));
        assert_eq!(validate_room(&"a".repeat(MAX_ROOM_LEN)), Ok(()));
    }

    #[test]
    fn users() {
        assert_eq!(validate_user("Zoë Smith"), Ok(()));
        assert_eq!(validate_user("a\nb"), Err(NameError::BadChar('\n')));
        assert!(validate_user(&"x".repeat(MAX_USER_LEN + 1)).is_err());
    }
}
