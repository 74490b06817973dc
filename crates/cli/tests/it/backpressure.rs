// Tests fail loudly by design: unwrapping and indexing are the point of an assertion here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Backpressure at scale against the real binary (docs/security.md "Slow consumers"): 1,000
//! subscribers that read and one raw client that joined and stopped reading share a room; a
//! publisher sends 5,000 messages of 512 bytes. Every subscriber gets all 5,000 in order, the
//! stalled client is disconnected, and the server's resident memory stays bounded.
//!
//! The server runs as its own process so that its memory (VmRSS/VmHWM in /proc/PID/status)
//! is its own. The publisher paces itself by the subscribers: a burst of 100 messages, then it
//! waits until every subscriber has the last one (no wall-clock pacing, no speed assertions).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use testkit::Serve;

use crate::BIN;

const SUBSCRIBERS: usize = 1_000;
const MESSAGES: u64 = 5_000;
const PAYLOAD: usize = 512;
/// Messages per burst; the publisher then waits for every subscriber to have the last one.
const BURST: u64 = 100;
const OUTBOX_BYTES: usize = 256 * 1024;
const ROOM: &str = "bp";
/// Bound on any single wait (a connect, a burst reaching everyone, the stalled client's end).
const WAIT: Duration = Duration::from_secs(30);

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(server: &Serve, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
}

/// CPU time (user + system) the server has used so far.
fn cpu_time(server: &Serve) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
        .expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses): state is field 3, utime 14,
    // stime 15, in clock ticks (100 per second on Linux).
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Resets the peak RSS (VmHWM) to the current RSS; false if the kernel refuses.
fn reset_peak(server: &Serve) -> bool {
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").is_ok()
}

type Ws = WebSocketStream<TcpStream>;

async fn ws_connect(addr: std::net::SocketAddr, user: &str) -> Ws {
    let url = format!("ws://{addr}/ws?user={user}");
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        ClientBuilder::new()
            .uri(&url)
            .unwrap()
            .connect_on(tcp)
            .await
    };
    timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("connecting {url} timed out"))
        .unwrap_or_else(|err| panic!("connecting {url} failed: {err}"))
        .0
}

