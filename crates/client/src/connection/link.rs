//! The link: one open socket with its heartbeat deadline, sends bounded in time, the close
//! handshake, and why a connection ended.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_websockets::{CloseCode, Error as WsError, MaybeTlsStream, Message, WebSocketStream};
use tracing::debug;

/// How long the close handshake may take.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one send may take when the heartbeat check is off.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket type.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Ending {
    /// `close()` was called or every `Client` was dropped; the close handshake is done.
    Shutdown,
    /// The connection was lost or closed by the server.
    Lost { code: Option<u16>, reason: String },
}

/// A connection lost without a close frame.
pub(super) fn lost(reason: impl Into<String>) -> Ending {
    Ending::Lost {
        code: None,
        reason: reason.into(),
    }
}

/// The socket of one connection, with its heartbeat deadline.
pub(super) struct Link {
    pub(super) ws: Ws,
    pub(super) heartbeat: Heartbeat,
    /// Ends a blocked send when the client is closed.
    shutdown: CancellationToken,
}

/// The dead-server check: resolves when nothing has arrived for the timeout.
pub(super) struct Heartbeat {
    timer: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Heartbeat {
    /// Something arrived: the server is alive.
    pub(super) fn alive(&mut self) {
        if let Some((timeout, sleep)) = &mut self.timer {
            sleep.as_mut().reset(Instant::now() + *timeout);
        }
    }

    /// Resolves when nothing has arrived for the timeout (never if the check is off).
    pub(super) async fn expired(&mut self) {
        match &mut self.timer {
            Some((_, sleep)) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

impl Link {
    pub(super) fn new(ws: Ws, timeout: Option<Duration>, shutdown: CancellationToken) -> Self {
        Self {
            ws,
            heartbeat: Heartbeat {
                timer: timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
            },
            shutdown,
        }
    }

    pub(super) async fn send(&mut self, message: Message) -> Result<(), Ending> {
        let limit = self
            .heartbeat
            .timer
            .as_ref()
            .map_or(SEND_TIMEOUT, |(t, _)| *t);
        // A send blocks while the socket takes no more (a stalled peer): bounded like the
        // server's silence, and cut short by `close`.
        let sent = tokio::select! {
            sent = tokio::time::timeout(limit, self.ws.send(message)) => sent,
            () = self.shutdown.cancelled() => return Err(Ending::Shutdown),
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(lost(format!("send failed: {err}"))),
            Err(_) => Err(lost(format!("send timed out after {limit:?}"))),
        }
    }

    /// Sends our close 1000 and waits (briefly) for the server's reply.
    pub(super) async fn close(&mut self) {
        let handshake = async {
            self.ws
                .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
                .await?;
            while let Some(frame) = self.ws.next().await {
                frame?;
            }
            Ok::<_, WsError>(())
        };
        if let Ok(Err(err)) = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await {
            debug!(error = %err, "close handshake failed");
        }
    }

    /// After a close frame from the server: keeps polling so that the library sends its close
    /// reply, until the server drops the TCP connection (at most [`CLOSE_TIMEOUT`]).
    pub(super) async fn drain_after_close(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    }
}
