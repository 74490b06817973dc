//! What `switchboard serve` says when it starts: the log subscriber (text or JSON), the one
//! startup summary (version, URL to open, config file, broker, auth, origins, limits) and the
//! warning when anonymous access is open to the network; and the hint for a port in use.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use switchboard_server::config::AuthConfig;
use switchboard_server::{Config, LogFormat, ServerError};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `config.log` as the filter, lines on stderr.
pub fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // Fields at the top level (not under "fields"): what log shippers index directly.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|err| anyhow::anyhow!("cannot install the log subscriber: {err}"))
}

/// The URL a person opens: the bound address, or loopback when every interface is bound.
pub fn open_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let shown = match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => format!("127.0.0.1:{}", v4.port()),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => format!("[::1]:{}", v6.port()),
        _ => addr.to_string(),
    };
    format!("{scheme}://{shown}/")
}

/// How tokens are checked, in words.
pub fn auth_mode(auth: &AuthConfig) -> String {
    let verifier = match (&auth.hmac_secret, &auth.public_key_file) {
        (Some(_), _) => Some("HS256 tokens (shared secret)".to_owned()),
        (None, Some(path)) => Some(format!(
            "RS256/ES256 tokens (public key {})",
            path.display()
        )),
        (None, None) => None,
    };
    match (verifier, anonymous(auth)) {
        (Some(tokens), false) => tokens,
        (Some(tokens), true) => format!("{tokens}, and anonymous access"),
        (None, true) => "anonymous access (no token key configured: development mode)".to_owned(),
        (None, false) => "nobody can connect (anonymous off and no token key)".to_owned(),
    }
}

/// Whether connections without a token are accepted (the server's own rule).
fn anonymous(auth: &AuthConfig) -> bool {
    auth.anonymous
        .unwrap_or(auth.hmac_secret.is_none() && auth.public_key_file.is_none())
}

/// The allowed origins, in words.
pub fn origins(config: &Config) -> String {
    if config.allowed_origins.is_empty() {
        "same origin only".to_owned()
    } else {
        config.allowed_origins.join(", ")
    }
}

/// The broker with any password in its URL hidden.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}"),
            None => format!("{scheme}://[redacted]@{host}"),
        },
        None => url.to_owned(),
    }
}

/// The startup summary: one `info` event with every field, then a `warn` when anonymous access
/// is on while the server listens beyond loopback.
pub fn announce(config: &Config, config_file: Option<&Path>, addr: SocketAddr, tls: bool) {
    let url = open_url(addr, tls);
    let ws_scheme = if tls { "wss" } else { "ws" };
    let ws_url = format!("{ws_scheme}{}ws", url.trim_start_matches("http"));
    let config_file = config_file.map_or_else(
        || "none (embedded defaults, SWITCHBOARD_* and flags)".to_owned(),
        |path| path.display().to_string(),
    );
    let limits = &config.limits;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        %url,
        %ws_url,
        tls,
        config = %config_file,
        broker = %redact_url_password(&config.cluster.broker),
        auth = %auth_mode(&config.auth),
        origins = %origins(config),
        max_connections = limits.max_connections,
        ip_connect_rate = limits.connections_per_ip_per_second,
        ip_connect_burst = limits.connection_burst_per_ip,
        rate_limit = limits.messages_per_second,
        rate_burst = limits.message_burst,
        max_rooms = limits.max_rooms_per_connection,
        max_message_size = config.max_message_size,
        "switchboard {} ready: open {url} (WebSocket endpoint {ws_url})",
        env!("CARGO_PKG_VERSION"),
    );
    if anonymous(&config.auth) && !addr.ip().is_loopback() {
        warn!(
            %addr,
            "anonymous access is on and the server listens beyond loopback: anyone who can reach \
             {addr} can connect with any name; configure a token key (--auth-secret or \
             --auth-public-key) or listen on 127.0.0.1"
        );
    }
}

/// A bind error with the fix: a port in use, or one that needs privileges.
pub fn explain_bind_error(err: ServerError) -> anyhow::Error {
    let hint = match &err {
        ServerError::Bind { addr, source } => match source.kind() {
            std::io::ErrorKind::AddrInUse => Some(format!(
                "another process is listening on {addr} (another switchboard?); stop it or \
                 choose another port, e.g. --listen 127.0.0.1:8081"
            )),
            std::io::ErrorKind::PermissionDenied => Some(format!(
                "port {} needs privileges; use a port above 1023, or give the binary \
                 CAP_NET_BIND_SERVICE (deploy/switchboard.service does)",
                addr.port()
            )),
            std::io::ErrorKind::AddrNotAvailable => Some(format!(
                "{} is not an address of this machine; use 0.0.0.0 (every interface) or one \
                 of its addresses",
                addr.ip()
            )),
            _ => None,
        },
        _ => None,
    };
    let err = anyhow::Error::new(err);
    match hint {
        Some(hint) => anyhow::anyhow!("{}\nhint: {hint}", crate::errors::describe(&err)),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_to_open_is_loopback_for_every_interface() {
        assert_eq!(
            open_url("0.0.0.0:8080".parse().unwrap(), false),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            open_url("[::]:9".parse().unwrap(), true),
            "https://[::1]:9/"
        );
        assert_eq!(
            open_url("10.1.2.3:80".parse().unwrap(), false),
            "http://10.1.2.3:80/"
        );
    }

    #[test]
    fn auth_modes_in_words() {
        let mut auth = AuthConfig::default();
        assert!(auth_mode(&auth).starts_with("anonymous access"));
        auth.hmac_secret = Some("x".repeat(32));
        assert_eq!(auth_mode(&auth), "HS256 tokens (shared secret)");
        auth.anonymous = Some(true);
        assert_eq!(
            auth_mode(&auth),
            "HS256 tokens (shared secret), and anonymous access"
        );
    }

    #[test]
    fn broker_passwords_are_hidden() {
        assert_eq!(
            redact_url_password("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://:[redacted]@10.0.0.5:6379/0"
        );
        assert_eq!(redact_url_password("memory"), "memory");
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
