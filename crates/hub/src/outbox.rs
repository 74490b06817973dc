//! The per-connection outbound queue.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::delivery::{BatchDone, Sequenced, Tally};

/// Bytes charged per queued frame on top of its payload, so that a flood of tiny frames is
/// bounded too (roughly the frame header, the queue slot and the shared buffer's bookkeeping).
const FRAME_OVERHEAD: usize = 64;

/// Pongs that may wait in an outbox before a newer ping's payload replaces the newest one's
/// instead of adding another: a burst of pings from a live peer is answered ping for ping
/// (Autobahn|Testsuite 2.10 sends ten at once), one that pings and never reads holds 16 pongs
/// (3 KiB), not one per ping.
const MAX_WAITING_PONGS: usize = 16;

/// What an outbox may hold (queued plus the batch being written) before it draws on the
/// server-wide [`OutboxPool`]. A reader that keeps up never holds more (a burst of a hundred
/// 100-byte frames is 16 KiB with overhead), so fan-out to healthy connections never touches
/// the shared counter; 16 KiB × the connection count is part of each connection's baseline.
pub const POOL_ALLOWANCE: usize = 16 * 1024;

/// [`Outbox::replay_budget`] of an outbox of `budget` bytes: half of it.
pub fn replay_budget(budget: usize) -> usize {
    budget / 2
}

/// Beyond the allowance, pool credit is drawn and returned in steps of this size: one
/// atomic operation per 64 KiB of backlog, not one per frame.
const POOL_GRANULE: usize = 64 * 1024;

/// The server-wide budget of bytes waiting in outboxes (queued or being written) beyond each
/// outbox's [`POOL_ALLOWANCE`]. An outbox that needs credit the pool does not have is closed
/// as a slow consumer (1013): the connections that fall behind pay, not the ones that read.
#[derive(Debug)]
pub struct OutboxPool {
    limit: usize,
    used: AtomicUsize,
}

impl OutboxPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes of credit currently drawn by outboxes.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The pool's size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn reserve(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(bytes).filter(|n| *n <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => used = actual,
            }
        }
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

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
    /// A WebSocket pong answering the peer's ping (at most one waits: see [`Outbox::pong`]).
    Pong(Bytes),
    /// The last frame: a graceful close. Nothing is queued after it.
    Close(CloseFrame),
}

impl Outbound {
    /// What the frame counts against an outbox's budget.
    pub fn cost(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Self::Text(b) | Self::Binary(b) | Self::Pong(b) => b.len(),
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
    /// The frame would exceed the byte budget (the outbox's own, or the server-wide pool):
    /// the outbox has been aborted (slow consumer).
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
    /// Bytes of the batch the writer took and has not finished writing.
    in_flight: usize,
    /// Credit drawn from the pool (a multiple of the granule).
    reserved: usize,
    /// Where the newest queued, not yet taken pong is, and how many are queued: past
    /// [`MAX_WAITING_PONGS`] a newer ping replaces the newest one's payload.
    pong: Option<usize>,
    pongs: usize,
    /// Messages queued since the writer last took a batch, and those of the batch it took
    /// (for the writer's per-batch accounting: see [`Outbox::batch_written`]).
    tally: Tally,
    in_flight_tally: Tally,
    /// A graceful close has been queued; later pushes are refused.
    closing: bool,
    /// The close frame to send when aborted (if any).
    abort: Option<Option<CloseFrame>>,
}

/// What is being pushed, beyond the frame itself.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Plain,
    /// A pong (at most [`MAX_WAITING_PONGS`] wait).
    Pong,
    /// A room message, counted for the writer (with when it was sequenced, if live).
    Message(Option<Sequenced>),
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
    pool: Option<Arc<OutboxPool>>,
}

impl Outbox {
    /// An empty outbox that holds at most `budget` bytes (payloads plus per-frame overhead).
    pub fn new(budget: usize) -> Self {
        Self::pooled(budget, None)
    }

