//! The HTTP API for backends, under `/api/v1/` (docs/http-api.md): publish and broadcast,
//! presence, history, rooms, disconnect, and the OpenAPI document generated from this code.
//!
//! Every operation goes through the broker, so every node of a cluster answers the same.
//! Publishing uses [`switchboard_hub::Broker::publish_from`]: the same room code as a
//! WebSocket publish. Reads reuse the WebSocket requests (`members`, `history`) with a
//! short-lived session as the mailbox of the reply, so they answer exactly what a connection
//! would be told.

mod error;
mod keys;

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::{Broker, CloseFrame, Kick, Outbound, Payload, Session, SourcePublish};
use switchboard_protocol::client::{MAX_MEMBERS_PAGE, MAX_MSG_ID_LEN};
use switchboard_protocol::names::{validate_room, validate_user};
use tokio::time::Instant;
use tracing::info;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

pub(crate) use self::error::ApiError;
use self::error::{ErrorBody, ErrorDetail};
pub(crate) use self::keys::ApiKeys;
use crate::config::ApiScope;
use crate::metrics::conn::Source;
use crate::session::now_millis;
use crate::state::AppState;

/// Rooms one broadcast may name.
const MAX_BROADCAST_ROOMS: usize = 100;
/// Messages one history answer holds at most (also the default with `since`).
const MAX_HISTORY: usize = 1_000;
/// Rooms one page lists at most.
const MAX_ROOMS_PAGE: usize = 1_000;
/// The user a publish is `from` unless it names one.
const DEFAULT_FROM: &str = "api";
/// Longest close reason (RFC 6455: 123 bytes).
const MAX_REASON: usize = 123;

/// The API's routes (registered only when a key is configured: otherwise every path is 404).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/broadcast", post(broadcast))
        .route("/api/v1/rooms", get(rooms))
        .route("/api/v1/rooms/{room}/presence", get(presence))
        .route("/api/v1/rooms/{room}/history", get(history))
        .route("/api/v1/users/{user}/disconnect", post(disconnect))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/{*rest}", any(unknown))
}

/// A JSON response from a serializable value.
pub(crate) fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The key of the request, if it may do `scope` now (and a request is taken from its rate).
fn authorize<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    scope: ApiScope,
) -> Result<keys::Verified<'s>, ApiError> {
    let keys = state
        .api
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the API is off"))?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, key) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ApiError::unauthorized("an API key is needed: Authorization: Bearer KEY"))?;
    let key = keys
        .find(presented)
        .ok_or_else(|| ApiError::unauthorized("not a valid API key"))?;
    key.take(Instant::now()).map_err(ApiError::rate_limited)?;
    if !key.allows(scope) {
        return Err(ApiError::forbidden(format!(
            "the key {:?} does not have the `{}` scope",
            key.name(),
            scope_name(scope)
        )));
    }
    Ok(key)
}

fn scope_name(scope: ApiScope) -> &'static str {
    match scope {
        ApiScope::Publish => "publish",
        ApiScope::Read => "read",
        ApiScope::Admin => "admin",
    }
}

/// The body as JSON, at most `api.max_body_bytes` (413 beyond). An empty body is `{}` when
/// `empty_ok`.
async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    body: Body,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let limit = state.config.api.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(format!(
            "the request body is larger than {limit} bytes (api.max_body_bytes)"
        ))
    })?;
    let bytes: &[u8] = if bytes.is_empty() && empty_ok {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}

/// A `limit` query parameter: `default` when absent, else 1 to `max` (400 otherwise).
fn page_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!("limit must be 1 to {max}")))
    }
}

fn check_room(room: &str) -> Result<(), ApiError> {
    validate_room(room)
        .map_err(|err| ApiError::invalid("invalid_room", format!("invalid room name: {err}")))
}

fn path_value(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|err| ApiError::bad_request(err.body_text()))
}

fn query_value<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|err| ApiError::bad_request(err.body_text()))
}

