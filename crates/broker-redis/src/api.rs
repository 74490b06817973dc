//! The HTTP API's operations on the Redis engine (a publish from a source that is not a
//! connection is a member's publish: the same script, order, history and msg_id scope): listing
//! rooms, and kicks — broadcast to every node on the control
//! channel `PREFIX:!control`, and kept in the hash `PREFIX:!denied` (user → until, ms) that a
//! node loads when its Pub/Sub connection (re)connects, so that a node started later knows
//! the deny list too.

use std::borrow::Cow;

use switchboard_hub::{CloseFrame, HubError, Kick, MAX_DENIED, RoomsPage};
use tracing::{debug, info, warn};

use crate::Shared;
use crate::wire::RoomKeys;

/// Keys read by one `SCAN` step when listing rooms.
const SCAN_COUNT: usize = 1_000;
/// Rooms a listing considers at most (they are sorted here to page in byte order): bounds a
/// listing's memory and time; a deployment with more rooms pages through a prefix.
pub(crate) const MAX_LISTED_ROOMS: usize = 100_000;

pub(crate) fn control_channel(prefix: &str) -> String {
    format!("{prefix}:!control")
}

fn denied_key(prefix: &str) -> String {
    format!("{prefix}:!denied")
}

/// Rooms whose meta key exists (members, or history not yet expired), with their users.
pub(crate) async fn rooms(
    shared: &Shared,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<RoomsPage, HubError> {
    let base = &shared.config.prefix;
    // Room names never hold glob characters (`*?[]\`), so the prefix is taken literally.
    let pattern = format!("{base}:{{{prefix}*}}:meta");
    let mut conn = shared.conn.clone();
    let mut cursor: u64 = 0;
    let mut names: Vec<String> = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut conn)
            .await
            .map_err(|err| shared.failed("rooms", &err))?;
        names.extend(keys.iter().filter_map(|key| {
            let room = key
                .strip_prefix(base.as_str())?
                .strip_prefix(":{")?
                .strip_suffix("}:meta")?;
            after
                .is_none_or(|after| room > after)
                .then(|| room.to_owned())
        }));
        cursor = next;
        if cursor == 0 || names.len() >= MAX_LISTED_ROOMS {
            break;
        }
    }
    names.sort_unstable();
    names.dedup();
    names.truncate(limit.saturating_add(1));
    let mut pipe = redis::pipe();
    for name in &names {
        pipe.cmd("HLEN").arg(RoomKeys::new(base, name).users);
    }
    let counts: Vec<u64> = if names.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn)
            .await
            .map_err(|err| shared.failed("rooms", &err))?
    };
    Ok(RoomsPage::of(
        names.into_iter().zip(counts).collect(),
        after,
        limit,
    ))
}

/// Records the deny (if any) in Redis, tells every node (this one included) and applies the
/// kick here at once. Returns how many connections were closed here.
pub(crate) async fn kick(shared: &Shared, kick: &Kick, now_ms: u64) -> Result<usize, HubError> {
    let prefix = &shared.config.prefix;
    let mut pipe = redis::pipe();
    if let Some(until) = kick.deny_until_ms {
        let key = denied_key(prefix);
        pipe.cmd("HSET")
            .arg(&key)
            .arg(&kick.user)
            .arg(until)
            .ignore();
        // The hash lives as long as its latest deadline (GT: never shortened).
        pipe.cmd("PEXPIREAT")
            .arg(&key)
            .arg(until)
            .arg("GT")
            .ignore();
        pipe.cmd("PEXPIREAT")
            .arg(&key)
            .arg(until)
            .arg("NX")
            .ignore();
    }
    let message = serde_json::json!({
        "user": kick.user,
        "code": kick.close.code,
        "reason": kick.close.reason,
        "deny_until_ms": kick.deny_until_ms,
    })
    .to_string();
    pipe.cmd("PUBLISH")
        .arg(control_channel(prefix))
        .arg(message)
        .ignore();
    let () = pipe
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.failed("kick", &err))?;
    Ok(shared.users.kick(kick, now_ms))
}

/// A kick from the control channel (sent by any node, this one included).
pub(crate) fn on_control(shared: &Shared, payload: &[u8]) {
    let Some(kick) = decode_kick(payload) else {
        warn!("undecodable message on the control channel; ignored");
        return;
    };
    let closed = shared.users.kick(&kick, crate::now_millis());
    if closed > 0 {
        info!(user = %kick.user, closed, "connections closed by an API disconnect");
    }
}

fn decode_kick(payload: &[u8]) -> Option<Kick> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(Kick {
        user: value.get("user")?.as_str()?.to_owned(),
        close: CloseFrame {
            code: u16::try_from(value.get("code")?.as_u64()?).ok()?,
            reason: Cow::Owned(value.get("reason")?.as_str()?.to_owned()),
        },
        deny_until_ms: value
            .get("deny_until_ms")
            .and_then(serde_json::Value::as_u64),
    })
}

/// Loads the deny list from Redis (after the Pub/Sub connection (re)connected: kicks sent
/// while it was away are not replayed). Best effort: a failure is logged.
pub(crate) async fn load_denied(shared: &Shared) {
    let key = denied_key(&shared.config.prefix);
    let entries: Result<Vec<(String, u64)>, _> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut shared.conn.clone())
        .await;
    match entries {
        Ok(entries) => {
            let now = crate::now_millis();
            let mut expired = Vec::new();
            for (user, until) in entries.into_iter().take(MAX_DENIED) {
                if until > now {
                    shared.users.kick(
                        &Kick {
                            user,
                            close: CloseFrame::new(4003, "denied"),
                            deny_until_ms: Some(until),
                        },
                        now,
                    );
                } else {
                    expired.push(user);
                }
            }
            if !expired.is_empty() {
                let _: Result<i64, _> = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(expired)
                    .query_async(&mut shared.conn.clone())
                    .await;
            }
        }
        Err(err) => debug!(error = %err, "loading the deny list failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_round_trips_through_the_control_channel_format() {
        let kick = Kick {
            user: "al ice\"".into(),
            close: CloseFrame::new(4003, "bye"),
            deny_until_ms: Some(5),
        };
        let text = serde_json::json!({
            "user": kick.user, "code": 4003, "reason": "bye", "deny_until_ms": 5
        })
        .to_string();
        assert_eq!(decode_kick(text.as_bytes()), Some(kick));
        assert_eq!(decode_kick(b"nonsense"), None);
    }
}