    /// Like [`Outbox::new`], and what it holds beyond [`POOL_ALLOWANCE`] is drawn from `pool`.
    pub fn pooled(budget: usize, pool: Option<Arc<OutboxPool>>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            aborted: AtomicBool::new(false),
            abort_wake: Notify::new(),
            budget,
            pool,
        }
    }

    /// Queues a frame. Never blocks. Over budget, the outbox aborts itself with close 1013
    /// ("slow consumer") and the frame is refused.
    pub fn push(&self, frame: Outbound) -> Result<(), PushError> {
        let state = self.state.lock();
        self.push_locked(state, frame, Kind::Plain)
    }

    /// Queues a message frame (a room's `message`, JSON or binary), like [`Outbox::push`],
    /// and counts it for the writer's per-batch accounting; `sequenced` is when a live message
    /// was sequenced (`None` for a replayed one). Costs an increment under the lock `push`
    /// takes anyway: nothing shared per delivery.
    pub fn push_message(
        &self,
        frame: Outbound,
        sequenced: Option<Sequenced>,
    ) -> Result<(), PushError> {
        let state = self.state.lock();
        self.push_locked(state, frame, Kind::Message(sequenced))
    }

    /// Queues a pong answering the peer's latest ping. With [`MAX_WAITING_PONGS`] already
    /// waiting, the newest of them takes the newer payload instead (RFC 6455 §5.5.3 allows
    /// answering only the most recent ping): a peer that pings and never reads holds a few
    /// pongs here, not one per ping.
    pub fn pong(&self, payload: Bytes) -> Result<(), PushError> {
        let mut state = self.state.lock();
        if state.closing || state.abort.is_some() {
            return Err(PushError::Closed);
        }
        let at = state.pong.filter(|_| state.pongs >= MAX_WAITING_PONGS);
        if let Some(Outbound::Pong(queued)) = at.and_then(|i| state.queue.get_mut(i)) {
            let old = queued.len();
            *queued = payload;
            let new = queued.len();
            // A pong payload is at most 125 bytes: the change stays within the slack every
            // budget check leaves, so it is accounted without a new check.
            state.bytes = (state.bytes + new).saturating_sub(old);
            return Ok(());
        }
        self.push_locked(state, Outbound::Pong(payload), Kind::Pong)
    }

    fn push_locked(
        &self,
        mut state: parking_lot::MutexGuard<'_, State>,
        frame: Outbound,
        kind: Kind,
    ) -> Result<(), PushError> {
        if state.closing || state.abort.is_some() {
            return Err(PushError::Closed);
        }
        let cost = frame.cost();
        if state.bytes + cost > self.budget || !self.draw(&mut state, cost) {
            state.queue = VecDeque::new();
            state.bytes = 0;
            state.pong = None;
            state.pongs = 0;
            state.tally = Tally::default();
            self.return_all(&mut state);
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
        match kind {
            Kind::Plain => {}
            Kind::Pong => {
                state.pong = Some(state.queue.len());
                state.pongs += 1;
            }
            Kind::Message(sequenced) => state.tally.add(sequenced),
        }
        state.queue.push_back(frame);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Draws pool credit so that `extra` more bytes are covered; false when the pool is spent.
    fn draw(&self, state: &mut State, extra: usize) -> bool {
        let Some(pool) = &self.pool else {
            return true;
        };
        let need = state.bytes + state.in_flight + extra;
        let covered = POOL_ALLOWANCE + state.reserved;
        if need <= covered {
            return true;
        }
        let more = (need - covered).next_multiple_of(POOL_GRANULE);
        if !pool.reserve(more) {
            return false;
        }
        state.reserved += more;
        true
    }

    /// Returns the credit no longer needed (after a batch was taken or written).
    fn settle(&self, state: &mut State) {
        let Some(pool) = &self.pool else {
            return;
        };
        let keep = (state.bytes + state.in_flight)
            .saturating_sub(POOL_ALLOWANCE)
            .next_multiple_of(POOL_GRANULE);
        if state.reserved > keep {
            pool.release(state.reserved - keep);
            state.reserved = keep;
        }
    }

    fn return_all(&self, state: &mut State) {
        if let Some(pool) = &self.pool {
            pool.release(state.reserved);
        }
        state.reserved = 0;
        state.in_flight = 0;
        state.in_flight_tally = Tally::default();
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
            state.pong = None;
            state.pongs = 0;
            state.tally = Tally::default();
            self.return_all(&mut state);
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
        // Taking a batch means the previous one was written: its bytes leave, these arrive.
        state.in_flight = state.bytes;
        state.bytes = 0;
        let tally = std::mem::take(&mut state.tally);
        state.in_flight_tally.merge(tally);
        state.pong = None;
        state.pongs = 0;
        self.settle(&mut state);
        // A burst may have grown the buffer it got back; an idle connection should not keep it.
        if state.queue.capacity() > 64 {
            state.queue = VecDeque::new();
        }
        Some(Batch::Frames)
    }

    /// The writer has written the batch it took: its bytes no longer count. Returns whether
    /// nothing is queued, and the messages the batch carried (for the writer to count once
    /// per batch).
    pub fn batch_written(&self) -> BatchDone {
        let mut state = self.state.lock();
        state.in_flight = 0;
        self.settle(&mut state);
        let tally = std::mem::take(&mut state.in_flight_tally);
        BatchDone {
            idle: state.queue.is_empty(),
            messages: tally.messages,
            oldest: tally.oldest(),
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.state.lock().queue.is_empty()
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes one reply that queues many frames at once may take: a recovery replay, a
    /// `history` reply, the frames buffered for a joiner waiting for its snapshot. Half the
    /// budget, so that such a reply never itself makes the member a slow consumer.
    pub fn replay_budget(&self) -> usize {
        replay_budget(self.budget)
    }

    /// Bytes currently queued (payloads plus per-frame overhead).
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        if let Some(pool) = &self.pool {
            pool.release(state.reserved);
        }
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

    #[tokio::test]
    async fn a_waiting_pong_takes_the_latest_payload() {
        let outbox = Outbox::new(10_000);
        for i in 0..1_000u32 {
            outbox.pong(Bytes::from(format!("{i:03}"))).unwrap();
        }
        assert_eq!(
            outbox.queued_bytes(),
            MAX_WAITING_PONGS * (FRAME_OVERHEAD + 3)
        );
        let mut out = VecDeque::new();
        outbox.next_batch(&mut out).await;
        let mut expected: Vec<Outbound> = (0..MAX_WAITING_PONGS - 1)
            .map(|i| Outbound::Pong(Bytes::from(format!("{i:03}"))))
            .collect();
        expected.push(Outbound::Pong(Bytes::from("999")));
        assert_eq!(out, expected);
        // Once taken, the next ping gets a pong of its own, after what is queued.
        outbox.push(text(1)).unwrap();
        outbox.pong(Bytes::from("a")).unwrap();
        out.clear();
        outbox.next_batch(&mut out).await;
        assert_eq!(out, [text(1), Outbound::Pong(Bytes::from("a"))]);
    }

    #[tokio::test]
    async fn a_written_batch_reports_its_messages_and_the_oldest_stamp() {
        let outbox = Outbox::new(10_000);
        outbox.push(text(1)).unwrap();
        outbox.push_message(text(2), Some(Sequenced(7))).unwrap();
        outbox.push_message(text(3), None).unwrap();
        outbox.push_message(text(4), Some(Sequenced(9))).unwrap();
        let mut out = VecDeque::new();
        outbox.next_batch(&mut out).await;
        // Queued after the batch was taken: the next batch's.
        outbox.push_message(text(5), Some(Sequenced(11))).unwrap();
        let done = outbox.batch_written();
        assert_eq!(
            done,
            BatchDone {
                idle: false,
                messages: 3,
                oldest: Some(Sequenced(7))
            }
        );
        out.clear();
        outbox.next_batch(&mut out).await;
        let done = outbox.batch_written();
        assert_eq!(
            (done.idle, done.messages, done.oldest),
            (true, 1, Some(Sequenced(11)))
        );
        // Nothing written, nothing counted.
        assert_eq!(outbox.batch_written().messages, 0);
        outbox.push_message(text(6), None).unwrap();
        outbox.abort(None);
        assert_eq!(
            outbox.batch_written().messages,
            0,
            "an aborted outbox delivered nothing"
        );
    }

    #[tokio::test]
    async fn the_pool_is_drawn_beyond_the_allowance_and_returned() {
        let pool = OutboxPool::new(3 * POOL_GRANULE);
        let a = Outbox::pooled(1 << 30, Some(pool.clone()));
        let b = Outbox::pooled(1 << 30, Some(pool.clone()));
        // Within the allowance: the pool is not touched.
        a.push(text(POOL_ALLOWANCE / 2)).unwrap();
        assert_eq!(pool.used(), 0);
        // Beyond it: credit in granules.
        a.push(text(POOL_ALLOWANCE)).unwrap();
        assert_eq!(pool.used(), POOL_GRANULE);
        // The batch being written still counts; once written the credit goes back.
        let mut out = VecDeque::new();
        a.next_batch(&mut out).await;
        assert_eq!(pool.used(), POOL_GRANULE);
        assert!(a.batch_written().idle);
        assert_eq!(pool.used(), 0);
        // A connection that needs more than the pool has is closed as a slow consumer.
        b.push(text(2 * POOL_GRANULE)).unwrap();
        assert_eq!(pool.used(), 2 * POOL_GRANULE);
        assert_eq!(a.push(text(2 * POOL_GRANULE)), Err(PushError::Overflow));
        assert!(a.is_aborted());
        assert_eq!(pool.used(), 2 * POOL_GRANULE);
        drop(b);
        assert_eq!(pool.used(), 0, "a dropped outbox returns its credit");
    }
}
