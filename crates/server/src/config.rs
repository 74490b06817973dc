//! The server's one typed configuration. Defaults are embedded; a TOML file, `SWITCHBOARD_*`
//! environment variables and command-line flags override them, in that order (the binary does
//! the layering; see `docs/configuration.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_hub::{HistoryPolicy, HistoryRule, HistoryRules};

pub use crate::admin::config::AdminConfig;
pub use crate::webhooks::{WebhookEndpoint, WebhooksConfig};

/// Every setting of `switchboard serve`. Field docs give the default and why it is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback: exposing the server is a choice).
    /// Also `:8080` (every interface), `localhost:8080`, `[::]:8080` (see [`parse_listen`]).
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// Serve the plain echo endpoint `GET /echo` (for conformance suites). Default off.
    pub echo_endpoint: bool,
    /// Largest message (after reassembly of fragments) accepted on `/ws`, in bytes; larger →
    /// close 1009. Default 64 KiB: chat and control messages are small, and the limit bounds
    /// what one client can make the server buffer.
    pub max_message_size: usize,
    /// Largest message accepted on `/echo`, in bytes. Default 64 MiB (Autobahn sends 16 MiB).
    pub echo_max_message_size: usize,
    /// Byte budget of each connection's outbound queue; a client that falls this far behind is
    /// closed with 1013 (slow consumer). Default 4 MiB.
    pub outbox_bytes: usize,
    /// Interval between server pings. Default 25 s (below common proxy idle timeouts of 30–60 s).
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long to wait for any frame after a ping before closing the connection. Default 20 s.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// On SIGINT/SIGTERM, how long to wait for clients to complete the close handshake before
    /// exiting anyway. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a new TCP connection may take to send its HTTP request head. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Protocol violations (`error` replies) that close the connection with 1008 when they
    /// all fall within one minute (the N-th closes; the first N-1 only get `error`s).
    /// Default 10.
    pub max_violations: u32,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `switchboard=debug`. Default `info`.
    pub log: String,
    /// Log line format: `text` (for people) or `json` (one object per line, for log shippers).
    /// Default `text`.
    pub log_format: LogFormat,
    /// Per-room history, which is what recovery after a reconnect replays.
    pub history: HistoryConfig,
    /// How long a publish's `msg_id` is remembered, so that a retry is not delivered twice.
    /// Default 2 minutes (longer than any sane client retry schedule).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Who may connect: tokens and anonymous access.
    pub auth: AuthConfig,
    /// Origins whose browser pages may open WebSockets. Exact origins
    /// (`https://app.example.com`) or wildcard subdomains (`https://*.example.com`); `*`
    /// allows any. Default empty: same-origin pages only (the `Origin`'s host must equal the
    /// request's `Host`). Requests without `Origin` (non-browser clients) are not affected.
    pub allowed_origins: Vec<String>,
    /// Host names browser requests (those with `Origin`) may address the server by: exact
    /// (`chat.example.com`, `10.0.0.5`), wildcard subdomains (`*.example.com`), or `*` for any.
    /// A browser request whose `Host` is not one of them gets 403, which stops DNS rebinding
    /// (a page on `evil.example` whose name now points at your server). Default empty: the
    /// loopback names (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`) and the listen address
    /// when it is a specific one. Set it when the server is reached under a public name.
    pub server_names: Vec<String>,
    /// Reverse proxies (addresses or networks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` is
    /// believed: behind them, the per-IP limit and the logs use the client's address. Default
    /// empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Rate, size and connection limits.
    pub limits: LimitsConfig,
    /// PEM certificate chain for TLS (`wss://`, `https://`); needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS; needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// permessage-deflate (RFC 7692) for clients that offer it: `on` or `off`. Default `on`:
    /// a broadcast is compressed once for all its recipients and no connection keeps deflate
    /// state, so it costs little CPU and no memory (docs/benchmarks.md) while JSON shrinks 3–10×.
    pub compression: CompressionMode,
    /// Messages shorter than this many bytes are sent uncompressed. Default 256: below that
    /// the saving is a few bytes and not worth the compression's CPU.
    pub compression_threshold: usize,
    /// zlib compression level, 1 (fastest) to 9 (smallest); 0 stores. Default 1: JSON gets
    /// most of its saving at level 1 at a third of level 6's CPU (docs/benchmarks.md).
    pub compression_level: u32,
    /// Where rooms live: this process only, or shared with other nodes through Redis.
    pub cluster: ClusterConfig,
    /// Server-wide memory budgets and the timeouts that bound held memory in time.
    pub memory: MemoryConfig,
    /// Member lists and presence events in large rooms.
    pub presence: PresenceSettings,
    /// The HTTP API under `/api/v1/` (off until a key is configured).
    pub api: ApiConfig,
    /// Signed HTTP callbacks for room, presence and message events (docs/webhooks.md).
    pub webhooks: WebhooksConfig,
    /// The operator page (`/admin`) and `switchboard top`.
    pub admin: AdminConfig,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the Prometheus endpoint (docs/metrics.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Collect metrics and serve them at `GET /metrics`. Default on: counting costs nothing
    /// measurable (per-thread counters, one sampled latency per batch; docs/metrics.md).
    pub enabled: bool,
    /// Serve `/metrics` on this address instead of the main port (e.g. `127.0.0.1:9100`, to
    /// keep it off the public port). Default: unset, on the main port.
    #[serde(
        deserialize_with = "deserialize_optional_listen",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

fn deserialize_optional_listen<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|text| parse_listen(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// Whether permessage-deflate is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    /// Answer clients' permessage-deflate offers.
    On,
    /// Decline them: every connection runs uncompressed.
    Off,
}

impl std::str::FromStr for CompressionMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            other => Err(format!("expected `on` or `off`, got `{other}`")),
        }
    }
}