/// A publish's message and how it is told apart from a retry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    /// The room (it need not have members: the message is kept in its history).
    #[schema(pattern = r"^[A-Za-z0-9_\-.:@/=+]{1,128}$")]
    room: String,
    /// Any JSON value but null: delivered as the message's `data`. Give `data` or
    /// `data_base64`.
    #[schema(value_type = Option<serde_json::Value>)]
    data: Option<Box<RawValue>>,
    /// Bytes, base64-encoded: delivered as a binary frame.
    data_base64: Option<String>,
    /// Idempotency key (1 to 64 bytes; JSON data only): a retry with the same `from` and
    /// `msg_id` within the idempotency window is not delivered again (protocol §5.9), also
    /// when the first attempt came over a WebSocket. The `Idempotency-Key` header is the
    /// same.
    msg_id: Option<String>,
    /// The user the message is from (default `api`): the `from` subscribers see, and the
    /// scope of `msg_id`.
    from: Option<String>,
}

/// The fields a publish and a broadcast share.
struct MessageFields {
    data: Option<Box<RawValue>>,
    data_base64: Option<String>,
    msg_id: Option<String>,
    from: Option<String>,
}

impl PublishBody {
    fn split(self) -> (String, MessageFields) {
        let message = MessageFields {
            data: self.data,
            data_base64: self.data_base64,
            msg_id: self.msg_id,
            from: self.from,
        };
        (self.room, message)
    }
}

impl BroadcastBody {
    fn split(self) -> (Vec<String>, MessageFields) {
        let message = MessageFields {
            data: self.data,
            data_base64: self.data_base64,
            msg_id: self.msg_id,
            from: self.from,
        };
        (self.rooms, message)
    }
}

/// What a message is, decoded.
enum OwnedPayload {
    Json(Box<RawValue>),
    Binary(Vec<u8>),
}

impl OwnedPayload {
    fn as_payload(&self) -> Payload<'_> {
        match self {
            Self::Json(data) => Payload::Json(data),
            Self::Binary(bytes) => Payload::Binary(bytes),
        }
    }
}

/// A message ready to publish: payload, sender, idempotency key.
struct Message {
    payload: OwnedPayload,
    from: String,
    msg_id: Option<String>,
}

impl Message {
    fn parse(
        state: &AppState,
        fields: MessageFields,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let max = state.config.max_message_size;
        let payload = match (fields.data, fields.data_base64) {
            (Some(data), None) => OwnedPayload::Json(data),
            (None, Some(text)) => OwnedPayload::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|err| ApiError::bad_request(format!("data_base64: {err}")))?,
            ),
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of `data` (JSON, not null) and `data_base64`",
                ));
            }
        };
        let size = match &payload {
            OwnedPayload::Json(data) => data.get().len(),
            OwnedPayload::Binary(bytes) => bytes.len(),
        };
        if size > max {
            return Err(ApiError::too_large(format!(
                "the message is {size} bytes; at most {max} (max_message_size)"
            )));
        }
        if let OwnedPayload::Json(data) = &payload {
            check_data(data)?;
        }
        let header_key = match headers.get("idempotency-key") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| ApiError::bad_request("Idempotency-Key must be ASCII"))?
                    .to_owned(),
            ),
            None => None,
        };
        let msg_id = match (fields.msg_id, header_key) {
            (Some(body), Some(header)) if body != header => {
                return Err(ApiError::bad_request(
                    "msg_id and the Idempotency-Key header differ",
                ));
            }
            (body, header) => body.or(header),
        };
        if let Some(id) = &msg_id {
            if id.is_empty() || id.len() > MAX_MSG_ID_LEN {
                return Err(ApiError::bad_request(format!(
                    "msg_id must be 1 to {MAX_MSG_ID_LEN} bytes"
                )));
            }
            if matches!(payload, OwnedPayload::Binary(_)) {
                return Err(ApiError::bad_request(
                    "msg_id applies to JSON data only (binary messages have none, as on /ws)",
                ));
            }
        }
        let from = fields.from.unwrap_or_else(|| DEFAULT_FROM.to_owned());
        validate_user(&from)
            .map_err(|err| ApiError::invalid("invalid_user", format!("from: {err}")))?;
        Ok(Self {
            payload,
            from,
            msg_id,
        })
    }

    fn request<'a>(&'a self, room: &'a str, ts: u64) -> SourcePublish<'a> {
        SourcePublish {
            room,
            from: &self.from,
            payload: self.payload.as_payload(),
            ts,
            msg_id: self.msg_id.as_deref(),
        }
    }
}

