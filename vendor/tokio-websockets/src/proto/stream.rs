//! Frame aggregating abstraction over the low-level [`super::codec`]
//! implementation that provides [`futures_sink::Sink`] and
//! [`futures_core::Stream`] implementations that take [`Message`] as a
//! parameter.
use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    mem::{replace, take},
    pin::Pin,
    task::{Context, Poll, Waker, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
#[cfg(any(feature = "client", feature = "server"))]
use tokio_util::codec::FramedRead;
use tokio_util::io::poll_write_buf;

#[cfg(any(feature = "client", feature = "server"))]
use super::types::Role;
use super::{
    Config, Limits,
    codec::WebSocketProtocol,
    reader::FrameReader,
    types::{Frame, Message, OpCode, Payload, StreamState},
};
use crate::{CloseCode, Error};

/// Helper struct for storing a frame header, the header size and payload.
#[derive(Debug)]
struct EncodedFrame {
    /// Encoded frame header and mask.
    header: [u8; 14],
    /// Potentially masked message payload, ready for writing to the I/O.
    payload: Payload,
}

impl EncodedFrame {
    /// Whether or not this frame is masked.
    #[inline]
    fn is_masked(&self) -> bool {
        self.header[1] >> 7 != 0
    }

    /// Returns the length of the combined header and mask in bytes.
    #[inline]
    fn header_len(&self) -> usize {
        let mask_bytes = if self.is_masked() { 4 } else { 0 };
        match self.header[1] & 127 {
            127 => 10 + mask_bytes,
            126 => 4 + mask_bytes,
            _ => 2 + mask_bytes,
        }
    }

    /// Total length of the frame.
    fn len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Switchboard patch: appends the frame's bytes (header, then payload) to a run.
    fn copy_to(&self, run: &mut BytesMut) {
        run.extend_from_slice(&self.header[..self.header_len()]);
        run.extend_from_slice(&self.payload);
    }
}

/// Switchboard patch: a frame of at most this many bytes (header included) is copied into a
/// run of small frames, so that a batch of them leaves in one contiguous write instead of two
/// iovecs (header, payload) per frame. Larger frames, and a lone small one, are still written
/// from their own buffers.
const COALESCE_MAX_FRAME: usize = 512;
/// A run stops growing at this size; the next small frame starts a new one.
const COALESCE_MAX_RUN: usize = 64 * 1024;

/// An entry of the outgoing queue.
#[derive(Debug)]
enum Queued {
    /// A frame written from its own header and payload.
    Frame(EncodedFrame),
    /// Consecutive small frames, copied back to back (Switchboard patch).
    Run(BytesMut),
}

impl Queued {
    fn len(&self) -> usize {
        match self {
            Self::Frame(frame) => frame.len(),
            Self::Run(run) => run.len(),
        }
    }
}

/// Queued up frames that are being sent.
#[derive(Debug)]
struct FrameQueue {
    /// Queue of outgoing frames to send. Some parts of the first item may have
    /// been sent already.
    queue: VecDeque<Queued>,
    /// Amount of partial bytes written of the first frame in the queue.
    bytes_written: usize,
    /// Total amount of bytes remaining to be sent in the frame queue.
    pending_bytes: usize,
}

impl FrameQueue {
    /// Creates a new, empty [`FrameQueue`].
    #[cfg(any(feature = "client", feature = "server"))]
    fn new() -> Self {
        Self {
            // Switchboard patch: no allocation until the first frame is queued.
            queue: VecDeque::new(),
            bytes_written: 0,
            pending_bytes: 0,
        }
    }

    /// Queue a frame to be sent.
    fn push(&mut self, item: EncodedFrame) {
        let len = item.len();
        self.pending_bytes += len;
        if len > COALESCE_MAX_FRAME {
            self.queue.push_back(Queued::Frame(item));
            return;
        }
        // Appending to the last run is safe even when it is partly written: the written
        // prefix and `bytes_written` do not move.
        match self.queue.back_mut() {
            Some(Queued::Run(run)) if run.len() + len <= COALESCE_MAX_RUN => item.copy_to(run),
            // A second small frame: both go into a new run. A run lays the first frame out
            // byte for byte as its header and payload were, so a partly written first frame
            // keeps its `bytes_written`. (A lone frame is written without a copy.)
            Some(Queued::Frame(last)) if last.len() <= COALESCE_MAX_FRAME => {
                let mut run = BytesMut::with_capacity((last.len() + len).max(1024));
                last.copy_to(&mut run);
                item.copy_to(&mut run);
                if let Some(back) = self.queue.back_mut() {
                    *back = Queued::Run(run);
                }
            }
            _ => self.queue.push_back(Queued::Frame(item)),
        }
    }
}

impl Buf for FrameQueue {
    fn remaining(&self) -> usize {
        self.pending_bytes
    }

    fn chunk(&self) -> &[u8] {
        match self.queue.front() {
            Some(Queued::Frame(frame)) => {
                if self.bytes_written >= frame.header_len() {
                    unsafe {
                        frame
                            .payload
                            .get_unchecked(self.bytes_written - frame.header_len()..)
                    }
                } else {
                    &frame.header[self.bytes_written..frame.header_len()]
                }
            }
            Some(Queued::Run(run)) => run.get(self.bytes_written..).unwrap_or_default(),
            None => &[],
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        self.pending_bytes -= cnt;
        cnt += self.bytes_written;

        while cnt > 0 {
            let item = self
                .queue
                .front()
                .expect("advance called with too long count");
            let item_len = item.len();

            if cnt >= item_len {
                self.queue.pop_front();
                self.bytes_written = 0;
                cnt -= item_len;
            } else {
                self.bytes_written = cnt;
                return;
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (idx, entry) in self.queue.iter().enumerate() {
            if n >= dst.len() {
                break;
            }

            match entry {
                Queued::Run(run) => {
                    let skip = if idx == 0 { self.bytes_written } else { 0 };
                    dst[n] = IoSlice::new(run.get(skip..).unwrap_or_default());
                    n += 1;
                }
                Queued::Frame(frame) if idx == 0 => {
                    if frame.header_len() > self.bytes_written {
                        dst[n] =
                            IoSlice::new(&frame.header[self.bytes_written..frame.header_len()]);
                        n += 1;
                    }

                    if !frame.payload.is_empty() && n < dst.len() {
                        dst[n] = IoSlice::new(unsafe {
                            frame
                                .payload
                                .get_unchecked(self.bytes_written.saturating_sub(frame.header_len())..)
                        });
                        n += 1;
                    }
                }
                Queued::Frame(frame) => {
                    dst[n] = IoSlice::new(&frame.header[..frame.header_len()]);
                    n += 1;
                    if !frame.payload.is_empty() && n < dst.len() {
                        dst[n] = IoSlice::new(&frame.payload);
                        n += 1;
                    }
                }
            }
        }

        n
    }
}

/// A WebSocket stream that full messages can be read from and written to.
///
/// The stream implements [`futures_sink::Sink`] and [`futures_core::Stream`].
///
/// You must use a [`ClientBuilder`] or [`ServerBuilder`] to
/// obtain a WebSocket stream.
///
/// For usage examples, see the top level crate documentation, which showcases a
/// simple echo server and client.
///
/// [`ClientBuilder`]: crate::ClientBuilder
/// [`ServerBuilder`]: crate::ServerBuilder
#[allow(clippy::module_name_repetitions)]
#[derive(Debug)]
pub struct WebSocketStream<T> {
    /// The underlying stream using the [`WebSocketProtocol`] to read and write
    /// full frames.
    inner: FrameReader<T>,

    /// Configuration for the stream.
    config: Config,

    /// The [`StreamState`] of the current stream.
    state: StreamState,

    /// Payload of the full message that is being assembled.
    partial_payload: BytesMut,
    /// Opcode of the full message that is being assembled.
    partial_opcode: OpCode,
    /// Switchboard patch: whether the message being assembled is compressed (RSV1).
    partial_compressed: bool,

    /// Buffer that outgoing frame headers are formatted into.
    header_buf: [u8; 14],

    /// Queue of outgoing frames to send.
    frame_queue: FrameQueue,

    /// Waker used for currently actively polling
    /// [`WebSocketStream::poll_flush`] until completion.
    flushing_waker: Option<Waker>,
}

impl<T> WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Create a new [`WebSocketStream`] from a raw stream.
    #[cfg(any(feature = "client", feature = "server"))]
    pub(crate) fn from_raw_stream(stream: T, role: Role, config: Config, limits: Limits) -> Self {
        Self {
            inner: FrameReader::new(stream, WebSocketProtocol::new(role, limits)),
            config,
            state: StreamState::Active,
            partial_payload: BytesMut::new(),
            partial_opcode: OpCode::Continuation,
            partial_compressed: false,
            header_buf: [0; 14],
            frame_queue: FrameQueue::new(),
            flushing_waker: None,
        }
    }

    /// Create a new [`WebSocketStream`] from an existing [`FramedRead`]. This
    /// allows for reusing the internal buffer of the [`FramedRead`] object.
    #[cfg(any(feature = "client", feature = "server"))]
    pub(crate) fn from_framed<U>(
        framed: FramedRead<T, U>,
        role: Role,
        config: Config,
        limits: Limits,
    ) -> Self {
        Self {
            inner: {
                let parts = framed.into_parts();
                FrameReader::with_buffer(parts.io, WebSocketProtocol::new(role, limits), parts.read_buf)
            },
            config,
            state: StreamState::Active,
            partial_payload: BytesMut::new(),
            partial_opcode: OpCode::Continuation,
            partial_compressed: false,
            header_buf: [0; 14],
            frame_queue: FrameQueue::new(),
            flushing_waker: None,
        }
    }

    /// Returns a reference to the underlying I/O stream wrapped by this stream.
    ///
    /// Care should be taken not to tamper with the stream of data to avoid
    /// corrupting the stream of frames.
    pub fn get_ref(&self) -> &T {
        self.inner.get_ref()
    }

    /// Returns a mutable reference to the underlying I/O stream wrapped by this
    /// stream.
    ///
    /// Care should be taken not to tamper with the stream of data to avoid
    /// corrupting the stream of frames.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Returns a reference to the inner websocket limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.decoder().limits
    }

    /// Returns a mutable reference to the inner websocket limits.
    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.inner.decoder_mut().limits
    }

    /// Consumes the `WebSocketStream`, returning its underlying I/O stream.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }

    /// Attempt to pull out the next frame from the [`Framed`] this stream and
    /// from that update the stream's internal state.
    ///
    /// # Errors
    ///
    /// This method returns an [`Error`] if reading from the stream fails or a
    /// protocol violation is encountered.
    fn poll_next_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame, Error>>> {
        // In the case of Active or ClosedByUs, we want to receive more messages from
        // the remote. In the case of ClosedByPeer, we have to flush to make sure our
        // close acknowledge goes through.
        if self.state == StreamState::CloseAcknowledged {
            return Poll::Ready(None);
        } else if self.state == StreamState::PeerCloseUnanswered {
            // Switchboard patch: nothing follows a close frame; the reply is the
            // application's (see `Config::auto_close_reply`).
            return Poll::Ready(None);
        } else if self.state == StreamState::ClosedByPeer {
            ready!(self.as_mut().poll_flush(cx))?;
            self.state = StreamState::CloseAcknowledged;
            return Poll::Ready(None);
        }

        // If there are pending items, try to flush the sink.
        // Futures only store a single waker. If we use poll_flush(cx) here, the stored
        // waker (i.e. usually that of the write task) is replaced with our waker (i.e.
        // that of the read task) and our write task may never get woken up again. We
        // circumvent this by not calling poll_flush at all if poll_flush is polled by
        // another task at the moment.
        if self.frame_queue.has_remaining() {
            let waker = self.flushing_waker.clone();
            _ = self.as_mut().poll_flush(&mut Context::from_waker(
                waker.as_ref().unwrap_or(cx.waker()),
            ))?;
        }

        let frame = match ready!(self.inner.poll_next(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                if matches!(e, Error::Io(_)) || self.state == StreamState::ClosedByUs {
                    self.state = StreamState::CloseAcknowledged;
                } else {
                    self.state = StreamState::ClosedByPeer;

                    match &e {
                        Error::Protocol(e) => self.queue_frame(Frame::from(e)),
                        Error::PayloadTooLong { max_len, .. } => self.queue_frame(
                            Message::close(
                                Some(CloseCode::MESSAGE_TOO_BIG),
                                &format!("max length: {max_len}"),
                            )
                            .into(),
                        ),
                        _ => {}
                    }
                }
                return Poll::Ready(Some(Err(e)));
            }
            None => return Poll::Ready(None),
        };

        match frame.opcode {
            OpCode::Close => match self.state {
                StreamState::Active if !self.config.auto_close_reply => {
                    self.state = StreamState::PeerCloseUnanswered;
                }
                StreamState::Active => {
                    self.state = StreamState::ClosedByPeer;

                    let mut frame = frame.clone();
                    frame.payload.truncate(2);

                    self.queue_frame(frame);
                }
                StreamState::ClosedByPeer
                | StreamState::PeerCloseUnanswered
                | StreamState::CloseAcknowledged => {
                    debug_assert!(false, "unexpected StreamState");
                }
                StreamState::ClosedByUs => {
                    self.state = StreamState::CloseAcknowledged;
                }
            },
            OpCode::Ping if self.state == StreamState::Active && self.config.auto_pong => {
                let mut frame = frame.clone();
                frame.opcode = OpCode::Pong;

                self.queue_frame(frame);
            }
            _ => {}
        }

        Poll::Ready(Some(Ok(frame)))
    }

    /// Masks and queues a frame for sending when [`poll_flush`] gets called.
    fn queue_frame(
        &mut self,
        #[cfg_attr(not(feature = "client"), allow(unused_mut))] mut frame: Frame,
    ) {
        if frame.opcode == OpCode::Close && self.state == StreamState::PeerCloseUnanswered {
            // Switchboard patch: the application's reply to the peer's close.
            self.state = StreamState::CloseAcknowledged;
        } else if frame.opcode == OpCode::Close && self.state != StreamState::ClosedByPeer {
            self.state = StreamState::ClosedByUs;
        }

        #[cfg_attr(not(feature = "client"), allow(unused_variables))]
        let mask = frame.encode(&mut self.header_buf);

        #[cfg(feature = "client")]
        {
            if self.inner.decoder().role == Role::Client {
                let mut payload = BytesMut::from(frame.payload);
                crate::rand::get_mask(mask);
                // mask::frame will mutate the mask in-place, but we want to send the original
                // mask. This is essentially a u32, so copying it is cheap and easier than
                // special-casing this in the masking implementation.
                // &mut *mask won't work, the compiler will optimize the deref/copy away
                let mut mask_copy = *mask;
                crate::mask::frame(&mut mask_copy, &mut payload);
                frame.payload = Payload::from(payload);
                self.header_buf[1] |= 1 << 7;
            }
        }

        let item = EncodedFrame {
            header: self.header_buf,
            payload: frame.payload,
        };
        self.frame_queue.push(item);
    }

    /// Sets the waker that is currently flushing to a new one and does nothing
    /// if the waker is the same.
    fn set_flushing_waker(&mut self, waker: &Waker) {
        if !self
            .flushing_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            self.flushing_waker = Some(waker.clone());
        }
    }
}