/// `[cluster]`: the broker that keeps rooms, and how nodes share them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `memory` (default: one node, nothing else needed) or `redis://HOST:PORT[/DB]` (rooms,
    /// sequence numbers, history and presence shared by every node using that Redis).
    pub broker: String,
    /// Prefix of every Redis key and channel. Default `switchboard`.
    pub redis_prefix: String,
    /// How long a node's presence entries outlive its last heartbeat: a crashed node's users
    /// leave presence within `presence_ttl + presence_interval`. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    /// How often each node refreshes its users' presence and reaps expired entries.
    /// Default 5 s.
    #[serde(with = "humantime_serde")]
    pub presence_interval: Duration,
    /// How long a Redis command may take before the request fails with `unavailable`.
    /// Default 2 s.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Bytes of publishes waiting for Redis or on their way, node-wide (frames plus keys);
    /// past it publishes are answered `unavailable` at once, not published. Bounds the node's
    /// memory while Redis hangs. Default 32 MiB.
    pub publish_queue_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            broker: "memory".to_owned(),
            redis_prefix: "switchboard".to_owned(),
            presence_ttl: Duration::from_secs(15),
            presence_interval: Duration::from_secs(5),
            redis_timeout: Duration::from_secs(2),
            // 512 maximum-size (64 KiB) messages, or ~100,000 small (~300 B) ones, waiting
            // at once; a node's memory for publishes stays under it however long Redis hangs.
            publish_queue_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ClusterConfig {
    /// The Redis URL, when the broker is Redis.
    pub fn redis_url(&self) -> Option<&str> {
        (self.broker.starts_with("redis://") || self.broker.starts_with("rediss://"))
            .then_some(self.broker.as_str())
    }
}

