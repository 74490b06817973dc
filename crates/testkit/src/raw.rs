//! Raw sockets, for what a normal client cannot do: HTTP requests, a hand-made upgrade,
//! masked frames written byte by byte, server frames parsed, small TCP windows.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::RECV_TIMEOUT;

/// The WebSocket key of RFC 6455 section 1.3 and the accept value the server must answer.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// WebSocket opcodes (RFC 6455 section 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// An HTTP response as read off the socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed), from a plain
/// or a TLS stream.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.unwrap_or_else(|err| {
            panic!(
                "connection ended inside the HTTP response head ({err}): {:?}",
                String::from_utf8_lossy(&head)
            )
        });
        head.push(byte);
        assert!(head.len() < 16 * 1024, "HTTP response head too long");
    }
    let head = String::from_utf8(head).expect("HTTP head is UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Sends a `GET {path}` with `headers` on a new connection and reads the response (head and
/// Content-Length body).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    http_get_on(&mut stream, path, headers).await
}

/// Like [`http_get`], on an open connection (which HTTP/1.1 keeps alive afterwards).
pub async fn http_get_on(
    stream: &mut TcpStream,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let addr = stream.peer_addr().expect("peer address");
    let fut = async {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let (status, headers) = read_head(stream).await;
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.expect("read body");
        HttpResponse {
            status,
            headers,
            body,
        }
    };
    timeout(RECV_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
}

/// The headers of a valid WebSocket upgrade request.
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", WS_KEY),
    ("Sec-WebSocket-Version", "13"),
];

/// Performs the WebSocket upgrade by hand on `stream`; afterwards the caller speaks raw
/// frames (see [`masked_frame`] and [`parse_frames`]).
pub async fn raw_upgrade(mut stream: TcpStream, path: &str) -> TcpStream {
    let addr = stream.peer_addr().expect("peer address");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in UPGRADE_HEADERS {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let fut = async {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write upgrade request");
        let (status, headers) = read_head(&mut stream).await;
        assert_eq!(status, 101, "upgrade refused: {headers:?}");
        let accept = headers
            .iter()
            .find(|(n, _)| n == "sec-websocket-accept")
            .map(|(_, v)| v.as_str());
        assert_eq!(accept, Some(WS_ACCEPT));
    };
    timeout(RECV_TIMEOUT, fut)
        .await
        .expect("raw upgrade timed out");
    stream
}

/// A final (FIN) client frame, masked with `mask` (RFC 6455 section 5.2).
pub fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    masked_fragment(true, opcode, payload, mask)
}

/// A client frame with the FIN bit as given (`opcode` 0 for a continuation), masked.
pub fn masked_fragment(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | (opcode & 0x0F)];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | u8::try_from(len).expect("len < 126"));
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&u64::try_from(len).expect("len fits u64").to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(byte, key)| byte ^ key),
    );
    frame
}

/// A server frame (servers never mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The code and reason of a close frame.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != opcode::CLOSE || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }

    pub fn json(&self) -> Option<Value> {
        (self.opcode == opcode::TEXT)
            .then(|| serde_json::from_slice(&self.payload).ok())
            .flatten()
    }
}

/// Splits the complete (unmasked) frames off the front of `buf`; returns them and how many
/// bytes they used. A trailing partial frame is left.
pub fn parse_frames(buf: &[u8]) -> (Vec<RawFrame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            break;
        }
        let fin = rest[0] & 0x80 != 0;
        let opcode = rest[0] & 0x0F;
        assert_eq!(rest[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match rest[1] & 0x7F {
            126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut len = [0; 8];
                len.copy_from_slice(&rest[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(len)).expect("length"),
                    10,
                )
            }
            126 | 127 => break,
            len => (usize::from(len), 2),
        };
        if rest.len() < header + len {
            break;
        }
        frames.push(RawFrame {
            fin,
            opcode,
            payload: rest[header..header + len].to_vec(),
        });
        at += header + len;
    }
    (frames, at)
}

/// How a raw connection ended when read to the end.
#[derive(Debug)]
pub struct Drained {
    pub bytes: Vec<u8>,
    /// The read error that ended it, if not a clean EOF (e.g. connection reset).
    pub error: Option<std::io::Error>,
}

/// Reads `stream` until EOF or an error, at most `limit`; panics if it is still open then.
pub async fn read_to_end_within(stream: &mut TcpStream, limit: Duration) -> Drained {
    let deadline = Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "the server did not close the connection within {limit:?} ({} bytes read)",
                bytes.len()
            ),
            Ok(Ok(0)) => return Drained { bytes, error: None },
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => {
                return Drained {
                    bytes,
                    error: Some(err),
                };
            }
        }
    }
}

/// Connects with a small TCP segment size and receive buffer, so that little data sits in
/// the kernel's buffers (on either side) when this client stops reading: the server's
/// send buffer is sized from the segment size. For slow-consumer tests.
pub async fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_tcp_mss(1024).expect("TCP_MAXSEG");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    // Loopback: the blocking connect completes at once.
    socket.connect(&addr.into()).expect("connect");
    socket.set_nonblocking(true).expect("non-blocking");
    TcpStream::from_std(socket.into()).expect("tokio stream")
}