impl<T> Stream for WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let max_len = self.inner.decoder().limits.max_payload_len;

        loop {
            let (opcode, payload, fin, compressed) =
                match ready!(self.as_mut().poll_next_frame(cx)?) {
                    Some(frame) => (frame.opcode, frame.payload, frame.is_final, frame.rsv1),
                    None => return Poll::Ready(None),
                };
            let len = self.partial_payload.len() + payload.len();

            if opcode != OpCode::Continuation {
                if fin {
                    return Poll::Ready(Some(Ok(Message {
                        opcode,
                        payload,
                        compressed,
                    })));
                }
                self.partial_opcode = opcode;
                self.partial_compressed = compressed;
                self.partial_payload = BytesMut::from(payload);
                if self.config.report_fragments {
                    // Switchboard patch: the application learns that a message is being
                    // assembled (an empty message with the continuation opcode).
                    return Poll::Ready(Some(Ok(Message {
                        opcode: OpCode::Continuation,
                        payload: Payload::from(Bytes::new()),
                        compressed: false,
                    })));
                }
            } else if len > max_len {
                return Poll::Ready(Some(Err(Error::PayloadTooLong { len, max_len })));
            } else {
                self.partial_payload.extend_from_slice(&payload);
            }

            if fin {
                break;
            }
        }

        let opcode = replace(&mut self.partial_opcode, OpCode::Continuation);
        let compressed = take(&mut self.partial_compressed);
        let mut payload = Payload::from(take(&mut self.partial_payload));
        payload.set_utf8_validated(opcode == OpCode::Text && !compressed);

        Poll::Ready(Some(Ok(Message {
            opcode,
            payload,
            compressed,
        })))
    }
}

