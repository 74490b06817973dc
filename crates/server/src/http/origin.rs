//! Cross-site WebSocket hijacking and DNS-rebinding protection: which browser requests may
//! open a WebSocket.
//!
//! A browser request (one with `Origin`) passes two checks:
//! 1. its `Host` is one of the server's names (`server_names`; loopback names by default), so
//!    a page on `http://evil.example:8080` whose name was re-bound to 127.0.0.1 (DNS
//!    rebinding) cannot talk to a local server: its `Host` is `evil.example:8080` (F11);
//! 2. its `Origin` is the server's own origin — same scheme, host and port: an `http://` page
//!    is not same-origin with a `https://` server — or one on `allowed_origins`.
//!
//! Requests without `Origin` (servers, command-line tools, mobile apps) are not checked here.

use std::net::IpAddr;

use http::{HeaderMap, header};

/// Why a browser request was refused (the text is the 403 body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// `Origin` is neither the server's own origin nor on the allow-list.
    #[error("origin not allowed")]
    Origin,
    /// `Host` is not one of the server's names.
    #[error(
        "host not allowed: browser pages must reach this server by one of its names (setting server_names)"
    )]
    Host,
}

/// The names a browser may address the server by: `server_names`, or by default the loopback
/// names plus the listen address when it is a specific one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerNames {
    any: bool,
    /// Lower-case host names (`chat.example.com`), wildcard suffixes (`*.example.com`) or IP
    /// literals (without brackets).
    names: Vec<String>,
    loopback: bool,
}

impl ServerNames {
    /// From the `server_names` setting; `listen` adds its address when the list is empty.
    pub(crate) fn new(configured: &[String], listen: IpAddr) -> Self {
        if configured.is_empty() {
            let names = (!listen.is_unspecified() && !listen.is_loopback())
                .then(|| listen.to_string())
                .into_iter()
                .collect();
            return Self {
                any: false,
                names,
                loopback: true,
            };
        }
        Self {
            any: configured.iter().any(|n| n == "*"),
            names: configured
                .iter()
                .map(|n| {
                    n.trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .trim_end_matches('.')
                        .to_ascii_lowercase()
                })
                .collect(),
            loopback: false,
        }
    }

    /// Whether `host` (a `Host` header's host part, lower-case, without brackets or port) is
    /// one of the names.
    fn contains(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host.trim_end_matches('.');
        if self.loopback
            && (host == "localhost"
                || host.ends_with(".localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| match ip {
                    IpAddr::V6(v6) => v6
                        .to_ipv4_mapped()
                        .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
                    IpAddr::V4(v4) => v4.is_loopback(),
                }))
        {
            return true;
        }
        self.names.iter().any(|name| match name.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes().get(host.len() - suffix.len() - 1) == Some(&b'.')
            }
            None => name == host,
        })
    }
}

/// Checks a request's `Origin` and `Host`. `scheme` is how the client reached the server:
/// `https` with TLS (or behind a trusted proxy that says so), else `http`.
pub(crate) fn check(
    allow_list: &[String],
    names: &ServerNames,
    scheme: &str,
    headers: &HeaderMap,
) -> Result<(), Refused> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| Refused::Origin)?
        .to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase)
        .ok_or(Refused::Host)?;
    let (host_name, _) = split_authority(&host).ok_or(Refused::Host)?;
    if !names.contains(host_name) {
        return Err(Refused::Host);
    }
    if same_origin(&origin, scheme, &host) {
        return Ok(());
    }
    if allow_list
        .iter()
        .any(|pattern| pattern == "*" || matches_origin(pattern, &origin))
    {
        return Ok(());
    }
    Err(Refused::Origin)
}

