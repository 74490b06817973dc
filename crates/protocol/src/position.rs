//! A position in a room's stream: the last `seq` seen and the `epoch` it belongs to.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Where a reader of a room's stream is: the last `seq` it saw, under which `epoch`. It is the
/// `since` of a recovering `join` (`{"seq":S,"epoch":E}`) and what a room compares it with.
///
/// `E` is how the epoch is held: `String` (the default: kept across reconnections, as the SDK
/// does), `&str` (borrowed from a request being handled), or `Cow<str>` (decoded from a frame
/// by [`crate::client::decode`], borrowed unless the JSON string had escapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition<E = String> {
    /// The last sequence number seen.
    pub seq: u64,
    /// The room epoch that sequence number belongs to.
    pub epoch: E,
}

impl<E: AsRef<str>> StreamPosition<E> {
    /// The same position, borrowing the epoch.
    pub fn as_borrowed(&self) -> StreamPosition<&str> {
        StreamPosition {
            seq: self.seq,
            epoch: self.epoch.as_ref(),
        }
    }

    /// The same position, owning the epoch.
    pub fn owned(&self) -> StreamPosition {
        StreamPosition {
            seq: self.seq,
            epoch: self.epoch.as_ref().to_owned(),
        }
    }
}

impl<'a> From<StreamPosition<&'a str>> for StreamPosition<Cow<'a, str>> {
    fn from(position: StreamPosition<&'a str>) -> Self {
        Self {
            seq: position.seq,
            epoch: Cow::Borrowed(position.epoch),
        }
    }
}

/// Deserializes an optional position whose epoch borrows from the input when it can (serde's
/// `Cow` deserializes owned unless asked to borrow, which a generic field cannot be).
pub(crate) fn borrowed<'de, D>(d: D) -> Result<Option<StreamPosition<Cow<'de, str>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowing<'a> {
        seq: u64,
        #[serde(borrow)]
        epoch: Cow<'a, str>,
    }
    Ok(
        Option::<Borrowing<'de>>::deserialize(d)?.map(|p| StreamPosition {
            seq: p.seq,
            epoch: p.epoch,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_seq_then_epoch() -> Result<(), serde_json::Error> {
        let position = StreamPosition {
            seq: 41,
            epoch: "0123456789abcdef".to_owned(),
        };
        let text = serde_json::to_string(&position)?;
        assert_eq!(text, r#"{"seq":41,"epoch":"0123456789abcdef"}"#);
        assert_eq!(serde_json::from_str::<StreamPosition>(&text)?, position);
        assert_eq!(
            serde_json::to_string(&position.as_borrowed())?,
            serde_json::to_string(&StreamPosition::<Cow<'_, str>>::from(
                position.as_borrowed()
            ))?
        );
        Ok(())
    }

    #[test]
    fn decoded_epochs_borrow_unless_escaped() -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(r#"{"seq":1,"epoch":"e1"}"#);
        let plain = borrowed(&mut de)?;
        assert!(matches!(
            plain,
            Some(StreamPosition {
                seq: 1,
                epoch: Cow::Borrowed("e1")
            })
        ));
        let mut de = serde_json::Deserializer::from_str(r#"{"seq":2,"epoch":"e\u0031"}"#);
        let escaped = borrowed(&mut de)?;
        assert_eq!(
            escaped.map(|p| p.owned()),
            Some(StreamPosition {
                seq: 2,
                epoch: "e1".to_owned()
            })
        );
        Ok(())
    }
}