/// Joins `ROOM` and waits for `joined` (skipping anything else, e.g. presence).
async fn join(ws: &mut Ws) {
    let join = format!(r#"{{"type":"join","room":"{ROOM}","id":1}}"#);
    ws.send(Message::text(join)).await.unwrap();
    loop {
        let message = timeout(WAIT, ws.next())
            .await
            .expect("no joined reply")
            .expect("stream ended before joined")
            .expect("read failed before joined");
        if message
            .as_text()
            .is_some_and(|t| t.contains(r#""type":"joined""#))
        {
            return;
        }
    }
}

/// The payload of message number `index` (0-based): its number, then padding to 512 bytes.
fn payload(index: u64) -> String {
    format!("{index:06}{}", "x".repeat(PAYLOAD - 6))
}

/// How every delivered message starts (the server's field order: type, room, from, data).
const MESSAGE_HEAD: &str = r#"{"type":"message","room":"bp","from":"pub","data":""#;

/// The `seq` of a `message` frame's text after checking its content against what was
/// published as that seq; `Ok(None)` for any other frame. Cheap: 5 million of these run.
fn check_message(text: &str, padding: &str) -> Result<Option<u64>, String> {
    let Some(data) = text.strip_prefix(MESSAGE_HEAD) else {
        return if text.contains(r#""type":"message""#) {
            Err(format!(
                "unexpected message {}",
                &text[..text.len().min(120)]
            ))
        } else {
            Ok(None)
        };
    };
    let bad = || format!("malformed message {}", &text[..text.len().min(120)]);
    let index: u64 = data.get(..6).and_then(|d| d.parse().ok()).ok_or_else(bad)?;
    if data.get(6..PAYLOAD) != Some(padding) {
        return Err(bad());
    }
    let rest = data
        .get(PAYLOAD..)
        .and_then(|r| r.strip_prefix(r#"","seq":"#))
        .ok_or_else(bad)?;
    let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let seq: u64 = rest[..end].parse().map_err(|_| bad())?;
    if seq != index + 1 {
        return Err(format!("seq {seq} carries the data of message {index}"));
    }
    Ok(Some(seq))
}

enum Event {
    /// Subscriber `index` has received seq `seq` (sent at each burst boundary).
    Reached,
    Failed(usize, String),
}

/// Reads every frame; checks that messages arrive gapless and in order with the right
/// content; reports each burst boundary.
async fn subscriber(index: usize, mut ws: Ws, events: mpsc::UnboundedSender<Event>) {
    let mut expected = 1;
    let padding = "x".repeat(PAYLOAD - 6);
    let result: Result<(), String> = async {
        while expected <= MESSAGES {
            let message = timeout(WAIT, ws.next())
                .await
                .map_err(|_| format!("nothing for {WAIT:?} while waiting for seq {expected}"))?
                .ok_or_else(|| format!("stream ended before seq {expected}"))?
                .map_err(|err| format!("read failed before seq {expected}: {err}"))?;
            let Some(text) = message.as_text() else {
                if message.is_close() {
                    return Err(format!("closed before seq {expected}: {message:?}"));
                }
                continue;
            };
            let Some(seq) = check_message(text, &padding)? else {
                continue;
            };
            if seq != expected {
                return Err(format!("got seq {seq}, expected {expected}"));
            }
            if seq % BURST == 0 {
                let _ = events.send(Event::Reached);
            }
            expected += 1;
        }
        Ok(())
    }
    .await;
    if let Err(err) = result {
        let _ = events.send(Event::Failed(index, err));
    }
    // Keep reading (answering pings) until the test ends and drops the runtime.
    while let Some(Ok(_)) = ws.next().await {}
}

/// The raw client that joins and then never reads: a small receive buffer, so the kernel
/// holds little for it and the server's outbox for it fills.
async fn stalled_client(addr: std::net::SocketAddr) -> TcpStream {
    // A small MSS also keeps the server's send buffer small: Linux sizes it from the
    // connection's segment size (2 × 10 segments to start with); with loopback's 64 KiB
    // segments it would hold megabytes, the whole stream of this test.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_tcp_mss(1024).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    // Loopback: the blocking connect completes at once.
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = TcpStream::from_std(socket.into()).unwrap();
    let request = format!(
        "GET /ws?user=stalled HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let join = format!(r#"{{"type":"join","room":"{ROOM}","id":1}}"#);
    stream
        .write_all(&masked_text(join.as_bytes()))
        .await
        .unwrap();
    // Read until the joined reply, then never again until the end of the test.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(r#""type":"joined""#) {
        let mut chunk = [0; 512];
        let n = timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("no joined for the stalled client")
            .unwrap();
        assert_ne!(n, 0, "stalled client closed before joined");
        seen.extend_from_slice(&chunk[..n]);
    }
    stream
}

/// A masked final text frame (payload < 126 bytes).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![
        0x81,
        0x80 | u8::try_from(payload.len()).unwrap(),
        0x11,
        0x22,
        0x33,
        0x44,
    ];
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Server frames (unmasked) split off `buf`: (opcode, payload); a trailing partial frame is
/// ignored.
fn server_frames(buf: &[u8]) -> Vec<(u8, &[u8])> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 2 {
        let opcode = buf[at] & 0x0F;
        let (len, header) = match buf[at + 1] & 0x7F {
            126 if buf.len() >= at + 4 => (
                usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])),
                4,
            ),
            127 if buf.len() >= at + 10 => (
                usize::try_from(u64::from_be_bytes(buf[at + 2..at + 10].try_into().unwrap()))
                    .unwrap(),
                10,
            ),
            126 | 127 => break,
            len => (usize::from(len), 2),
        };
        if buf.len() < at + header + len {
            break;
        }
        frames.push((opcode, &buf[at + header..at + header + len]));
        at += header + len;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_cut_off_while_1000_subscribers_get_all_5000_in_bounded_memory() {
    let started = Instant::now();
    let outbox = OUTBOX_BYTES.to_string();
    let server = Serve::start(
        BIN,
        &[
            "--outbox-bytes",
            &outbox,
            // 1,002 connections from one address in a few seconds (default: 50/s, burst 100).
            "--ip-connect-rate",
            "100000",
            "--ip-connect-burst",
            "100000",
            // ... held open at once (default per address: a quarter of max_connections, <= 1,000).
            "--max-connections-per-ip",
            "100000",
            // The publisher sends bursts of 100 (default: 30/s, burst 60).
            "--rate-limit",
            "100000",
            "--rate-burst",
            "100000",
            "--log",
            "warn",
        ],
    );
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();

    let mut stalled = stalled_client(addr).await;

    // Subscribers share one user name, so presence does not fan out 1,000 × 1,000 events.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(SUBSCRIBERS);
    for chunk in 0..SUBSCRIBERS / 50 {
        let connecting = (0..50).map(|_| async {
            let mut ws = ws_connect(addr, "sub").await;
            join(&mut ws).await;
            ws
        });
        for (i, ws) in futures_util::future::join_all(connecting)
            .await
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(subscriber(
                chunk * 50 + i,
                ws,
                events_tx.clone(),
            )));
        }
    }
    drop(events_tx);
    let mut publisher = ws_connect(addr, "pub").await;
    join(&mut publisher).await;
    let connected = started.elapsed();

    // Memory from here on: everything is connected and joined.
    let peak_reset = reset_peak(&server);
    let baseline_kib = status_kib(&server, "VmRSS");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampled_peak = Arc::new(AtomicU64::new(baseline_kib));
    let sampler = {
        let (sampling, sampled_peak) = (sampling.clone(), sampled_peak.clone());
        let pid = server.pid();
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    sampled_peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut published = 0;
    while published < MESSAGES {
        for _ in 0..BURST {
            let publish = format!(
                r#"{{"type":"publish","room":"{ROOM}","data":"{}"}}"#,
                payload(published)
            );
            publisher.feed(Message::text(publish)).await.unwrap();
            published += 1;
        }
        publisher.flush().await.unwrap();
        // Wait until every subscriber has the burst's last message.
        let mut reached = 0;
        while reached < SUBSCRIBERS {
            match timeout(WAIT, events.recv()).await {
                Ok(Some(Event::Reached)) => reached += 1,
                Ok(Some(Event::Failed(index, err))) => panic!("subscriber {index}: {err}"),
                Ok(None) => panic!("every subscriber task ended"),
                Err(_) => panic!(
                    "only {reached} of {SUBSCRIBERS} subscribers got seq {published} within {WAIT:?}"
                ),
            }
        }
    }
    let delivered = started.elapsed();
    let server_cpu = cpu_time(&server);
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_kib = if peak_reset {
        status_kib(&server, "VmHWM")
    } else {
        sampled_peak.load(Ordering::Relaxed)
    };

    // The stalled client: what the kernel held for it, then the end of the connection.
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let ended = loop {
        match timeout(WAIT, stalled.read(&mut chunk)).await {
            Err(_) => panic!(
                "the stalled client was not disconnected ({} bytes read, still open after {WAIT:?})",
                bytes.len()
            ),
            Ok(Ok(0)) => break "EOF".to_owned(),
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => break err.to_string(),
        }
    };
    let frames = server_frames(&bytes);
    let mut seqs = Vec::new();
    let mut close = None;
    for (opcode, payload) in &frames {
        match opcode {
            0x1 => {
                let text = std::str::from_utf8(payload).unwrap();
                if let Some(seq) = check_message(text, &"x".repeat(PAYLOAD - 6)).unwrap() {
                    seqs.push(seq);
                }
            }
            0x8 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
            _ => {}
        }
    }
    let received = u64::try_from(seqs.len()).unwrap();
    // Memory. What may legitimately grow while publishing:
    // - the stalled client's outbox: at most OUTBOX_BYTES (payload bytes + 64 per frame),
    //   counted twice for allocator slack;
    // - per connection, codec read/write buffers and queue entries for at most one burst in
    //   flight (100 frames of ~600 bytes): 64 KiB × 1,002 connections;
    // - 16 MiB for history (100 × 600 B), tasks, allocator fragmentation.
    // Unbounded buffering (a copy per subscriber of 5,000 × 512 B) would be ~2.5 GB; holding
    // the stalled client's whole stream would stay within this bound only because frames are
    // shared, which is why the stalled client's disconnection is asserted above.
    let connections = u64::try_from(SUBSCRIBERS).unwrap() + 2;
    let bound_kib = 2 * u64::try_from(OUTBOX_BYTES).unwrap() / 1024 + connections * 64 + 16 * 1024;
    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    eprintln!(
        "backpressure: connected in {connected:?}, delivered in {:?}; server RSS baseline {} MiB, \
         peak {} MiB (growth {} KiB, bound {} KiB, peak via {}); stalled client got {received} \
         of {MESSAGES} then {ended} (close {close:?}); server CPU {server_cpu:?}",
        delivered - connected,
        baseline_kib / 1024,
        peak_kib / 1024,
        growth_kib,
        bound_kib,
        if peak_reset { "VmHWM" } else { "sampling" },
    );
    assert!(
        seqs.iter().copied().eq(1..=received),
        "the stalled client's messages are not a gapless prefix: {:?}…",
        &seqs[..seqs.len().min(20)]
    );
    assert!(
        received < MESSAGES,
        "the stalled client received everything: nothing was bounded"
    );
    // The close frame is best effort (its socket is full); if it got through it says 1013.
    assert!(matches!(close, None | Some(1013)), "close code {close:?}");

    assert!(
        growth_kib < bound_kib,
        "server RSS grew by {growth_kib} KiB (baseline {baseline_kib} KiB), bound {bound_kib} KiB"
    );
    for task in tasks {
        task.abort();
    }
}