/// `[auth]`: JWT verification and anonymous access.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256 tokens (at least 32 bytes). Prefer the environment variable
    /// `SWITCHBOARD_AUTH_SECRET` to a file.
    pub hmac_secret: Option<String>,
    /// PEM public key for RS256 (RSA) or ES256 (P-256) tokens.
    pub public_key_file: Option<PathBuf>,
    /// Accept connections without a token (named by `?user=` or a generated name, with every
    /// right). Default: on when no key is configured (development), off once one is.
    pub anonymous: Option<bool>,
    /// Name of the cookie that may carry the token. Default `switchboard_token`.
    pub cookie: String,
    /// Clock skew tolerated on `exp`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Prepended to every anonymous user name when anonymous access is on *beside* a key, so
    /// that a guest can never take a token user's name (`?user=alice` becomes `guest-alice`),
    /// and tokens whose `sub` starts with it are refused. Must not be empty in that setup.
    /// Unused without a key (no token users). Default `guest-`.
    pub anonymous_prefix: String,
    /// Longest token lifetime accepted: a token whose `exp` is further than this from now is
    /// refused (401), so a mistaken or stolen never-expiring token (`exp` = 2^64-1) is not
    /// honoured. Default 30 days.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hmac_secret: None,
            public_key_file: None,
            anonymous: None,
            cookie: "switchboard_token".to_owned(),
            leeway: Duration::from_secs(5),
            anonymous_prefix: "guest-".to_owned(),
            max_token_lifetime: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// `[limits]`: protection against floods and resource exhaustion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained messages per second per connection (token bucket). Default 30.
    pub messages_per_second: u32,
    /// Burst above the sustained rate. Default 60.
    pub message_burst: u32,
    /// Rooms one connection may be in at once. Default 100.
    pub max_rooms_per_connection: usize,
    /// WebSocket connections per node; beyond it upgrades get 503 with `Retry-After`.
    /// Default 100,000.
    pub max_connections: usize,
    /// New connections per second from one IP address (token bucket); beyond it 429 with
    /// `Retry-After`. Default 50.
    pub connections_per_ip_per_second: u32,
    /// Burst of new connections from one IP address. Default 100.
    pub connection_burst_per_ip: u32,
    /// WebSocket connections one address (an IPv4 address, or an IPv6 /64) may hold open at
    /// once; beyond it upgrades get 429 with `Retry-After`. The rate above limits how fast an
    /// address connects, this how much of `max_connections` it can take. Default: a quarter
    /// of `max_connections`, at most 1,000 (many users behind one NAT share an address; raise
    /// it for a known large NAT, or list your proxies in `trusted_proxies`).
    pub max_connections_per_ip: Option<usize>,
    /// Connections accepted but not yet upgraded (TCP accepted, TLS handshake or HTTP request
    /// in progress, or an idle keep-alive HTTP connection), node-wide. At the cap the server
    /// stops accepting — before any accept work is spent — and new connections wait in the
    /// kernel's listen backlog, so idle or slow sockets cannot use up the file descriptors
    /// open WebSockets need (F7). Each is closed after `handshake_timeout` at the latest.
    /// Default 1,024; lowered at start so that `max_connections` + this + 64 fit the process's
    /// open-file limit.
    pub max_pending_connections: usize,
    /// Of those, how many one address (as above; trusted proxies exempt) may hold; a
    /// connection beyond it is closed right after accept. At most half of
    /// `max_pending_connections` applies. Default 512: a reconnect storm of 500 clients behind
    /// one NAT address still gets through at once.
    pub max_pending_per_ip: usize,
    /// Length of the kernel's queue of connections waiting for `accept` (`listen(2)`
    /// backlog). Sized for reconnect storms: when thousands of clients reconnect at once, a
    /// full queue drops SYNs and each drop costs the client a 1 s retransmit. Linux caps it at
    /// `net.core.somaxconn` (4,096 on kernels since 5.4; the server warns when the cap is
    /// lower). Default 4,096.
    pub listen_backlog: u32,
}

impl LimitsConfig {
    /// `max_connections_per_ip`, or its default.
    pub fn connections_per_ip_cap(&self) -> usize {
        self.max_connections_per_ip
            .unwrap_or_else(|| (self.max_connections / 4).clamp(1, 1000))
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            messages_per_second: 30,
            message_burst: 60,
            max_rooms_per_connection: 100,
            max_connections: 100_000,
            connections_per_ip_per_second: 50,
            connection_burst_per_ip: 100,
            max_connections_per_ip: None,
            max_pending_connections: 1024,
            max_pending_per_ip: 512,
            listen_backlog: 4096,
        }
    }
}

/// History settings: a default, and overrides by room-name pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Messages kept per room. Default 100; 0 disables history (and so recovery).
    pub size: usize,
    /// How long each message is kept. Default 5 minutes: long enough for a phone to come back
    /// from a tunnel, short enough to bound memory.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Overrides for rooms whose names match a pattern (`*` = any characters); the first match
    /// wins.
    pub rooms: Vec<HistoryRoomConfig>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let policy = HistoryPolicy::default();
        Self {
            size: policy.size,
            ttl: policy.ttl,
            rooms: Vec::new(),
        }
    }
}

