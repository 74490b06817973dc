//! The seam between Switchboard and the WebSocket codec crate (tokio-websockets). Nothing
//! outside this file names the codec's types, so the codec can be swapped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use switchboard_hub::{CloseFrame, Outbound};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_websockets::{
    CloseCode, Config, Limits, Message, Payload, ServerBuilder, WebSocketStream,
};

use super::deflate::{self, Deflate, InflateError};

/// A server-side WebSocket over an upgraded HTTP/1.1 connection.
type Socket = WebSocketStream<Watched<TokioIo<Upgraded>>>;

/// Bytes the socket has accepted so far, for the write timeout (see [`Watched`]).
pub(crate) type WriteProgress = Arc<AtomicU64>;

/// An I/O that counts the bytes written to it: the writer, blocked in the codec's flush,
/// reads the count to tell a slow peer (bytes trickle out) from one that reads nothing.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    written: WriteProgress,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    fn count(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &result {
            self.written
                .fetch_add(u64::try_from(*n).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.count(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.count(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
/// The sending half of a [`server_socket`].
pub(crate) type WsSink = SplitSink<Socket, Message>;
/// The receiving half of a [`server_socket`].
pub(crate) type WsStream = SplitStream<Socket>;
/// Codec errors.
pub(crate) type WsError = tokio_websockets::Error;

/// Takes over an upgraded connection (the 101 response has been sent). Split at once: the
/// socket moves to the heap (shared by the halves) instead of sitting in the caller's task.
///
/// Pings are not answered by the codec (the driver answers them through the outbox, 16 pongs
/// at most waiting, within the rate limit), and the start of a fragmented message is reported
/// so that the driver can bound it in time. Nor is the peer's close answered by the codec:
/// the driver queues the reply behind the replies already in the outbox, so a close right
/// behind a request does not cut off that request's answer. `compressed`: permessage-deflate was negotiated
/// (frames may carry RSV1).
pub(crate) fn server_socket(
    upgraded: Upgraded,
    max_message_size: usize,
    compressed: bool,
) -> (WsSink, WsStream, WriteProgress) {
    let written = WriteProgress::default();
    let (sink, stream) = ServerBuilder::new()
        .config(
            Config::default()
                .auto_pong(false)
                .report_fragments(true)
                .auto_close_reply(false),
        )
        .limits(
            Limits::default()
                .max_payload_len(Some(max_message_size))
                .allow_compressed(compressed),
        )
        .serve(Watched {
            io: TokioIo::new(upgraded),
            written: written.clone(),
        })
        .split();
    (sink, stream, written)
}

/// A message as the codec delivers it.
pub(crate) type WsMessage = Message;

/// A frame received from the peer, as the handlers see it.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A complete text message (valid UTF-8: the codec checked it; see [`text_of`]).
    Text(WsMessage),
    /// A complete binary message (see [`bytes_of`]).
    Binary(WsMessage),
    /// The peer's close frame (code, reason).
    Close(Option<u16>, String),
    /// A ping, to be answered with a pong carrying this payload.
    Ping(bytes::Bytes),
    /// A pong: only a sign of life.
    Control,
    /// A fragmented message has begun (it arrives as one message once complete).
    FragmentStart,
}

/// Why a received message could not be read (the connection closes with the given code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// Inflated, the message exceeds the size limit (1009).
    #[error("{0}")]
    TooBig(InflateError),
    /// Not valid deflate data, or inflated text that is not UTF-8 (1007).
    #[error("{0}")]
    Invalid(&'static str),
}

/// A received message as the handlers see it; a compressed one (permessage-deflate) is
/// inflated here, at most `max_message_size` bytes of it.
pub(crate) fn incoming(message: Message, max_message_size: usize) -> Result<Incoming, ReadError> {
    let message = if message.is_compressed() {
        let plain =
            deflate::inflate(message.as_payload(), max_message_size).map_err(|err| match err {
                InflateError::TooBig { .. } => ReadError::TooBig(err),
                InflateError::Corrupt => ReadError::Invalid("invalid compressed data"),
            })?;
        message
            .inflated(plain)
            .map_err(|_| ReadError::Invalid("invalid utf-8"))?
    } else {
        message
    };
    Ok(classify(message))
}

fn classify(message: Message) -> Incoming {
    if message.is_text() {
        Incoming::Text(message)
    } else if message.is_binary() {
        Incoming::Binary(message)
    } else if let Some((code, reason)) = message.as_close() {
        let code = u16::from(code);
        Incoming::Close((code != 1005).then_some(code), reason.to_owned())
    } else if message.is_ping() {
        Incoming::Ping(message.into_payload().into())
    } else if message.is_fragment_start() {
        Incoming::FragmentStart
    } else {
        Incoming::Control
    }
}

/// The text of a text message (free: the codec validated the UTF-8 on receipt).
pub(crate) fn text_of(message: &WsMessage) -> &str {
    message.as_text().unwrap_or_default()
}

/// The payload of a message, without copying.
pub(crate) fn bytes_of(message: WsMessage) -> bytes::Bytes {
    message.into_payload().into()
}

/// The codec message for a queued frame; with permessage-deflate negotiated, text and binary
/// frames over the threshold go out compressed (a broadcast's compression made once, shared).
pub(crate) fn outgoing(frame: Outbound, deflate: Option<&Deflate>) -> Message {
    let compressed = |bytes: &bytes::Bytes| deflate.and_then(|d| d.compress(bytes));
    match frame {
        Outbound::Text(bytes) => match compressed(&bytes) {
            Some(packed) => Message::text(Payload::from(packed)).into_compressed(),
            None => Message::text(Payload::from(bytes)),
        },
        Outbound::Binary(bytes) => match compressed(&bytes) {
            Some(packed) => Message::binary(Payload::from(packed)).into_compressed(),
            None => Message::binary(Payload::from(bytes)),
        },
        Outbound::Ping => Message::ping(Payload::from(bytes::Bytes::new())),
        Outbound::Pong(payload) => Message::pong(Payload::from(payload)),
        Outbound::Close(frame) => close_message(&frame),
    }
}

/// A close message; codes the codec cannot send become 1011 and reasons are cut to the
/// 123 bytes a close frame allows (at a character boundary).
pub(crate) fn close_message(frame: &CloseFrame) -> Message {
    let code = CloseCode::try_from(frame.code)
        .ok()
        .filter(|c| !c.is_reserved())
        .unwrap_or(CloseCode::INTERNAL_SERVER_ERROR);
    let mut end = frame.reason.len().min(123);
    while !frame.reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::close(Some(code), frame.reason.get(..end).unwrap_or_default())
}

/// Whether the error means the message was over the size limit (answered with close 1009).
pub(crate) fn is_too_long(err: &WsError) -> bool {
    matches!(err, WsError::PayloadTooLong { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let message = close_message(&CloseFrame {
            code: 1008,
            reason: reason.into(),
        });
        let (code, text) = message.as_close().unwrap();
        assert_eq!(u16::from(code), 1008);
        assert_eq!(text.len(), 122);
    }

    #[test]
    fn unsendable_codes_become_1011() {
        let message = close_message(&CloseFrame::new(1005, "x"));
        assert_eq!(u16::from(message.as_close().unwrap().0), 1011);
    }
}
