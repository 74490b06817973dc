//! Settings of the Redis broker and why it may fail to start.

use std::time::Duration;

use switchboard_hub::{HistoryRules, PresenceConfig};

/// Settings of the Redis broker.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel, so that several deployments can share one Redis.
    pub prefix: String,
    /// How long a node's presence entries live without a heartbeat: the longest a crashed
    /// node's users stay listed (plus one `presence_interval`).
    pub presence_ttl: Duration,
    /// How often each node refreshes its users' presence and reaps expired entries.
    pub presence_interval: Duration,
    /// History size and time-to-live per room-name pattern.
    pub history: HistoryRules,
    /// How long a publish's `msg_id` is remembered.
    pub idempotency_window: Duration,
    /// Byte budget of each session's outbox.
    pub outbox_bytes: usize,
    /// Server-wide bytes outboxes may hold beyond their allowance (`None`: unbounded).
    pub outbox_pool_bytes: Option<usize>,
    /// How long a Redis command may take before the request fails with `unavailable`.
    pub timeout: Duration,
    /// Publishes that may wait for the publish task at once: a connection has at most a
    /// fixed number on their way, so this is that number times the connection limit.
    pub publish_queue: usize,
    /// Bytes of publishes (frames and keys) waiting for Redis or on their way, node-wide;
    /// past it publishes are answered `unavailable` at once (not published).
    pub publish_queue_bytes: usize,
    /// Member lists and coalesced presence.
    pub presence: PresenceConfig,
    /// Where room, presence and message events go (webhooks): this node reports the
    /// transitions its own scripts saw and the messages it sequenced, so each is reported
    /// once per cluster.
    pub events: switchboard_hub::Events,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBrokerError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// The cause.
        source: redis::RedisError,
    },
}

/// The URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://***@{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at + 1..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_logs() {
        assert_eq!(redact("redis://:secret@host:6379"), "redis://***@host:6379");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
