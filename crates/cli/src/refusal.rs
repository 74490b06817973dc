//! What to tell the user when a WebSocket connection could not be made: the server's own
//! refusal (status and body) plus a hint naming the fix. Shared by `connect` and `bench`.

use std::fmt::Write as _;

/// At most this much of a refusal's body is shown: the server's reasons are one line; a page
/// served by something else (a proxy's error page) is cut.
const BODY_PREVIEW_BYTES: usize = 300;

/// An HTTP response that was not `101 Switching Protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, when the server sent one (limits do).
    pub retry_after: Option<String>,
    /// The body (what the server says is wrong), trimmed and cut to a preview.
    pub body: String,
}

impl Refusal {
    /// Parses what the server sent (head and as much body as arrived); `None` when it is not
    /// an HTTP response.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()?
            .strip_prefix("HTTP/1.")?
            .split(' ')
            .nth(1)?
            .parse()
            .ok()?;
        let retry_after = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().to_owned())
        });
        let body = body.trim();
        // A page (the demo at `/`, a proxy's error page) says nothing useful in a terminal.
        let body = if body.starts_with('<') {
            "(an HTML page)".to_owned()
        } else {
            preview(body)
        };
        Some(Self {
            status,
            retry_after,
            body,
        })
    }

    /// The whole message: `upgrade refused: HTTP 401: invalid token: bad signature` and, on
    /// the next line, the hint when there is one.
    pub fn describe(&self, path: &str) -> String {
        let mut text = format!("upgrade refused: HTTP {}", self.status);
        if !self.body.is_empty() {
            let _ = write!(text, ": {}", self.body);
        }
        if let Some(wait) = &self.retry_after {
            let _ = write!(text, " (retry after {wait} s)");
        }
        if let Some(hint) = hint(self.status, path, &self.body) {
            let _ = write!(text, "\nhint: {hint}");
        }
        text
    }
}

/// The fix for a refused upgrade to `path`, by status (and, for 429/503, by the server's words).
pub fn hint(status: u16, path: &str, body: &str) -> Option<String> {
    let hint = match status {
        200 if path != "/ws" && path != "/echo" => format!(
            "{path} answered with a page, not a WebSocket; did you mean /ws? (e.g. ws://HOST:PORT/ws)"
        ),
        200 => "the server answered with a page, not a WebSocket: is this a Switchboard server?"
            .to_owned(),
        400 => {
            "the server did not accept the request (e.g. a bad ?user= name); see the reason above"
                .to_owned()
        }
        401 => {
            "the server needs a valid token: mint one with `switchboard token --sub NAME` (same \
                secret as the server's --auth-secret) and pass it as ?token=..., or \
                -H 'Authorization: Bearer ...'"
                .to_owned()
        }
        403 => "the server refused this Origin or these rights: send an allowed origin \
                (--origin URL; the server lists them with --allowed-origin), or use a token whose \
                rights cover the room"
            .to_owned(),
        404 if path == "/echo" => {
            "no /echo here: the server serves it only with --echo-endpoint".to_owned()
        }
        404 => format!("no WebSocket endpoint at {path}; Switchboard's is /ws"),
        429 => rate_limit_hint(body),
        503 => "the server is at its connection limit (raise it with `switchboard serve \
                --max-connections N`, or add nodes); retry later"
            .to_owned(),
        _ => return None,
    };
    Some(hint)
}

/// 429: which limit, and which server flags lift it.
fn rate_limit_hint(body: &str) -> String {
    let per_ip = body.contains("from this address") || body.is_empty();
    if body.contains("open connections") {
        "the server's cap on open connections per address was hit: close some, or start the \
         server with a higher cap, e.g. `switchboard serve --max-connections-per-ip 1000000` \
         (README: serve for benchmarking; behind a proxy, set --trusted-proxy so that each \
         client counts on its own)"
            .to_owned()
    } else if per_ip {
        "the server's per-IP connection rate limit was hit: wait and retry, or start the server \
         with higher limits, e.g. `switchboard serve --ip-connect-rate 1000000 --ip-connect-burst \
         1000000` (README: serve for benchmarking; behind a proxy, set --trusted-proxy so that \
         each client counts on its own)"
            .to_owned()
    } else {
        "a server rate limit was hit (see the reason above): wait and retry, or raise the limit \
         named there (`switchboard serve --help`, section Limits)"
            .to_owned()
    }
}