/// Refuses `data` a WebSocket publish could not carry (nesting deeper than 64 levels, lone
/// UTF-16 surrogates, numbers beyond f64): the protocol decoder judges it, so both paths
/// accept exactly the same payloads.
fn check_data(data: &RawValue) -> Result<(), ApiError> {
    let frame = format!(r#"{{"type":"publish","room":"r","data":{}}}"#, data.get());
    switchboard_protocol::client::decode(&frame)
        .map(drop)
        .map_err(|err| ApiError::bad_request(err.message))
}

/// Where the message went.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PublishResult {
    /// The message's seq in the room (the original one for a duplicate).
    seq: u64,
    /// The room's epoch the seq belongs to.
    epoch: String,
    /// The `msg_id` had been accepted before: nothing was delivered this time.
    duplicate: bool,
}

/// Publishes one message to a room: sequenced, kept in history and delivered exactly like a
/// WebSocket publish.
#[utoipa::path(
    post,
    path = "/api/v1/publish",
    tag = "publish",
    request_body = PublishBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same as `msg_id`")),
    responses(
        (status = 200, description = "Published (or a duplicate)", body = PublishResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "The key lacks the `publish` scope", body = ErrorBody),
        (status = 413, description = "Body or message too large", body = ErrorBody),
        (status = 429, description = "The key is over its rate", body = ErrorBody),
        (status = 503, description = "The cluster broker is unavailable", body = ErrorBody),
    )
)]
async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, ApiScope::Publish)?;
    let body: PublishBody = read_json(&state, body, false).await?;
    let (room, fields) = body.split();
    check_room(&room)?;
    let message = Message::parse(&state, fields, &headers)?;
    let published = state
        .broker
        .publish_from(message.request(&room, now_millis()))
        .await?;
    if !published.duplicate {
        crate::metrics::conn::published(Source::Api);
    }
    Ok(json(&PublishResult {
        seq: published.seq,
        epoch: published.epoch.to_string(),
        duplicate: published.duplicate,
    }))
}

/// One message for several rooms.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastBody {
    /// The rooms (1 to 100), each published to as by `publish`.
    #[schema(min_items = 1, max_items = 100)]
    rooms: Vec<String>,
    /// Any JSON value but null: delivered as the message's `data`. Give `data` or
    /// `data_base64`.
    #[schema(value_type = Option<serde_json::Value>)]
    data: Option<Box<RawValue>>,
    /// Bytes, base64-encoded: delivered as a binary frame.
    data_base64: Option<String>,
    /// Idempotency key (1 to 64 bytes; JSON data only): a retry with the same `from` and
    /// `msg_id` within the idempotency window is not delivered again (protocol §5.9), also
    /// when the first attempt came over a WebSocket. The `Idempotency-Key` header is the
    /// same.
    msg_id: Option<String>,
    /// The user the message is from (default `api`): the `from` subscribers see, and the
    /// scope of `msg_id`.
    from: Option<String>,
}

/// The outcome for each room, in the order of the request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BroadcastResult {
    results: Vec<RoomResult>,
}

/// One room's outcome: `seq`, `epoch` and `duplicate`, or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomResult {
    room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

