//! One test, both engines: a suite written as `async fn NAME(engine: Engine)` runs once on the
//! memory engine and once on Redis (a private `redis-server` per test, on its own free port),
//! through [`on_both_engines!`](crate::on_both_engines).

use switchboard_server::Config;

use crate::{RedisServer, TestServer};

/// The engine a test's servers run on. Servers started from one `Engine::Redis` share its
/// Redis, as nodes of one cluster do.
#[derive(Debug)]
pub enum Engine {
    /// This process's hub.
    Memory,
    /// A private Redis, stopped when the test ends.
    Redis(RedisServer),
}

impl Engine {
    /// The memory engine.
    pub fn memory() -> Self {
        Self::Memory
    }

    /// The Redis engine on a fresh `redis-server` of this test's own.
    pub fn redis() -> Self {
        Self::Redis(RedisServer::start())
    }

    /// `config` with its `cluster.broker` naming this engine.
    pub fn config(&self, mut config: Config) -> Config {
        if let Self::Redis(redis) = self {
            config.cluster.broker = redis.url();
        }
        config
    }

    /// A test server with `config` on this engine.
    pub async fn start(&self, config: Config) -> TestServer {
        TestServer::start(self.config(config)).await
    }
}

/// Runs each `async fn NAME(engine: Engine)` of the calling module once per engine, as the
/// tests `memory::NAME` and `redis::NAME`. Tests listed under `multi_thread` run on a
/// two-worker runtime, the others on tokio's default test runtime.
///
/// ```ignore
/// on_both_engines! {
///     current: [joins_are_idempotent, typing_goes_to_the_others],
///     multi_thread: [seq_is_gapless_under_concurrent_publishers],
/// }
/// ```
#[macro_export]
macro_rules! on_both_engines {
    (current: [$($name:ident),* $(,)?], multi_thread: [$($multi:ident),* $(,)?] $(,)?) => {
        $crate::on_both_engines!(@engine memory, memory, [$($name),*], [$($multi),*]);
        $crate::on_both_engines!(@engine redis, redis, [$($name),*], [$($multi),*]);
    };
    (@engine $module:ident, $engine:ident, [$($name:ident),*], [$($multi:ident),*]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Engine::$engine()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $multi() {
                    super::$multi($crate::Engine::$engine()).await;
                }
            )*
        }
    };
}
