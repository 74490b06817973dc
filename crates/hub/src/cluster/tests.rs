//! The orchestration over a scripted engine: what a join, a failed join, a leave, a publish
//! and a resync ask of the engine, and what the session gets.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use serde_json::value::RawValue;

use super::*;
use crate::engine::HistoryRead;
use crate::outbox::{Batch, Outbound};
use crate::room::Snapshot;

/// An engine that records what it is asked (one line per call) and answers from a script.
#[derive(Debug, Default)]
struct Scripted {
    calls: Mutex<Vec<String>>,
    /// Subscriptions fail (`unavailable`) while set.
    down: Mutex<bool>,
    users: Users,
}

impl Scripted {
    fn log(&self, call: String) {
        self.calls.lock().push(call);
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock())
    }
}

fn ready<'a, T: Send + 'a>(result: Result<T, HubError>) -> BrokerFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl Engine for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn bounded<'a, T: Send + 'a>(&'a self, request: BrokerFuture<'a, T>) -> BrokerFuture<'a, T> {
        request
    }

    fn subscribe<'a>(&'a self, room: &'a Arc<str>) -> BrokerFuture<'a, ()> {
        self.log(format!("subscribe {room}"));
        if *self.down.lock() {
            return ready(Err(HubError::Unavailable("down".to_owned())));
        }
        ready(Ok(()))
    }

    fn unsubscribe(&self, room: &Arc<str>) {
        self.log(format!("unsubscribe {room}"));
    }

    fn snapshot<'a>(&'a self, request: SnapshotRequest<'a>) -> BrokerFuture<'a, Snapshot> {
        self.log(format!(
            "{} {} since={:?} user={:?} restore={:?} skip={}",
            request.op,
            request.room,
            request.since.map(|p| p.seq),
            request.user,
            request.restore,
            request.skip.is_some(),
        ));
        ready(Ok(Snapshot {
            epoch: Arc::from("e"),
            seq: 5,
            presence_version: 1,
            members: vec![Arc::from("ann")],
            member_count: 1,
            replay: request.since.map(|_| Vec::new()),
        }))
    }

    fn remove_presence(&self, departure: Departure) {
        self.log(format!("remove {} {}", departure.room, departure.user));
    }

    fn publish(&self, message: Message<'_>) -> BrokerFuture<'static, SourcePublished> {
        self.log(format!(
            "publish {} from={} skip={} msg_id={:?}",
            message.room,
            message.from,
            message.skip.is_some(),
            message.msg_id
        ));
        ready(Ok(SourcePublished {
            seq: 6,
            duplicate: false,
            epoch: Arc::from("e"),
        }))
    }

    fn typing<'a>(
        &'a self,
        room: &'a str,
        _frame: &'a [u8],
        _skip: crate::session::SessionId,
    ) -> BrokerFuture<'a, ()> {
        self.log(format!("typing {room}"));
        ready(Ok(()))
    }

    fn history<'a>(
        &'a self,
        room: &'a str,
        limit: Option<u64>,
        _now_ms: u64,
    ) -> BrokerFuture<'a, HistoryRead> {
        self.log(format!("history {room} limit={limit:?}"));
        ready(Ok(HistoryRead {
            epoch: "e".to_owned(),
            seq: 5,
            entries: Vec::new(),
        }))
    }

    fn members<'a>(&'a self, room: &'a str) -> BrokerFuture<'a, Vec<String>> {
        self.log(format!("members {room}"));
        ready(Ok(vec![
            "cat".to_owned(),
            "ann".to_owned(),
            "bob".to_owned(),
        ]))
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth::Ready
    }

    fn rooms<'a>(
        &'a self,
        _prefix: &'a str,
        _after: Option<&'a str>,
        _limit: usize,
    ) -> BrokerFuture<'a, RoomsPage> {
        ready(Ok(RoomsPage::default()))
    }

    fn users(&self) -> &Users {
        &self.users
    }

    fn kick<'a>(&'a self, _kick: &'a Kick, _now_ms: u64) -> BrokerFuture<'a, usize> {
        ready(Ok(0))
    }

    fn share_node_stats<'a>(
        &'a self,
        _node: &'a str,
        snapshot: String,
    ) -> BrokerFuture<'a, Vec<String>> {
        ready(Ok(vec![snapshot]))
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

fn cluster() -> Cluster<Scripted> {
    Cluster::new(Arc::new(Relay::new(1 << 20)), Scripted::default())
}

fn join(room: &str) -> JoinRequest<'_> {
    JoinRequest {
        room,
        id: None,
        since: None,
        presence: true,
        now_ms: 0,
    }
}