/// The body as one line, at most `BODY_PREVIEW_BYTES`.
fn preview(body: &str) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() <= BODY_PREVIEW_BYTES {
        return one_line;
    }
    let mut end = BODY_PREVIEW_BYTES;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", one_line.get(..end).unwrap_or_default())
}

/// The hint for a connection that failed before any HTTP response: a TLS handshake with a
/// server that does not speak TLS, or the other way round.
pub fn transport_hint(scheme: Option<&str>, error_text: &str) -> Option<&'static str> {
    let has = |needles: &[&str]| needles.iter().any(|needle| error_text.contains(needle));
    match scheme {
        Some("wss")
            if has(&[
                "invalid peer certificate",
                "UnknownIssuer",
                "NotValidForName",
            ]) =>
        {
            Some(
                "the server's certificate is not trusted for this host name: pass the CA that \
                 signed it with --ca-file PEM, and connect with a name the certificate lists",
            )
        }
        Some("wss")
            if has(&[
                "InvalidContentType",
                "corrupt message",
                "record overflow",
                "UnexpectedEof",
            ]) =>
        {
            Some("the server did not answer TLS; try ws://")
        }
        Some("ws")
            if has(&[
                "invalid HTTP",
                "Parsing",
                "unexpected end of file",
                "eof",
                "reset by peer",
            ]) =>
        {
            Some("the server did not answer plain HTTP; if it serves TLS (--tls-cert), try wss://")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_parsed_with_its_body_and_retry_after() {
        let bytes = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nRetry-After: 1\r\ncontent-length: 44\r\n\r\ntoo many new connections from this address\n";
        let refusal = Refusal::parse(bytes).unwrap();
        assert_eq!(refusal.status, 429);
        assert_eq!(refusal.retry_after.as_deref(), Some("1"));
        assert_eq!(refusal.body, "too many new connections from this address");
        let text = refusal.describe("/ws");
        assert!(
            text.starts_with(
                "upgrade refused: HTTP 429: too many new connections from this address (retry after 1 s)\nhint: "
            ),
            "{text}"
        );
        assert!(text.contains("--ip-connect-rate"), "{text}");
        let text = rate_limit_hint("too many open connections from this address");
        assert!(text.contains("--max-connections-per-ip"), "{text}");
    }

    #[test]
    fn not_http_is_not_a_refusal() {
        assert_eq!(Refusal::parse(b"\x15\x03\x03\x00\x02\x02\x46"), None);
        assert_eq!(Refusal::parse(b"HTTP/1.1 401 Unauthorized\r\n"), None);
    }

    #[test]
    fn long_bodies_are_cut_to_one_line() {
        let body = format!("bad\ngateway {}", "é".repeat(400));
        let bytes = format!("HTTP/1.1 502 Bad Gateway\r\n\r\n{body}");
        let refusal = Refusal::parse(bytes.as_bytes()).unwrap();
        assert!(refusal.body.len() <= BODY_PREVIEW_BYTES + '…'.len_utf8());
        assert!(!refusal.body.contains('\n'));
        assert!(
            refusal
                .describe("/ws")
                .starts_with("upgrade refused: HTTP 502: bad gateway é")
        );
        let page = Refusal::parse(b"HTTP/1.1 200 OK\r\n\r\n<!doctype html>\n<html>").unwrap();
        assert_eq!(page.body, "(an HTML page)");
    }

    #[test]
    fn each_status_names_its_fix() {
        assert!(hint(200, "/", "").unwrap().contains("did you mean /ws?"));
        assert!(hint(401, "/ws", "").unwrap().contains("switchboard token"));
        assert!(hint(403, "/ws", "").unwrap().contains("--origin"));
        assert!(hint(404, "/echo", "").unwrap().contains("--echo-endpoint"));
        assert!(hint(503, "/ws", "").unwrap().contains("--max-connections"));
        assert_eq!(hint(500, "/ws", ""), None);
    }

    #[test]
    fn tls_mismatches_are_named() {
        assert_eq!(
            transport_hint(
                Some("wss"),
                "received corrupt message of type InvalidContentType"
            ),
            Some("the server did not answer TLS; try ws://")
        );
        assert_eq!(transport_hint(Some("ws"), "Connection refused"), None);
        assert!(
            transport_hint(Some("ws"), "upgrade handshake: invalid HTTP version")
                .unwrap()
                .contains("try wss://")
        );
    }
}
