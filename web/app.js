// Switchboard demo chat page, built on the JavaScript SDK served by the server itself
// (/sdk/switchboard.min.js): the SDK reconnects with backoff, re-joins with `since` so nothing is
// missed across a lost connection, re-sends unacknowledged messages once, and refreshes tokens.
// All user-provided text is rendered with textContent; innerHTML is never used with data.
import { Client } from '/sdk/switchboard.min.js';

const TYPING_SHOW_MS = 3000; // hide "x is typing…" this long after the last event
const ERROR_SHOW_MS = 30000;
const HISTORY_ON_JOIN = 50; // recent messages shown when joining
const ROOM_RE = /^[A-Za-z0-9_\-.:@/=+]{1,128}$/;

const $ = (id) => document.getElementById(id);
const el = {
  joinForm: $('join-form'),
  name: $('name'),
  room: $('room'),
  join: $('join'),
  leave: $('leave'),
  status: $('status'),
  members: $('members'),
  memberCount: $('member-count'),
  roomTitle: $('room-title'),
  messages: $('messages'),
  typing: $('typing'),
  composer: $('composer'),
  input: $('input'),
  send: $('send'),
  error: $('error'),
};

// Optional, for servers that require tokens: the page's address may carry `#token=JWT` (a fragment
// never reaches any server's logs) and `?server=HOST:PORT` for a server other than this page's.
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const serverHost = params.get('server') || location.host;
const httpBase = `${location.protocol}//${serverHost}`;
const wsUrl = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${serverHost}/ws`;
const pageToken = fragment.get('token') || undefined;

const state = {
  client: null,
  name: '',
  room: '',
  wanted: false, // user wants to be in the room (join clicked, leave not clicked)
  joined: false, // the SDK has the room joined on the current connection
  held: null, // live messages held while the recent history is shown
  members: new Set(),
  typing: new Map(), // user -> timeout handle
  errorTimer: null,
  refusals: 0,
};

// ---------- small helpers ----------

const pad2 = (n) => String(n).padStart(2, '0');

function formatTime(ms) {
  const d = new Date(typeof ms === 'number' ? ms : Date.now());
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function utf8Len(s) {
  return new TextEncoder().encode(s).length;
}

function validName(s) {
  // 1..=64 bytes UTF-8, no control characters (same rule as the server).
  // eslint-disable-next-line no-control-regex
  return s.length > 0 && utf8Len(s) <= 64 && !/[\u0000-\u001f\u007f-\u009f]/.test(s);
}

function showError(text) {
  el.error.textContent = text;
  el.error.classList.toggle('visible', text !== '');
  clearTimeout(state.errorTimer);
  if (text) {
    state.errorTimer = setTimeout(() => showError(''), ERROR_SHOW_MS);
  }
}

function setStatus(s, detail) {
  // Text is exactly one of: connecting, connected, disconnected.
  el.status.textContent = s;
  el.status.dataset.state = s;
  el.status.className = `status status-${s}`;
  el.status.title = detail || s;
}

function updateControls() {
  const active = state.wanted;
  el.name.disabled = active;
  el.room.disabled = active;
  el.join.disabled = active;
  el.leave.disabled = !active;
  el.input.disabled = !state.joined;
  el.send.disabled = !state.joined;
  el.roomTitle.textContent = state.room && active ? `# ${state.room}` : 'Not in a room';
}

// ---------- members ----------

function renderMembers(count) {
  const names = [...state.members].sort((a, b) => a.localeCompare(b));
  const frag = document.createDocumentFragment();
  for (const n of names) {
    const li = document.createElement('li');
    li.textContent = n;
    if (n === state.name) li.classList.add('me');
    frag.appendChild(li);
  }
  el.members.replaceChildren(frag);
  // A large room's list may be cut by the server; its count is still exact.
  el.memberCount.textContent = String(typeof count === 'number' ? Math.max(count, names.length) : names.length);
}

// ---------- typing indicator ----------

function renderTyping() {
  const users = [...state.typing.keys()];
  let text = '';
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = `${users[0]}, ${users[1]} and ${users.length - 2} more are typing…`;
  el.typing.textContent = text;
}

function markTyping(user) {
  clearTimeout(state.typing.get(user));
  state.typing.set(
    user,
    setTimeout(() => {
      state.typing.delete(user);
      renderTyping();
    }, TYPING_SHOW_MS),
  );
  renderTyping();
}

function clearTyping(user) {
  if (!state.typing.has(user)) return;
  clearTimeout(state.typing.get(user));
  state.typing.delete(user);
  renderTyping();
}

function clearAllTyping() {
  for (const t of state.typing.values()) clearTimeout(t);
  state.typing.clear();
  renderTyping();
}