/// Publishes one message to several rooms (each its own seq; `msg_id` counts per room).
#[utoipa::path(
    post,
    path = "/api/v1/broadcast",
    tag = "publish",
    request_body = BroadcastBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same as `msg_id`")),
    responses(
        (status = 200, description = "One result per room", body = BroadcastResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "The key lacks the `publish` scope", body = ErrorBody),
        (status = 413, description = "Body or message too large", body = ErrorBody),
        (status = 429, description = "The key is over its rate", body = ErrorBody),
    )
)]
async fn broadcast(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, ApiScope::Publish)?;
    let body: BroadcastBody = read_json(&state, body, false).await?;
    let (rooms, fields) = body.split();
    if rooms.is_empty() || rooms.len() > MAX_BROADCAST_ROOMS {
        return Err(ApiError::bad_request(format!(
            "rooms must name 1 to {MAX_BROADCAST_ROOMS} rooms"
        )));
    }
    let message = Message::parse(&state, fields, &headers)?;
    let ts = now_millis();
    // Every publish is queued before any is awaited: their order is that of `rooms`.
    let pending: Vec<_> = rooms
        .iter()
        .map(|room| state.broker.publish_from(message.request(room, ts)))
        .collect();
    let outcomes = futures_util::future::join_all(pending).await;
    let results = rooms
        .into_iter()
        .zip(outcomes)
        .map(|(room, outcome)| match outcome {
            Ok(published) => {
                if !published.duplicate {
                    crate::metrics::conn::published(Source::Api);
                }
                RoomResult {
                    room,
                    seq: Some(published.seq),
                    epoch: Some(published.epoch.to_string()),
                    duplicate: Some(published.duplicate),
                    error: None,
                }
            }
            Err(err) => RoomResult {
                room,
                seq: None,
                epoch: None,
                duplicate: None,
                error: Some(ApiError::from(err).detail()),
            },
        })
        .collect();
    Ok(json(&BroadcastResult { results }))
}

/// A session that only receives the reply to one request, then leaves.
struct Mailbox<'a> {
    broker: &'a dyn Broker,
    session: Arc<Session>,
}

impl<'a> Mailbox<'a> {
    fn open(broker: &'a dyn Broker) -> Self {
        Self {
            broker,
            session: broker.connect(Arc::from(DEFAULT_FROM)),
        }
    }

    /// The reply queued for the session, parsed.
    fn reply<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let mut frames = VecDeque::new();
        let _ = self.session.outbox().try_batch(&mut frames);
        frames
            .into_iter()
            .find_map(|frame| match frame {
                Outbound::Text(text) => serde_json::from_slice(&text).ok(),
                _ => None,
            })
            .ok_or_else(|| {
                ApiError::from(switchboard_hub::HubError::Unavailable(
                    "the reply did not fit this node's memory budget".to_owned(),
                ))
            })
    }
}

impl Drop for Mailbox<'_> {
    fn drop(&mut self) {
        self.broker.disconnect(&self.session);
    }
}

/// A page of presence.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PresenceQuery {
    /// Users after this name (the previous page's `next`).
    after: Option<String>,
    /// Users per page, 1 to 1,000 (default 1,000).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct MembersReply {
    members: Vec<String>,
    member_count: u64,
    next: Option<String>,
}

/// Who is in a room: user names in byte order, paged.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PresenceResult {
    room: String,
    /// Distinct users in the room.
    member_count: u64,
    /// This page's users.
    members: Vec<String>,
    /// More follow: ask again with `after` set to this.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The room's members (users, on every node), as a `members` request on `/ws` sees them.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/presence",
    tag = "read",
    params(("room" = String, Path, description = "The room"), PresenceQuery),
    responses(
        (status = 200, description = "A page of members", body = PresenceResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such path", body = ErrorBody),
        (status = 429, description = "The key is over its rate", body = ErrorBody),
        (status = 503, description = "The cluster broker is unavailable", body = ErrorBody),
    )
)]
async fn presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<PresenceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, ApiScope::Read)?;
    let room = path_value(room)?;
    let query = query_value(query)?;
    check_room(&room)?;
    let limit = page_limit(query.limit, MAX_MEMBERS_PAGE, MAX_MEMBERS_PAGE)?;
    let mailbox = Mailbox::open(&*state.broker);
    state
        .broker
        .members(&mailbox.session, &room, None, query.after.as_deref(), limit)
        .await?;
    let reply: MembersReply = mailbox.reply()?;
    Ok(json(&PresenceResult {
        room,
        member_count: reply.member_count,
        members: reply.members,
        next: reply.next,
    }))
}

