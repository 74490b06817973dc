//! The per-connection outbound queue.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Bytes charged per queued frame on top of its payload, so that a flood of tiny frames is
/// bounded too (roughly the frame header, the queue slot and the shared buffer's bookkeeping).
const FRAME_OVERHEAD: usize = 64;

/// A close frame to send: code and reason (at most 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The WebSocket close code.
    pub code: u16,
    /// The reason text.
    pub reason: Cow<'static, str>,
}

impl CloseFrame {
    /// A close frame with a static reason.
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(reason),
        }
    }
}

/// One frame waiting in an outbox. Payloads are shared, never copied per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A text frame (already-encoded JSON).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
    /// A WebSocket ping (liveness check).
    Ping,
    /// The last frame: a graceful close. Nothing is queued after it.
    Close(CloseFrame),
}

impl Outbound {
    /// What the frame counts against an outbox's budget.
    pub fn cost(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Self::Text(b) | Self::Binary(b) => b.len(),
                Self::Ping => 0,
                Self::Close(c) => c.reason.len(),
            }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The outbox is closing or aborted; the frame is dropped with the connection.
    #[error("outbox closed")]
    Closed,
    /// The frame would exceed the byte budget: the outbox has been aborted (slow consumer).
    #[error("outbox over its byte budget; connection aborted as a slow consumer")]
    Overflow,
}

/// What the writer gets from [`Outbox::next_batch`].
#[derive(Debug)]
pub enum Batch {
    /// Frames were moved into the caller's buffer (the last may be a [`Outbound::Close`]).
    Frames,
    /// The outbox was aborted: stop writing, send this close frame if one is given.
    Aborted(Option<CloseFrame>),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    bytes: usize,
    /// A graceful close has been queued; later pushes are refused.
    closing: bool,
    /// The close frame to send when aborted (if any).
    abort: Option<Option<CloseFrame>>,
}

/// A bounded, byte-budgeted queue of frames for one connection, drained in batches by the
/// connection's single writer.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    /// Set once aborted; with `abort_wake`, what a writer blocked on the socket watches.
    /// (A flag and a `Notify` inside the outbox: a cancellation token would be one more
    /// allocation per connection.)
    aborted: AtomicBool,
    abort_wake: Notify,
    budget: usize,
}

