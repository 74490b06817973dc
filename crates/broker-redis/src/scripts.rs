//! The Lua scripts that keep each room's shared state consistent: every change to a room's
//! sequence, history and presence, and the publication that tells the other nodes, happen in
//! one script, which Redis runs atomically. That is what gives every node the same order.
//!
//! Keys of room R (the `{R}` hash tag keeps them in one slot of a Redis Cluster):
//! - `P:{R}:meta`  hash: `epoch`, `seq` (last message), `pv` (presence version)
//! - `P:{R}:hist`  stream: one entry per message, id `SEQ-1`, fields `k` (j/b), `f` (frame),
//!   `t` (ms); trimmed to the history size, expires `history ttl` after the last publish
//! - `P:{R}:pres`  sorted set: `NODE␟USER` → expiry (ms); each node refreshes its own
//! - `P:{R}:users` hash: USER → number of nodes where the user is present
//! - `P:{R}:id:USER␟MSG_ID` string: `EPOCH:SEQ` of a publish with that msg_id (idempotency)
//!
//! Channel `P:{R}` carries the room's stream: `TYPE EPOCH SEQ SKIP KIND FRAME` (see
//! [`crate::wire`]).

use redis::Script;

/// Shared Lua: `meta_of` makes sure the room has an epoch (a new one, and a fresh history,
/// when the room's keys had expired or Redis lost them); `reap` removes presence entries
/// whose node stopped refreshing them and publishes the `leave` of users no node has left.
///
/// `events` collects the transitions the script saw, for webhooks: `KIND USER PV` triples
/// (`o` room occupied, `j` member joined, `l` member left, `v` room vacated; USER empty for
/// room events). Scripts that change presence return them, so exactly one node, the one that
/// ran the script, reports each transition: once per cluster.
const PRELUDE: &str = r"
local events = {}

local function transition(kind, user, pv)
  table.insert(events, kind)
  table.insert(events, user)
  table.insert(events, string.format('%d', pv))
end
local function meta_of(meta, hist, new_epoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = new_epoch
    redis.call('DEL', hist)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'pv', 0)
  end
  return epoch
end

local function presence_event(meta, users, channel, head, user, skip, kind)
  local pv = redis.call('HINCRBY', meta, 'pv', 1)
  redis.call('PUBLISH', channel, 'p - ' .. pv .. ' ' .. skip .. ' j' .. head .. cjson.encode(user) .. '}')
  local count = redis.call('HLEN', users)
  if kind == 'j' and count == 1 then
    transition('o', '', pv)
  end
  transition(kind, user, pv)
  if kind == 'l' and count == 0 then
    transition('v', '', pv)
  end
end

local function reap(meta, pres, users, channel, leave_head, now)
  local dead = redis.call('ZRANGEBYSCORE', pres, '-inf', now)
  for _, field in ipairs(dead) do
    redis.call('ZREM', pres, field)
    local sep = string.find(field, '\31', 1, true)
    if sep then
      local user = string.sub(field, sep + 1)
      if redis.call('HINCRBY', users, user, -1) <= 0 then
        redis.call('HDEL', users, user)
        presence_event(meta, users, channel, leave_head, user, '-', 'l')
      end
    end
  end
end

local function present(meta, pres, users, channel, join_head, node, user, expiry, skip)
  local field = node .. '\31' .. user
  local known = redis.call('ZSCORE', pres, field)
  redis.call('ZADD', pres, expiry, field)
  if not known then
    if redis.call('HINCRBY', users, user, 1) == 1 then
      presence_event(meta, users, channel, join_head, user, skip, 'j')
    end
  end
end

local function absent(meta, pres, users, channel, leave_head, node, user, skip)
  if redis.call('ZREM', pres, node .. '\31' .. user) == 1 then
    if redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
      presence_event(meta, users, channel, leave_head, user, skip, 'l')
    end
  end
end
";

/// Sequences a message, keeps it in history, remembers its msg_id, publishes it.
/// KEYS: meta, hist, [idem]. ARGV: channel, kind (j/b), head, tail, skip, ts, history size,
/// keep ms, history ttl ms, idempotency window ms, new epoch, stamp (`@` and µs, see
/// [`crate::wire`]).
/// Returns {epoch, seq, duplicate (0/1)}.
const PUBLISH: &str = r"
local meta, hist, idem = KEYS[1], KEYS[2], KEYS[3]
local epoch = meta_of(meta, hist, ARGV[11])
if idem then
  -- EPOCH:SEQ; a msg_id remembered from an earlier incarnation of the room does not count.
  local previous = redis.call('GET', idem)
  if previous then
    local sep = string.find(previous, ':', 1, true)
    if sep and string.sub(previous, 1, sep - 1) == epoch then
      return {epoch, tonumber(string.sub(previous, sep + 1)), 1}
    end
  end
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local seq_text
if ARGV[2] == 'b' then
  local n, bytes = seq, ''
  for _ = 1, 8 do
    bytes = string.char(n % 256) .. bytes
    n = math.floor(n / 256)
  end
  seq_text = bytes
else
  seq_text = string.format('%d', seq)
end
local frame = ARGV[3] .. seq_text .. ARGV[4]
local size = tonumber(ARGV[7])
if size > 0 then
  redis.call('XADD', hist, 'MAXLEN', size, string.format('%d', seq) .. '-1', 'k', ARGV[2], 'f', frame, 't', ARGV[6])
  redis.call('PEXPIRE', hist, ARGV[9])
end
redis.call('PEXPIRE', meta, ARGV[8])
if idem then
  redis.call('SET', idem, epoch .. ':' .. string.format('%d', seq), 'PX', ARGV[10])
