//! permessage-deflate (RFC 7692): negotiation, and the seam to the deflate implementation
//! (flate2 with the zlib-rs backend; nothing else names it).
//!
//! The design costs an idle connection nothing and a broadcast one compression:
//! - Both directions without context takeover (we always answer `server_no_context_takeover;
//!   client_no_context_takeover`): every message is compressed and inflated on its own, so no
//!   connection keeps a deflate or inflate state (zlib with context takeover both ways holds
//!   ~300 KiB per connection). The compressors and inflaters are one per worker thread.
//! - A frame that goes to many connections (a room message: its `Bytes` are shared by every
//!   member's outbox and the history) is compressed once: the first writer that needs it
//!   compresses it and leaves the result in [`FrameCache`]; every other member that
//!   negotiated deflate sends those same bytes. Members without deflate get the plain frame.
//! - Inflating counts against the message size limit: a zip bomb gets close 1009 after at
//!   most `max_message_size + 1` bytes of output.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, OnceLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::{HeaderMap, HeaderValue, header};
use parking_lot::Mutex;

/// The deflate window our inflaters use: the largest, so any client window fits.
const MAX_WINDOW_BITS: u8 = 15;
/// The four octets a sender removes from the end of each compressed message (an empty
/// stored block from the sync flush) and the receiver appends again (RFC 7692 section 7.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Server-wide compression settings (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Offer-answering is on.
    pub(crate) enabled: bool,
    /// Messages shorter than this go uncompressed.
    pub(crate) threshold: usize,
    /// zlib level 0–9.
    pub(crate) level: u8,
}

impl crate::Config {
    /// The compression part of the configuration.
    pub(crate) fn compression_settings(&self) -> Settings {
        Settings {
            enabled: self.compression == crate::CompressionMode::On,
            threshold: self.compression_threshold,
            level: u8::try_from(self.compression_level.min(9)).unwrap_or(9),
        }
    }
}

/// What one connection agreed to: compress outgoing messages of at least `threshold` bytes
/// with a window of at most `2^server_window_bits`, and accept compressed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    server_window_bits: u8,
    level: u8,
    threshold: u32,
}

/// Finds the first `permessage-deflate` offer in the request we can accept and returns the
/// connection's parameters and the `Sec-WebSocket-Extensions` answer. `None`: no offer, or
/// none acceptable (the connection then runs uncompressed), or compression is off.
pub(crate) fn negotiate(headers: &HeaderMap, settings: Settings) -> Option<(Deflate, HeaderValue)> {
    if !settings.enabled {
        return None;
    }
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for offer in offers {
        let mut parts = offer.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        let Some(server_window_bits) = accept(parts) else {
            continue;
        };
        let mut answer = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if let Some(bits) = server_window_bits {
            answer.push_str("; server_max_window_bits=");
            answer.push_str(&bits.to_string());
        }
        let value = HeaderValue::from_str(&answer).ok()?;
        let deflate = Deflate {
            server_window_bits: server_window_bits.unwrap_or(MAX_WINDOW_BITS),
            level: settings.level.min(9),
            threshold: u32::try_from(settings.threshold).unwrap_or(u32::MAX),
        };
        return Some((deflate, value));
    }
    None
}

/// Checks one offer's parameters (RFC 7692 section 7.1): each known parameter at most once,
/// with a valid value. `Some(bits)` accepts it (with the `server_max_window_bits` it asked
/// for, if any); `None` declines it.
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<Option<u8>> {
    let mut seen = [false; 4];
    let mut server_bits = None;
    for param in params.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                // zlib cannot make a raw deflate stream with a 256-byte window (it rounds 8 up
                // to 9): an offer insisting on 8 is declined, as RFC 7692 section 7.1.2.1 allows.
                let bits = window_bits(value?)?;
                server_bits = Some((bits >= 9).then_some(bits)?);
                2
            }
            "client_max_window_bits" => {
                // Without a value: the client may be told a size; we need none (our inflater
                // takes any window). With one: a limit on the client's own window, nothing to do.
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        let slot = seen.get_mut(index)?;
        if *slot {
            return None;
        }
        *slot = true;
    }
    Some(server_bits)
}

