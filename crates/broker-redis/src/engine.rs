//! The [`Engine`] implementation: what the hub's broker ([`switchboard_hub::Cluster`]) asks of
//! Redis, dispatched to the files that talk to it (`rooms`, `presence`, `api`, `node_stats`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchboard_hub::{
    BrokerFuture, BrokerHealth, Departure, Engine, HistoryRead, Kick, Message, RoomsPage, Snapshot,
    SnapshotRequest, SourcePublished, Users,
};

use crate::wire::{self, RoomKeys};
use crate::{Link, RedisEngine, api};

impl Engine for RedisEngine {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn bounded<'a, T: Send + 'a>(&'a self, request: BrokerFuture<'a, T>) -> BrokerFuture<'a, T> {
        Box::pin(self.shared.bounded(request))
    }

    fn subscribe<'a>(&'a self, room: &'a Arc<str>) -> BrokerFuture<'a, ()> {
        Box::pin(self.subscribe_room(room))
    }

    fn unsubscribe(&self, room: &Arc<str>) {
        self.unsubscribe_room(room);
    }

    fn snapshot<'a>(&'a self, request: SnapshotRequest<'a>) -> BrokerFuture<'a, Snapshot> {
        Box::pin(self.shared.snapshot(request))
    }

    fn remove_presence(&self, departure: Departure) {
        // Presence writes go through one task, in order (see `presence::heartbeat`).
        self.queue_leave(departure);
    }

    fn publish(&self, message: Message<'_>) -> BrokerFuture<'static, SourcePublished> {
        let sequenced = self.enqueue(&message);
        Box::pin(async move {
            let (published, epoch) = sequenced.await?;
            Ok(SourcePublished {
                seq: published.seq,
                duplicate: published.duplicate,
                epoch: epoch.into(),
            })
        })
    }

    fn typing<'a>(
        &'a self,
        room: &'a str,
        frame: &'a [u8],
        skip: switchboard_hub::SessionId,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let keys = RoomKeys::new(&self.shared.config.prefix, room);
            let skip = wire::skip_tag(&self.shared.node, skip);
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&keys.channel)
                .arg(wire::typing(&skip, frame))
                .query_async(&mut self.shared.conn.clone())
                .await
                .map_err(|err| self.shared.failed("typing", &err))?;
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        room: &'a str,
        limit: Option<u64>,
        now_ms: u64,
    ) -> BrokerFuture<'a, HistoryRead> {
        Box::pin(self.history_read(room, limit, now_ms))
    }

    fn members<'a>(&'a self, room: &'a str) -> BrokerFuture<'a, Vec<String>> {
        Box::pin(self.members_read(room))
    }

    fn health(&self) -> BrokerHealth {
        if self.shared.stalled.load(Ordering::Acquire) {
            return BrokerHealth::Unavailable("redis is not answering".to_owned());
        }
        match &*self.shared.link.lock() {
            Link::Up => BrokerHealth::Ready,
            Link::Down(reason) => BrokerHealth::Unavailable(reason.clone()),
        }
    }

    fn rooms<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BrokerFuture<'a, RoomsPage> {
        Box::pin(api::rooms(&self.shared, prefix, after, limit))
    }

    fn users(&self) -> &Users {
        &self.shared.users
    }

    fn kick<'a>(&'a self, kick: &'a Kick, now_ms: u64) -> BrokerFuture<'a, usize> {
        Box::pin(api::kick(&self.shared, kick, now_ms))
    }

    fn share_node_stats<'a>(
        &'a self,
        node: &'a str,
        snapshot: String,
    ) -> BrokerFuture<'a, Vec<String>> {
        Box::pin(self.shared.share_node_stats(node, snapshot))
    }

    /// Stops the background tasks after writing the presence removals still queued (each
    /// bounded by the command timeout).
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.stop.cancel();
            self.tasks.close();
            self.tasks.wait().await;
        })
    }
}
