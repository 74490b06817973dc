//! `switchboard connect URL`: a small wscat-like WebSocket client.
//!
//! Sends stdin lines (or `--execute` messages) as text frames and prints every received frame on
//! stdout, one per line. Diagnostics go to stderr. Exit code 0 on a normal end (our own close, the
//! `--wait` time elapsed, the server closed with 1000/1001), 1 otherwise.
//!
//! Lines starting with `/` are commands (`/ping`, `/close CODE REASON`, `/binary HEX`). A refused
//! upgrade is shown with the server's own reason (its response body, kept by [`Recording`])
//! and a hint from [`crate::refusal`]; tokens in the URL are never printed.

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderName, HeaderValue, Uri};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_websockets::{
    ClientBuilder, CloseCode, Connector, Error as WsError, MaybeTlsStream, Message, upgrade,
};

use crate::refusal::{self, Refusal};

/// How long connecting (TCP + upgrade handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for the server's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `--execute` waits for replies when `--wait` is not given.
const DEFAULT_EXECUTE_WAIT: Duration = Duration::from_secs(2);
/// At most this many bytes of a binary frame are shown in hex.
const BINARY_PREVIEW_BYTES: usize = 64;

/// Arguments of `switchboard connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/ws?user=alice or wss://chat.example.com/ws.
    pub url: String,

    /// PEM file of extra CA certificates to trust for wss:// (e.g. a development CA); the
    /// Mozilla root set is always trusted.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Pretty-print JSON text frames (other text is printed as is).
    #[arg(long)]
    pub pretty: bool,

    /// Send MSG as a text frame instead of reading stdin (repeatable; sent in order).
    #[arg(short = 'x', long = "execute", value_name = "MSG")]
    pub execute: Vec<String>,

    /// Print what arrives for SECS seconds, then close (default 2 with --execute; otherwise run
    /// until stdin ends or the server closes).
    #[arg(short = 'w', long = "wait", value_name = "SECS", value_parser = parse_seconds)]
    pub wait: Option<Duration>,

    /// Extra header for the upgrade request, e.g. "Authorization: Bearer abc" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Send this Origin header, as a browser page at that origin would (e.g.
    /// https://app.example.com), to check the server's --allowed-origin settings.
    #[arg(short = 'o', long, value_name = "URL")]
    pub origin: Option<String>,

    /// Show WebSocket pings and pongs (the server pings every --ping-interval) on stderr.
    #[arg(short = 'P', long)]
    pub show_ping_pong: bool,
}