end
redis.call('PUBLISH', ARGV[1], 'm ' .. epoch .. ' ' .. string.format('%d', seq) .. ' ' .. ARGV[5] .. ' ' .. ARGV[12] .. ' ' .. ARGV[2] .. frame)
return {epoch, seq, 0}
";

/// A joiner's snapshot, adding the user's presence on this node when asked; a resync's
/// snapshot, restoring the presence of this node's users of the room first (after Redis lost
/// its data they are listed again at once, not only at the next heartbeat).
/// KEYS: meta, hist, pres, users. ARGV: channel, node, user ('' = no presence change), now,
/// expiry, since seq ('' = none), since epoch, history ttl ms, join head, leave head, skip,
/// new epoch, keep ms, list limit, users to restore...
/// Returns {epoch, seq, pv, members, recovered (0/1), replay {seq, kind, frame, ...}, count,
/// events}:
/// `members` lists every user when there are at most `list limit`, otherwise at least that
/// many (an HSCAN walk: a join into a large room costs O(limit), not O(room)).
const JOIN: &str = r"
local meta, hist, pres, users = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, node, user, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local epoch = meta_of(meta, hist, ARGV[12])
redis.call('PEXPIRE', meta, ARGV[13])
reap(meta, pres, users, channel, ARGV[10], now)
if user ~= '' then
  present(meta, pres, users, channel, ARGV[9], node, user, ARGV[5], ARGV[11])
  redis.call('PEXPIRE', pres, ARGV[13])
  redis.call('PEXPIRE', users, ARGV[13])
end
for i = 15, #ARGV do
  present(meta, pres, users, channel, ARGV[9], node, ARGV[i], ARGV[5], '-')
end
if #ARGV >= 15 then
  redis.call('PEXPIRE', pres, ARGV[13])
  redis.call('PEXPIRE', users, ARGV[13])
end
local seq = tonumber(redis.call('HGET', meta, 'seq'))
local pv = tonumber(redis.call('HGET', meta, 'pv'))
local count = redis.call('HLEN', users)
local limit = tonumber(ARGV[14])
local members
if count <= limit then
  members = redis.call('HKEYS', users)
else
  members = {}
  local cursor = '0'
  repeat
    local scanned = redis.call('HSCAN', users, cursor, 'COUNT', limit)
    cursor = scanned[1]
    for i = 1, #scanned[2], 2 do
      table.insert(members, scanned[2][i])
    end
  until cursor == '0' or #members >= limit
end
local recovered, replay = 0, {}
if ARGV[6] ~= '' and ARGV[7] == epoch then
  local since = tonumber(ARGV[6])
  if since == seq then
    recovered = 1
  elseif since < seq then
    local entries = redis.call('XRANGE', hist, string.format('%d', since + 1), '+')
    local oldest = now - tonumber(ARGV[8])
    local first = entries[1]
    if first and tonumber(string.match(first[1], '^(%d+)')) == since + 1 then
      recovered = 1
      for _, entry in ipairs(entries) do
        local fields = {}
        for i = 1, #entry[2], 2 do
          fields[entry[2][i]] = entry[2][i + 1]
        end
        if tonumber(fields['t']) < oldest then
          recovered = 0
          replay = {}
          break
        end
        table.insert(replay, string.match(entry[1], '^(%d+)'))
        table.insert(replay, fields['k'])
        table.insert(replay, fields['f'])
      end
    end
  end
end
return {epoch, seq, pv, members, recovered, replay, count, events}
";

/// Removes one user's presence on this node.
/// KEYS: meta, pres, users. ARGV: channel, node, user, leave head, skip. Returns the events.
const LEAVE: &str = r"
absent(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[4], ARGV[2], ARGV[3], ARGV[5])
return events
";

/// The heartbeat of one room on this node: reaps entries of nodes that stopped refreshing,
/// refreshes (or restores) this node's users, keeps the room's keys alive.
/// KEYS: meta, hist, pres, users. ARGV: channel, node, now, expiry, keep ms, join head,
/// leave head, new epoch, users... Returns the events.
const REFRESH: &str = r"
local meta, hist, pres, users = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
meta_of(meta, hist, ARGV[8])
reap(meta, pres, users, ARGV[1], ARGV[7], tonumber(ARGV[3]))
for i = 9, #ARGV do
  present(meta, pres, users, ARGV[1], ARGV[6], ARGV[2], ARGV[i], ARGV[4], '-')
end
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('PEXPIRE', pres, ARGV[5])
redis.call('PEXPIRE', users, ARGV[5])
return events
";

/// The latest messages of a room, newest first, for a `history` request.
/// KEYS: meta, hist. ARGV: limit, oldest ts kept.
/// Returns {epoch or '', seq, {seq, kind, frame, ...}}.
const HISTORY: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, {}}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local out = {}
local limit = tonumber(ARGV[1])
if limit > 0 then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  local oldest = tonumber(ARGV[2])
  for _, entry in ipairs(entries) do
    local fields = {}
    for i = 1, #entry[2], 2 do
      fields[entry[2][i]] = entry[2][i + 1]
    end
    if tonumber(fields['t']) < oldest then
      break
    end
    table.insert(out, string.match(entry[1], '^(%d+)'))
    table.insert(out, fields['k'])
    table.insert(out, fields['f'])
  end
end
return {epoch, seq, out}
";

/// The compiled scripts (Redis caches them by SHA; `invoke` loads them again after a
/// Redis restart).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) join: Script,
    pub(crate) leave: Script,
    pub(crate) refresh: Script,
    pub(crate) history: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            publish: with_prelude(PUBLISH),
            join: with_prelude(JOIN),
            leave: with_prelude(LEAVE),
            refresh: with_prelude(REFRESH),
            history: Script::new(HISTORY),
        }
    }
}
