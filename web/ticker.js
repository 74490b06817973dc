// Live ticker on the SDK: many viewers, one publisher. Shows each message's seq and age; the SDK
// re-joins with `since` after a lost connection, so the table never has a gap. A `resync` (the
// server restarted, or the history no longer holds what was missed) is shown, never hidden.
import { Client } from '/sdk/switchboard.min.js';

const KEEP_ROWS = 200; // table rows kept; older ones are dropped from the page (not from the count)
const $ = (id) => document.getElementById(id);
const room = new URLSearchParams(location.search).get('room') || 'ticker';
const viewer = `viewer-${Math.random().toString(36).slice(2, 10)}`;
let lastSeq = null; // last seq shown; the next row must be lastSeq + 1
let received = 0;
let gaps = 0;

$('room').textContent = room;

function setStatus(state) {
  const s = $('status');
  s.textContent = state;
  s.dataset.state = state;
  s.className = `status status-${state === 'connected' ? 'connected' : state === 'connecting' ? 'connecting' : 'disconnected'}`;
}

function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.classList.toggle('visible', text !== '');
}

function age(ts) {
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${Math.floor(s / 3600)}h`;
}

function addRow(m, note) {
  if (lastSeq !== null && m.seq !== lastSeq + 1 && !note) {
    gaps += 1;
    $('gaps').textContent = String(gaps);
  }
  lastSeq = m.seq;
  received += 1;
  $('last-seq').textContent = String(m.seq);
  $('received').textContent = String(received);
  const tr = document.createElement('tr');
  tr.dataset.seq = String(m.seq);
  tr.dataset.ts = String(m.ts);
  const cells = [String(m.seq), age(m.ts), m.from, m.binary ? `${m.data.length} bytes` : JSON.stringify(m.data)];
  for (const text of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  tr.children[1].className = 'age';
  const body = $('ticks');
  body.prepend(tr);
  while (body.children.length > KEEP_ROWS) body.lastElementChild.remove();
}

function addNotice(text) {
  const tr = document.createElement('tr');
  tr.className = 'notice';
  const td = document.createElement('td');
  td.colSpan = 4;
  td.textContent = text;
  tr.append(td);
  $('ticks').prepend(tr);
}

const client = new Client('/ws', { user: viewer });
client.on('state', (s) => setStatus(s));
let held = null; // live messages held while the recent history is fetched (they come after it)
client.on('message', (m) => {
  if (m.room !== room) return;
  if (held) held.push(m);
  else addRow(m);
});
client.on('presence', (p) => {
  if (p.room === room) $('viewers').textContent = String(p.memberCount);
});
client.on('resync', async (r) => {
  const lost = r.previous && r.previous.epoch === r.epoch ? r.seq - r.previous.seq : null;
  addNotice(
    r.reason === 'epoch'
      ? `The server restarted or the room was re-created: the stream starts again at seq ${r.seq + 1}.`
      : `${lost} messages were no longer held by the server; the stream goes on from seq ${r.seq + 1}.`,
  );
  lastSeq = null;
  await showRecent(r.seq);
});
client.on('error', (e) => {
  showError(
    e.code === 'connect_failed'
      ? 'Cannot connect: the server is unreachable or refused this page (a missing or expired token, or an origin it does not allow). Retrying…'
      : `${e.code}: ${e.message}`,
  );
});

/** Shows the recent messages up to `upTo` (the join's seq), so the page is not empty on arrival. */
async function showRecent(upTo) {
  held = [];
  try {
    const h = await client.history(room, { limit: 20 });
    for (const m of h.messages) if (m.seq <= upTo && (lastSeq === null || m.seq > lastSeq)) addRow(m, true);
  } catch (e) {
    showError(`history: ${e.code}: ${e.message}`);
  }
  lastSeq = upTo;
  const live = held;
  held = null;
  for (const m of live) addRow(m);
}

setInterval(() => {
  for (const tr of $('ticks').children) {
    if (tr.dataset.ts) tr.children[1].textContent = age(Number(tr.dataset.ts));
  }
}, 1000);

client.connect();
client.join(room).then(
  (j) => {
    $('viewers').textContent = String(j.memberCount);
    return showRecent(j.seq);
  },
  (e) => showError(`cannot join ${room}: ${e.code}: ${e.message}`),
);