/// Which messages of the history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Messages after this seq, oldest first (to page on, pass the last seq you got).
    /// Without it: the latest `limit` messages.
    since: Option<u64>,
    /// Messages at most, 1 to 1,000 (default 100).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct HistoryReply {
    seq: u64,
    epoch: String,
    messages: Vec<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
struct SeqOf {
    seq: u64,
}

/// A message kept in history, as subscribers received it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryMessage {
    /// `message`.
    #[serde(rename = "type")]
    kind: String,
    room: String,
    from: String,
    seq: u64,
    /// Server time of the publish, ms since the Unix epoch.
    ts: u64,
    /// The JSON payload (JSON messages).
    #[schema(value_type = Option<serde_json::Value>)]
    data: Option<serde_json::Value>,
    /// The payload, base64 (binary messages).
    binary: Option<String>,
}

/// The history of a room.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryResult {
    room: String,
    /// The room's epoch: seqs are comparable only under the same epoch.
    epoch: String,
    /// The room's last seq.
    seq: u64,
    /// Whether every message after `since` is here (or would be with a larger `limit`):
    /// false when history no longer holds some of them.
    complete: bool,
    /// Oldest first.
    #[schema(value_type = Vec<HistoryMessage>)]
    messages: Vec<Box<RawValue>>,
}

/// A room's history (what recovery replays), as a `history` request on `/ws` sees it.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/history",
    tag = "read",
    params(("room" = String, Path, description = "The room"), HistoryQuery),
    responses(
        (status = 200, description = "Messages, oldest first", body = HistoryResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such path", body = ErrorBody),
        (status = 429, description = "The key is over its rate", body = ErrorBody),
        (status = 503, description = "The cluster broker is unavailable", body = ErrorBody),
    )
)]
async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, ApiScope::Read)?;
    let room = path_value(room)?;
    let query = query_value(query)?;
    check_room(&room)?;
    let limit = page_limit(query.limit, 100, MAX_HISTORY)?;
    let mailbox = Mailbox::open(&*state.broker);
    state
        .broker
        .history(&mailbox.session, &room, None, None, now_millis())
        .await?;
    let reply: HistoryReply = mailbox.reply()?;
    let mut messages: Vec<(u64, Box<RawValue>)> = reply
        .messages
        .into_iter()
        .filter_map(|raw| Some((serde_json::from_str::<SeqOf>(raw.get()).ok()?.seq, raw)))
        .collect();
    let complete = match (query.since, messages.first()) {
        (None, _) => true,
        (Some(since), _) if since >= reply.seq => true,
        (Some(since), Some((first, _))) => *first <= since.saturating_add(1),
        (Some(_), None) => false,
    };
    let messages: Vec<Box<RawValue>> = match query.since {
        Some(since) => messages
            .into_iter()
            .filter(|(seq, _)| *seq > since)
            .take(limit)
            .map(|(_, raw)| raw)
            .collect(),
        None => {
            let skip = messages.len().saturating_sub(limit);
            messages.drain(..skip);
            messages.into_iter().map(|(_, raw)| raw).collect()
        }
    };
    Ok(json(&HistoryResult {
        room,
        epoch: reply.epoch,
        seq: reply.seq,
        complete,
        messages,
    }))
}

/// Which rooms.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoomsQuery {
    /// Only rooms whose names start with this.
    prefix: Option<String>,
    /// Rooms after this name (the previous page's `next`).
    after: Option<String>,
    /// Rooms per page, 1 to 1,000 (default 100).
    limit: Option<usize>,
}

/// A room and how many users are in it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomEntry {
    room: String,
    member_count: u64,
}

/// A page of rooms, in byte order of their names.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomsResult {
    rooms: Vec<RoomEntry>,
    /// More follow: ask again with `after` set to this.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The rooms that have members or history, with their member counts.