/// Runs the client; see the module documentation for the exit codes.
pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let uri = parse_ws_url(&args.url)?;
    let shown = redact_url(&args.url);
    let connector = match uri.scheme_str() {
        Some("wss") => tls_connector(args.ca_file.as_deref())?,
        _ => Connector::Plain,
    };
    let mut builder = ClientBuilder::from_uri(uri.clone());
    if let Some(origin) = &args.origin {
        let value = HeaderValue::from_str(origin)
            .with_context(|| format!("invalid --origin {origin:?}"))?;
        builder = builder
            .add_header(http::header::ORIGIN, value)
            .context("cannot send the Origin header")?;
    }
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        builder = builder
            .add_header(name, value)
            .with_context(|| format!("cannot send header {}", redact_header(header)))?;
    }

    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, open(&uri, &connector))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {shown}: timed out"))?
        .map_err(|err| with_transport_hint(err, &uri, &shown))?;
    let handshake = tokio::time::timeout(CONNECT_TIMEOUT, builder.connect_on(&mut stream)).await;
    if let Ok(Err(WsError::Upgrade(upgrade::Error::DidNotSwitchProtocols(status)))) = &handshake {
        let status = *status;
        drop(handshake);
        let refusal = stream.refusal(status).await;
        bail!(
            "cannot connect to {shown}: {}",
            refusal.describe(uri.path())
        );
    }
    let mut ws = match handshake {
        Err(_) => {
            bail!("cannot connect to {shown}: no upgrade response within {CONNECT_TIMEOUT:?}")
        }
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(err)) => {
            return Err(with_transport_hint(
                anyhow::Error::new(err).context("upgrade handshake"),
                &uri,
                &shown,
            ));
        }
    };
    eprintln!("connected to {shown}");

    let mut out = Output::new(args.pretty, args.show_ping_pong);
    for msg in &args.execute {
        match Command::parse(msg) {
            Ok(Some(command)) => {
                if command.send(&mut ws).await? {
                    // Our close was sent: what follows is the server's close frame.
                    return finish_close(&mut ws, &mut out).await;
                }
            }
            Ok(None) => ws
                .send(Message::text(msg.clone()))
                .await
                .context("cannot send message")?,
            Err(err) => bail!("{err}"),
        }
    }
    let wait = match (args.wait, args.execute.is_empty()) {
        (Some(wait), _) => Some(wait),
        (None, false) => Some(DEFAULT_EXECUTE_WAIT),
        (None, true) => None,
    };
    let deadline = wait.map(|wait| Instant::now() + wait);
    let mut stdin = if args.execute.is_empty() {
        Some(spawn_stdin_reader()?)
    } else {
        None
    };

    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(msg)) => {
                    if let Some((code, reason)) = msg.as_close() {
                        let code = u16::from(code);
                        eprintln!("{}", describe_close(code, reason));
                        // Keep polling so that the library flushes its close reply.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.next()).await;
                        return Ok(exit_code_for_close(code));
                    }
                    out.print(&msg).await?;
                }
                Some(Err(err)) => return Err(err).context("connection error"),
                None => bail!("connection closed by the server without a close frame"),
            },
            line = next_line(&mut stdin) => match line {
                Some(Ok(line)) if line.trim().is_empty() => {}
                Some(Ok(line)) => match Command::parse(&line) {
                    // Our own close was sent: wait for the server's close frame below.
                    Ok(Some(command)) => if command.send(&mut ws).await? { return finish_close(&mut ws, &mut out).await },
                    Ok(None) => ws.send(Message::text(line)).await.context("cannot send message")?,
                    // A mistyped command is not fatal in an interactive session.
                    Err(err) => eprintln!("{err}"),
                },
                Some(Err(err)) => return Err(err).context("cannot read stdin"),
                // End of stdin: with --wait keep printing until the deadline, otherwise close now.
                None if deadline.is_some() => stdin = None,
                None => break,
            },
            () = sleep_until(deadline) => break,
        }
    }

    // Our own close: send 1000, keep printing what still arrives until the server's close frame.
    ws.send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
        .await
        .context("cannot send close frame")?;
    finish_close(&mut ws, &mut out).await
}