/// One `[[history.rooms]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRoomConfig {
    /// Room-name pattern, e.g. `chat:*`.
    pub pattern: String,
    /// Messages kept.
    pub size: usize,
    /// How long each is kept.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl HistoryConfig {
    /// The hub's form of these settings.
    pub fn rules(&self) -> HistoryRules {
        HistoryRules {
            default: HistoryPolicy {
                size: self.size,
                ttl: self.ttl,
            },
            rules: self
                .rooms
                .iter()
                .map(|room| HistoryRule {
                    pattern: room.pattern.clone(),
                    policy: HistoryPolicy {
                        size: room.size,
                        ttl: room.ttl,
                    },
                })
                .collect(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            echo_endpoint: false,
            max_message_size: 64 * 1024,
            echo_max_message_size: 64 * 1024 * 1024,
            outbox_bytes: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            shutdown_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_violations: 10,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            history: HistoryConfig::default(),
            idempotency_window: Duration::from_secs(120),
            auth: AuthConfig::default(),
            allowed_origins: Vec::new(),
            server_names: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: LimitsConfig::default(),
            tls_cert: None,
            tls_key: None,
            compression: CompressionMode::On,
            compression_threshold: 256,
            compression_level: 1,
            cluster: ClusterConfig::default(),
            memory: MemoryConfig::default(),
            presence: PresenceSettings::default(),
            api: ApiConfig::default(),
            webhooks: WebhooksConfig::default(),
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `log_format`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a listen address: `IP:PORT` (`127.0.0.1:8080`, `[::]:8080`), `:PORT` (every IPv4
/// interface, as in Go and nginx), or `HOST:PORT` with a host name that resolves
/// (`localhost:8080` → its first address, IPv4 first).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = "expected IP:PORT, :PORT, HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8080, :8080, localhost:8080, [::]:8080";
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid listen address {text:?}: {expected}"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid listen address {text:?}: {expected}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid listen address {text:?}: {expected}"))?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host:?} in listen address {text:?}: {err}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn deserialize_listen<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// `[presence]`: member lists and presence events, bounded in large rooms (protocol.md §4.1,
/// §4.5, §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    /// Most users a `joined` lists (the rest by paging with `members`); also the room size
    /// above which presence frames carry only the member count. Default 1,000 (a `joined` of
    /// ~12 KB).
    pub max_joined_members: usize,
    /// How long a room's presence changes are collected before one frame per member tells
    /// them (joins and leaves of one user within it cancel). Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// In a room above `max_joined_members`: the least time between two count-only presence
    /// frames. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub count_interval: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        let hub = switchboard_hub::PresenceConfig::default();
        Self {
            max_joined_members: hub.max_joined_members,
            batch_interval: hub.batch_interval,
            count_interval: hub.count_interval,
        }
    }
}

impl PresenceSettings {
    /// The hub's form.
    pub fn hub(&self) -> switchboard_hub::PresenceConfig {
        switchboard_hub::PresenceConfig {
            max_joined_members: self.max_joined_members,
            batch_interval: self.batch_interval,
            count_interval: self.count_interval,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: &str| {
            Err(ConfigError::Invalid {
                field: "presence",
                reason: reason.to_owned(),
            })
        };
        if self.max_joined_members == 0
            || self.max_joined_members > switchboard_protocol::client::MAX_MEMBERS_PAGE * 10
        {
            return invalid("max_joined_members must be 1 to 10,000");
        }
        if self.batch_interval.is_zero() || self.batch_interval > Duration::from_secs(5) {
            return invalid("batch_interval must be above zero and at most 5 s");
        }
        if self.count_interval < self.batch_interval {
            return invalid("count_interval must be at least batch_interval");
        }
        Ok(())
    }
}

/// `[api]`: the HTTP API for backends under `/api/v1/` (docs/http-api.md). Off (every path
/// answers 404) until a key is configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// One key with every right (`SWITCHBOARD_API_KEY`); named `default` in logs. Default none.
    pub key: Option<String>,
    /// Named keys with scopes (`[[api.keys]]`). Default none.
    pub keys: Vec<ApiKeyConfig>,
    /// Largest request body, in bytes; larger: 413. Default 1 MiB (a broadcast names many
    /// rooms; a message's `data` is also bounded by `max_message_size`, like on `/ws`).
    pub max_body_bytes: usize,
    /// Requests per second each key may make; over it: 429 with `Retry-After`. Default 10,000.
    pub requests_per_second: u32,
    /// Burst of requests a key may make above its rate. Default 20,000.
    pub burst: u32,
    /// Longest `revoke_for` a disconnect may ask (how long a user stays denied). Default 24 h.
    #[serde(with = "humantime_serde")]
    pub max_revoke: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            key: None,
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            requests_per_second: 10_000,
            burst: 20_000,
            max_revoke: Duration::from_secs(24 * 3600),
        }
    }
}