#[utoipa::path(
    get,
    path = "/api/v1/rooms",
    tag = "read",
    params(RoomsQuery),
    responses(
        (status = 200, description = "A page of rooms", body = RoomsResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 429, description = "The key is over its rate", body = ErrorBody),
        (status = 503, description = "The cluster broker is unavailable", body = ErrorBody),
    )
)]
async fn rooms(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<RoomsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, ApiScope::Read)?;
    let query = query_value(query)?;
    let prefix = query.prefix.unwrap_or_default();
    if !prefix.is_empty() {
        check_room(&prefix)?;
    }
    let limit = page_limit(query.limit, 100, MAX_ROOMS_PAGE)?;
    let page = state
        .broker
        .rooms(&prefix, query.after.as_deref(), limit)
        .await?;
    Ok(json(&RoomsResult {
        rooms: page
            .rooms
            .into_iter()
            .map(|(room, member_count)| RoomEntry { room, member_count })
            .collect(),
        next: page.next,
    }))
}

/// How to close the user's connections.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectBody {
    /// Close code: 1000 or 4000-4999 (default 4003, which tells clients not to reconnect
    /// with the same token).
    code: Option<u16>,
    /// Close reason, at most 123 bytes (default `disconnected`).
    reason: Option<String>,
    /// Seconds during which the user is refused at the upgrade and on `refresh` (on every
    /// node); at most `api.max_revoke`. Default 0: may reconnect at once.
    revoke_for: Option<u64>,
}

/// What was done.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DisconnectResult {
    user: String,
    /// Until when the user is refused, ms since the Unix epoch (absent: not refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    denied_until: Option<u64>,
}

/// Closes every connection of a user, on every node; with `revoke_for`, keeps the user out
/// for that long.
#[utoipa::path(
    post,
    path = "/api/v1/users/{user}/disconnect",
    tag = "admin",
    params(("user" = String, Path, description = "The user name (the token's `sub`)")),
    request_body(content = Option<DisconnectBody>, description = "Optional"),
    responses(
        (status = 200, description = "Done (whether or not the user had connections)", body = DisconnectResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such path", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "The key is over its rate", body = ErrorBody),
        (status = 503, description = "The cluster broker is unavailable", body = ErrorBody),
    )
)]
async fn disconnect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = authorize(&state, &headers, ApiScope::Admin)?;
    let user = path_value(user)?;
    validate_user(&user)
        .map_err(|err| ApiError::invalid("invalid_user", format!("invalid user name: {err}")))?;
    let body: DisconnectBody = read_json(&state, body, true).await?;
    let code = body.code.unwrap_or(4003);
    if code != 1000 && !(4000..=4999).contains(&code) {
        return Err(ApiError::bad_request("code must be 1000 or 4000 to 4999"));
    }
    let reason = body.reason.unwrap_or_else(|| "disconnected".to_owned());
    if reason.len() > MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "reason must be at most {MAX_REASON} bytes"
        )));
    }
    let max = state.config.api.max_revoke.as_secs();
    let revoke_for = body.revoke_for.unwrap_or(0);
    if revoke_for > max {
        return Err(ApiError::bad_request(format!(
            "revoke_for must be at most {max} s (api.max_revoke)"
        )));
    }
    let now = now_millis();
    let denied_until =
        (revoke_for > 0).then(|| now.saturating_add(revoke_for.saturating_mul(1000)));
    let kick = Kick {
        user: user.clone(),
        close: CloseFrame {
            code,
            reason: reason.into(),
        },
        deny_until_ms: denied_until,
    };
    let closed_here = state.broker.kick(&kick, now).await?;
    info!(key = key.name(), %user, closed_here, revoke_for, "API disconnect");
    Ok(json(&DisconnectResult { user, denied_until }))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
async fn openapi() -> Response {
    static DOCUMENT: LazyLock<String> =
        LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// Any other path under `/api/v1/`.
async fn unknown() -> ApiError {
    ApiError::not_found("no such API endpoint; see /api/v1/openapi.json")
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers and types above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard HTTP API",
        version = "1",
        description = "Publish to rooms and inspect them from a backend. See docs/http-api.md."
    ),
    paths(publish, broadcast, presence, history, rooms, disconnect, openapi),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub(crate) struct ApiDoc;
