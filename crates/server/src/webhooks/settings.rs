//! `[webhooks]`: where room, presence and message events are POSTed, and how hard delivery
//! tries (docs/webhooks.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_hub::EventKind;

use crate::config::ConfigError;

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Events waiting for delivery, per endpoint; past it new events are dropped (counted in
    /// `switchboard_webhook_events_total{result="dropped"}` and logged). Default 10,000:
    /// a few minutes of a busy node's presence churn while an endpoint is down, at ~300 bytes
    /// an event ~3 MiB per endpoint.
    pub queue_size: usize,
    /// Attempts per event, the first included; after the last the event is dropped (counted
    /// and logged). Default 8: with the default backoff the 7 retries
    /// wait 32–64 s in all, plus the attempts themselves (at most `timeout` each).
    pub max_attempts: u32,
    /// Wait before the first retry; each retry doubles it (with full jitter). Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between two attempts. Default 1 minute.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Longest one attempt may take (connect, send, answer). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Deliveries in flight at once per endpoint. Events of one room always go through the
    /// same one, in order; a failing room holds up only the rooms that share its lane.
    /// Default 16.
    pub concurrency: usize,
    /// On shutdown, how long queued events may still be delivered before the rest is
    /// dropped (counted and logged). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The receivers. Default none (webhooks off).
    pub endpoints: Vec<WebhookEndpoint>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            queue_size: 10_000,
            max_attempts: 8,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            drain_timeout: Duration::from_secs(5),
            endpoints: Vec::new(),
        }
    }
}

/// One `[[webhooks.endpoints]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Key of the `Switchboard-Signature` HMAC (at least 16 bytes).
    pub secret: String,
    /// Event types sent: `room.occupied`, `room.vacated`, `member.joined`, `member.left`,
    /// `message.published`. Default the four presence and room events (messages are opt-in).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Room-name patterns (`*` = any characters) whose events are sent. Default `["*"]`.
    #[serde(default = "default_rooms")]
    pub rooms: Vec<String>,
}

fn default_events() -> Vec<String> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| *kind != EventKind::MessagePublished)
        .map(|kind| kind.name().to_owned())
        .collect()
}

fn default_rooms() -> Vec<String> {
    vec!["*".to_owned()]
}

impl WebhookEndpoint {
    /// An endpoint for `url` with the default events and rooms.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            events: default_events(),
            rooms: default_rooms(),
        }
    }
}

/// Shortest accepted secret: 128 bits.
const MIN_SECRET: usize = 16;

impl WebhooksConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| {
            Err(ConfigError::Invalid {
                field: "webhooks",
                reason,
            })
        };
        if self.queue_size == 0 {
            return invalid("queue_size must be at least 1".to_owned());
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts must be at least 1".to_owned());
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return invalid("concurrency must be 1 to 1,024".to_owned());
        }
        if self.timeout.is_zero() || self.retry_initial.is_zero() {
            return invalid("timeout and retry_initial must be above zero".to_owned());
        }
        if self.retry_max < self.retry_initial {
            return invalid("retry_max must be at least retry_initial".to_owned());
        }
        for endpoint in &self.endpoints {
            let url = &endpoint.url;
            match url.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.authority().is_some() => {}
                _ => return invalid(format!("endpoint url {url:?} is not an http(s) URL")),
            }
            if endpoint.secret.len() < MIN_SECRET {
                return invalid(format!(
                    "the secret of endpoint {url:?} must be at least {MIN_SECRET} bytes"
                ));
            }
            if endpoint.events.is_empty() {
                return invalid(format!("endpoint {url:?} lists no events"));
            }
            for event in &endpoint.events {
                if EventKind::from_name(event).is_none() {
                    return invalid(format!(
                        "endpoint {url:?}: unknown event {event:?} (room.occupied, room.vacated, member.joined, member.left, message.published)"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(endpoint: WebhookEndpoint) -> WebhooksConfig {
        WebhooksConfig {
            endpoints: vec![endpoint],
            ..WebhooksConfig::default()
        }
    }

    #[test]
    fn endpoints_need_an_http_url_a_real_secret_and_known_events() {
        let good = WebhookEndpoint::new("https://backend.example/hooks", "0123456789abcdef");
        assert!(with(good.clone()).validate().is_ok());
        let bad = [
            WebhookEndpoint::new("ftp://backend.example/", "0123456789abcdef"),
            WebhookEndpoint::new("backend.example/hooks", "0123456789abcdef"),
            WebhookEndpoint::new("https://backend.example/hooks", "short"),
            WebhookEndpoint {
                events: vec!["room.created".to_owned()],
                ..good.clone()
            },
            WebhookEndpoint {
                events: Vec::new(),
                ..good
            },
        ];
        for endpoint in bad {
            assert!(with(endpoint.clone()).validate().is_err(), "{endpoint:?}");
        }
        let toml = "url = \"http://127.0.0.1:9000/\"\nsecret = \"0123456789abcdef\"\n";
        let parsed: WebhookEndpoint = toml::from_str(toml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.events.len(), 4, "message.published is opt-in");
    }
}
