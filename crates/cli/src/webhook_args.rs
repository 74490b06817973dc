//! The `[webhooks]` flags of `switchboard serve` (docs/webhooks.md).

use std::time::Duration;

use clap::Args;
use switchboard_server::config::{WebhookEndpoint, WebhooksConfig};

/// Webhook flags; each also reads the environment variable named in its help.
#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// POST room, presence and message events to this URL (an endpoint besides those of
    /// the config file; needs --webhook-secret).
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_URL",
        value_name = "URL"
    )]
    webhook_url: Option<String>,
    /// Signing key of --webhook-url's events (at least 16 bytes); prefer the environment.
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    webhook_secret: Option<String>,
    /// Events sent to --webhook-url, comma-separated [default:
    /// room.occupied,room.vacated,member.joined,member.left].
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_EVENTS",
        value_delimiter = ','
    )]
    webhook_events: Option<Vec<String>>,
    /// Room-name patterns whose events go to --webhook-url, comma-separated [default: *].
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_ROOMS",
        value_delimiter = ','
    )]
    webhook_rooms: Option<Vec<String>>,
    /// Events waiting per endpoint; past it new ones are dropped and counted [default: 10000].
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_QUEUE_SIZE"
    )]
    webhook_queue_size: Option<usize>,
    /// Attempts per event, the first included [default: 8].
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_MAX_ATTEMPTS"
    )]
    webhook_max_attempts: Option<u32>,
    /// Wait before the first retry, doubled at each one [default: 500ms].
    #[arg(help_heading = "Webhooks", long, env = "SWITCHBOARD_WEBHOOK_RETRY_INITIAL", value_parser = crate::serve::humantime_duration)]
    webhook_retry_initial: Option<Duration>,
    /// Longest wait between two attempts [default: 1m].
    #[arg(help_heading = "Webhooks", long, env = "SWITCHBOARD_WEBHOOK_RETRY_MAX", value_parser = crate::serve::humantime_duration)]
    webhook_retry_max: Option<Duration>,
    /// Longest one attempt may take [default: 10s].
    #[arg(help_heading = "Webhooks", long, env = "SWITCHBOARD_WEBHOOK_TIMEOUT", value_parser = crate::serve::humantime_duration)]
    webhook_timeout: Option<Duration>,
    /// Deliveries in flight at once per endpoint (a room's events stay in order) [default: 16].
    #[arg(
        help_heading = "Webhooks",
        long,
        env = "SWITCHBOARD_WEBHOOK_CONCURRENCY"
    )]
    webhook_concurrency: Option<usize>,
    /// On shutdown, how long queued events may still be delivered [default: 5s].
    #[arg(help_heading = "Webhooks", long, env = "SWITCHBOARD_WEBHOOK_DRAIN_TIMEOUT", value_parser = crate::serve::humantime_duration)]
    webhook_drain_timeout: Option<Duration>,
}

impl WebhookArgs {
    /// Applies the flags given on top of `config`.
    pub(crate) fn apply(self, config: &mut WebhooksConfig) -> anyhow::Result<()> {
        macro_rules! apply {
            ($($flag:ident => $field:ident),* $(,)?) => {
                $( if let Some(value) = self.$flag { config.$field = value; } )*
            };
        }
        apply!(
            webhook_queue_size => queue_size,
            webhook_max_attempts => max_attempts,
            webhook_retry_initial => retry_initial,
            webhook_retry_max => retry_max,
            webhook_timeout => timeout,
            webhook_concurrency => concurrency,
            webhook_drain_timeout => drain_timeout,
        );
        match (self.webhook_url, self.webhook_secret) {
            (Some(url), Some(secret)) => {
                let mut endpoint = WebhookEndpoint::new(url, secret);
                if let Some(events) = self.webhook_events {
                    endpoint.events = events;
                }
                if let Some(rooms) = self.webhook_rooms {
                    endpoint.rooms = rooms;
                }
                config.endpoints.push(endpoint);
            }
            (Some(_), None) => anyhow::bail!(
                "--webhook-url needs --webhook-secret (or SWITCHBOARD_WEBHOOK_SECRET)"
            ),
            (None, _) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: WebhookArgs,
    }

    fn apply(flags: &[&str]) -> anyhow::Result<WebhooksConfig> {
        let args = Wrapper::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))?.args;
        let mut config = WebhooksConfig::default();
        args.apply(&mut config)?;
        Ok(config)
    }

    #[test]
    fn flags_add_an_endpoint_and_override_the_settings() {
        let config = apply(&[
            "--webhook-url",
            "https://backend.example/hooks",
            "--webhook-secret",
            "0123456789abcdef",
            "--webhook-events",
            "member.joined,message.published",
            "--webhook-queue-size",
            "5",
            "--webhook-retry-initial",
            "1s",
        ])
        .unwrap();
        assert_eq!(config.queue_size, 5);
        assert_eq!(config.retry_initial, Duration::from_secs(1));
        let endpoint = config.endpoints.first().unwrap();
        assert_eq!(endpoint.url, "https://backend.example/hooks");
        assert_eq!(endpoint.events, ["member.joined", "message.published"]);
        assert_eq!(endpoint.rooms, ["*"]);
        let err = apply(&["--webhook-url", "https://backend.example/hooks"]).unwrap_err();
        assert!(err.to_string().contains("--webhook-secret"), "{err}");
    }
}
