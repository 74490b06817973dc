//! How much history a room keeps, chosen by room-name pattern.

use std::time::Duration;

/// History settings of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Most messages kept (0: no history, so no recovery).
    pub size: usize,
    /// How long each message is kept.
    pub ttl: Duration,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self {
            size: 100,
            ttl: Duration::from_secs(300),
        }
    }
}

/// A policy for the rooms whose names match `pattern` (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// The room-name pattern, e.g. `chat:*`.
    pub pattern: String,
    /// The policy for matching rooms.
    pub policy: HistoryPolicy,
}

/// The first matching rule wins; rooms matching none get `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRules {
    /// Policy of rooms that match no rule.
    pub default: HistoryPolicy,
    /// Rules in order.
    pub rules: Vec<HistoryRule>,
}

impl HistoryRules {
    /// The policy for `room`.
    pub fn policy_for(&self, room: &str) -> HistoryPolicy {
        self.rules
            .iter()
            .find(|rule| matches_pattern(&rule.pattern, room))
            .map_or(self.default, |rule| rule.policy)
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (possibly
/// empty) and every other character for itself.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (pattern, name, expected) in [
            ("chat:*", "chat:lobby", true),
            ("chat:*", "chat:", true),
            ("chat:*", "news:x", false),
            ("*", "anything", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*:log", "app:log", true),
            ("*:log", "app:logs", false),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-c-b", false),
            ("a*a", "a", false),
            ("", "", true),
        ] {
            assert_eq!(
                matches_pattern(pattern, name),
                expected,
                "{pattern} ~ {name}"
            );
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rule = |pattern: &str, size| HistoryRule {
            pattern: pattern.to_owned(),
            policy: HistoryPolicy {
                size,
                ttl: Duration::from_secs(1),
            },
        };
        let rules = HistoryRules {
            default: HistoryPolicy::default(),
            rules: vec![rule("chat:vip*", 1000), rule("chat:*", 10)],
        };
        assert_eq!(rules.policy_for("chat:vip-1").size, 1000);
        assert_eq!(rules.policy_for("chat:x").size, 10);
        assert_eq!(rules.policy_for("other"), HistoryPolicy::default());
    }
}
