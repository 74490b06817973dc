//! Drives one WebSocket connection: a reader that hands complete messages to a [`Handler`],
//! keeps the heartbeat and starts closes, and the connection's single writer, which drains the
//! outbox in batches (one flush per batch). Both run in the connection's one task.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_hub::{Batch, CloseFrame, Outbound, Outbox};
use switchboard_protocol::codes::close;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::codec::{self, Incoming, ReadError, WriteProgress, WsError, WsSink, WsStream};
use super::deflate::Deflate;
use super::heartbeat::{Beat, Heartbeat};
use crate::metrics::conn::Counts;

/// How long a close we start may take to complete (peer's close frame) before we drop the
/// connection; also the time allowed to push out a last close frame to a peer we abort.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// What a connection does with complete messages.
pub(crate) trait Handler {
    /// Handles a text or binary message; `Some` closes the connection with that frame. The
    /// reader waits for it (a broker round trip, at most its timeout): requests of one
    /// connection are applied in order.
    fn on_message(
        &mut self,
        message: Incoming,
        now: Instant,
    ) -> impl std::future::Future<Output = Option<CloseFrame>> + Send;

    /// Whether requests are still being answered in the background (pipelined publishes).
    fn has_pending(&self) -> bool {
        false
    }

    /// Completes the next background request (queuing its reply); `Some` closes the
    /// connection. Only polled while [`Handler::has_pending`].
    fn next_completion(&mut self) -> impl std::future::Future<Output = Option<CloseFrame>> + Send {
        std::future::ready(None)
    }

    /// A moment at which the handler wants [`Handler::on_deadline`] called (e.g. expiry).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called at [`Handler::deadline`]; `Some` closes the connection with that frame.
    fn on_deadline(&mut self, _now: Instant) -> Option<CloseFrame> {
        None
    }

    /// A ping or pong arrived (control frames count toward the rate limit). `Err(None)`:
    /// drop it (a ping goes unanswered); `Err(Some(frame))`: close with that frame.
    fn on_control(&mut self, _now: Instant) -> Result<(), Option<CloseFrame>> {
        Ok(())
    }
}

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DriveOptions {
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// How long the socket may accept no byte while a batch waits to be written.
    pub(crate) write_timeout: Duration,
    /// How long a fragmented message may stay incomplete.
    pub(crate) fragment_timeout: Duration,
    /// Largest message, after reassembly and inflation, in bytes.
    pub(crate) max_message_size: usize,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<Deflate>,
}

/// How a connection ended, for the logs.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The peer sent a close frame (code, reason) and the handshake completed.
    PeerClosed(Option<u16>, String),
    /// The peer went away without a close frame (EOF or an IO error).
    PeerGone(Option<String>),
    /// The peer broke the WebSocket protocol; the codec answered with the matching close code.
    ProtocolError(String),
    /// We closed (policy, shutdown, size) and the peer acknowledged or the grace time ran out.
    ServerClosed(CloseFrame),
    /// No sign of life within the pong timeout.
    PingTimeout,
    /// The outbox overflowed its byte budget.
    SlowConsumer,
    /// The socket accepted no byte within the write timeout.
    WriteTimeout,
}

impl Ending {
    /// A short label for logs and metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::PeerClosed(..) => "peer_closed",
            Self::PeerGone(_) => "peer_gone",
            Self::ProtocolError(_) => "protocol_error",
            Self::ServerClosed(_) => "server_closed",
            Self::PingTimeout => "ping_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::WriteTimeout => "write_timeout",
        }
    }
}

enum WriterEnd {
    SentClose,
    Aborted(Option<CloseFrame>),
    Failed(Box<WsError>),
    TimedOut,
}

