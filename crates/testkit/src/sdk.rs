//! For the Rust SDK's tests: a TCP proxy that can cut or silence connections, and helpers that
//! wait for the SDK's events with a timeout (the server is [`crate::TestServer`]).
//!
//! Synchronisation rule: never sleep. Wait for the event that proves what the test needs
//! (every wait is bounded by [`EVENT_TIMEOUT`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_client::{Backoff, Client, ClientBuilder, Event, Events};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::timeout;

/// How long a test waits for an event it expects.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnection delays for tests: short, still growing and jittered.
pub const FAST_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(20),
    factor: 2.0,
    cap: Duration::from_millis(200),
};

// ---------------------------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------------------------

/// A TCP proxy in front of a server. Clients that connect through it can be cut off without
/// a close frame ([`Proxy::cut_all`]), silenced ([`Proxy::hold_downstream`]) or kept from
/// reconnecting ([`Proxy::set_refusing`]).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    refusing: AtomicBool,
    accepted: AtomicUsize,
    pipes: Mutex<Vec<Pipe>>,
}

struct Pipe {
    task: AbortHandle,
    hold: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on an ephemeral port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            refusing: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            pipes: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// `ws://PROXY/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every current connection at the TCP level: no close frame either way.
    pub fn cut_all(&self) {
        for pipe in self.shared.pipes.lock().unwrap().drain(..) {
            pipe.task.abort();
        }
    }

    /// From now on, current connections stop forwarding server → client bytes (they are
    /// read and thrown away, as if lost): the client hears nothing, the server thinks all is
    /// well. New connections are not affected.
    pub fn hold_downstream(&self) {
        for pipe in self.shared.pipes.lock().unwrap().iter() {
            let _ = pipe.hold.send(true);
        }
    }

    /// While refusing, new connections are accepted and dropped at once.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Where new connections go.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = *shared.target.lock().unwrap();
        let (hold, held) = watch::channel(false);
        let task = tokio::spawn(pipe(client, target, held));
        let mut pipes = shared.pipes.lock().unwrap();
        pipes.retain(|p| !p.task.is_finished());
        pipes.push(Pipe {
            task: task.abort_handle(),
            hold,
        });
    }
}

async fn pipe(client: TcpStream, target: SocketAddr, held: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if !*held.borrow() {
                client_write.write_all(&buf[..n]).await?;
            }
        }
    };
    // Either side ending ends both (dropping the halves closes the sockets).
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Clients and events
// ---------------------------------------------------------------------------------------------

/// A builder for `url` as `user`, with test-friendly backoff.
pub fn builder(url: &str, user: &str) -> ClientBuilder {
    Client::builder(url).user(user).backoff(FAST_BACKOFF)
}

/// Connects and consumes the `Connected` event.
pub async fn connect(builder: ClientBuilder) -> (Client, Events) {
    let (client, mut events) = timeout(EVENT_TIMEOUT, builder.connect())
        .await
        .expect("connect within the timeout")
        .expect("connect");
    assert_eq!(next_event(&mut events).await, Event::Connected);
    (client, events)
}

/// The next event (fails the test after [`EVENT_TIMEOUT`] or if the stream ended).
pub async fn next_event(events: &mut Events) -> Event {
    timeout(EVENT_TIMEOUT, events.next())
        .await
        .expect("an event within the timeout")
        .expect("the event stream ended")
}

/// Skips events until `pick` returns `Some`; returns that value.
pub async fn wait_for<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {EVENT_TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("the event stream ended before {what}"));
        if let Some(value) = pick(&event) {
            return value;
        }
    }
}

/// Every event up to and including the first one for which `last` is true.
pub async fn collect_until(
    events: &mut Events,
    what: &str,
    mut last: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {EVENT_TIMEOUT:?}; saw {seen:#?}"))
            .unwrap_or_else(|| panic!("the event stream ended before {what}; saw {seen:#?}"));
        let done = last(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// Waits for the `Joined` of `room`; returns (seq, epoch, recovered).
pub async fn wait_joined(events: &mut Events, room: &str) -> (u64, Option<String>, Option<bool>) {
    wait_for(events, &format!("joined {room}"), |e| match e {
        Event::Joined {
            room: r,
            seq,
            epoch,
            recovered,
            ..
        } if r == room => Some((*seq, epoch.clone(), *recovered)),
        _ => None,
    })
    .await
}

/// Waits for a message in `room`; returns (from, data, seq).
pub async fn wait_message(events: &mut Events, room: &str) -> (String, serde_json::Value, u64) {
    wait_for(events, &format!("a message in {room}"), |e| match e {
        Event::Message {
            room: r,
            from,
            data,
            seq,
            ..
        } if r == room => Some((from.clone(), data.clone(), *seq)),
        _ => None,
    })
    .await
}

/// The seqs of the room messages (JSON and binary) among `events`.
pub fn message_seqs(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { seq, .. } | Event::Binary { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}