/// Every text frame queued for `session`, parsed.
fn drain(session: &Session) -> Vec<Value> {
    let mut frames = std::collections::VecDeque::new();
    match session.outbox().try_batch(&mut frames) {
        None | Some(Batch::Frames) => {}
        Some(Batch::Aborted(frame)) => panic!("aborted: {frame:?}"),
    }
    frames
        .into_iter()
        .map(|frame| match frame {
            Outbound::Text(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_join_subscribes_then_answers_from_the_snapshot_and_a_leave_undoes_both() {
    let cluster = cluster();
    let ann = cluster.connect(Arc::from("ann"));
    cluster.join(&ann, join("r")).await.unwrap();
    assert_eq!(
        cluster.engine().calls(),
        [
            "subscribe r",
            "join r since=None user=Some(\"ann\") restore=[] skip=true"
        ]
    );
    let joined = drain(&ann);
    assert_eq!(joined[0]["type"], "joined");
    assert_eq!(joined[0]["seq"], 5);
    // A second connection of the same user adds no presence.
    let again = cluster.connect(Arc::from("ann"));
    cluster.join(&again, join("r")).await.unwrap();
    assert_eq!(
        cluster.engine().calls(),
        [
            "subscribe r",
            "join r since=None user=None restore=[] skip=true"
        ]
    );
    cluster.leave(&again, "r", None).await.unwrap();
    assert_eq!(cluster.engine().calls(), Vec::<String>::new());
    cluster.leave(&ann, "r", None).await.unwrap();
    assert_eq!(cluster.engine().calls(), ["unsubscribe r", "remove r ann"]);
    assert_eq!(drain(&ann)[0]["type"], "left");
}

#[tokio::test]
async fn a_join_the_engine_cannot_serve_is_undone_there() {
    let cluster = cluster();
    *cluster.engine().down.lock() = true;
    let ann = cluster.connect(Arc::from("ann"));
    let err = cluster.join(&ann, join("r")).await.unwrap_err();
    assert!(matches!(err, HubError::Unavailable(_)), "{err:?}");
    assert_eq!(
        cluster.engine().calls(),
        ["subscribe r", "unsubscribe r", "remove r ann"]
    );
    assert!(matches!(
        cluster.leave(&ann, "r", None).await,
        Err(HubError::NotJoined(_))
    ));
    assert_eq!(cluster.stats().rooms, 0);
}

#[tokio::test]
async fn publishes_go_to_the_engine_encoded_with_their_echo_and_msg_id() {
    let cluster = cluster();
    let ann = cluster.connect(Arc::from("ann"));
    let data = RawValue::from_string("1".to_owned()).unwrap();
    let request = PublishRequest {
        room: "r",
        data: &data,
        echo: false,
        ts: 0,
        msg_id: Some("m1"),
    };
    assert!(matches!(
        cluster.publish(&ann, request).await,
        Err(HubError::NotJoined(_))
    ));
    cluster.join(&ann, join("r")).await.unwrap();
    cluster.engine().calls();
    let published = cluster.publish(&ann, request).await.unwrap();
    assert_eq!(published.seq, 6);
    assert_eq!(cluster.publish_binary(&ann, "r", b"x", 0).await.unwrap(), 6);
    assert_eq!(
        cluster.engine().calls(),
        [
            "publish r from=ann skip=true msg_id=Some(\"m1\")",
            "publish r from=ann skip=true msg_id=None"
        ]
    );
}

#[tokio::test]
async fn members_are_paged_in_byte_order_from_the_engines_list() {
    let cluster = cluster();
    let ann = cluster.connect(Arc::from("ann"));
    cluster
        .members(&ann, "r", None, Some("ann"), 1)
        .await
        .unwrap();
    let reply = drain(&ann);
    assert_eq!(reply[0]["type"], "members", "{reply:?}");
    assert_eq!(reply[0]["members"], serde_json::json!(["bob"]), "{reply:?}");
    assert_eq!(reply[0]["member_count"], 3, "{reply:?}");
    assert_eq!(reply[0]["next"], "bob", "{reply:?}");
}

#[tokio::test]
async fn a_resync_the_stream_asks_for_is_performed_with_this_nodes_users() {
    let cluster = cluster();
    let ann = cluster.connect(Arc::from("ann"));
    cluster.join(&ann, join("r")).await.unwrap();
    drain(&ann);
    cluster.engine().calls();
    for request in cluster.relay().resync_all() {
        cluster.relay().request_resync(request);
    }
    let expected = ["resync r since=Some(5) user=None restore=[\"ann\"] skip=false"];
    for _ in 0..100 {
        let calls = cluster.engine().calls.lock().clone();
        if !calls.is_empty() {
            assert_eq!(calls, expected);
            cluster.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no resync within a second");
}
