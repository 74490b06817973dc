//! `switchboard serve`: layer the configuration (defaults < TOML file < `SWITCHBOARD_*`
//! environment < flags), start the server, and shut it down on SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use switchboard_server::config::parse_listen;
use switchboard_server::webhooks::Webhooks;
use switchboard_server::{CancellationToken, Config, LogFormat, Server, Settings};
use tracing::info;

/// Flags of `switchboard serve`. Each flag also reads the environment variable named in its
/// help; a flag given on the command line wins over the variable, which wins over the file.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see docs/configuration.md; a sample with every key:
    /// deploy/switchboard.toml).
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    /// Also :8080 (every interface), localhost:8080, [::]:8080.
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_LISTEN", value_parser = parse_listen, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve the plain echo endpoint GET /echo (for conformance suites).
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_ECHO_ENDPOINT", num_args = 0..=1, default_missing_value = "true")]
    echo_endpoint: Option<bool>,
    /// Largest message accepted on /ws, in bytes (larger: close 1009) [default: 65536].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Largest message accepted on /echo, in bytes [default: 67108864].
    #[arg(
        help_heading = "Limits",
        long,
        env = "SWITCHBOARD_ECHO_MAX_MESSAGE_SIZE"
    )]
    echo_max_message_size: Option<usize>,
    /// Byte budget of each connection's outbound queue (over it: close 1013) [default: 4194304].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_OUTBOX_BYTES")]
    outbox_bytes: Option<usize>,
    /// Interval between server pings, e.g. 25s [default: 25s].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_PING_INTERVAL", value_parser = humantime_duration)]
    ping_interval: Option<Duration>,
    /// Close a connection silent this long after a ping, e.g. 20s [default: 20s].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_PONG_TIMEOUT", value_parser = humantime_duration)]
    pong_timeout: Option<Duration>,
    /// Longest wait for clients' close handshakes on shutdown [default: 10s].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", value_parser = humantime_duration)]
    shutdown_timeout: Option<Duration>,
    /// Longest wait for a new connection's HTTP request head [default: 10s].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT", value_parser = humantime_duration)]
    handshake_timeout: Option<Duration>,
    /// Protocol errors within a minute that close the connection with 1008 [default: 10].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_MAX_VIOLATIONS")]
    max_violations: Option<u32>,
    /// Log filter, e.g. info or switchboard=debug [default: info].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_LOG")]
    log: Option<String>,
    /// Log line format: text or json (one object per line, for log shippers) [default: text].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_LOG_FORMAT", value_parser = parse_log_format, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Messages kept per room for recovery and `history`; 0 disables [default: 100].
    #[arg(help_heading = "History", long, env = "SWITCHBOARD_HISTORY_SIZE")]
    history_size: Option<usize>,
    /// How long each message stays in a room's history [default: 5m].
    #[arg(help_heading = "History", long, env = "SWITCHBOARD_HISTORY_TTL", value_parser = humantime_duration)]
    history_ttl: Option<Duration>,
    /// How long a publish's msg_id is remembered for deduplication [default: 2m].
    #[arg(help_heading = "History", long, env = "SWITCHBOARD_IDEMPOTENCY_WINDOW", value_parser = humantime_duration)]
    idempotency_window: Option<Duration>,
    /// HS256 secret for verifying tokens (at least 32 bytes); turns anonymous access off
    /// unless --anonymous is given.
    #[arg(
        help_heading = "Auth",
        long,
        env = "SWITCHBOARD_AUTH_SECRET",
        hide_env_values = true
    )]
    auth_secret: Option<String>,
    /// PEM public key (RSA → RS256, P-256 → ES256) for verifying tokens.
    #[arg(help_heading = "Auth", long, env = "SWITCHBOARD_AUTH_PUBLIC_KEY")]
    auth_public_key: Option<PathBuf>,
    /// Accept connections without a token [default: only when no key is configured].
    #[arg(help_heading = "Auth", long, env = "SWITCHBOARD_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    anonymous: Option<bool>,
    /// Cookie that may carry the token [default: switchboard_token].
    #[arg(help_heading = "Auth", long, env = "SWITCHBOARD_AUTH_COOKIE")]
    auth_cookie: Option<String>,
    /// Allowed browser Origin (repeatable; `https://*.example.com` for subdomains, `*` for
    /// any) [default: same origin only].
    #[arg(
        help_heading = "Origins and proxies",
        long = "allowed-origin",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Option<Vec<String>>,
    /// Reverse proxy whose X-Forwarded-For names the client, for the per-IP limit and logs
    /// (repeatable; an address or a network like 10.0.0.0/8) [default: none].
    #[arg(
        help_heading = "Origins and proxies",
        long = "trusted-proxy",
        env = "SWITCHBOARD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Option<Vec<String>>,
    /// Messages per second per connection [default: 30].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// Message burst per connection [default: 60].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_RATE_BURST")]
    rate_burst: Option<u32>,
    /// Rooms per connection [default: 100].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_MAX_ROOMS")]
    max_rooms: Option<usize>,
    /// WebSocket connections per node [default: 100000].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// New connections per second per IP address [default: 50].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_IP_CONNECT_RATE")]
    ip_connect_rate: Option<u32>,
    /// New-connection burst per IP address [default: 100].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_IP_CONNECT_BURST")]
    ip_connect_burst: Option<u32>,
    /// PEM certificate chain: serve wss:// and https:// (needs --tls-key).
    #[arg(help_heading = "TLS", long, env = "SWITCHBOARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(help_heading = "TLS", long, env = "SWITCHBOARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Where rooms live: `memory` (this node only) or `redis://HOST:PORT[/DB]` (shared by
    /// every node on that Redis) [default: memory].
    #[arg(help_heading = "Cluster", long, env = "SWITCHBOARD_BROKER")]
    broker: Option<String>,
    /// Prefix of every Redis key and channel [default: switchboard].
    #[arg(help_heading = "Cluster", long, env = "SWITCHBOARD_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// How long a node's presence outlives its last heartbeat [default: 15s].
    #[arg(help_heading = "Cluster", long, env = "SWITCHBOARD_PRESENCE_TTL", value_parser = humantime_duration)]
    presence_ttl: Option<Duration>,
    /// How often a node refreshes its presence and reaps expired entries [default: 5s].
    #[arg(help_heading = "Cluster", long, env = "SWITCHBOARD_PRESENCE_INTERVAL", value_parser = humantime_duration)]
    presence_interval: Option<Duration>,
    /// Longest a Redis command may take before the request fails with `unavailable`
    /// [default: 2s].
    #[arg(help_heading = "Cluster", long, env = "SWITCHBOARD_REDIS_TIMEOUT", value_parser = humantime_duration)]
    redis_timeout: Option<Duration>,
    /// Host name browser requests may address the server by (repeatable; `*.example.com`,
    /// `*` for any) [default: loopback names and the listen address].
    #[arg(
        help_heading = "Origins and proxies",
        long = "server-name",
        env = "SWITCHBOARD_SERVER_NAMES",
        value_delimiter = ','
    )]
    server_names: Option<Vec<String>>,
    /// Prefix of anonymous user names when anonymous access is on beside a key
    /// [default: guest-].
    #[arg(help_heading = "Auth", long, env = "SWITCHBOARD_ANONYMOUS_PREFIX")]
    anonymous_prefix: Option<String>,
    /// Longest accepted token lifetime (exp - now) [default: 30days].
    #[arg(help_heading = "Auth", long, env = "SWITCHBOARD_MAX_TOKEN_LIFETIME", value_parser = humantime_duration)]
    max_token_lifetime: Option<Duration>,
    /// Key of the operator page /admin and `switchboard top` (at least 16 bytes) [default:
    /// none: the page is off].
    #[arg(
        help_heading = "Admin",
        long,
        env = "SWITCHBOARD_ADMIN_KEY",
        hide_env_values = true
    )]
    admin_key: Option<String>,
    /// WebSocket connections one address (IPv4, or IPv6 /64) may hold open
    /// [default: max-connections / 4, at most 1000].
    #[arg(
        help_heading = "Limits",
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP"
    )]
    max_connections_per_ip: Option<usize>,
    /// Connections accepted but not yet upgraded, node-wide [default: 1024].
    #[arg(
        help_heading = "Limits",
        long,
        env = "SWITCHBOARD_MAX_PENDING_CONNECTIONS"
    )]
    max_pending_connections: Option<usize>,
    /// Connections not yet upgraded per address (at most half the pending cap) [default: 512].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_MAX_PENDING_PER_IP")]
    max_pending_per_ip: Option<usize>,
    /// Listen backlog (capped by net.core.somaxconn) [default: 4096].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_LISTEN_BACKLOG")]
    listen_backlog: Option<u32>,
    /// Bytes of publishes waiting for Redis, node-wide; past it publishes are refused
    /// (`unavailable`) [default: 33554432].
    #[arg(
        help_heading = "Cluster",
        long,
        env = "SWITCHBOARD_PUBLISH_QUEUE_BYTES"
    )]
    publish_queue_bytes: Option<usize>,
    /// permessage-deflate for clients that offer it: on or off [default: on].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_COMPRESSION")]
    compression: Option<switchboard_server::CompressionMode>,
    /// Messages shorter than this many bytes go uncompressed [default: 256].
    #[arg(
        help_heading = "Server",
        long,
        env = "SWITCHBOARD_COMPRESSION_THRESHOLD"
    )]
    compression_threshold: Option<usize>,
    /// zlib level 0-9 for permessage-deflate (1 fastest, 9 smallest) [default: 1].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_COMPRESSION_LEVEL")]
    compression_level: Option<u32>,
    /// Server-wide bytes outboxes may hold beyond 16 KiB each; 0 turns it off
    /// [default: 134217728].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_OUTBOX_POOL_BYTES")]
    outbox_pool_bytes: Option<usize>,
    /// Server-wide bytes of history across rooms, oldest evicted first [default: 67108864].
    #[arg(help_heading = "History", long, env = "SWITCHBOARD_HISTORY_BYTES")]
    history_bytes: Option<usize>,
    /// Close a connection whose socket accepts no byte for this long [default: 50s].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_WRITE_TIMEOUT", value_parser = humantime_duration)]
    write_timeout: Option<Duration>,
    /// Longest a fragmented message may stay incomplete [default: 20s].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_FRAGMENT_TIMEOUT", value_parser = humantime_duration)]
    fragment_timeout: Option<Duration>,
    /// Publish msg_ids remembered for deduplication, server-wide [default: 100000].
    #[arg(
        help_heading = "History",
        long,
        env = "SWITCHBOARD_MAX_IDEMPOTENCY_IDS"
    )]
    max_idempotency_ids: Option<usize>,
    /// Most users a `joined` lists (the rest via `members`) [default: 1000].
    #[arg(help_heading = "Limits", long, env = "SWITCHBOARD_MAX_JOINED_MEMBERS")]
    max_joined_members: Option<usize>,
    /// How long presence changes are collected into one frame [default: 50ms].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_PRESENCE_BATCH_INTERVAL", value_parser = humantime_duration)]
    presence_batch_interval: Option<Duration>,
    /// Least time between count-only presence frames in large rooms [default: 1s].
    #[arg(help_heading = "Server", long, env = "SWITCHBOARD_PRESENCE_COUNT_INTERVAL", value_parser = humantime_duration)]
    presence_count_interval: Option<Duration>,
    /// Turns the HTTP API (/api/v1/) on with this key, which has every right (at least 16
    /// bytes; named keys with scopes: [[api.keys]] in the file) [default: none, API off].
    #[arg(
        help_heading = "HTTP API",
        long,
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Largest API request body, in bytes (larger: 413) [default: 1048576].
    #[arg(
        help_heading = "HTTP API",
        long,
        env = "SWITCHBOARD_API_MAX_BODY_BYTES"
    )]
    api_max_body_bytes: Option<usize>,
    /// API requests per second per key (over it: 429) [default: 10000].
    #[arg(
        help_heading = "HTTP API",
        long,
        env = "SWITCHBOARD_API_REQUESTS_PER_SECOND"
    )]
    api_requests_per_second: Option<u32>,
    /// API request burst per key [default: 20000].
    #[arg(help_heading = "HTTP API", long, env = "SWITCHBOARD_API_BURST")]
    api_burst: Option<u32>,
    /// Longest `revoke_for` of an API disconnect [default: 24h].
    #[arg(help_heading = "HTTP API", long, env = "SWITCHBOARD_API_MAX_REVOKE", value_parser = humantime_duration)]
    api_max_revoke: Option<Duration>,
    /// Collect Prometheus metrics and serve GET /metrics: true or false [default: true].
    #[arg(help_heading = "Metrics", long = "metrics", env = "SWITCHBOARD_METRICS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    metrics_enabled: Option<bool>,
    /// Serve /metrics on this address instead of the main port, e.g. 127.0.0.1:9100
    /// [default: the main port].
    #[arg(help_heading = "Metrics", long, env = "SWITCHBOARD_METRICS_LISTEN", value_parser = parse_listen, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    webhooks: crate::webhook_args::WebhookArgs,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{text:?} is not a log format: text or json")),
    }
}