/// One `[[api.keys]]` entry: a name (for logs), the key or its SHA-256, and its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs instead of the key.
    pub name: String,
    /// The key itself (prefer `sha256`: the file then holds no secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's SHA-256, 64 hex digits (`printf %s KEY | sha256sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the key may do: `publish`, `read`, `admin`.
    pub scopes: Vec<ApiScope>,
}

/// A right of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiScope {
    /// `publish`, `broadcast`.
    Publish,
    /// `presence`, `history`, `rooms`.
    Read,
    /// `disconnect`.
    Admin,
}

impl ApiConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| {
            Err(ConfigError::Invalid {
                field: "api",
                reason,
            })
        };
        if self.key.as_deref().is_some_and(|key| key.len() < 16) {
            return invalid("key must be at least 16 bytes (e.g. `openssl rand -hex 32`)".into());
        }
        for entry in &self.keys {
            match (&entry.key, &entry.sha256) {
                (Some(key), None) if key.len() >= 16 => {}
                (None, Some(hash))
                    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {}
                _ => {
                    return invalid(format!(
                        "keys entry {:?} needs `key` (at least 16 bytes) or `sha256` (64 hex digits), not both",
                        entry.name
                    ));
                }
            }
        }
        if self.max_body_bytes < 1024 || self.requests_per_second == 0 || self.burst == 0 {
            return invalid(
                "max_body_bytes must be at least 1 KiB, requests_per_second and burst above 0"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid setting `{field}`: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// `trusted_proxies`, parsed.
    pub(crate) fn trusted_proxy_networks(
        &self,
    ) -> Result<Vec<crate::http::client_ip::Network>, String> {
        self.trusted_proxies
            .iter()
            .map(|text| crate::http::client_ip::Network::parse(text))
            .collect()
    }

    /// Reads a TOML file; settings it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the values that would make the server misbehave (what [`Settings::new`]
    /// checks, without building the settings).
    ///
    /// [`Settings::new`]: crate::Settings::new
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map(drop)
    }

    /// The checks of [`Config::validate`]; returns the trusted proxies' networks, which
    /// checking them parsed (kept by [`crate::Settings`]).
    pub(crate) fn check(&self) -> Result<Vec<crate::http::client_ip::Network>, ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_message_size == 0 {
            return invalid("max_message_size", "must be at least 1 byte");
        }
        // A relayed message is the publish's `data` plus its envelope (room, from, seq, ts:
        // well under 1 KiB) and the outbox's per-frame charge: one must always fit.
        if self.outbox_bytes < self.max_message_size.saturating_add(1024) {
            return invalid(
                "outbox_bytes",
                "must hold at least one maximal message plus its envelope (max_message_size + 1 KiB)",
            );
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return invalid("ping_interval/pong_timeout", "must be greater than zero");
        }
        if self.compression_level > 9 {
            return invalid("compression_level", "must be 0 to 9");
        }
        if self.max_violations == 0 {
            return invalid("max_violations", "must be at least 1");
        }
        let limits = &self.limits;
        if limits.messages_per_second == 0
            || limits.connections_per_ip_per_second == 0
            || limits.max_connections == 0
        {
            return invalid("limits", "rates and max_connections must be at least 1");
        }
        if limits.max_connections_per_ip == Some(0)
            || limits.max_pending_connections == 0
            || limits.max_pending_per_ip == 0
            || limits.listen_backlog == 0
        {
            return invalid(
                "limits",
                "max_connections_per_ip, max_pending_connections, max_pending_per_ip and listen_backlog must be at least 1",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert/tls_key", "set both or neither");
        }
        let trusted_proxies =
            self.trusted_proxy_networks()
                .map_err(|reason| ConfigError::Invalid {
                    field: "trusted_proxies",
                    reason,
                })?;
        let cluster = &self.cluster;
        if cluster.broker != "memory" && cluster.redis_url().is_none() {
            return invalid(
                "cluster.broker",
                "must be `memory` or a Redis URL (redis://HOST:PORT)",
            );
        }
        if cluster.presence_interval.is_zero() || cluster.presence_ttl <= cluster.presence_interval
        {
            return invalid(
                "cluster.presence_ttl/presence_interval",
                "the interval must be above zero and below the TTL (entries must be refreshed before they expire)",
            );
        }
        if let Err(reason) = self.memory.check(self) {
            return Err(ConfigError::Invalid {
                field: "memory",
                reason,
            });
        }
        if cluster.redis_timeout.is_zero() || cluster.redis_prefix.is_empty() {
            return invalid(
                "cluster.redis_timeout/redis_prefix",
                "must not be zero or empty",
            );
        }
        if cluster.publish_queue_bytes < self.max_message_size.saturating_mul(2) {
            return invalid(
                "cluster.publish_queue_bytes",
                "must be at least twice max_message_size (a largest message with its keys)",
            );
        }
        self.presence.validate()?;
        self.api.validate()?;
        self.webhooks.validate()?;
        if let Err(reason) = self.admin.check() {
            return Err(ConfigError::Invalid {
                field: "admin.key",
                reason,
            });
        }
        Ok(trusted_proxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config = Config::from_toml(
            "listen = \"0.0.0.0:9000\"\nping_interval = \"5s\"\nmax_message_size = 1024\n",
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.ping_interval, Duration::from_secs(5));
        assert_eq!(config.max_message_size, 1024);
        assert_eq!(config.pong_timeout, Config::default().pong_timeout);
    }

    #[test]
    fn history_rules_by_pattern() {
        let config = Config::from_toml(
            "[history]\nsize = 10\n[[history.rooms]]\npattern = \"chat:*\"\nsize = 500\nttl = \"1h\"\n",
        )
        .unwrap();
        let rules = config.history.rules();
        assert_eq!(rules.policy_for("chat:1").size, 500);
        assert_eq!(rules.policy_for("chat:1").ttl, Duration::from_secs(3600));
        assert_eq!(rules.policy_for("other").size, 10);
        assert_eq!(rules.policy_for("other").ttl, Duration::from_secs(300));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::from_toml("lisen = \"0.0.0.0:1\"").is_err());
    }

    #[test]
    fn the_outbox_must_hold_a_maximal_message_with_its_envelope() {
        let tight = Config {
            max_message_size: 1024,
            outbox_bytes: 1024,
            ..Config::default()
        };
        assert!(tight.validate().is_err());
        let enough = Config {
            outbox_bytes: 2048,
            ..tight
        };
        enough.validate().unwrap();
    }

    #[test]
    fn the_broker_is_memory_or_a_redis_url() {
        let config = Config::from_toml("[cluster]\nbroker = \"redis://127.0.0.1:6379\"\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.redis_url(), Some("redis://127.0.0.1:6379"));
        for bad in ["nats://x", "", "redis"] {
            let config = Config {
                cluster: ClusterConfig {
                    broker: bad.to_owned(),
                    ..ClusterConfig::default()
                },
                ..Config::default()
            };
            assert!(config.validate().is_err(), "{bad}");
        }
        let config = Config {
            cluster: ClusterConfig {
                presence_interval: Duration::from_secs(20),
                ..ClusterConfig::default()
            },
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn listen_takes_port_only_host_names_and_ipv6() {
        assert_eq!(parse_listen(":8080"), Ok("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(
            parse_listen("localhost:8080").map(|addr| addr.ip().is_loopback()),
            Ok(true)
        );
        assert_eq!(parse_listen("[::]:8080"), Ok("[::]:8080".parse().unwrap()));
        assert_eq!(
            parse_listen("10.0.0.1:80"),
            Ok("10.0.0.1:80".parse().unwrap())
        );
        for bad in ["8080", ":http", "localhost", "host:99999"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        let config = Config::from_toml("listen = \":9000\"\nlog_format = \"json\"\n").unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn presence_settings_parse_and_are_checked() {
        let config = Config::from_toml(
            "[presence]\nmax_joined_members = 10\nbatch_interval = \"20ms\"\ncount_interval = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(config.presence.max_joined_members, 10);
        assert_eq!(config.presence.batch_interval, Duration::from_millis(20));
        config.validate().unwrap();
        for bad in [
            "[presence]\nmax_joined_members = 0\n",
            "[presence]\nbatch_interval = \"0s\"\n",
            "[presence]\nbatch_interval = \"2s\"\ncount_interval = \"1s\"\n",
        ] {
            assert!(Config::from_toml(bad).unwrap().validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_limits_are_rejected() {
        let config = Config {
            max_violations: 0,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}

/// `[memory]`: what all clients together can make the server hold, and for how long. See the
/// memory budget table in `docs/security.md`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Server-wide bytes that outboxes may hold beyond the first 16 KiB of each (what a
    /// reader that keeps up never exceeds). A connection that needs more when the pool is
    /// spent is closed with 1013 (slow consumer). Default 128 MiB; `0` turns the bound off.
    pub outbox_pool_bytes: usize,
    /// Server-wide bytes of history across rooms (empty rooms included); past it the oldest
    /// entries of any room go first and recoveries that needed them answer
    /// `recovered: false`. Default 64 MiB (a thousand rooms of 100 × 600-byte messages).
    pub history_bytes: usize,
    /// A connection whose socket accepts no byte for this long while we have data for it is
    /// closed (1008 "write timeout"), whatever it sends. Default 50 s: above
    /// `ping_interval + pong_timeout` (45 s by default), the longest a silent peer lasts.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A fragmented message must be completed within this time (1008 otherwise). Default
    /// 20 s: a 64 KiB message at 4 KB/s.
    #[serde(with = "humantime_serde")]
    pub fragment_timeout: Duration,
    /// Publish `msg_id`s remembered for deduplication across rooms (at most 10,000 per room
    /// as well). At the cap a room forgets its own oldest id early. Default 100,000 (about
    /// 25 MB at the 64-byte maximum id).
    pub max_idempotency_ids: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            outbox_pool_bytes: 128 * 1024 * 1024,
            history_bytes: 64 * 1024 * 1024,
            write_timeout: Duration::from_secs(50),
            fragment_timeout: Duration::from_secs(20),
            max_idempotency_ids: 100_000,
        }
    }
}

impl MemoryConfig {
    /// The pool size for the hub (`None`: unbounded).
    pub(crate) fn outbox_pool(&self) -> Option<usize> {
        (self.outbox_pool_bytes > 0).then_some(self.outbox_pool_bytes)
    }

    fn check(&self, config: &Config) -> Result<(), String> {
        if self.write_timeout.is_zero() || self.fragment_timeout.is_zero() {
            return Err("write_timeout and fragment_timeout must be greater than zero".to_owned());
        }
        if self.outbox_pool_bytes > 0
            && self.outbox_pool_bytes < config.max_message_size.saturating_add(1024)
        {
            return Err(
                "outbox_pool_bytes must hold at least one maximal message (or be 0: unbounded)"
                    .to_owned(),
            );
        }
        if self.history_bytes < config.max_message_size.saturating_add(1024) {
            return Err("history_bytes must hold at least one maximal message".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn memory_defaults_and_toml() {
        let config = Config::from_toml(
            "[memory]\noutbox_pool_bytes = 0\nhistory_bytes = 1048576\nwrite_timeout = \"3s\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.memory.outbox_pool(), None);
        assert_eq!(config.memory.write_timeout, Duration::from_secs(3));
        assert_eq!(config.memory.fragment_timeout, Duration::from_secs(20));
        let tiny = Config::from_toml("[memory]\nhistory_bytes = 10\n").unwrap();
        assert!(tiny.validate().is_err());
    }
}