/// Runs the connection until it ends. The handler's replies and everything the hub fans out
/// go through `outbox`.
///
/// This future is most of an idle connection's memory, so its layout is watched: the loops
/// are plain functions returning `async move` blocks (an `async fn` keeps a second copy of
/// each argument), the reader and writer are pinned where they are built, and state that
/// exists only while a request is handled or a batch is written is boxed for that time.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in the task"
)]
pub(crate) fn drive<'a, H: Handler>(
    mut socket: (WsSink, WsStream, WriteProgress),
    outbox: &'a Outbox,
    handler: &'a mut H,
    options: DriveOptions,
    shutdown: &'a CancellationToken,
    counts: &'a Counts,
) -> impl Future<Output = Ending> + 'a {
    async move {
        // The loops borrow the options from here rather than copy them: copied, they were 72
        // bytes of `read_loop`'s captures and 28 of `write_loop`'s, in every connection's task.
        let options = &options;
        let mut reader = std::pin::pin!(read_loop(
            &mut socket.1,
            outbox,
            handler,
            options,
            shutdown,
            counts
        ));
        let mut writer = std::pin::pin!(write_loop(
            &mut socket.0,
            outbox,
            &socket.2,
            options,
            counts,
        ));
        tokio::select! {
            (ending, drain) = &mut reader => {
                if drain {
                    // Let the writer push out what is queued up to the close frame the reader
                    // queued (the reply to the peer's close, or ours), briefly.
                    let _ = Box::pin(timeout(ABORT_GRACE, &mut writer)).await;
                }
                outbox.abort(None);
                ending
            }
            end = &mut writer => match end {
                // We started a close: the reader waits for the peer's close (bounded).
                WriterEnd::SentClose => reader.await.0,
                WriterEnd::Aborted(Some(frame)) if frame.code == close::TRY_AGAIN_LATER => Ending::SlowConsumer,
                WriterEnd::Aborted(frame) => frame.map_or(Ending::PeerGone(None), Ending::ServerClosed),
                WriterEnd::Failed(err) => Ending::PeerGone(Some(err.to_string())),
                WriterEnd::TimedOut => {
                    outbox.abort(None);
                    Ending::WriteTimeout
                }
            }
        }
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in the task"
)]
/// The reader: how the connection ended, and whether the writer should first push out what
/// is queued up to a close frame already in the outbox (after a ping timeout, or once the
/// peer's close has been read: the codec leaves the reply to us, `auto_close_reply(false)`,
/// so replies queued before it go out first).
fn read_loop<'a, H: Handler>(
    stream: &'a mut WsStream,
    outbox: &'a Outbox,
    handler: &'a mut H,
    options: &'a DriveOptions,
    shutdown: &'a CancellationToken,
    counts: &'a Counts,
) -> impl Future<Output = (Ending, bool)> + 'a {
    async move {
        let mut heartbeat =
            Heartbeat::new(Instant::now(), options.ping_interval, options.pong_timeout);
        // Set once we have queued a close: (give up at, the frame).
        let mut closing: Option<(Instant, CloseFrame)> = None;
        let mut peer_close: Option<(Option<u16>, String)> = None;
        // Set once the peer's close came first and we queued the reply.
        let mut replied = false;
        // Set while a fragmented message is being assembled: when it must be complete.
        let mut fragment_due: Option<Instant> = None;
        // Boxed: rare, and large next to the rest.
        let mut error: Option<Box<WsError>> = None;
        // One timer for the heartbeat, the handler's deadline and the close's grace period: reset
        // only when the earliest of them moves (rarely), not per message.
        let timer = sleep_until(heartbeat.deadline());
        tokio::pin!(timer);
        loop {
            let wake_at = match &closing {
                Some((give_up, _)) => *give_up,
                None => [handler.deadline(), fragment_due]
                    .into_iter()
                    .flatten()
                    .fold(heartbeat.deadline(), Instant::min),
            };
            if timer.deadline() != wake_at || timer.is_elapsed() {
                timer.as_mut().reset(wake_at);
            }
            tokio::select! {
                biased;
                frame = stream.next() => {
                    let now = Instant::now();
                    heartbeat.on_activity(now);
                    // A peer that floods keeps this branch (polled first) always ready, which
                    // starves the timer branch: the deadlines it watches are checked here too.
                    if let Some((give_up, frame)) = &closing
                        && now >= *give_up
                    {
                        return (Ending::ServerClosed(frame.clone()), false);
                    }
                    if closing.is_none() && fragment_due.is_some_and(|at| at <= now) {
                        fragment_due = None;
                        let frame = CloseFrame::new(close::POLICY_VIOLATION, "fragmented message not completed in time");
                        outbox.close(frame.clone());
                        closing = Some((now + CLOSE_GRACE, frame));
                    }
                    match frame {
                        None => {
                            let drain = peer_close.is_some();
                            let ending = match (closing.filter(|_| !replied), peer_close, error) {
                                (Some((_, frame)), _, _) => Ending::ServerClosed(frame),
                                (None, Some((code, reason)), _) => Ending::PeerClosed(code, reason),
                                (None, None, Some(err)) => match *err {
                                    WsError::Io(err) => Ending::PeerGone(Some(err.to_string())),
                                    err => Ending::ProtocolError(err.to_string()),
                                },
                                (None, None, None) => Ending::PeerGone(None),
                            };
                            return (ending, drain);
                        }
                        // The codec has queued the matching close (1002, 1007, 1009) and flushes it
                        // on the next read, which then ends the stream. A fragmented message over
                        // the limit is the one case where the close is ours to send.
                        Some(Err(err)) => {
                            if codec::is_too_long(&err) && closing.is_none() {
                                let frame = CloseFrame::new(close::MESSAGE_TOO_BIG, "message too big");
                                outbox.close(frame.clone());
                                closing = Some((now + CLOSE_GRACE, frame));
                            }
                            error = Some(Box::new(err));
                        }
                        // A compressed message that inflates past the limit (1009) or to garbage
                        // (1007): the close is ours to send.
                        Some(Ok(message)) => match codec::incoming(message, options.max_message_size) {
                            Err(err) if closing.is_none() => {
                                let frame = match err {
                                    ReadError::TooBig(_) => CloseFrame::new(close::MESSAGE_TOO_BIG, "message too big"),
                                    ReadError::Invalid(reason) => CloseFrame::new(close::INVALID_PAYLOAD, reason),
                                };
                                tracing::debug!(error = %err, "unreadable compressed message");
                                outbox.close(frame.clone());
                                closing = Some((now + CLOSE_GRACE, frame));
                            }
                            Ok(Incoming::Close(code, reason)) => {
                                if closing.is_none() {
                                    // The peer closes first: pipelined requests still get
                                    // their replies (bounded), then our close reply goes
                                    // behind everything queued (RFC 6455 §5.5.1 echoes the
                                    // code; a close without one is answered with 1000).
                                    let give_up = now + CLOSE_GRACE;
                                    while handler.has_pending() {
                                        let next = Box::pin(tokio::time::timeout_at(give_up, handler.next_completion()));
                                        if next.await.is_err() {
                                            break;
                                        }
                                    }
                                    let reply = CloseFrame::new(code.unwrap_or(close::NORMAL), "");
                                    outbox.close(reply.clone());
                                    closing = Some((give_up, reply));
                                    replied = true;
                                }
                                peer_close = Some((code, reason));
                            }
                            Ok(Incoming::Ping(_) | Incoming::Control) if closing.is_some() => {}
                            Ok(control @ (Incoming::Ping(_) | Incoming::Control)) => {
                                match handler.on_control(now) {
                                    // At most 16 pongs wait (then the newest takes the latest payload).
                                    Ok(()) => if let Incoming::Ping(payload) = control {
                                        let _ = outbox.pong(payload);
                                    },
                                    Err(None) => {}
                                    Err(Some(frame)) => {
                                        outbox.close(frame.clone());
                                        closing = Some((now + CLOSE_GRACE, frame));
                                    }
                                }
                            }
                            Ok(Incoming::FragmentStart) => {
                                fragment_due = Some(now + options.fragment_timeout);
                            }
                            // After we start closing, late messages are dropped (RFC 6455 §1.4).
                            Ok(message) if closing.is_none() => {
                                fragment_due = None;
                                counts.received(&message);
                                // Boxed: the handler's future is large next to an idle
                                // connection's task, and exists only while a request is handled.
                                if let Some(frame) = Box::pin(handler.on_message(message, now)).await {
                                    outbox.close(frame.clone());
                                    closing = Some((now + CLOSE_GRACE, frame));
                                }
                            }
                            _ => {}
                        },
                    }
                }
                close = handler.next_completion(), if handler.has_pending() && closing.is_none() => {
                    if let Some(frame) = close {
                        let now = Instant::now();
                        outbox.close(frame.clone());
                        closing = Some((now + CLOSE_GRACE, frame));
                    }
                }
                () = shutdown.cancelled(), if closing.is_none() => {
                    let frame = CloseFrame::new(close::GOING_AWAY, "server shutting down");
                    outbox.close(frame.clone());
                    closing = Some((Instant::now() + options.shutdown_timeout, frame));
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if let Some((_, frame)) = closing {
                        // The peer did not complete the close within the grace period.
                        return (Ending::ServerClosed(frame), false);
                    }
                    if fragment_due.is_some_and(|at| at <= now) {
                        fragment_due = None;
                        let frame = CloseFrame::new(close::POLICY_VIOLATION, "fragmented message not completed in time");
                        outbox.close(frame.clone());
                        closing = Some((now + CLOSE_GRACE, frame));
                        continue;
                    }
                    if handler.deadline().is_some_and(|at| at <= now)
                        && let Some(frame) = handler.on_deadline(now)
                    {
                        outbox.close(frame.clone());
                        closing = Some((now + CLOSE_GRACE, frame));
                        continue;
                    }
                    if heartbeat.deadline() <= now {
                        match heartbeat.on_deadline(now) {
                            Beat::Ping => {
                                let _ = outbox.push(Outbound::Ping);
                            }
                            Beat::TimedOut => {
                                outbox.abort(Some(CloseFrame::new(close::POLICY_VIOLATION, "ping timeout")));
                                return (Ending::PingTimeout, true);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in the task"
)]
fn write_loop<'a>(
    sink: &'a mut WsSink,
    outbox: &'a Outbox,
    progress: &'a WriteProgress,
    options: &'a DriveOptions,
    counts: &'a Counts,
) -> impl Future<Output = WriterEnd> + 'a {
    async move {
        let mut batch = VecDeque::new();
        loop {
            match outbox.next_batch(&mut batch).await {
                Batch::Aborted(frame) => {
                    if let Some(frame) = &frame {
                        let _ =
                            Box::pin(timeout(ABORT_GRACE, sink.send(codec::close_message(frame))))
                                .await;
                    }
                    return WriterEnd::Aborted(frame);
                }
                Batch::Frames => {
                    let before = progress.load(Ordering::Relaxed);
                    let written = Box::pin(write_watched(
                        sink,
                        &mut batch,
                        outbox,
                        progress,
                        options.write_timeout,
                        options.deflate.as_ref(),
                    ))
                    .await;
                    match written {
                        Written::Aborted => batch.clear(),
                        Written::Done(Ok(true)) => return WriterEnd::SentClose,
                        Written::Done(Ok(false)) => {}
                        Written::Done(Err(err)) => return WriterEnd::Failed(Box::new(err)),
                        Written::Stalled => return WriterEnd::TimedOut,
                    }
                    // Nothing more to send: hold no buffer while idle. (Under load the drained
                    // buffer goes back to the outbox at the next batch instead.) The batch's
                    // bytes stop counting against the server-wide outbox pool.
                    let done = outbox.batch_written();
                    // Counted once per batch, on this thread (metrics/counters.rs).
                    counts.written(&done, progress.load(Ordering::Relaxed).wrapping_sub(before));
                    if done.idle {
                        batch = VecDeque::new();
                    }
                }
            }
        }
    }
}

enum Written {
    Done(Result<bool, WsError>),
    Aborted,
    Stalled,
}

/// Writes a batch (see [`write_batch`]) unless the outbox is aborted meanwhile or the socket
/// accepts no byte for `write_timeout`: a peer that reads nothing is closed even if it keeps
/// sending (which keeps the heartbeat happy). Progress is sampled every quarter of the
/// timeout, so a stall is caught between 1 and 1.25 times the timeout after it began.
async fn write_watched(
    sink: &mut WsSink,
    batch: &mut VecDeque<Outbound>,
    outbox: &Outbox,
    progress: &WriteProgress,
    write_timeout: Duration,
    deflate: Option<&Deflate>,
) -> Written {
    let mut write = std::pin::pin!(write_batch(sink, batch, deflate));
    // Most batches go straight into the socket buffer: no timer for them (a timer per batch
    // would be a timer-wheel entry per delivery for a reader that keeps up).
    if let Poll::Ready(result) =
        std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await
    {
        return Written::Done(result);
    }
    let step = (write_timeout / 4).max(Duration::from_millis(1));
    let mut seen = progress.load(Ordering::Relaxed);
    let mut stalled_since = Instant::now();
    let check = sleep_until(stalled_since + step);
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = &mut write => return Written::Done(result),
            () = outbox.aborted() => return Written::Aborted,
            () = &mut check => {
                let now = Instant::now();
                let count = progress.load(Ordering::Relaxed);
                if count != seen {
                    seen = count;
                    stalled_since = now;
                } else if now.duration_since(stalled_since) >= write_timeout {
                    return Written::Stalled;
                }
                check.as_mut().reset(now + step);
            }
        }
    }
}

/// Writes a batch and flushes once. Returns whether the batch ended with our close frame.
async fn write_batch(
    sink: &mut WsSink,
    batch: &mut VecDeque<Outbound>,
    deflate: Option<&Deflate>,
) -> Result<bool, WsError> {
    let mut closed = false;
    for frame in batch.drain(..) {
        closed = matches!(frame, Outbound::Close(_));
        sink.feed(codec::outgoing(frame, deflate)).await?;
        if closed {
            break;
        }
    }
    sink.flush().await?;
    Ok(closed)
}