impl Outbox {
    /// An empty outbox that holds at most `budget` bytes (payloads plus per-frame overhead).
    pub fn new(budget: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            aborted: AtomicBool::new(false),
            abort_wake: Notify::new(),
            budget,
        }
    }

    /// Queues a frame. Never blocks. Over budget, the outbox aborts itself with close 1013
    /// ("slow consumer") and the frame is refused.
    pub fn push(&self, frame: Outbound) -> Result<(), PushError> {
        let mut state = self.state.lock();
        if state.closing || state.abort.is_some() {
            return Err(PushError::Closed);
        }
        let cost = frame.cost();
        if state.bytes + cost > self.budget {
            state.queue = VecDeque::new();
            state.bytes = 0;
            state.abort = Some(Some(CloseFrame::new(
                switchboard_protocol::codes::close::TRY_AGAIN_LATER,
                "slow consumer",
            )));
            drop(state);
            self.signal_abort();
            self.ready.notify_one();
            return Err(PushError::Overflow);
        }
        if matches!(frame, Outbound::Close(_)) {
            state.closing = true;
        }
        // The writer takes the whole queue at once: only the first frame after a drain needs
        // to wake it (a busy fan-out then costs one wake-up per batch, not one per frame).
        let wake = state.queue.is_empty();
        state.bytes += cost;
        state.queue.push_back(frame);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues a graceful close after everything already queued. Later pushes are refused.
    /// Returns false when the outbox was already closing or aborted.
    pub fn close(&self, frame: CloseFrame) -> bool {
        self.push(Outbound::Close(frame)).is_ok()
    }

    /// Drops everything queued and tells the writer to stop at once (sending `frame` if given).
    pub fn abort(&self, frame: Option<CloseFrame>) {
        let mut state = self.state.lock();
        if state.abort.is_none() {
            state.queue = VecDeque::new();
            state.bytes = 0;
            state.abort = Some(frame);
        }
        drop(state);
        self.signal_abort();
        self.ready.notify_one();
    }

    /// Whether the outbox has been aborted.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Resolves once the outbox is aborted (for a writer blocked on a slow socket).
    pub async fn aborted(&self) {
        loop {
            let mut notified = std::pin::pin!(self.abort_wake.notified());
            // Registered before the flag is read: an abort in between still wakes us.
            notified.as_mut().enable();
            if self.is_aborted() {
                return;
            }
            notified.await;
        }
    }

    fn signal_abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.abort_wake.notify_waiters();
    }

    /// Waits for frames and moves all queued frames into `out` (one batch, one flush).
    pub async fn next_batch(&self, out: &mut VecDeque<Outbound>) -> Batch {
        loop {
            if let Some(batch) = self.try_batch(out) {
                return batch;
            }
            self.ready.notified().await;
        }
    }

    /// Moves all queued frames into `out` without waiting; `None` when there are none.
    ///
    /// An empty `out` trades places with the queue (no copy): the queue keeps `out`'s
    /// buffer, so a writer that hands back its drained buffer circulates two buffers under
    /// load, and one that drops it holds none while idle.
    pub fn try_batch(&self, out: &mut VecDeque<Outbound>) -> Option<Batch> {
        let mut state = self.state.lock();
        if let Some(frame) = &state.abort {
            return Some(Batch::Aborted(frame.clone()));
        }
        if state.queue.is_empty() {
            return None;
        }
        if out.is_empty() {
            std::mem::swap(&mut state.queue, out);
        } else {
            out.append(&mut state.queue);
        }
        state.bytes = 0;
        // A burst may have grown the buffer it got back; an idle connection should not keep it.
        if state.queue.capacity() > 64 {
            state.queue = VecDeque::new();
        }
        Some(Batch::Frames)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.state.lock().queue.is_empty()
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes currently queued (payloads plus per-frame overhead).
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Outbound {
        Outbound::Text(Bytes::from(vec![b'x'; n]))
    }

    #[tokio::test]
    async fn batches_everything_queued() {
        let outbox = Outbox::new(10_000);
        outbox.push(text(10)).unwrap();
        outbox.push(text(20)).unwrap();
        assert_eq!(outbox.queued_bytes(), 30 + 2 * FRAME_OVERHEAD);
        let mut out = VecDeque::new();
        assert!(matches!(outbox.next_batch(&mut out).await, Batch::Frames));
        assert_eq!(out, [text(10), text(20)]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_aborts_with_slow_consumer() {
        let outbox = Outbox::new(1_000);
        outbox.push(text(500)).unwrap();
        assert_eq!(outbox.push(text(500)), Err(PushError::Overflow));
        assert!(outbox.is_aborted());
        assert_eq!(outbox.push(text(1)), Err(PushError::Closed));
        let mut out = VecDeque::new();
        match outbox.next_batch(&mut out).await {
            Batch::Aborted(Some(frame)) => assert_eq!(frame.code, 1013),
            other => panic!("{other:?}"),
        }
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn close_is_last() {
        let outbox = Outbox::new(1_000);
        outbox.push(text(1)).unwrap();
        assert!(outbox.close(CloseFrame::new(1001, "bye")));
        assert_eq!(outbox.push(text(1)), Err(PushError::Closed));
        assert!(!outbox.close(CloseFrame::new(1000, "again")));
        let mut out = VecDeque::new();
        outbox.next_batch(&mut out).await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], Outbound::Close(CloseFrame::new(1001, "bye")));
    }

    #[tokio::test]
    async fn wakes_a_waiting_writer() {
        let outbox = std::sync::Arc::new(Outbox::new(1_000));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut out = VecDeque::new();
                outbox.next_batch(&mut out).await;
                out
            })
        };
        outbox.push(text(3)).unwrap();
        assert_eq!(writer.await.unwrap(), vec![text(3)]);
    }
}
