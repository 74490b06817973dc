//! [`Settings`]: a [`Config`] checked once, with what checking it parsed. The raw layers (TOML,
//! `SWITCHBOARD_*`, flags) end in a `Config`; [`Settings::new`] is the one place it is
//! validated, and the server takes only `Settings`, so nothing parses a setting a second time.

use std::ops::Deref;
use std::sync::Arc;

use switchboard_hub::{Broker, Events, HistoryRules, Hub, HubConfig};

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::http::client_ip::Network;

/// Where rooms live, as the configuration names it (`cluster.broker`). The engine itself is
/// built by the binary (the server crate knows only the [`Broker`] seam): the memory engine by
/// [`Settings::memory_engine`], Redis by `switchboard-broker-redis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// This process's hub: one node, nothing else needed.
    Memory,
    /// Rooms shared by every node on this Redis (`redis://` or `rediss://` URL).
    Redis {
        /// The URL.
        url: String,
    },
}

/// A validated configuration. Read the settings through `Deref` (`settings.limits...`); what
/// validation parsed (the engine, the trusted proxies' networks, the history rules, the token
/// verifier) is kept here instead of being parsed again.
#[derive(Debug)]
pub struct Settings {
    config: Config,
    engine: Engine,
    history: HistoryRules,
    pub(crate) trusted_proxies: Vec<Network>,
    pub(crate) auth: Authenticator,
}

impl Settings {
    /// Validates `config` (values, and the token key file it names, which is read here).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let trusted_proxies = config.check()?;
        let auth = Authenticator::from_config(&config.auth)?;
        let engine = match config.cluster.redis_url() {
            Some(url) => Engine::Redis {
                url: url.to_owned(),
            },
            None => Engine::Memory,
        };
        let history = config.history.rules();
        Ok(Self {
            config,
            engine,
            history,
            trusted_proxies,
            auth,
        })
    }

    /// The engine the configuration names.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// History size and time-to-live per room-name pattern.
    pub fn history_rules(&self) -> &HistoryRules {
        &self.history
    }

    /// The memory engine's settings, its events going to `events` (webhooks).
    pub fn hub_config(&self, events: Events) -> HubConfig {
        HubConfig {
            outbox_bytes: self.config.outbox_bytes,
            history: self.history.clone(),
            idempotency_window: self.config.idempotency_window,
            outbox_pool_bytes: self.config.memory.outbox_pool(),
            history_bytes: self.config.memory.history_bytes,
            max_idempotency_ids: self.config.memory.max_idempotency_ids,
            presence: self.config.presence.hub(),
            events,
        }
    }

    /// The memory engine (this process's hub), its events going to `events` (webhooks:
    /// [`Webhooks::events`](crate::webhooks::Webhooks::events); `None`: nowhere).
    pub fn memory_engine(&self, events: Events) -> Arc<dyn Broker> {
        Arc::new(Hub::new(self.hub_config(events)))
    }

    /// Publishes that may wait for a remote engine at once, node-wide: a connection has at
    /// most [`MAX_PIPELINED`](crate::MAX_PIPELINED) on their way.
    pub fn publish_queue(&self) -> usize {
        crate::MAX_PIPELINED.saturating_mul(self.config.limits.max_connections)
    }

    /// The configuration (also reachable through `Deref`).
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn into_parts(self) -> (Config, Authenticator, Vec<Network>) {
        (self.config, self.auth, self.trusted_proxies)
    }
}

impl Deref for Settings {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Self, ConfigError> {
        Self::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    #[test]
    fn the_engine_is_parsed_once_from_cluster_broker() {
        let memory = Settings::new(Config::default()).unwrap();
        assert_eq!(memory.engine(), &Engine::Memory);
        let redis = Settings::new(Config {
            cluster: ClusterConfig {
                broker: "redis://127.0.0.1:1".to_owned(),
                ..ClusterConfig::default()
            },
            ..Config::default()
        })
        .unwrap();
        assert_eq!(
            redis.engine(),
            &Engine::Redis {
                url: "redis://127.0.0.1:1".to_owned()
            }
        );
    }

    #[test]
    fn invalid_configs_yield_no_settings() {
        let config = Config {
            trusted_proxies: vec!["not a network".to_owned()],
            ..Config::default()
        };
        assert!(Settings::new(config).is_err());
        let config = Config {
            max_violations: 0,
            ..Config::default()
        };
        assert!(Settings::new(config).is_err());
    }
}