// The tokio-util implementation of a sink uses a buffer which start_send
// appends to and poll_flush tries to write from. This makes sense, but comes
// with a hefty performance penalty when sending large payloads, since this adds
// a memmove from the payload to the buffer. We completely avoid that overhead
// by storing messages in a deque.
impl<T> Sink<Message> for WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tokio-util calls poll_flush when more than 8096 bytes are pending, otherwise
        // it returns Ready. We will just replicate that behavior
        if self.frame_queue.remaining() >= self.config.flush_threshold {
            self.as_mut().poll_flush(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        // Switchboard patch: after an unanswered peer close the application may still send,
        // up to and including its close reply.
        if self.state != StreamState::Active && self.state != StreamState::PeerCloseUnanswered {
            return Err(Error::AlreadyClosed);
        }

        if item.opcode.is_control() || item.payload.len() <= self.config.frame_size {
            let frame: Frame = item.into();
            self.queue_frame(frame);
        } else {
            // Chunk the message into frames
            for frame in item.into_frames(self.config.frame_size) {
                self.queue_frame(frame);
            }
        }

        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Borrow checker hacks... It needs this to understand that we can separately
        // borrow the fields of the struct mutably
        let this = self.get_mut();
        let frame_queue = &mut this.frame_queue;
        let io = this.inner.get_mut();
        let flushing_waker = &mut this.flushing_waker;

        while frame_queue.has_remaining() {
            let n = match poll_write_buf(Pin::new(io), cx, frame_queue) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => {
                    *flushing_waker = None;
                    this.state = StreamState::CloseAcknowledged;
                    return Poll::Ready(Err(Error::Io(e)));
                }
                Poll::Pending => {
                    this.set_flushing_waker(cx.waker());
                    return Poll::Pending;
                }
            };

            if n == 0 {
                *flushing_waker = None;
                this.state = StreamState::CloseAcknowledged;
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
        }

        match Pin::new(io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                *flushing_waker = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                *flushing_waker = None;
                this.state = StreamState::CloseAcknowledged;
                Poll::Ready(Err(Error::Io(e)))
            }
            Poll::Pending => {
                this.set_flushing_waker(cx.waker());
                Poll::Pending
            }
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.state == StreamState::Active || self.state == StreamState::PeerCloseUnanswered {
            self.queue_frame(Frame::DEFAULT_CLOSE);
        }
        while ready!(self.as_mut().poll_next(cx)).is_some() {}

        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(self.inner.get_mut())
            .poll_shutdown(cx)
            .map_err(Error::Io)
    }
}