pub(crate) fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The configuration these flags describe, on top of the file (if any) and the defaults.
    pub(crate) fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! apply {
            ($($field:ident),*) => { $( if let Some(value) = self.$field { config.$field = value; } )* };
        }
        apply!(
            listen,
            echo_endpoint,
            max_message_size,
            echo_max_message_size,
            outbox_bytes,
            ping_interval,
            pong_timeout,
            shutdown_timeout,
            handshake_timeout,
            max_violations,
            log,
            log_format,
            idempotency_window,
            compression,
            compression_threshold,
            compression_level
        );
        macro_rules! apply_to {
            ($($field:ident => $($target:ident).+),* $(,)?) => {
                $( if let Some(value) = self.$field { config.$($target).+ = value; } )*
            };
        }
        apply_to!(
            rate_limit => limits.messages_per_second,
            rate_burst => limits.message_burst,
            max_rooms => limits.max_rooms_per_connection,
            max_connections => limits.max_connections,
            ip_connect_rate => limits.connections_per_ip_per_second,
            ip_connect_burst => limits.connection_burst_per_ip,
            auth_cookie => auth.cookie,
            allowed_origins => allowed_origins,
            trusted_proxies => trusted_proxies,
            broker => cluster.broker,
            redis_prefix => cluster.redis_prefix,
            presence_ttl => cluster.presence_ttl,
            presence_interval => cluster.presence_interval,
            redis_timeout => cluster.redis_timeout,
            publish_queue_bytes => cluster.publish_queue_bytes,
            outbox_pool_bytes => memory.outbox_pool_bytes,
            history_bytes => memory.history_bytes,
            write_timeout => memory.write_timeout,
            fragment_timeout => memory.fragment_timeout,
            max_idempotency_ids => memory.max_idempotency_ids,
            max_joined_members => presence.max_joined_members,
            presence_batch_interval => presence.batch_interval,
            presence_count_interval => presence.count_interval,
        );
        apply_to!(
            server_names => server_names,
            anonymous_prefix => auth.anonymous_prefix,
            max_token_lifetime => auth.max_token_lifetime,
            max_pending_connections => limits.max_pending_connections,
            max_pending_per_ip => limits.max_pending_per_ip,
            listen_backlog => limits.listen_backlog,
            api_max_body_bytes => api.max_body_bytes,
            api_requests_per_second => api.requests_per_second,
            api_burst => api.burst,
            api_max_revoke => api.max_revoke,
            metrics_enabled => metrics.enabled,
        );
        // An empty SWITCHBOARD_API_KEY is no key (the API stays off).
        if let Some(key) = self.api_key.filter(|key| !key.is_empty()) {
            config.api.key = Some(key);
        }
        if self.metrics_listen.is_some() {
            config.metrics.listen = self.metrics_listen;
        }
        if self.max_connections_per_ip.is_some() {
            config.limits.max_connections_per_ip = self.max_connections_per_ip;
        }
        if self.auth_secret.is_some() {
            config.auth.hmac_secret = self.auth_secret;
        }
        if self.admin_key.is_some() {
            config.admin.key = self.admin_key;
        }
        if self.auth_public_key.is_some() {
            config.auth.public_key_file = self.auth_public_key;
        }
        if self.anonymous.is_some() {
            config.auth.anonymous = self.anonymous;
        }
        if self.tls_cert.is_some() {
            config.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            config.tls_key = self.tls_key;
        }
        if let Some(size) = self.history_size {
            config.history.size = size;
        }
        if let Some(ttl) = self.history_ttl {
            config.history.ttl = ttl;
        }
        self.webhooks.apply(&mut config.webhooks)?;
        Ok(config)
    }
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config_file = args.config.clone();
    let config = args.into_config()?;
    crate::startup::init_logging(&config)?;
    let summary_config = config.clone();
    let settings = Settings::new(config)?;
    // The webhook dispatcher first: the engine reports its events to it, and the server
    // drains it after the engine on shutdown.
    let webhooks = Webhooks::start(&settings.webhooks)?;
    let engine = switchboard_cli::engine::start(&settings, Webhooks::events(&webhooks))?;
    let server = Server::bind(settings, engine)
        .await
        .map_err(crate::startup::explain_bind_error)?
        .with_webhooks(webhooks);
    let addr = server.local_addr().context("reading the bound address")?;
    crate::startup::announce(
        &summary_config,
        config_file.as_deref(),
        addr,
        server.is_tls(),
    );
    drop(summary_config);
    // The one line on stdout: scripts and tests wait for it (readiness).
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}").and_then(|()| stdout.flush())?;
    drop(stdout);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    server.run(shutdown).await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_override_the_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9100\"\nmax_violations = 3\nping_interval = \"7s\"\n",
        )
        .unwrap();
        let args = Wrapper::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--ping-interval",
            "2s",
            "--echo-endpoint",
        ])
        .args;
        let config = args.into_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.max_violations, 3);
        assert_eq!(config.ping_interval, Duration::from_secs(2));
        assert!(config.echo_endpoint);
        assert_eq!(config.pong_timeout, Config::default().pong_timeout);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