/// `scheme://host[:port]` equals the server's scheme and `Host`, default ports made explicit.
fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    let Some((origin_scheme, origin_authority)) = origin.split_once("://") else {
        return false;
    };
    if origin_scheme != scheme {
        return false;
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    match (split_authority(origin_authority), split_authority(host)) {
        (Some((o_host, o_port)), Some((h_host, h_port))) => {
            o_host == h_host && o_port.unwrap_or(default_port) == h_port.unwrap_or(default_port)
        }
        _ => false,
    }
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, port). `None` for anything else
/// (a path, userinfo, a bad port).
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().ok()?),
    };
    (!host.is_empty()).then_some((host, port))
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

    fn names(list: &[&str]) -> ServerNames {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        ServerNames::new(&list, "127.0.0.1".parse().unwrap())
    }

    fn allowed(allow: &[String], names: &ServerNames, scheme: &str, h: &HeaderMap) -> bool {
        check(allow, names, scheme, h).is_ok()
    }

    #[test]
    fn default_is_same_origin_only_on_loopback_names() {
        let n = names(&[]);
        assert!(allowed(&[], &n, "http", &headers(None, "chat.example.com")));
        assert!(allowed(
            &[],
            &n,
            "http",
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")
        ));
        assert!(allowed(
            &[],
            &n,
            "http",
            &headers(Some("http://localhost:8080"), "localhost:8080")
        ));
        assert!(allowed(
            &[],
            &n,
            "http",
            &headers(Some("http://[::1]:8080"), "[::1]:8080")
        ));
        assert!(!allowed(
            &[],
            &n,
            "http",
            &headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")
        ));
        assert!(!allowed(
            &[],
            &n,
            "http",
            &headers(Some("https://evil.test"), "127.0.0.1:8080")
        ));
    }

    #[test]
    fn f11_the_scheme_is_part_of_same_origin() {
        let n = names(&["chat.example.com"]);
        let https_page = headers(Some("https://chat.example.com"), "chat.example.com");
        let http_page = headers(Some("http://chat.example.com"), "chat.example.com");
        assert!(allowed(&[], &n, "https", &https_page));
        assert!(!allowed(&[], &n, "https", &http_page));
        assert!(allowed(&[], &n, "http", &http_page));
        assert!(!allowed(&[], &n, "http", &https_page));
        // Default ports are the same origin as no port.
        assert!(allowed(
            &[],
            &n,
            "https",
            &headers(Some("https://chat.example.com:443"), "chat.example.com")
        ));
        assert!(!allowed(
            &[],
            &n,
            "https",
            &headers(Some("https://chat.example.com:8443"), "chat.example.com")
        ));
    }

    #[test]
    fn f11_dns_rebinding_to_a_local_server_is_refused() {
        // evil.example re-bound to 127.0.0.1: the browser thinks it is same-origin.
        let rebound = headers(Some("http://evil.example:8080"), "evil.example:8080");
        assert_eq!(
            check(&[], &names(&[]), "http", &rebound),
            Err(Refused::Host)
        );
        // Even an allow-list entry for the page does not make an unknown Host acceptable.
        assert_eq!(
            check(
                &["http://evil.example:8080".to_owned()],
                &names(&[]),
                "http",
                &rebound
            ),
            Err(Refused::Host)
        );
        // Without Origin (not a browser) the Host is not checked.
        assert!(allowed(
            &[],
            &names(&[]),
            "http",
            &headers(None, "evil.example")
        ));
        // `*` in server_names turns the Host check off.
        assert!(allowed(&[], &names(&["*"]), "http", &rebound));
    }

    #[test]
    fn server_names_match_exactly_or_by_wildcard_subdomain() {
        let n = names(&["chat.example.com", "*.example.org", "10.0.0.5", "[fd00::1]"]);
        assert!(n.contains("chat.example.com"));
        assert!(n.contains("chat.example.com."));
        assert!(!n.contains("example.com"));
        assert!(n.contains("a.example.org") && n.contains("a.b.example.org"));
        assert!(!n.contains("example.org") && !n.contains("evilexample.org"));
        assert!(n.contains("10.0.0.5") && n.contains("fd00::1"));
        // Configured names replace the loopback defaults.
        assert!(!n.contains("localhost") && !n.contains("127.0.0.1"));
        // A specific listen address is one of the default names.
        let listen = ServerNames::new(&[], "192.0.2.7".parse().unwrap());
        assert!(listen.contains("192.0.2.7") && listen.contains("localhost"));
        assert!(!listen.contains("192.0.2.8"));
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let n = names(&["*"]);
        for host in ["", "a/b", "user@host", "host:port", "[::1", "h:99999"] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            h.insert(header::ORIGIN, HeaderValue::from_static("http://a"));
            assert_eq!(check(&[], &n, "http", &h), Err(Refused::Host), "{host:?}");
        }
    }

    #[test]
    fn allow_list_with_wildcard_subdomains() {
        let list = vec![
            "https://app.example.com".to_owned(),
            "https://*.example.org".to_owned(),
        ];
        let n = names(&["ws.example.com"]);
        let ok = |origin| allowed(&list, &n, "https", &headers(Some(origin), "ws.example.com"));
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
            &names(&["x"]),
            "http",
            &headers(Some("https://any.test"), "x")
        ));
    }
}
