//! A request's deadline, set by the transport around the broker call it makes, for a broker
//! that waits on the network (Redis): `redis_timeout` bounds a reply from when the request
//! was *read*, not from when the broker got to it. A request waits behind the same
//! connection's earlier publishes (replies keep the request order); without this, that wait
//! and the broker's own timeout added up (F6: 2 s documented, up to 8.4 s seen).
//!
//! A task-local rather than a parameter of every [`crate::Broker`] method: only a broker that
//! waits reads it, and an in-process hub answers at once.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs a broker call whose answer is due by `deadline`.
pub async fn within<F: Future>(deadline: Instant, call: F) -> F::Output {
    DEADLINE.scope(deadline, call).await
}

/// Makes a broker call that returns a future at once (a publish: its place in the order is
/// fixed by the call), its answer due by `deadline`.
pub fn within_sync<R>(deadline: Instant, call: impl FnOnce() -> R) -> R {
    DEADLINE.sync_scope(deadline, call)
}

/// The deadline of the broker call being made, if the caller set one: the earlier of it
/// and `now + timeout` is the broker's bound.
pub fn due(timeout: std::time::Duration) -> Instant {
    let own = Instant::now() + timeout;
    DEADLINE.try_with(|at| (*at).min(own)).unwrap_or(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_earlier_of_the_callers_deadline_and_the_brokers_own() {
        let soon = Instant::now() + Duration::from_millis(10);
        let due_in_scope = within(soon, async { due(Duration::from_secs(2)) }).await;
        assert_eq!(due_in_scope, soon);
        assert!(
            due(Duration::from_secs(2)) > soon,
            "no scope: its own timeout"
        );
        let sync = within_sync(soon, || due(Duration::from_secs(2)));
        assert_eq!(sync, soon);
    }
}