/// Switchboard patch: the coalescing frame queue yields the frames' bytes in order, whatever
/// the write sizes.
#[cfg(all(test, feature = "server"))]
mod frame_queue_tests {
    use bytes::{Buf, Bytes};

    use super::{COALESCE_MAX_FRAME, EncodedFrame, FrameQueue, Payload};

    fn frame(len: usize, fill: u8) -> (EncodedFrame, Vec<u8>) {
        // A 2-byte header (FIN + binary, 7-bit length) is enough for lengths up to 125; larger
        // ones use the 16-bit form.
        let mut header = [0u8; 14];
        header[0] = 0x82;
        let mut bytes = Vec::new();
        if len <= 125 {
            header[1] = len as u8;
            bytes.extend_from_slice(&header[..2]);
        } else {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&header[..4]);
        }
        let payload = vec![fill; len];
        bytes.extend_from_slice(&payload);
        (
            EncodedFrame {
                header,
                payload: Payload::from(Bytes::from(payload)),
            },
            bytes,
        )
    }

    fn drain(queue: &mut FrameQueue, step: usize, vectored: bool) -> Vec<u8> {
        let mut out = Vec::new();
        while queue.has_remaining() {
            let mut taken = Vec::new();
            if vectored {
                let mut slices = [std::io::IoSlice::new(&[]); 4];
                let n = queue.chunks_vectored(&mut slices);
                for slice in &slices[..n] {
                    taken.extend_from_slice(slice);
                }
            } else {
                taken.extend_from_slice(queue.chunk());
            }
            let take = taken.len().min(step);
            out.extend_from_slice(&taken[..take]);
            queue.advance(take);
        }
        out
    }

    #[test]
    fn small_and_large_frames_come_out_in_order_at_any_write_size() {
        let sizes = [10, 0, 100, COALESCE_MAX_FRAME + 50, 3, 120, 2000, 1];
        for vectored in [false, true] {
            for step in [1, 7, 64, 4096] {
                let mut queue = FrameQueue::new();
                let mut expected = Vec::new();
                for (i, len) in sizes.iter().enumerate() {
                    let (item, bytes) = frame(*len, i as u8);
                    queue.push(item);
                    expected.extend_from_slice(&bytes);
                    // Interleave pushes with partial writes, as a writer under load does.
                    if i == 2 {
                        let mut head = drain_some(&mut queue, 5);
                        expected.drain(..head.len()).for_each(drop);
                        head.clear();
                    }
                }
                assert_eq!(queue.remaining(), expected.len());
                assert_eq!(drain(&mut queue, step, vectored), expected, "step {step}");
            }
        }
    }

    #[test]
    fn a_partly_written_lone_frame_joins_a_run_without_losing_its_place() {
        for written in [1, 2, 3, 11] {
            let mut queue = FrameQueue::new();
            let (first, mut expected) = frame(10, 1);
            queue.push(first);
            let head = drain_some(&mut queue, written);
            expected.drain(..head.len()).for_each(drop);
            for (i, len) in [20, 700, 30].into_iter().enumerate() {
                let (item, bytes) = frame(len, 2 + i as u8);
                queue.push(item);
                expected.extend_from_slice(&bytes);
            }
            assert_eq!(drain(&mut queue, 5, true), expected, "written {written}");
        }
    }

    fn drain_some(queue: &mut FrameQueue, n: usize) -> Vec<u8> {
        let chunk = queue.chunk();
        let take = chunk.len().min(n);
        let out = chunk[..take].to_vec();
        queue.advance(take);
        out
    }
}
