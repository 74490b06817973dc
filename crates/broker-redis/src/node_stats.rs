//! The operator page's cluster view over Redis: every node writes its latest snapshot into one
//! hash, once per second, and reads every other node's from it in the same script.
//!
//! One key, `PREFIX:admin:nodes` (so a Redis Cluster keeps it in one slot): field = the node's
//! name, value = `TIME_MS SNAPSHOT`, stamped with Redis's clock (nodes' clocks may differ).
//! An entry older than [`STALE`] belongs to a node that stopped: the script leaves it out and
//! deletes it. The hash itself expires [`KEY_TTL`] after the last write, so a deployment that
//! is gone leaves nothing behind.

use std::time::Duration;

use switchboard_hub::HubError;

use crate::Shared;

/// Older entries are of nodes that stopped: three missed writes (one a second).
const STALE: Duration = Duration::from_secs(3);
/// The hash outlives its last writer by this much.
const KEY_TTL: Duration = Duration::from_secs(60);

/// Writes `snapshot` under `node`, drops stale entries, returns the snapshots of every live
/// node. KEYS[1] the hash; ARGV: node, snapshot, stale ms, key TTL ms.
const SHARE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local entry = all[i + 1]
  local space = string.find(entry, ' ', 1, true)
  local at = space and tonumber(string.sub(entry, 1, space - 1))
  if at == nil or now - at > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live[#live + 1] = string.sub(entry, space + 1)
  end
end
return live
";

/// The hash's key.
fn key(prefix: &str) -> String {
    format!("{prefix}:admin:nodes")
}

impl Shared {
    /// See [`switchboard_hub::Broker::share_node_stats`].
    pub(crate) async fn share_node_stats(
        &self,
        node: &str,
        snapshot: String,
    ) -> Result<Vec<String>, HubError> {
        let script = redis::Script::new(SHARE);
        let request = async {
            script
                .key(key(&self.config.prefix))
                .arg(node)
                .arg(snapshot)
                .arg(u64::try_from(STALE.as_millis()).unwrap_or(u64::MAX))
                .arg(u64::try_from(KEY_TTL.as_millis()).unwrap_or(u64::MAX))
                .invoke_async::<Vec<String>>(&mut self.conn.clone())
                .await
                // Not `failed`: that warns, and this runs every second through an outage (the
                // sampler logs it at debug; the page shows it).
                .map_err(|err| HubError::Unavailable(err.to_string()))
        };
        self.bounded(request).await
    }
}
