//! `switchboard connect URL`: a small wscat-like WebSocket client.
//!
//! Sends stdin lines (or `--execute` messages) as text frames and prints every received frame on
//! stdout, one per line. Diagnostics go to stderr. Exit code 0 on a normal end (our own close, the
//! `--wait` time elapsed, the server closed with 1000/1001), 1 otherwise.

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderName, HeaderValue, Uri};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_websockets::{ClientBuilder, CloseCode, Connector, Error as WsError, Message, upgrade};

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
}

/// Runs the client; see the module documentation for the exit codes.
pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let uri = parse_ws_url(&args.url)?;
    let connector = match uri.scheme_str() {
        Some("wss") => tls_connector(args.ca_file.as_deref())?,
        _ => Connector::Plain,
    };
    let mut builder = ClientBuilder::from_uri(uri).connector(&connector);
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        builder = builder
            .add_header(name, value)
            .with_context(|| format!("cannot send header {header:?}"))?;
    }

    let connected = tokio::time::timeout(CONNECT_TIMEOUT, builder.connect())
        .await
        .with_context(|| format!("cannot connect to {}: timed out", args.url))?;
    let (mut ws, _response) = match connected {
        Ok(connected) => connected,
        Err(WsError::Upgrade(upgrade::Error::DidNotSwitchProtocols(status))) => {
            bail!(
                "cannot connect to {}: upgrade refused: HTTP {status}",
                args.url
            )
        }
        Err(err) => return Err(err).with_context(|| format!("cannot connect to {}", args.url)),
    };
    eprintln!("connected to {}", args.url);

    let mut out = Output::new(args.pretty);
    for msg in &args.execute {
        ws.send(Message::text(msg.clone()))
            .await
            .context("cannot send message")?;
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
                Some(Ok(line)) => ws.send(Message::text(line)).await.context("cannot send message")?,
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
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(tokio_rustls::TlsConnector::from(
        std::sync::Arc::new(config),
    )))
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
}

impl Output {
    fn new(pretty: bool) -> Self {
        Self {
            stdout: tokio::io::stdout(),
            pretty,
        }
    }

    async fn print(&mut self, msg: &Message) -> anyhow::Result<()> {
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