fn window_bits(value: &str) -> Option<u8> {
    // 1*DIGIT, no leading zero, 8..=15 (RFC 7692 section 7.1.2).
    (!value.starts_with('0'))
        .then(|| value.parse::<u8>().ok())
        .flatten()
        .filter(|bits| (8..=15).contains(bits))
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InflateError {
    /// The inflated message exceeds the size limit (answered with close 1009).
    #[error("inflated message exceeds {limit} bytes")]
    TooBig { limit: usize },
    /// Not valid deflate data (answered with close 1007).
    #[error("invalid deflate data")]
    Corrupt,
}

impl Deflate {
    /// The bytes to send for `payload` compressed (without the trailing `00 00 ff ff`), or
    /// `None` to send it uncompressed (too short, or incompressible).
    ///
    /// A shared payload (a broadcast: other outboxes and the history hold it too) is looked up
    /// in, and left in, the process's [`FrameCache`]; a payload only this connection holds (a
    /// reply) is compressed directly.
    pub(crate) fn compress(&self, payload: &Bytes) -> Option<Bytes> {
        if payload.len() < self.threshold as usize {
            return None;
        }
        // Our streams never take over context, so a message's back-references reach at most
        // its own length back: compressed with the full window, it is valid for any peer
        // window of at least its length. Only a longer message needs the peer's smaller window.
        let bits = if payload.len() <= 1 << self.server_window_bits {
            MAX_WINDOW_BITS
        } else {
            self.server_window_bits
        };
        if payload.is_unique() {
            return compress_with(self.level, bits, payload);
        }
        FRAMES.get(payload, self.level, bits)
    }
}

/// Inflates one message (RFC 7692 section 7.2.2) with this thread's inflater; at most
/// `limit` bytes of output.
pub(crate) fn inflate(payload: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    thread_local! {
        static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    }
    INFLATER.with_borrow_mut(|slot| {
        let inflater =
            slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, MAX_WINDOW_BITS));
        inflater.reset(false);
        let result = inflate_with(inflater, payload, limit);
        // The inflater keeps its 32 KiB window allocated between messages: one per thread.
        result
    })
}

fn inflate_with(
    inflater: &mut Decompress,
    payload: &[u8],
    limit: usize,
) -> Result<Bytes, InflateError> {
    // A first guess at the size (text compresses 3–10×), grown as needed up to the limit.
    let mut out: Vec<u8> = Vec::with_capacity(
        payload
            .len()
            .saturating_mul(4)
            .clamp(64, limit.saturating_add(1)),
    );
    for input in [payload, &TAIL[..]] {
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig { limit });
                }
                // Room for one byte past the limit, so that going over it is seen.
                let room = limit.saturating_add(1) - out.len();
                out.reserve(out.len().max(4096).min(room));
            }
            let before_in = inflater.total_in();
            let before_out = out.len();
            let rest = input.get(consumed..).unwrap_or_default();
            let status = inflater
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let read = usize::try_from(inflater.total_in() - before_in).unwrap_or(usize::MAX);
            consumed = consumed.saturating_add(read);
            if out.len() > limit {
                return Err(InflateError::TooBig { limit });
            }
            let progressed = read > 0 || out.len() > before_out;
            let input_done = consumed >= input.len();
            match status {
                // The peer ended the deflate stream (a final block): nothing may follow.
                Status::StreamEnd => return Ok(Bytes::from(out)),
                _ if input_done && out.len() < out.capacity() => break,
                _ if !progressed && out.len() < out.capacity() => {
                    return Err(InflateError::Corrupt);
                }
                _ => {}
            }
        }
    }
    Ok(Bytes::from(out))
}