/// After our close frame: prints what still arrives until the server's close frame.
async fn finish_close<S>(
    ws: &mut tokio_websockets::WebSocketStream<S>,
    out: &mut Output,
) -> anyhow::Result<ExitCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let closing = async {
        while let Some(frame) = ws.next().await {
            let msg = frame.context("connection error while closing")?;
            if msg.is_close() {
                break;
            }
            out.print(&msg).await?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(result) => result?,
        Err(_) => eprintln!("no close frame from the server within {CLOSE_TIMEOUT:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// TCP connect (and the TLS handshake for `wss://`), kept inside a [`Recording`] so that a
/// refused upgrade's response can be shown.
async fn open(
    uri: &Uri,
    connector: &Connector,
) -> anyhow::Result<Recording<MaybeTlsStream<TcpStream>>> {
    let host = uri
        .host()
        .context("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("wss") => 443,
        _ => 80,
    });
    // Nagle stays on, as in the library's own connect: a close typed right after a message
    // then leaves after the server's reply to it has been acknowledged.
    let tcp = TcpStream::connect((host, port)).await?;
    let stream = connector.wrap(host, tcp).await.context("TLS handshake")?;
    Ok(Recording::new(stream))
}

/// Adds `cannot connect to URL` and, for a TLS/plain mismatch, the hint that fixes it.
fn with_transport_hint(err: anyhow::Error, uri: &Uri, shown: &str) -> anyhow::Error {
    let text = format!("{err:#} {err:?}");
    match refusal::transport_hint(uri.scheme_str(), &text) {
        Some(hint) => anyhow::anyhow!(
            "cannot connect to {shown}: {}\nhint: {hint}",
            crate::errors::describe(&err)
        ),
        None => err.context(format!("cannot connect to {shown}")),
    }
}

/// The longest refusal (head and body) kept for display; the server's are a few hundred bytes.
const RECORD_LIMIT: usize = 8 * 1024;

/// A stream that keeps a copy of the first bytes it reads: when the server refuses the
/// upgrade, the WebSocket library reports only the status, and this copy holds the reason.
struct Recording<S> {
    inner: S,
    seen: Vec<u8>,
}

impl<S: tokio::io::AsyncRead + Unpin> Recording<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            seen: Vec::new(),
        }
    }

    /// The refused upgrade: what was read, plus the rest of a short body (read for up to
    /// `REFUSAL_READ_TIMEOUT`; a body may arrive after the head).
    async fn refusal(&mut self, status: u16) -> Refusal {
        use tokio::io::AsyncReadExt as _;
        let read_rest = async {
            let mut buf = [0u8; 1024];
            while !body_complete(&self.seen) && self.seen.len() < RECORD_LIMIT {
                match self.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(REFUSAL_READ_TIMEOUT, read_rest).await;
        Refusal::parse(&self.seen).unwrap_or(Refusal {
            status,
            retry_after: None,
            body: String::new(),
        })
    }
}

/// How long the rest of a refusal's body is waited for.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `seen` holds a head and the whole body its `Content-Length` announces.
fn body_complete(seen: &[u8]) -> bool {
    let text = String::from_utf8_lossy(seen);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    // Without a length (chunked), what arrived with the head is what is shown.
    length.is_none_or(|length| body.len() >= length)
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Recording<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.seen.len() < RECORD_LIMIT {
            let new = buf.filled().get(before..).unwrap_or_default();
            let room = RECORD_LIMIT - this.seen.len();
            this.seen
                .extend_from_slice(new.get(..room.min(new.len())).unwrap_or_default());
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Forwarded so that a frame's header and payload still leave in one write (the default
    // would write them one by one).
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A slash command typed (or given to `-x`) instead of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// `/ping [TEXT]`: a WebSocket ping (the pong is shown with --show-ping-pong).
    Ping(String),
    /// `/close [CODE [REASON]]`: our close frame (default 1000).
    Close(u16, String),
    /// `/binary HEX`: a binary frame.
    Binary(Vec<u8>),
    /// `//text`: a text frame starting with `/`.
    Text(String),
}

/// What slash commands exist, for the error on an unknown one.
const COMMANDS_HELP: &str = "commands: /ping [TEXT], /close [CODE [REASON]], /binary HEX; start a message with // to send a leading /";

impl Command {
    /// `Ok(None)` for a line that is a message, not a command.
    fn parse(line: &str) -> Result<Option<Self>, String> {
        let Some(rest) = line.strip_prefix('/') else {
            return Ok(None);
        };
        if rest.starts_with('/') {
            return Ok(Some(Self::Text(rest.to_owned())));
        }
        let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let arg = arg.trim();
        match name {
            "ping" => Ok(Some(Self::Ping(arg.to_owned()))),
            "close" => {
                let (code, reason) = arg.split_once(' ').unwrap_or((arg, ""));
                let code = if code.is_empty() {
                    1000
                } else {
                    code.parse::<u16>()
                        .ok()
                        .filter(|code| CloseCode::try_from(*code).is_ok_and(|code| !code.is_reserved()))
                        .ok_or_else(|| format!("/close: {code:?} is not a close code a client may send (1000, 1001, 1003, 1007-1011, 3000-4999)"))?
                };
                Ok(Some(Self::Close(code, reason.trim().to_owned())))
            }
            "binary" => {
                let hex: String = arg.split_whitespace().collect();
                decode_hex(&hex)
                    .map(|bytes| Some(Self::Binary(bytes)))
                    .ok_or_else(|| format!("/binary: {hex:?} is not hex (e.g. /binary 00ff10)"))
            }
            _ => Err(format!("unknown command /{name}; {COMMANDS_HELP}")),
        }
    }

    /// Sends it; `true` when it was our close frame.
    async fn send<S>(self, ws: &mut tokio_websockets::WebSocketStream<S>) -> anyhow::Result<bool>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (msg, closing) = match self {
            Self::Ping(text) => (Message::ping(text), false),
            Self::Close(code, reason) => {
                let code = CloseCode::try_from(code).context("close code")?;
                (Message::close(Some(code), &reason), true)
            }
            Self::Binary(bytes) => (Message::binary(bytes), false),
            Self::Text(text) => (Message::text(text), false),
        };
        ws.send(msg).await.context("cannot send message")?;
        Ok(closing)
    }
}

/// `00ff10` → bytes; `None` for odd lengths or non-hex digits.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// The URL as printed: the value of `token=` (and any other credential-like parameter) is
/// replaced, so that terminal logs and screen shares do not leak it.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value))
                if !value.is_empty()
                    && ["token", "access_token", "jwt", "key", "secret", "password"]
                        .contains(&name.to_ascii_lowercase().as_str()) =>
            {
                format!("{name}=[redacted]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// A `--header` as printed: the value of credential headers is replaced.
fn redact_header(header: &str) -> String {
    match header.split_once(':') {
        Some((name, _))
            if ["authorization", "cookie", "proxy-authorization"]
                .contains(&name.trim().to_ascii_lowercase().as_str()) =>
        {
            format!("{name}: [redacted]")
        }
        _ => header.to_owned(),
    }
}

/// Parses the URL and checks its scheme: only `ws://` is supported.
fn parse_ws_url(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    match uri.scheme_str() {
        Some("ws" | "wss") if uri.host().is_some() => Ok(uri),
        Some("ws" | "wss") => bail!("invalid URL {url:?}: no host"),
        _ => bail!("unsupported URL {url:?}: expected ws://HOST[:PORT]/PATH or wss://…"),
    }
}

/// A rustls connector trusting the Mozilla roots plus the certificates in `ca_file`.
fn tls_connector(ca_file: Option<&std::path::Path>) -> anyhow::Result<Connector> {
    Ok(Connector::Rustls(tokio_rustls::TlsConnector::from(
        std::sync::Arc::new(tls_client_config(ca_file)?),
    )))
}

/// A TLS client configuration trusting the Mozilla roots plus the certificates in `ca_file`
/// (also `switchboard top`'s, for `https://`).
pub(crate) fn tls_client_config(
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<tokio_rustls::rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("bad certificate in {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("unusable certificate in {}", path.display()))?;
        }
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Parses a `--header` argument of the form `Name: value`.
fn parse_header(header: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = header.split_once(':') else {
        bail!("invalid header {header:?}: expected \"Name: value\"");
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("invalid header name in {header:?}"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("invalid header value in {header:?}"))?;
    Ok((name, value))
}

/// Parses `--wait`: a non-negative number of seconds, fractions allowed.
fn parse_seconds(secs: &str) -> Result<Duration, String> {
    let secs: f64 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("invalid duration: {err}"))
}

/// The stderr line for a close frame received from the server.
fn describe_close(code: u16, reason: &str) -> String {
    format!("closed by server: {code} {reason}")
        .trim_end()
        .to_owned()
}

/// 0 when the server closed normally (1000) or went away (1001), 1 for any other code.
fn exit_code_for_close(code: u16) -> ExitCode {
    if code == u16::from(CloseCode::NORMAL_CLOSURE) || code == u16::from(CloseCode::GOING_AWAY) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Formats a received data frame for stdout; `None` for control frames.
fn format_message(msg: &Message, pretty: bool) -> Option<String> {
    if let Some(text) = msg.as_text() {
        Some(if pretty {
            pretty_json(text)
        } else {
            text.to_owned()
        })
    } else if msg.is_binary() {
        Some(format_binary(msg.as_payload()))
    } else {
        None
    }
}

/// `< ping (N bytes)` / `< pong (N bytes)` for a received control frame (the client answers
/// pings by itself); `None` for other frames.
fn describe_ping_pong(msg: &Message) -> Option<String> {
    let kind = if msg.is_ping() {
        "ping"
    } else if msg.is_pong() {
        "pong"
    } else {
        return None;
    };
    Some(format!("< {kind} ({} bytes)", msg.as_payload().len()))
}

/// `binary (N bytes): <hex of the first 64 bytes>`, with `…` when bytes were left out.
fn format_binary(bytes: &[u8]) -> String {
    let mut line = format!("binary ({} bytes): ", bytes.len());
    for byte in bytes.iter().take(BINARY_PREVIEW_BYTES) {
        let _ = write!(line, "{byte:02x}");
    }
    if bytes.len() > BINARY_PREVIEW_BYTES {
        line.push('…');
    }
    line
}

/// Pretty-prints JSON text, keeping the key order of the original; non-JSON text is returned as is.
fn pretty_json(text: &str) -> String {
    if serde_json::from_str::<serde_json::Value>(text).is_err() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                if let Some(close) = chars.next_if(|&c| c == '}' || c == ']') {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes received frames to stdout, one per line.
struct Output {
    stdout: tokio::io::Stdout,
    pretty: bool,
    /// `--show-ping-pong`: pings and pongs get a line on stderr.
    ping_pong: bool,
}

impl Output {
    fn new(pretty: bool, ping_pong: bool) -> Self {
        Self {
            stdout: tokio::io::stdout(),
            pretty,
            ping_pong,
        }
    }

    async fn print(&mut self, msg: &Message) -> anyhow::Result<()> {
        if let Some(line) = describe_ping_pong(msg).filter(|_| self.ping_pong) {
            eprintln!("{line}");
        }
        if let Some(mut line) = format_message(msg, self.pretty) {
            line.push('\n');
            self.stdout
                .write_all(line.as_bytes())
                .await
                .context("cannot write to stdout")?;
            self.stdout
                .flush()
                .await
                .context("cannot write to stdout")?;
        }
        Ok(())
    }
}

type StdinLines = mpsc::Receiver<std::io::Result<String>>;

/// Reads stdin lines on a plain thread. (A blocking read cannot be cancelled; unlike
/// `tokio::io::stdin`, a detached thread does not keep the runtime from shutting down when the
/// server closes while the user has not typed anything.)
fn spawn_stdin_reader() -> anyhow::Result<StdinLines> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let failed = line.is_err();
                if tx.blocking_send(line).is_err() || failed {
                    break;
                }
            }
        })
        .context("cannot start the stdin reader")?;
    Ok(rx)
}

/// The next stdin line; never resolves once stdin is no longer read.
async fn next_line(stdin: &mut Option<StdinLines>) -> Option<std::io::Result<String>> {
    match stdin {
        Some(lines) => lines.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until the deadline; never resolves without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_trim() {
        let (name, value) = parse_header("Authorization:  Bearer abc ").unwrap();
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Bearer abc");
        let (name, value) = parse_header("origin:http://x:8080").unwrap();
        assert_eq!(name, http::header::ORIGIN);
        assert_eq!(value, "http://x:8080");
    }

    #[test]
    fn bad_headers_are_rejected() {
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header("X-Test: a\nb").is_err());
    }

    #[test]
    fn only_ws_urls_are_accepted() {
        assert!(parse_ws_url("ws://127.0.0.1:8080/ws?user=a").is_ok());
        assert!(parse_ws_url("wss://example.com/ws").is_ok());
        assert!(parse_ws_url("http://example.com/").is_err());
        assert!(parse_ws_url("localhost:8080").is_err());
        assert!(parse_ws_url("not a url").is_err());
    }

    #[test]
    fn wait_seconds() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("inf").is_err());
    }

    #[test]
    fn text_frames_print_as_is_or_pretty() {
        let msg = Message::text(r#"{"type":"pong","id":2}"#);
        assert_eq!(
            format_message(&msg, false).unwrap(),
            r#"{"type":"pong","id":2}"#
        );
        assert_eq!(
            format_message(&msg, true).unwrap(),
            "{\n  \"type\": \"pong\",\n  \"id\": 2\n}"
        );
        let plain = Message::text("hello, world: [not json");
        assert_eq!(
            format_message(&plain, true).unwrap(),
            "hello, world: [not json"
        );
    }

    #[test]
    fn pretty_json_keeps_order_strings_and_empty_containers() {
        let text = r#" {"z":1, "a":[1,{"s":"a,b:{[\"]}"}],"e":{},"l":[ ]} "#;
        let expected = r#"{
  "z": 1,
  "a": [
    1,
    {
      "s": "a,b:{[\"]}"
    }
  ],
  "e": {},
  "l": []
}"#;
        assert_eq!(pretty_json(text), expected);
        assert_eq!(pretty_json("42"), "42");
        assert_eq!(pretty_json(r#""\\""#), r#""\\""#);
    }

    #[test]
    fn binary_frames_print_hex() {
        let msg = Message::binary(vec![0x00, 0xab, 0x10]);
        assert_eq!(
            format_message(&msg, false).unwrap(),
            "binary (3 bytes): 00ab10"
        );
        let long = format_binary(&[0xff; 70]);
        assert_eq!(long, format!("binary (70 bytes): {}…", "ff".repeat(64)));
        assert_eq!(
            format_binary(&[0x01; 64]),
            format!("binary (64 bytes): {}", "01".repeat(64))
        );
    }

    #[test]
    fn control_frames_are_not_printed() {
        assert_eq!(format_message(&Message::ping("x"), false), None);
        let close = Message::close(Some(CloseCode::NORMAL_CLOSURE), "bye");
        assert_eq!(format_message(&close, false), None);
    }

    #[test]
    fn close_codes() {
        assert_eq!(
            describe_close(1008, "too many protocol errors"),
            "closed by server: 1008 too many protocol errors"
        );
        assert_eq!(describe_close(1000, ""), "closed by server: 1000");
        assert_eq!(exit_code_for_close(1000), ExitCode::SUCCESS);
        assert_eq!(exit_code_for_close(1001), ExitCode::SUCCESS);
        assert_eq!(exit_code_for_close(1008), ExitCode::FAILURE);
        assert_eq!(exit_code_for_close(1013), ExitCode::FAILURE);
    }
}
