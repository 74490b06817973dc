//! The node's one Pub/Sub connection: subscribes to a room's channel while the room has
//! members here, hands each frame to the relay in the order Redis sent it, and survives
//! outages — reconnect with backoff, resubscribe every room with members, resync each room
//! from the last seq it delivered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use switchboard_hub::Inbound;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::wire::{self, RoomKeys};
use crate::{Link, Shared, redact};

/// What the request path asks of the subscriber.
#[derive(Debug)]
pub(crate) enum Command {
    /// Make sure the room's channel is subscribed, then answer (an error while Redis is down).
    Subscribe(Arc<str>, oneshot::Sender<Result<(), String>>),
    /// The room has no members here any more (checked again before unsubscribing).
    Unsubscribe(Arc<str>),
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the Pub/Sub connection is pinged (a connection that does not answer within the
/// command timeout is replaced).
const LIVENESS_INTERVAL: Duration = Duration::from_secs(5);
/// Channels per SUBSCRIBE command when resubscribing after a reconnection.
const RESUBSCRIBE_CHUNK: usize = 512;

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = connect(&shared) => connected,
        };
        let (mut sink, mut stream, mut subscribed) = match connected {
            Ok(connection) => connection,
            Err(reason) => {
                set_link(&shared, Link::Down(reason.clone()));
                // Wait out the backoff (with jitter), refusing subscriptions meanwhile.
                let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep_until(deadline) => break,
                        command = commands.recv() => match command {
                            None => return,
                            Some(Command::Subscribe(_, done)) => {
                                let _ = done.send(Err(format!("redis unreachable: {reason}")));
                            }
                            Some(Command::Unsubscribe(_)) => {}
                        },
                    }
                }
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        set_link(&shared, Link::Up);
        if connected_before {
            crate::metrics::reconnected();
            // Frames published while we were away are in history: every room catches up.
            let requests = shared.relay.resync_all();
            info!(
                rooms = requests.len(),
                "redis pub/sub reconnected; resyncing rooms"
            );
            for request in requests {
                shared.relay.request_resync(request);
            }
        }
        connected_before = true;
        // Liveness: a half-open connection never ends the stream by itself.
        let mut ping = tokio::time::interval(LIVENESS_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let timeout = shared.config.timeout;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ping.tick() => {
                    let ping = crate::metrics::timed("ping", tokio::time::timeout(timeout, sink.ping::<redis::Value>()));
                    if !matches!(ping.await, Ok(Ok(_))) {
                        break;
                    }
                }
                message = stream.next() => match message {
                    Some(message) => dispatch(&shared, &message),
                    None => break,
                },
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(room, done)) => {
                        if subscribed.contains(&room) {
                            let _ = done.send(Ok(()));
                            continue;
                        }
                        let channel = RoomKeys::new(&shared.config.prefix, &room).channel;
                        match tokio::time::timeout(timeout, sink.subscribe(&channel)).await {
                            Ok(Ok(())) => {
                                subscribed.insert(room);
                                let _ = done.send(Ok(()));
                            }
                            Ok(Err(err)) => {
                                let _ = done.send(Err(format!("redis subscribe failed: {err}")));
                            }
                            Err(_) => {
                                // No answer in time: treat the connection as lost.
                                let _ = done.send(Err("redis subscribe timed out".to_owned()));
                                break;
                            }
                        }
                    }
                    Some(Command::Unsubscribe(room)) => {
                        if subscribed.contains(&room) && !shared.relay.has_members(&room) {
                            let channel = RoomKeys::new(&shared.config.prefix, &room).channel;
                            match tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await {
                                Ok(Ok(())) => {
                                    subscribed.remove(&room);
                                }
                                Ok(Err(_)) => {}
                                Err(_) => break,
                            }
                        }
                    }
                },
            }
        }
        warn!(url = %redact(&shared.config.url), "redis pub/sub connection lost; reconnecting");
        set_link(&shared, Link::Down("pub/sub connection lost".to_owned()));
    }
}

/// Opens the Pub/Sub connection and subscribes every room that has members here.
async fn connect(shared: &Shared) -> Result<(PubSubSink, PubSubStream, HashSet<Arc<str>>), String> {
    let pubsub = tokio::time::timeout(shared.config.timeout, shared.client.get_async_pubsub())
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|err| err.to_string())?;
    let (mut sink, stream) = pubsub.split();
    // Kicks from the HTTP API of any node (see `crate::api`).
    tokio::time::timeout(
        shared.config.timeout,
        sink.subscribe(crate::api::control_channel(&shared.config.prefix)),
    )
    .await
    .map_err(|_| "subscribe timed out".to_owned())?
    .map_err(|err| format!("subscribe failed: {err}"))?;
    crate::api::load_denied(shared).await;
    let rooms: Vec<Arc<str>> = shared
        .relay
        .rooms()
        .into_iter()
        .map(|(room, _)| room)
        .collect();
    for chunk in rooms.chunks(RESUBSCRIBE_CHUNK) {
        let channels: Vec<String> = chunk
            .iter()
            .map(|room| RoomKeys::new(&shared.config.prefix, room).channel)
            .collect();
        tokio::time::timeout(shared.config.timeout, sink.subscribe(&channels))
            .await
            .map_err(|_| "resubscribe timed out".to_owned())?
            .map_err(|err| format!("resubscribe failed: {err}"))?;
    }
    Ok((sink, stream, rooms.into_iter().collect()))
}

fn dispatch(shared: &Shared, message: &redis::Msg) {
    // Room channels end with `}`: the check costs nothing on the message path.
    let channel = message.get_channel_name();
    if channel.ends_with(":!control")
        && channel == crate::api::control_channel(&shared.config.prefix)
    {
        crate::api::on_control(shared, message.get_payload_bytes());
        return;
    }
    let Some(room) = wire::room_of_channel(&shared.config.prefix, message.get_channel_name())
    else {
        return;
    };
    let payload = Bytes::copy_from_slice(message.get_payload_bytes());
    let Some(frame) = wire::decode(&shared.node, &payload) else {
        warn!(room, "undecodable frame on a room channel; ignored");
        return;
    };
    let inbound = Inbound {
        kind: frame.kind,
        epoch: frame.epoch,
        seq: frame.seq,
        skip: frame.skip,
        frame: frame.frame,
        sequenced: frame.sequenced,
    };
    if let Some(request) = shared.relay.deliver(room, inbound) {
        info!(
            room,
            since = request.since,
            "gap in a room's stream; resyncing from history"
        );
        shared.relay.request_resync(request);
    }
}

fn set_link(shared: &Shared, link: Link) {
    let mut current = shared.link.lock();
    if *current != link {
        match &link {
            Link::Up => info!(url = %redact(&shared.config.url), "redis broker connected"),
            Link::Down(reason) => {
                warn!(url = %redact(&shared.config.url), reason, "redis broker unavailable")
            }
        }
        *current = link;
    }
}
