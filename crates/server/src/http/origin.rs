//! Cross-site WebSocket hijacking protection: which browser origins may open a WebSocket.

use http::{HeaderMap, header};

/// Whether the request's `Origin` is allowed. No `Origin` (a non-browser client) is allowed;
/// same-origin pages (`Origin`'s host:port equals `Host`) always are; others only when the
/// allow-list names them.
pub(crate) fn allowed(allow_list: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if host.is_some_and(|host| origin_host == Some(host.as_str())) {
        return true;
    }
    allow_list
        .iter()
        .any(|pattern| pattern == "*" || matches_origin(pattern, &origin))
}

/// `https://*.example.com` matches `https://a.example.com` and `https://a.b.example.com`, not
/// `https://example.com` nor `https://evil.com/.example.com`.
fn matches_origin(pattern: &str, origin: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match (pattern.split_once("://"), origin.split_once("://")) {
        (Some((p_scheme, p_host)), Some((o_scheme, o_host))) => {
            p_scheme == o_scheme
                && !o_host.contains('/')
                && !o_host.contains('@')
                && match p_host.strip_prefix("*.") {
                    Some(suffix) => {
                        o_host.len() > suffix.len() + 1 && o_host.ends_with(&format!(".{suffix}"))
                    }
                    None => p_host == o_host,
                }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        h
    }

    #[test]
    fn default_is_same_origin_only() {
        assert!(allowed(&[], &headers(None, "chat.example.com")));
        assert!(allowed(
            &[],
            &headers(Some("https://chat.example.com"), "chat.example.com")
        ));
        assert!(allowed(
            &[],
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")
        ));
        assert!(!allowed(
            &[],
            &headers(Some("https://evil.test"), "chat.example.com")
        ));
        assert!(!allowed(
            &[],
            &headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")
        ));
    }

    #[test]
    fn allow_list_with_wildcard_subdomains() {
        let list = vec![
            "https://app.example.com".to_owned(),
            "https://*.example.org".to_owned(),
        ];
        let ok = |origin| allowed(&list, &headers(Some(origin), "ws.example.com"));
        assert!(ok("https://app.example.com"));
        assert!(ok("HTTPS://APP.EXAMPLE.COM"));
        assert!(!ok("http://app.example.com"));
        assert!(ok("https://a.example.org"));
        assert!(ok("https://a.b.example.org"));
        assert!(!ok("https://example.org"));
        assert!(!ok("https://evilexample.org"));
        assert!(!ok("https://example.org.evil.test"));
        assert!(allowed(
            &["*".to_owned()],
            &headers(Some("https://any.test"), "x")
        ));
    }
}