/// Compresses `input` on its own (no context before or after) with this thread's compressor
/// for `(level, bits)`. `None` when the result would not be shorter than the input.
fn compress_with(level: u8, bits: u8, input: &[u8]) -> Option<Bytes> {
    thread_local! {
        // One per (level, window) in use on this thread: in practice one or two (browsers and
        // `ws` leave the window at 15; Python `websockets` asks for 12).
        static COMPRESSORS: RefCell<Vec<(u8, u8, Compress)>> = const { RefCell::new(Vec::new()) };
    }
    COMPRESSORS.with_borrow_mut(|compressors| {
        let index = match compressors
            .iter()
            .position(|(l, b, _)| (*l, *b) == (level, bits))
        {
            Some(index) => index,
            None => {
                let compress =
                    Compress::new_with_window_bits(Compression::new(level.into()), false, bits);
                compressors.push((level, bits, compress));
                compressors.len() - 1
            }
        };
        let (_, _, compressor) = compressors.get_mut(index)?;
        compressor.reset();
        // Worth sending compressed only if shorter; the sync flush adds the 4-byte tail (and
        // up to a few bytes of block end) that is then cut off.
        let mut out = Vec::with_capacity(input.len() + 8);
        let status = compressor
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .ok()?;
        let complete = status == Status::Ok
            && compressor.total_in() == input.len() as u64
            && out.len() < out.capacity();
        if !complete || !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < input.len()).then(|| Bytes::from(out))
    })
}

/// Compressed forms of recently broadcast frames, keyed by the identity of the shared payload
/// (its address and length) and the window/level they were made for.
///
/// An entry holds a reference to the payload it was made from, so that address cannot be
/// reused by another message while the entry lives: identity implies equal content. Entries
/// leave in insertion order once the cache holds [`FrameCache::MAX_ENTRIES`] of them or pins
/// more than [`FrameCache::MAX_BYTES`] of payloads; a member whose writer reaches a frame
/// after that (far behind) compresses it again, which costs CPU, never correctness.
#[derive(Debug, Default)]
pub(crate) struct FrameCache {
    inner: Mutex<CacheState>,
}

type Key = (usize, usize, u8, u8);
type Slot = Arc<OnceLock<Option<Bytes>>>;

#[derive(Debug, Default)]
struct CacheState {
    map: HashMap<Key, Slot>,
    order: VecDeque<(Key, Bytes)>,
    pinned: usize,
}

static FRAMES: LazyLock<FrameCache> = LazyLock::new(FrameCache::default);

impl FrameCache {
    /// Frames in flight to many connections at once: a few hundred rooms publishing.
    const MAX_ENTRIES: usize = 1024;
    /// Payload bytes the cache may keep alive (beyond what outboxes hold anyway).
    const MAX_BYTES: usize = 8 * 1024 * 1024;