// ---------- messages ----------

function nearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function appendNode(node, forceScroll) {
  const stick = forceScroll || nearBottom();
  el.messages.appendChild(node);
  if (stick) el.messages.scrollTop = el.messages.scrollHeight;
}

function addMessage(from, ts, text, seq) {
  const own = from === state.name;
  const item = document.createElement('div');
  item.className = own ? 'message own' : 'message';
  if (typeof seq === 'number') item.dataset.seq = String(seq);

  const meta = document.createElement('div');
  meta.className = 'meta';
  const fromEl = document.createElement('span');
  fromEl.className = 'from';
  fromEl.textContent = from;
  const timeEl = document.createElement('time');
  timeEl.className = 'time';
  timeEl.textContent = formatTime(ts);
  if (typeof ts === 'number') timeEl.dateTime = new Date(ts).toISOString();
  meta.append(fromEl, timeEl);

  const textEl = document.createElement('div');
  textEl.className = 'text';
  textEl.textContent = text;

  item.append(meta, textEl);
  appendNode(item, own);
}

function addNotice(text) {
  const item = document.createElement('div');
  item.className = 'notice';
  item.textContent = text;
  appendNode(item, false);
}

function displayData(data) {
  if (data !== null && typeof data === 'object' && typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}


// ---------- the SDK ----------

function statusText(s) {
  // The status shows exactly one of: connecting, connected, disconnected.
  return s === 'connected' ? 'connected' : s === 'connecting' ? 'connecting' : 'disconnected';
}

function showMessage(m) {
  clearTyping(m.from);
  addMessage(m.from, m.ts, m.binary ? `[binary message, ${m.data.length} bytes]` : displayData(m.data), m.seq);
}

/** Shows the room's recent messages up to `upTo`, then the live ones that arrived meanwhile. */
async function showRecent(client, upTo) {
  state.held = [];
  try {
    const h = await client.history(state.room, { limit: HISTORY_ON_JOIN });
    const shown = new Set([...el.messages.querySelectorAll('.message')].map((n) => n.dataset.seq));
    const older = h.messages.filter((m) => m.seq <= upTo && !shown.has(String(m.seq)));
    if (older.length > 0 && shown.size === 0) addNotice(`Recent messages in #${state.room}:`);
    for (const m of older) showMessage(m);
    if (h.messages.length === 0 && shown.size === 0) addNotice(`No messages in #${state.room} yet.`);
  } catch (e) {
    showError(`Could not load recent messages: ${e.message}`);
  }
  const live = state.held || [];
  state.held = null;
  for (const m of live) showMessage(m);
}

/** Puts a connection failure into words (browsers hide the HTTP status of a refused upgrade). */
async function explainRefusal(err) {
  if (err.status === 401 || (err.code === 'refused' && err.status === 401)) {
    return pageToken ? 'The server refused the sign-in token (HTTP 401): it is invalid or has expired.' : 'The server requires a sign-in token (HTTP 401). Open this page with #token=YOUR_TOKEN.';
  }
  if (err.status === 403) return `The server does not allow pages from ${location.origin} (HTTP 403: origin not allowed).`;
  let reachable = false;
  try {
    await fetch(`${httpBase}/healthz`, { mode: 'no-cors', cache: 'no-store' });
    reachable = true;
  } catch (_) {
    reachable = false;
  }
  if (!reachable) return `Cannot reach the server at ${serverHost}. Retrying…`;
  if (serverHost !== location.host) {
    return `The server at ${serverHost} refused the connection: it does not allow pages from ${location.origin} (origin not allowed, HTTP 403)${pageToken ? ', or it refused the sign-in token (HTTP 401)' : ', or it requires a sign-in token (HTTP 401)'}.`;
  }
  return pageToken
    ? 'The server refused the sign-in token: it is invalid or has expired (HTTP 401). Get a new one and reload.'
    : 'The server requires a sign-in token (HTTP 401): this page has none. Open it with #token=YOUR_TOKEN.';
}

function closedText(err) {
  switch (err.code) {
    case 'token_expired':
      return 'Your sign-in token expired and could not be renewed: the server closed the connection (4001). Get a new token and reload.';
    case 'identity_changed':
      return 'The new token names another user: the server closed the connection (4003).';
    case 'policy':
      return `The server closed the connection for too many errors (${err.closeCode}); not reconnecting.`;
    default:
      return `Disconnected for good: ${err.message}`;
  }
}

function newClient(name) {
  const options = { user: name };
  if (pageToken) options.token = pageToken;
  const client = new Client(wsUrl, options);
  client.on('state', (s, d) => {
    if (state.client !== client) return;
    setStatus(statusText(s), d.retryIn !== undefined ? `reconnecting in ${(d.retryIn / 1000).toFixed(1)} s` : s);
    if (s === 'connected') state.refusals = 0;
    if (s === 'disconnected' && state.joined) {
      state.joined = false;
      clearAllTyping();
      updateControls();
      addNotice('Connection lost — reconnecting…');
    }
    if (s === 'closed' && state.wanted) {
      if (d.error) showError(closedText(d.error));
      state.wanted = false;
      state.joined = false;
      updateControls();
    }
  });
  client.on('message', (m) => {
    if (state.client !== client || m.room !== state.room) return;
    if (state.held) state.held.push(m);
    else showMessage(m);
  });
  client.on('presence', (p) => {
    if (state.client !== client || p.room !== state.room) return;
    state.members = new Set(p.members);
    state.members.add(state.name);
    for (const u of p.leaves) clearTyping(u);
    renderMembers(p.memberCount);
    if (p.snapshot && state.wanted && !state.joined) {
      state.joined = true; // re-joined after a reconnect
      updateControls();
    }
  });
  client.on('typing', (t) => {
    if (state.client === client && t.room === state.room && t.from !== state.name) markTyping(t.from);
  });
  client.on('resync', (r) => {
    if (state.client !== client || r.room !== state.room) return;
    // A new epoch numbers its messages from 1 again: what is shown belongs to the old one.
    if (r.reason === 'epoch') for (const n of el.messages.querySelectorAll('.message[data-seq]')) delete n.dataset.seq;
    addNotice(
      r.reason === 'epoch'
        ? 'The server restarted: messages from before are gone. Showing what it has now.'
        : 'Some messages were sent while you were away and are no longer held by the server; showing the latest ones.',
    );
    void showRecent(client, r.seq);
  });
  client.on('error', async (e) => {
    if (state.client !== client) return;
    if (e.code === 'connect_failed' || e.code === 'refused') {
      state.refusals += 1;
      const text = await explainRefusal(e);
      if (state.client === client && state.wanted) showError(text);
    } else if (!e.fatal) {
      showError(`${e.code}: ${e.message}`);
    }
  });
  return client;
}

function join() {
  const name = el.name.value.trim();
  const room = el.room.value.trim();
  if (!validName(name)) {
    showError('Name must be 1–64 bytes with no control characters.');
    el.name.focus();
    return;
  }
  if (!ROOM_RE.test(room)) {
    showError('Room: 1–128 characters from letters, digits and _ - . : @ / = +');
    el.room.focus();
    return;
  }
  showError('');
  const sameRoom = room === state.room && name === state.name;
  state.name = name;
  state.room = room;
  state.wanted = true;
  state.joined = false;
  state.members = new Set();
  renderMembers();
  if (!sameRoom) el.messages.replaceChildren();
  updateControls();
  const client = newClient(name);
  state.client = client;
  client.connect().catch(() => {});
  client.join(room).then(
    (j) => {
      if (state.client !== client) return;
      state.joined = true;
      updateControls();
      el.input.focus();
      if (j.recovered !== true) void showRecent(client, j.seq);
    },
    (e) => {
      if (state.client !== client || e.code === 'closed') return;
      showError(`Cannot join #${room}: ${e.message}`);
      leave(false);
    },
  );
}

function leave(byUser) {
  const client = state.client;
  state.client = null;
  state.wanted = false;
  state.joined = false;
  state.held = null;
  if (client) {
    client.leave(state.room).finally(() => client.close());
  }
  state.members = new Set();
  renderMembers();
  clearAllTyping();
  setStatus('disconnected');
  updateControls();
  if (byUser) addNotice(`You left #${state.room}.`);
}

function sendChat() {
  const text = el.input.value;
  if (!text.trim() || !state.client) return;
  el.input.value = '';
  state.client.publish(state.room, { text }).catch((e) => {
    showError(`Message not sent: ${e.message}`);
  });
  el.input.focus();
}

function onInput() {
  if (state.client && state.joined && el.input.value !== '') state.client.typing(state.room);
}

// ---------- wiring ----------

el.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  if (!state.wanted) join();
});
el.leave.addEventListener('click', () => leave(true));
el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  sendChat();
});
el.input.addEventListener('input', onInput);

try {
  const saved = localStorage.getItem('switchboard.name');
  if (saved && !el.name.value) el.name.value = saved;
  el.joinForm.addEventListener('submit', () => {
    try {
      localStorage.setItem('switchboard.name', el.name.value.trim());
    } catch (_) {
      /* storage may be unavailable */
    }
  });
} catch (_) {
  /* storage may be unavailable */
}

setStatus('disconnected');
updateControls();
renderTyping();
if (!el.name.value) el.name.focus();
