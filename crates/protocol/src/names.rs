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

/// A user name is 1 to [`MAX_USER_LEN`] bytes of UTF-8 with no control characters and no
/// invisible or direction-changing characters (see [`is_deceptive`]).
pub fn validate_user(name: &str) -> Result<(), NameError> {
    check_len(name, MAX_USER_LEN)?;
    match name.chars().find(|c| c.is_control() || is_deceptive(*c)) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

/// Characters refused in user names because they make one name look like another (F14):
/// `alice` followed by U+202E renders reversed text after it, `al\u{200B}ice` looks like
/// `alice`, U+2028 breaks a log line. The set: bidirectional controls (U+061C, U+200E,
/// U+200F, U+202A–U+202E, U+2066–U+2069), zero-width and invisible characters (U+00AD soft
/// hyphen, U+034F, U+180E, U+200B–U+200D, U+2060–U+2064, U+FEFF, Hangul fillers U+115F,
/// U+1160, U+3164, U+FFA0), line and paragraph separators (U+2028, U+2029), interlinear
/// annotation controls (U+FFF9–U+FFFB) and tag characters (U+E0000–U+E007F). Refusing
/// U+200D (zero-width joiner) also refuses emoji joined into one glyph (👩‍💻); single emoji
/// are fine.
pub fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
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

    #[test]
    fn f14_user_names_refuse_bidi_zero_width_and_separators() {
        for c in [
            '\u{202E}',
            '\u{202A}',
            '\u{2066}',
            '\u{2069}',
            '\u{200E}',
            '\u{200F}',
            '\u{061C}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{3164}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0041}',
        ] {
            for name in [
                format!("alice{c}"),
                format!("al{c}ice"),
                format!("{c}alice"),
            ] {
                assert_eq!(validate_user(&name), Err(NameError::BadChar(c)), "{name:?}");
            }
        }
        // What stays allowed: letters of any script, spaces, punctuation, single emoji.
        for ok in [
            "Zoë Smith",
            "Ελένη",
            "محمد",
            "李雷",
            "o'brien-2",
            "dj 🎧",
            "a.b@c",
        ] {
            assert_eq!(validate_user(ok), Ok(()), "{ok}");
        }
        // Room names were ASCII-only already.
        assert!(validate_room("a\u{202E}b").is_err());
    }
}
