//! The binary chooses the engine: the settings name one (`cluster.broker`), this builds it.
//! The server crate knows only the `Broker` seam, so the Redis engine is a dependency of the
//! binary alone.

use std::sync::Arc;

use switchboard_broker_redis::{RedisBrokerError, RedisConfig};
use switchboard_server::{Broker, Engine, Events, Settings};

/// The engine `settings` names: this process's hub, or Redis (connecting in the background;
/// an unreachable Redis makes requests answer `unavailable` until it is back). Its room,
/// presence and message events go to `events` (the webhooks' sink, `Webhooks::events`).
pub fn start(settings: &Settings, events: Events) -> Result<Arc<dyn Broker>, RedisBrokerError> {
    Ok(match settings.engine() {
        Engine::Memory => settings.memory_engine(events),
        Engine::Redis { url } => Arc::new(switchboard_broker_redis::start(redis_config(
            settings, url, events,
        ))?),
    })
}

/// The Redis engine's settings.
fn redis_config(settings: &Settings, url: &str, events: Events) -> RedisConfig {
    let cluster = &settings.cluster;
    let hub = settings.hub_config(events);
    RedisConfig {
        url: url.to_owned(),
        prefix: cluster.redis_prefix.clone(),
        presence_ttl: cluster.presence_ttl,
        presence_interval: cluster.presence_interval,
        history: hub.history,
        idempotency_window: hub.idempotency_window,
        outbox_bytes: hub.outbox_bytes,
        outbox_pool_bytes: hub.outbox_pool_bytes,
        timeout: cluster.redis_timeout,
        publish_queue: settings.publish_queue(),
        publish_queue_bytes: cluster.publish_queue_bytes,
        presence: hub.presence,
        events: hub.events,
    }
}