    fn get(&self, payload: &Bytes, level: u8, bits: u8) -> Option<Bytes> {
        let key = (payload.as_ptr() as usize, payload.len(), level, bits);
        let slot = {
            let mut state = self.inner.lock();
            if let Some(slot) = state.map.get(&key) {
                slot.clone()
            } else {
                let slot = Slot::default();
                state.map.insert(key, slot.clone());
                state.order.push_back((key, payload.clone()));
                state.pinned += payload.len();
                while state.order.len() > Self::MAX_ENTRIES || state.pinned > Self::MAX_BYTES {
                    let Some((old, bytes)) = state.order.pop_front() else {
                        break;
                    };
                    state.map.remove(&old);
                    state.pinned -= bytes.len();
                }
                slot
            }
        };
        // Compressed outside the lock; a writer on another thread that wants the same frame
        // meanwhile waits for this one result instead of compressing it a second time.
        slot.get_or_init(|| compress_with(level, bits, payload))
            .clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &'static str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(value),
        );
        let settings = Settings {
            enabled: true,
            threshold: 0,
            level: 1,
        };
        negotiate(&headers, settings).map(|(_, answer)| answer.to_str().unwrap().to_owned())
    }

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn answers_what_browsers_and_common_clients_offer() {
        // Chromium, Firefox and Safari; `ws` (Node); Python `websockets` (its defaults).
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits").as_deref(),
            Some(BOTH)
        );
        assert_eq!(offer("permessage-deflate").as_deref(), Some(BOTH));
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
                .unwrap(),
            format!("{BOTH}; server_max_window_bits=12")
        );
        assert_eq!(
            offer("permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9").unwrap(),
            format!("{BOTH}; server_max_window_bits=9")
        );
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=\"10\"").unwrap(),
            format!("{BOTH}; server_max_window_bits=10")
        );
    }

    #[test]
    fn declines_bad_offers_and_takes_the_next() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
            "x-webkit-deflate-frame",
            // zlib cannot honour a 256-byte window.
            "permessage-deflate; server_max_window_bits=8",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9")
                .unwrap(),
            format!("{BOTH}; server_max_window_bits=9")
        );
        assert_eq!(offer("foo, permessage-deflate").as_deref(), Some(BOTH));
    }

    #[test]
    fn off_means_no_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate"),
        );
        let off = Settings {
            enabled: false,
            threshold: 0,
            level: 1,
        };
        assert!(negotiate(&headers, off).is_none());
    }

    fn json(n: usize) -> Bytes {
        let item =
            r#"{"type":"message","room":"lobby","from":"alice","data":{"price":101.25,"qty":3}},"#;
        Bytes::from(item.repeat(n / item.len() + 1).into_bytes())
    }

    #[test]
    fn compresses_and_inflates_round_trip() {
        let deflate = Deflate {
            server_window_bits: 15,
            level: 1,
            threshold: 64,
        };
        let plain = json(1024);
        let packed = deflate.compress(&plain).unwrap();
        assert!(
            packed.len() * 3 < plain.len(),
            "{} of {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(inflate(&packed, plain.len()).unwrap(), plain);
        // Short messages stay plain.
        assert_eq!(
            deflate.compress(&Bytes::from_static(b"{\"type\":\"pong\"}")),
            None
        );
        // Incompressible data stays plain.
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        assert_eq!(deflate.compress(&Bytes::from(noise)), None);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        // A zip bomb: 16 MiB of zeros in about 16 KiB.
        let bomb = compress_with(9, 15, &vec![0u8; 16 << 20]).unwrap();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        assert_eq!(
            inflate(&bomb, 64 * 1024),
            Err(InflateError::TooBig { limit: 64 * 1024 })
        );
        assert_eq!(inflate(&bomb, 16 << 20).unwrap().len(), 16 << 20);
        assert_eq!(
            inflate(b"\xff\xff\xff\xff", 1024),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn a_shared_frame_is_compressed_once() {
        let deflate = Deflate {
            server_window_bits: 15,
            level: 1,
            threshold: 64,
        };
        let plain = json(1024);
        let held_by_another_outbox = plain.clone();
        let before = FRAMES.len();
        let first = deflate.compress(&plain).unwrap();
        let second = deflate.compress(&held_by_another_outbox).unwrap();
        // The very same bytes (one allocation), not an equal copy.
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert!(FRAMES.len() > before);
    }

    #[test]
    fn a_small_window_gets_its_own_compression_only_for_long_messages() {
        let narrow = Deflate {
            server_window_bits: 9,
            level: 1,
            threshold: 64,
        };
        // 400 bytes fit a 512-byte window: the full-window compression is valid as it is.
        let short = json(400);
        let short = short.slice(..400);
        let packed = narrow.compress(&short).unwrap();
        assert_eq!(packed, compress_with(1, 15, &short).unwrap());
        // 4 KiB do not: compressed with the 512-byte window.
        let long = json(4096);
        let packed = narrow.compress(&long).unwrap();
        assert_eq!(packed, compress_with(1, 9, &long).unwrap());
        let mut small_window = Decompress::new_with_window_bits(false, 9);
        assert_eq!(
            inflate_with(&mut small_window, &packed, 1 << 20).unwrap(),
            long
        );
    }
}
