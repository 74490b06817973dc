//! Switchboard patch: the frame reader of [`super::WebSocketStream`].
//!
//! Upstream wraps the I/O in `tokio_util::codec::FramedRead`, which allocates an 8 KiB read
//! buffer per connection up front and keeps it for the connection's life. A server holding
//! many idle connections pays that for each of them. This reader holds no buffer while nothing
//! is pending: a read into an empty buffer lands on the stack, only the bytes received are
//! copied to the heap, and the buffer is released again as soon as every received frame has
//! been decoded. A frame that arrives in pieces keeps its buffer (grown as the decoder asks)
//! until it is complete. Decoding, end-of-stream and error behaviour are those of
//! `FramedRead` (the same state machine: reading, framing, pausing, paused, errored).

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::{codec::Decoder, io::poll_read_buf};

use super::{codec::WebSocketProtocol, types::Frame};
use crate::Error;

/// Bytes read at once into an empty buffer (on the stack, then copied).
const STACK_READ_SIZE: usize = 4096;

/// Reads frames from `T`, holding a heap buffer only while a frame is incomplete or
/// undecoded bytes are waiting.
#[derive(Debug)]
pub(super) struct FrameReader<T> {
    /// The underlying I/O.
    io: T,
    /// The frame decoder.
    codec: WebSocketProtocol,
    /// Received bytes not decoded yet; no allocation when empty.
    buffer: BytesMut,
    /// The last read returned end of stream.
    eof: bool,
    /// The buffer may hold a decodable frame.
    is_readable: bool,
    /// The decoder or the I/O failed: the next poll ends the stream.
    has_errored: bool,
}

impl<T> FrameReader<T> {
    /// A reader with nothing buffered.
    pub(super) fn new(io: T, codec: WebSocketProtocol) -> Self {
        Self::with_buffer(io, codec, BytesMut::new())
    }

    /// A reader that starts with bytes already read from `io` (e.g. after a handshake).
    pub(super) fn with_buffer(io: T, codec: WebSocketProtocol, buffer: BytesMut) -> Self {
        let buffer = if buffer.is_empty() {
            BytesMut::new()
        } else {
            buffer
        };
        Self {
            io,
            codec,
            is_readable: !buffer.is_empty(),
            buffer,
            eof: false,
            has_errored: false,
        }
    }

    pub(super) fn get_ref(&self) -> &T {
        &self.io
    }

    pub(super) fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    pub(super) fn into_inner(self) -> T {
        self.io
    }

    pub(super) fn decoder(&self) -> &WebSocketProtocol {
        &self.codec
    }

    pub(super) fn decoder_mut(&mut self) -> &mut WebSocketProtocol {
        &mut self.codec
    }

    /// Drops the buffer's allocation once everything in it has been decoded.
    fn release_if_drained(&mut self) {
        if self.buffer.is_empty() && self.buffer.capacity() != 0 {
            self.buffer = BytesMut::new();
        }
    }
}

impl<T: AsyncRead + Unpin> FrameReader<T> {
    /// The next frame, `None` at the end of the stream (or after an error was returned).
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        loop {
            if self.has_errored {
                self.is_readable = false;
                self.has_errored = false;
                return Poll::Ready(None);
            }

            if self.is_readable {
                if self.eof {
                    let frame = match self.codec.decode_eof(&mut self.buffer) {
                        Ok(frame) => frame,
                        Err(err) => {
                            self.has_errored = true;
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    if frame.is_none() {
                        self.is_readable = false;
                    }
                    self.release_if_drained();
                    return Poll::Ready(frame.map(Ok));
                }

                match self.codec.decode(&mut self.buffer) {
                    Ok(Some(frame)) => {
                        self.release_if_drained();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(None) => {}
                    Err(err) => {
                        self.has_errored = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                }
                self.is_readable = false;
            }

            let read = if self.buffer.is_empty() {
                self.poll_read_into_empty(cx)
            } else {
                // Room for at least one byte, so that a read of 0 means end of stream.
                self.buffer.reserve(1);
                poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buffer)
            };
            let count = match read {
                Poll::Ready(Ok(count)) => count,
                Poll::Ready(Err(err)) => {
                    self.has_errored = true;
                    return Poll::Ready(Some(Err(Error::Io(err))));
                }
                Poll::Pending => return Poll::Pending,
            };
            if count == 0 {
                if self.eof {
                    return Poll::Ready(None);
                }
                self.eof = true;
            } else {
                self.eof = false;
            }
            self.is_readable = true;
        }
    }

    /// Reads into a stack buffer and keeps only the bytes received.
    fn poll_read_into_empty(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ_SIZE];
        let mut read_buf = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.io).poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => {
                let filled = read_buf.filled();
                if !filled.is_empty() {
                    self.buffer = BytesMut::from(filled);
                }
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}
