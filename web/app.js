// Switchboard demo chat client (protocol v1). Plain browser JavaScript, no dependencies.
// All user-provided text is rendered with textContent; innerHTML is never used with data.
(() => {
  'use strict';

  const TYPING_SEND_INTERVAL_MS = 2000; // send `typing` at most this often
  const TYPING_SHOW_MS = 3000; // hide "x is typing…" this long after the last event
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const ERROR_SHOW_MS = 8000;
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

  const state = {
    ws: null,
    name: '',
    room: '',
    wanted: false, // user wants to be connected (join clicked, leave not clicked)
    joined: false, // server confirmed the join on the current socket
    attempt: 0, // consecutive failed connection attempts, for backoff
    reconnectTimer: null,
    nextId: 1,
    joinId: null,
    members: new Set(),
    typing: new Map(), // user -> timeout handle
    lastTypingSent: 0,
    errorTimer: null,
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

  function send(obj) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  // ---------- members ----------

  function renderMembers() {
    const names = [...state.members].sort((a, b) => a.localeCompare(b));
    const frag = document.createDocumentFragment();
    for (const n of names) {
      const li = document.createElement('li');
      li.textContent = n;
      if (n === state.name) li.classList.add('me');
      frag.appendChild(li);
    }
    el.members.replaceChildren(frag);
    el.memberCount.textContent = String(names.length);
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

  // Binary delivery: [room_len u8][room][seq u64 BE][ts u64 BE][from_len u8][from][payload]
  function handleBinary(buf) {
    try {
      const view = new DataView(buf);
      const bytes = new Uint8Array(buf);
      const dec = new TextDecoder();
      let off = 0;
      const roomLen = view.getUint8(off);
      off += 1;
      const room = dec.decode(bytes.subarray(off, off + roomLen));
      off += roomLen;
      const seq = Number(view.getBigUint64(off));
      off += 8;
      const ts = Number(view.getBigUint64(off));
      off += 8;
      const fromLen = view.getUint8(off);
      off += 1;
      const from = dec.decode(bytes.subarray(off, off + fromLen));
      off += fromLen;
      if (room !== state.room) return;
      addMessage(from, ts, `[binary message, ${bytes.length - off} bytes]`, seq);
    } catch (_) {
      // Malformed frame: ignore.
    }
  }

  // ---------- protocol ----------

  function handleMessage(ev) {
    if (typeof ev.data !== 'string') {
      handleBinary(ev.data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg !== 'object') return;

    switch (msg.type) {
      case 'joined':
        if (msg.room !== state.room) return;
        state.joined = true;
        state.attempt = 0; // a successful (re)join resets the backoff
        state.members = new Set(Array.isArray(msg.members) ? msg.members.map(String) : []);
        state.members.add(state.name);
        renderMembers();
        updateControls();
        el.input.focus();
        break;
      case 'left':
        break;
      case 'presence':
        if (msg.room !== state.room) return;
        if (msg.event === 'join') {
          state.members.add(String(msg.user));
        } else if (msg.event === 'leave') {
          state.members.delete(String(msg.user));
          clearTyping(String(msg.user));
        }
        renderMembers();
        break;
      case 'typing':
        if (msg.room !== state.room || msg.from === state.name) return;
        markTyping(String(msg.from));
        break;
      case 'message':
        if (msg.room !== state.room) return;
        clearTyping(String(msg.from));
        addMessage(String(msg.from), msg.ts, displayData(msg.data), msg.seq);
        break;
      case 'error': {
        const code = typeof msg.code === 'string' ? msg.code : 'error';
        const text = typeof msg.message === 'string' ? msg.message : '';
        showError(text ? `${code}: ${text}` : code);
        if (state.joinId !== null && msg.id === state.joinId) {
          // The join itself failed (e.g. invalid_room): do not keep retrying it.
          leave(false);
        }
        break;
      }
      default:
        // ack, pong and unknown types need no display.
        break;
    }
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    setStatus('connecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/ws?user=${encodeURIComponent(state.name)}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      showError(`cannot connect: ${e.message}`);
      scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    state.ws = ws;

    ws.addEventListener('open', () => {
      if (state.ws !== ws) return;
      setStatus('connected');
      state.joinId = state.nextId++;
      send({ type: 'join', room: state.room, id: state.joinId });
    });
    ws.addEventListener('message', (ev) => {
      if (state.ws === ws) handleMessage(ev);
    });
    ws.addEventListener('close', (ev) => {
      if (state.ws !== ws) return; // a socket we already abandoned
      state.ws = null;
      const wasJoined = state.joined;
      state.joined = false;
      clearAllTyping();
      updateControls();
      if (!state.wanted) {
        setStatus('disconnected');
        return;
      }
      if (ev.reason) showError(`connection closed (${ev.code}): ${ev.reason}`);
      if (wasJoined) addNotice('Connection lost — reconnecting…');
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
    // "Equal jitter": between half and the full exponential delay.
    const delay = Math.round(exp / 2 + Math.random() * (exp / 2));
    state.attempt = Math.min(state.attempt + 1, 30);
    setStatus('disconnected', `reconnecting in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(() => {
      state.reconnectTimer = null;
      if (state.wanted) connect();
    }, delay);
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
    state.attempt = 0;
    state.members = new Set();
    renderMembers();
    if (!sameRoom) el.messages.replaceChildren();
    updateControls();
    connect();
  }

  function leave(byUser) {
    state.wanted = false;
    state.joined = false;
    state.joinId = null;
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    const ws = state.ws;
    state.ws = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try {
        ws.close(1000, 'leave');
      } catch (_) {
        /* ignore */
      }
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
    if (!text.trim() || !state.joined) return;
    const ok = send({
      type: 'publish',
      room: state.room,
      data: { text },
      id: state.nextId++,
      echo: true,
    });
    if (ok) {
      el.input.value = '';
      state.lastTypingSent = 0;
    } else {
      showError('Not connected — message not sent.');
    }
    el.input.focus();
  }

  function onInput() {
    if (!state.joined || el.input.value === '') return;
    const now = Date.now();
    if (now - state.lastTypingSent < TYPING_SEND_INTERVAL_MS) return;
    if (send({ type: 'typing', room: state.room })) state.lastTypingSent = now;
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
})();
