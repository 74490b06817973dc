//! What a user may do in which room, from the token's `rooms` claim.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_hub::matches_pattern;

/// Rights in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// Join the room (and so receive its messages, recover and read its history).
    pub join: bool,
    /// Publish to it (and send typing signals).
    pub publish: bool,
    /// See its members and presence events.
    pub presence: bool,
}

impl Rights {
    /// Every right.
    pub const ALL: Self = Self {
        join: true,
        publish: true,
        presence: true,
    };

    fn parse(names: &[String]) -> Result<Self, String> {
        let mut rights = Self::default();
        for name in names {
            match name.as_str() {
                "join" => rights.join = true,
                "publish" => rights.publish = true,
                "presence" => rights.presence = true,
                "*" | "all" => rights = Self::ALL,
                other => return Err(format!("unknown right {other:?} (join, publish, presence)")),
            }
        }
        Ok(rights)
    }
}

/// The `rooms` claim: room-name pattern → rights, e.g. `{"chat:*": ["join", "publish",
/// "presence"], "news:*": ["join"]}`. Without the claim, every right in every room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomsClaim(pub BTreeMap<String, Vec<String>>);

/// Parsed grants. The rights for a room are the union over every matching pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// No `rooms` claim (or anonymous access): everything.
    All,
    /// Pattern rules.
    Rules(Vec<(String, Rights)>),
}

impl Grants {
    /// From a token's optional `rooms` claim.
    pub fn from_claim(claim: Option<&RoomsClaim>) -> Result<Self, String> {
        let Some(claim) = claim else {
            return Ok(Self::All);
        };
        claim
            .0
            .iter()
            .map(|(pattern, names)| Ok((pattern.clone(), Rights::parse(names)?)))
            .collect::<Result<Vec<_>, String>>()
            .map(Self::Rules)
    }

    /// From a verified token's raw `rooms` claim: absent means every right; a map is parsed
    /// as a [`RoomsClaim`]; anything else (`null`, a list, a string, a number) is refused, so
    /// an issuer that means "no rooms" but writes `null` does not grant everything (F4).
    pub fn from_json(claim: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(value) = claim else {
            return Ok(Self::All);
        };
        let serde_json::Value::Object(map) = value else {
            return Err(
                "rooms must be a map of room pattern to a list of rights (or left out)".into(),
            );
        };
        let mut rules = Vec::with_capacity(map.len());
        for (pattern, names) in map {
            let names = names
                .as_array()
                .and_then(|list| {
                    list.iter()
                        .map(|name| name.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    format!(
                        "rooms[{pattern:?}] must be a list of right names (join, publish, presence)"
                    )
                })?;
            rules.push((pattern.clone(), Rights::parse(&names)?));
        }
        Ok(Self::Rules(rules))
    }

    /// The rights in `room`.
    pub fn rights(&self, room: &str) -> Rights {
        match self {
            Self::All => Rights::ALL,
            Self::Rules(rules) => rules
                .iter()
                .filter(|(pattern, _)| matches_pattern(pattern, room))
                .fold(Rights::default(), |acc, (_, r)| Rights {
                    join: acc.join || r.join,
                    publish: acc.publish || r.publish,
                    presence: acc.presence || r.presence,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(pairs: &[(&str, &[&str])]) -> RoomsClaim {
        RoomsClaim(
            pairs
                .iter()
                .map(|(p, r)| ((*p).to_owned(), r.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        )
    }

    #[test]
    fn union_of_matching_patterns() {
        let grants = Grants::from_claim(Some(&claim(&[
            ("chat:*", &["join", "presence"]),
            ("chat:ops", &["publish"]),
        ])))
        .unwrap();
        assert_eq!(
            grants.rights("chat:ops"),
            Rights {
                join: true,
                publish: true,
                presence: true
            }
        );
        assert_eq!(
            grants.rights("chat:lobby"),
            Rights {
                join: true,
                publish: false,
                presence: true
            }
        );
        assert_eq!(grants.rights("news:1"), Rights::default());
        assert_eq!(Grants::from_claim(None).unwrap().rights("x"), Rights::ALL);
    }

    #[test]
    fn f4_rooms_null_is_refused() {
        use serde_json::json;
        for bad in [
            json!(null),
            json!([]),
            json!(["chat:*"]),
            json!("chat:*"),
            json!(1),
            json!(true),
            json!({"chat:*": null}),
            json!({"chat:*": "join"}),
            json!({"chat:*": [1]}),
        ] {
            assert!(Grants::from_json(Some(&bad)).is_err(), "{bad}");
        }
        assert_eq!(Grants::from_json(None).unwrap(), Grants::All);
        // An empty map is a token with no rights at all, not every right.
        let none = Grants::from_json(Some(&json!({}))).unwrap();
        assert_eq!(none.rights("chat:1"), Rights::default());
        let some = Grants::from_json(Some(&json!({"chat:*": ["join"]}))).unwrap();
        assert!(some.rights("chat:1").join && !some.rights("chat:1").publish);
    }

    #[test]
    fn unknown_rights_are_an_error() {
        assert!(Grants::from_claim(Some(&claim(&[("a", &["fly"])]))).is_err());
    }
}
