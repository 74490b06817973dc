// src/backoff.ts
var STABLE_AFTER_MS = 1e4;
function maxDelay(o, attempt) {
  const factor = Number.isFinite(o.factor) ? Math.max(1, o.factor) : 1;
  const bound = o.base * factor ** Math.max(0, attempt - 1);
  return Number.isFinite(bound) && bound < o.cap ? Math.max(0, bound) : o.cap;
}
function delay(o, attempt, unit) {
  const u = Number.isNaN(unit) ? 0 : Math.min(1, Math.max(0, unit));
  return Math.round(maxDelay(o, attempt) * u);
}
function backoffSettings(o) {
  return { base: o?.base ?? 500, factor: o?.factor ?? 2, cap: o?.cap ?? 3e4 };
}

// src/tracker.ts
var MAX_PENDING_OWN = 1024;
function advance(p, seq) {
  p.last = Math.max(p.last, seq);
  while (p.ownAhead.length > 0 && p.ownAhead[0] <= p.last + 1) {
    p.last = Math.max(p.last, p.ownAhead.shift());
  }
}
var Tracker = class {
  constructor() {
    this.rooms = /* @__PURE__ */ new Map();
  }
  has(room) {
    return this.rooms.has(room);
  }
  /** The `since` for re-joining `room`, when its epoch is known. */
  since(room) {
    const p = this.rooms.get(room);
    return p?.epoch === void 0 ? void 0 : { seq: p.last, epoch: p.epoch };
  }
  /** Seeds a position (kept from an earlier page load), so the next join asks to recover from it. */
  seed(room, pos) {
    if (!this.rooms.has(room)) this.rooms.set(room, { last: pos.seq, epoch: pos.epoch, ownAhead: [] });
  }
  /**
   * Applies a `joined` reply. `rejoin` is true for a join that continues an earlier position (after a
   * reconnect, or from a seeded position), false for a join the application asked for.
   */
  joined(room, seq, epoch, recovered, rejoin) {
    const p = this.rooms.get(room);
    if (p === void 0) {
      this.rooms.set(room, { last: seq, epoch, ownAhead: [] });
      return { kind: "continued" };
    }
    const sameEpoch = p.epoch === epoch;
    let out;
    if (recovered === false) {
      out = resync(p, seq, epoch);
    } else if (!rejoin && (sameEpoch || p.epoch === void 0)) {
      out = { kind: "continued" };
    } else if (rejoin && recovered === true) {
      out = { kind: "recovered" };
    } else if (rejoin && recovered === void 0 && sameEpoch && seq === p.last) {
      out = { kind: "continued" };
    } else {
      out = resync(p, seq, epoch);
    }
    if (out.kind === "resync") {
      this.rooms.set(room, { last: seq, epoch, ownAhead: [] });
    } else if (p.epoch === void 0) {
      p.epoch = epoch;
    }
    return out;
  }
  /** A room message with `seq` arrived: true to deliver it (and advance), false if seen or not tracked. */
  deliver(room, seq) {
    const p = this.rooms.get(room);
    if (p === void 0 || seq <= p.last) return false;
    advance(p, seq);
    return true;
  }
  /** Our own unechoed publish was acked with `seq`. */
  own(room, seq) {
    const p = this.rooms.get(room);
    if (p === void 0) return;
    if (seq === p.last + 1) {
      advance(p, seq);
    } else if (seq > p.last && !p.ownAhead.includes(seq)) {
      p.ownAhead.push(seq);
      p.ownAhead.sort((a, b) => a - b);
      if (p.ownAhead.length > MAX_PENDING_OWN) p.ownAhead.shift();
    }
  }
  /** The room's position, if tracked and its epoch is known. */
  position(room) {
    return this.since(room);
  }
  /** Forgets the room (it was left). */
  forget(room) {
    this.rooms.delete(room);
  }
};
function resync(p, seq, epoch) {
  const previous = p.epoch === void 0 ? void 0 : { seq: p.last, epoch: p.epoch };
  return { kind: "resync", seq, epoch, previous };
}

// src/transport.ts
function toBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    const parts = data.map((p) => toBytes(p) ?? new Uint8Array(0));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  return void 0;
}
function webSocketTransport(impl) {
  return (url, h) => {
    const Ctor = impl ?? globalThis.WebSocket;
    if (Ctor === void 0) {
      throw new Error("no WebSocket implementation: pass options.WebSocket (in Node 20, the `ws` package)");
    }
    const ws = new Ctor(url);
    ws.binaryType = "arraybuffer";
    let opened = false;
    let done = false;
    let status;
    ws.onopen = () => {
      opened = true;
      if (!done) h.open();
    };
    ws.onmessage = (ev) => {
      if (done) return;
      if (typeof ev.data === "string") h.message(ev.data);
      else {
        const b = toBytes(ev.data);
        if (b !== void 0) h.message(b);
      }
    };
    ws.onerror = (ev) => {
      const text = String(ev?.message ?? "");
      const m = /server response: (\d{3})/.exec(text);
      if (m) status = Number(m[1]);
    };
    ws.onclose = (ev) => {
      if (done) return;
      done = true;
      const info = { code: ev.code, reason: ev.reason, opened };
      if (status !== void 0) info.status = status;
      h.close(info);
    };
    return {
      send: (frame) => ws.send(frame),
      close: (code, reason, abort) => {
        done = true;
        try {
          if (abort && ws.terminate) ws.terminate();
          else ws.close(code, reason);
        } catch {
        }
      }
    };
  };
}

// src/types.ts
var SwitchboardError = class extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
    this.room = extra.room;
    this.closeCode = extra.closeCode;
    this.status = extra.status;
    this.fatal = extra.fatal ?? false;
  }
};

// src/wire.ts
var utf8Encoder = new TextEncoder();
var utf8Decoder = new TextDecoder();
function encodeBinaryPublish(room, payload) {
  const r = utf8Encoder.encode(room);
  if (r.length < 1 || r.length > 255) throw new RangeError(`room name of ${r.length} bytes cannot be sent in a binary frame`);
  const out = new Uint8Array(1 + r.length + payload.length);
  out[0] = r.length;
  out.set(r, 1);
  out.set(payload, 1 + r.length);
  return out;
}
function decodeBinaryDelivery(frame) {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (frame.length < 1) return void 0;
  const r = frame[0];
  if (frame.length < 18 + r) return void 0;
  const f = frame[17 + r];
  if (frame.length < 18 + r + f) return void 0;
  return {
    room: utf8Decoder.decode(frame.subarray(1, 1 + r)),
    seq: Number(view.getBigUint64(1 + r)),
    ts: Number(view.getBigUint64(9 + r)),
    from: utf8Decoder.decode(frame.subarray(18 + r, 18 + r + f)),
    payload: frame.slice(18 + r + f)
  };
}
function fromBase64(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
function tokenExpiry(token) {
  const part = token.split(".")[1];
  if (part === void 0) return void 0;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(utf8Decoder.decode(fromBase64(b64 + "=".repeat((4 - b64.length % 4) % 4))));
    const exp = claims?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : void 0;
  } catch {
    return void 0;
  }
}
function isTerminalClose(code, reason, canRenewToken) {
  if (code === 1008) return reason !== "ping timeout";
  if (code === 4001) return !canRenewToken;
  if (code === 4003) return true;
  return code === 1002 || code === 1003 || code === 1007 || code === 1009;
}
function isTerminalStatus(status, canRenewToken) {
  if (status === 401) return !canRenewToken;
  return status === 400 || status === 403 || status === 404 || status === 426;
}
function retryHint(status) {
  if (status === 429) return 1e3;
  if (status === 503) return 5e3;
  return 0;
}
function connectUrl(base, auth) {
  const loc = globalThis.location;
  const u = loc ? new URL(base, loc.href) : new URL(base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  u.searchParams.delete("token");
  u.searchParams.delete("user");
  if (auth.token) u.searchParams.set("token", auth.token);
  else if (auth.user !== void 0) u.searchParams.set("user", auth.user);
  return u.toString();
}

// src/client.ts
var RESEND_AFTER_RATE_LIMIT_MS = 1e3;
var REJOIN_RETRY_MS = 2e3;
var Client = class {
  constructor(url, options = {}) {
    this.handlers = /* @__PURE__ */ new Map();
    this.tracker = new Tracker();
    this.rooms = /* @__PURE__ */ new Map();
    this.publishes = [];
    this.queued = [];
    this.inflight = /* @__PURE__ */ new Map();
    this.stateNow = "idle";
    /** Bumped for every connection attempt; callbacks of older ones are ignored. */
    this.gen = 0;
    this.attempts = 0;
    this.nextId = 1;
    this.idCounter = 0;
    this.connectWaiters = [];
    this.url = url;
    this.opts = options;
    this.factory = options.transport ?? webSocketTransport(options.WebSocket);
    this.backoff = backoffSettings(options.backoff);
    this.echo = options.echo ?? true;
    this.pingInterval = options.pingInterval ?? 15e3;
    this.pingTimeout = options.pingTimeout ?? 1e4;
    this.maxBuffered = options.maxBuffered ?? 1e3;
    this.typingInterval = options.typingInterval ?? 2e3;
    this.random = options.random ?? Math.random;
    this.token = options.token;
    this.idPrefix = randomTag();
  }
  /** The connection state. */
  get state() {
    return this.stateNow;
  }
  // ---------- events ----------
  on(event, handler) {
    let set = this.handlers.get(event);
    if (set === void 0) {
      set = /* @__PURE__ */ new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return this;
  }
  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
    return this;
  }
  emit(event, ...args) {
    const set = this.handlers.get(event);
    if (set === void 0) return;
    for (const h of [...set]) {
      try {
        h(...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
  setState(state, detail = {}) {
    const previous = this.stateNow;
    if (previous === state && state !== "disconnected") return;
    this.stateNow = state;
    this.emit("state", state, { previous, ...detail });
  }
  // ---------- lifecycle ----------
  /** Starts connecting (and reconnecting). Resolves once connected; rejects if the client closes first. */
  connect() {
    if (this.stateNow === "connected") return Promise.resolve();
    const p = new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.stateNow === "idle" || this.stateNow === "closed") {
      this.attempts = 0;
      this.listenToBrowser();
      void this.open();
    }
    return p;
  }
  /** Closes the connection for good: pending requests fail with `closed`. `connect()` starts again. */
  close() {
    this.finish(new SwitchboardError("closed", "the client was closed"), false);
  }
  finish(error, fatal, close) {
    if (this.stateNow === "closed") return;
    this.gen++;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    this.dropConn(1e3, "client closed", false);
    this.detach?.();
    this.detach = void 0;
    for (const pub of this.publishes.splice(0)) pub.reject(error);
    for (const q of this.queued.splice(0)) q.reject(error);
    for (const room of this.rooms.values()) for (const w of room.waiters.splice(0)) w.reject(error);
    for (const w of this.connectWaiters.splice(0)) w.reject(error);
    const detail = {};
    if (close !== void 0) {
      detail.closeCode = close.code;
      detail.closeReason = close.reason;
    }
    if (fatal) {
      detail.error = error;
      this.emit("error", error);
    }
    this.setState("closed", detail);
  }
  async open() {
    const gen = ++this.gen;
    this.setState("connecting");
    if (this.opts.getToken) {
      try {
        this.token = await this.opts.getToken();
      } catch (err) {
        if (gen !== this.gen) return;
        this.emit("error", new SwitchboardError("token_error", `getToken failed: ${String(err)}`));
        this.scheduleReconnect(void 0, 0);
        return;
      }
      if (gen !== this.gen) return;
    }
    let transport;
    try {
      const url = connectUrl(this.url, { user: this.opts.user, token: this.token });
      transport = this.factory(url, {
        open: () => {
          if (gen === this.gen) this.onOpen();
        },
        message: (frame) => {
          if (gen === this.gen) this.onFrame(frame);
        },
        close: (info) => {
          if (gen === this.gen) this.onClose(info);
        }
      });
    } catch (err) {
      this.finish(new SwitchboardError("no_websocket", String(err instanceof Error ? err.message : err), { fatal: true }), true);
      return;
    }
    const now = Date.now();
    const rate = this.opts.rateLimit;
    this.conn = {
      transport,
      open: false,
      openedAt: now,
      lastRecv: now,
      pingSentAt: void 0,
      tick: void 0,
      tickDue: 0,
      outq: [],
      flushTimer: void 0,
      tokens: rate === false ? Number.POSITIVE_INFINITY : rate?.burst ?? 60,
      tokensAt: now,
      gotFrame: false
    };
  }
  onOpen() {
    const c = this.conn;
    if (c === void 0) return;
    c.open = true;
    c.openedAt = Date.now();
    c.lastRecv = c.openedAt;
    this.setState("connected");
    for (const w of this.connectWaiters.splice(0)) w.resolve();
    this.armTick(this.pingInterval);
    for (const room of this.rooms.values()) this.sendJoin(room, true);
    for (const q of this.queued.splice(0)) this.sendRequest(q);
    this.scheduleRefresh(this.token === void 0 ? void 0 : tokenExpiry(this.token));
  }
  onClose(info) {
    const c = this.conn;
    const uptime = c?.open ? Date.now() - c.openedAt : 0;
    this.dropConn(1e3, "", false);
    const canRenew = this.opts.getToken !== void 0;
    if (!info.opened) {
      const status = info.status;
      const known = status !== void 0 ? ` (HTTP ${status}${statusText(status)})` : "";
      const err = new SwitchboardError(
        status !== void 0 ? "refused" : "connect_failed",
        `could not connect to ${this.url}${known}` + (status === void 0 ? ": the server is unreachable, or it refused the upgrade (a missing, invalid or expired token, or an origin it does not allow)" : ""),
        status === void 0 ? {} : { status, fatal: isTerminalStatus(status, canRenew) }
      );
      if (err.fatal) {
        this.finish(err, true, info);
        return;
      }
      this.emit("error", err);
      this.scheduleReconnect(info, retryHint(status));
      return;
    }
    if (isTerminalClose(info.code, info.reason, canRenew)) {
      const code = info.code === 4001 ? "token_expired" : info.code === 4003 ? "identity_changed" : info.code === 1008 ? "policy" : "connection_closed";
      this.finish(
        new SwitchboardError(code, `the server closed the connection for good: ${info.code} ${info.reason}`.trim(), {
          closeCode: info.code,
          fatal: true
        }),
        true,
        info
      );
      return;
    }
    if (uptime >= STABLE_AFTER_MS) this.attempts = 0;
    this.scheduleReconnect(info, 0);
  }
  /** Forgets the current connection; everything sent on it and not answered goes back to wait. */
  dropConn(code, reason, abort) {
    const c = this.conn;
    if (c === void 0) return;
    this.conn = void 0;
    clearTimeout(c.tick);
    clearTimeout(c.flushTimer);
    clearTimeout(this.refreshTimer);
    c.transport.close(code, reason, abort);
    for (const room of this.rooms.values()) room.ready = false;
    for (const pub of this.publishes) pub.sent = false;
    for (const f of this.inflight.values()) {
      if (f.kind === "history" || f.kind === "members" || f.kind === "refresh") this.queued.push(f);
      else if (f.kind === "leave") f.resolve();
    }
    this.inflight = /* @__PURE__ */ new Map();
  }
  scheduleReconnect(close, atLeast) {
    this.attempts++;
    const wait = Math.max(atLeast, delay(this.backoff, this.attempts, this.random()));
    const detail = { retryIn: wait };
    if (close !== void 0) {
      detail.closeCode = close.code;
      detail.closeReason = close.reason;
    }
    this.setState("disconnected", detail);
    const gen = this.gen;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (gen === this.gen && this.stateNow === "disconnected") void this.open();
    }, wait);
  }
  /** Browsers: `online` reconnects at once, `offline` and a tab coming back check the link at once. */
  listenToBrowser() {
    const g = globalThis;
    if (typeof g.addEventListener !== "function" || this.detach) return;
    const online = () => {
      if (this.stateNow === "disconnected") {
        clearTimeout(this.reconnectTimer);
        void this.open();
      }
    };
    const check = () => {
      if (g.document?.visibilityState === "hidden") return;
      this.probe();
    };
    g.addEventListener("online", online);
    g.addEventListener("offline", check);
    g.document?.addEventListener("visibilitychange", check);
    this.detach = () => {
      g.removeEventListener?.("online", online);
      g.removeEventListener?.("offline", check);
      g.document?.removeEventListener("visibilitychange", check);
    };
  }
  // ---------- liveness ----------
  /** Sends a `ping` now (unless one is out) and checks for an answer after `pingTimeout`. */
  probe() {
    const c = this.conn;
    if (c === void 0 || !c.open) return;
    if (c.pingSentAt === void 0) this.sendPing(c);
    this.armTick(this.pingTimeout);
  }
  sendPing(c) {
    c.pingSentAt = Date.now();
    const id = this.nextId++;
    const frame = JSON.stringify({ type: "ping", id });
    this.inflight.set(id, { kind: "ping", frame });
    c.tokens -= 1;
    c.transport.send(frame);
  }
  armTick(ms) {
    const c = this.conn;
    if (c === void 0) return;
    clearTimeout(c.tick);
    const wait = Math.max(50, ms);
    c.tickDue = Date.now() + wait;
    c.tick = setTimeout(() => this.onTick(c, wait), wait);
  }
  /**
   * Liveness check. Any frame from the server counts as life. A timer that fired much later than
   * asked for means the tab was throttled or the machine slept: the silence proves nothing then, so
   * the client pings again instead of giving up (socket.io#4040's false alarms in background tabs).
   */
  onTick(c, asked) {
    if (this.conn !== c) return;
    const now = Date.now();
    const late = now - c.tickDue > Math.max(1e3, asked / 2);
    if (c.pingSentAt !== void 0) {
      if (c.lastRecv >= c.pingSentAt) {
        c.pingSentAt = void 0;
      } else if (late) {
        this.sendPing(c);
      } else if (now - c.pingSentAt >= this.pingTimeout) {
        this.dropConn(4e3, "ping timeout", true);
        this.scheduleReconnect({ code: 1006, reason: "no answer to ping", opened: true }, 0);
        return;
      }
    }
    if (c.pingSentAt === void 0 && now - c.lastRecv >= this.pingInterval) this.sendPing(c);
    if (c.pingSentAt !== void 0) this.armTick(c.pingSentAt + this.pingTimeout - now);
    else this.armTick(c.lastRecv + this.pingInterval - now);
  }
  // ---------- sending ----------
  /** Queues a frame behind the client-side rate limiter. */
  send(frame) {
    const c = this.conn;
    if (c === void 0 || !c.open) return;
    c.outq.push(frame);
    this.flush(c);
  }
  flush(c) {
    const rate = this.opts.rateLimit;
    const perSecond = rate === false ? 0 : rate?.perSecond ?? 30;
    const burst = rate === false ? 0 : rate?.burst ?? 60;
    if (rate !== false) {
      const now = Date.now();
      c.tokens = Math.min(burst, c.tokens + (now - c.tokensAt) * perSecond / 1e3);
      c.tokensAt = now;
    }
    while (c.outq.length > 0 && c.tokens >= 1) {
      c.tokens -= 1;
      c.transport.send(c.outq.shift());
    }
    if (c.outq.length > 0 && c.flushTimer === void 0) {
      const wait = Math.ceil((1 - c.tokens) * 1e3 / perSecond);
      c.flushTimer = setTimeout(() => {
        c.flushTimer = void 0;
        if (this.conn === c) this.flush(c);
      }, wait);
    }
  }
  request(f, fields) {
    const id = this.nextId++;
    f.frame = JSON.stringify({ ...fields, id });
    this.inflight.set(id, f);
    this.send(f.frame);
  }
  sendRequest(q) {
    if (this.conn?.open !== true) {
      this.queued.push(q);
      return;
    }
    if (q.kind === "history") {
      this.request(q, { type: "history", room: q.room, ...q.limit === void 0 ? {} : { limit: q.limit } });
    } else if (q.kind === "members") {
      this.request(q, { type: "members", room: q.room, ...q.opts });
    } else {
      this.request(q, { type: "refresh", token: q.token });
    }
  }
  sendJoin(room, rejoin) {
    if (this.conn?.open !== true) return;
    const since = this.tracker.since(room.name);
    this.request(
      { kind: "join", room: room.name, rejoin: rejoin && since !== void 0, frame: "" },
      { type: "join", room: room.name, ...since === void 0 ? {} : { since } }
    );
  }
  /** Sends the room's publishes that wait, in order, once the room is joined on this connection. */
  flushPublishes(room) {
    if (!room.ready || this.conn?.open !== true) return;
    for (const pub of [...this.publishes]) {
      if (pub.room !== room.name || pub.sent) continue;
      if (pub.binary) {
        this.send(encodeBinaryPublish(pub.room, pub.data));
        this.publishes.splice(this.publishes.indexOf(pub), 1);
        pub.resolve({ seq: void 0, duplicate: false });
      } else {
        pub.sent = true;
        this.request(
          { kind: "publish", pub, frame: "" },
          { type: "publish", room: pub.room, data: pub.data, msg_id: pub.msgId, ...this.echo ? { echo: true } : {} }
        );
      }
    }
  }
  // ---------- the API ----------
  /** Joins a room (again after every reconnect, until `leave`). Resolves with the first `joined`. */
  join(room) {
    if (this.stateNow === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed", { room }));
    let r = this.rooms.get(room);
    const fresh = r === void 0;
    if (r === void 0) {
      r = { name: room, ready: false, members: /* @__PURE__ */ new Set(), memberCount: 0, truncated: false, waiters: [], lastTyping: 0 };
      this.rooms.set(room, r);
      const kept = this.opts.resume?.load(room);
      if (kept !== void 0) this.tracker.seed(room, kept);
    }
    const room_ = r;
    const p = new Promise((resolve, reject) => room_.waiters.push({ resolve, reject }));
    if (this.conn?.open === true) this.sendJoin(room_, fresh && this.tracker.since(room) !== void 0);
    return p;
  }
  /** Leaves a room: no more messages, no re-join; its waiting publishes fail with `left`. */
  leave(room) {
    const r = this.rooms.get(room);
    if (r === void 0) return Promise.resolve();
    this.rooms.delete(room);
    this.tracker.forget(room);
    this.opts.resume?.remove(room);
    const err = new SwitchboardError("left", `left room "${room}"`, { room });
    for (const w of r.waiters.splice(0)) w.reject(err);
    for (const pub of this.publishes.filter((p) => p.room === room)) {
      this.publishes.splice(this.publishes.indexOf(pub), 1);
      pub.reject(err);
    }
    if (this.conn?.open !== true) return Promise.resolve();
    return new Promise((resolve) => this.request({ kind: "leave", resolve, frame: "" }, { type: "leave", room }));
  }
  /**
   * Publishes JSON (`data` any JSON value) or bytes (`Uint8Array`/`ArrayBuffer`, sent as a binary frame)
   * to a room you joined. While disconnected, it waits (at most `maxBuffered` publishes) and is sent
   * after the re-join, with the same msg_id, so a publish whose ack was lost is counted once.
   */
  publish(room, data, options = {}) {
    if (this.stateNow === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed", { room }));
    const r = this.rooms.get(room);
    if (r === void 0) return Promise.reject(new SwitchboardError("not_joined", `join room "${room}" before publishing to it`, { room }));
    if (this.publishes.length >= this.maxBuffered) {
      return Promise.reject(
        new SwitchboardError("buffer_full", `${this.publishes.length} publishes are waiting to be sent or acked (maxBuffered); this one was not queued`, { room })
      );
    }
    const binary = data instanceof Uint8Array || data instanceof ArrayBuffer;
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    return new Promise((resolve, reject) => {
      this.publishes.push({ room, msgId: options.msgId ?? this.newMsgId(), data: bytes, binary, sent: false, resolve, reject });
      this.flushPublishes(r);
    });
  }
  /** Tells the room you are typing; sent at most every `typingInterval` per room. True if it was sent. */
  typing(room) {
    const r = this.rooms.get(room);
    const now = Date.now();
    if (r === void 0 || !r.ready || now - r.lastTyping < this.typingInterval) return false;
    r.lastTyping = now;
    this.send(JSON.stringify({ type: "typing", room }));
    return true;
  }
  /** The room's latest messages (oldest first). Membership is not needed, the `join` right is. */
  history(room, options = {}) {
    if (this.stateNow === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed", { room }));
    return new Promise(
      (resolve, reject) => this.sendRequest({ kind: "history", room, limit: options.limit, resolve, reject, frame: "" })
    );
  }
  /** A page of the room's member list (large rooms; needs a server with the `members` request). */
  members(room, options = {}) {
    if (this.stateNow === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed", { room }));
    return new Promise((resolve, reject) => this.sendRequest({ kind: "members", room, opts: options, resolve, reject, frame: "" }));
  }
  /** The client's view of a room's members, kept from `joined` and presence events. */
  presence(room) {
    const r = this.rooms.get(room);
    return r === void 0 ? void 0 : { members: [...r.members], memberCount: r.memberCount, membersTruncated: r.truncated };
  }
  /** The last position delivered in a room (what a re-join recovers from). */
  position(room) {
    return this.tracker.since(room);
  }
  /** Sends a new token now (`refresh`); later connections use it too. Resolves with the new expiry (s). */
  refresh(token) {
    if (this.stateNow === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed"));
    return new Promise((resolve, reject) => this.sendRequest({ kind: "refresh", token, resolve, reject, frame: "" }));
  }
  /**
   * Sets the token for later connections (e.g. after a close 4001 of a client without `getToken`) and,
   * while connected, sends it as `refresh` at once (a refusal is reported as an `error` event).
   */
  setToken(token) {
    this.token = token;
    if (this.conn?.open === true) this.refresh(token).catch((err) => this.emit("error", err));
  }
  scheduleRefresh(exp) {
    clearTimeout(this.refreshTimer);
    if (exp === void 0 || this.opts.getToken === void 0) return;
    const left = exp * 1e3 - Date.now();
    const wait = left > 24e4 ? left - 6e4 : Math.max(0, left * 0.75);
    const gen = this.gen;
    this.refreshTimer = setTimeout(() => void this.renewToken(gen), wait);
  }
  async renewToken(gen) {
    const getToken = this.opts.getToken;
    if (getToken === void 0 || gen !== this.gen) return;
    let token;
    try {
      token = await getToken();
    } catch (err) {
      this.emit("error", new SwitchboardError("token_error", `getToken failed: ${String(err)}`));
      this.refreshTimer = setTimeout(() => void this.renewToken(gen), 5e3);
      return;
    }
    if (gen !== this.gen) return;
    this.refresh(token).catch((err) => {
      if (err.code === "closed" || gen !== this.gen) return;
      this.emit("error", err);
      this.refreshTimer = setTimeout(() => void this.renewToken(gen), 5e3);
    });
  }
  newMsgId() {
    this.idCounter++;
    return `${this.idPrefix}-${this.idCounter.toString(36)}`;
  }
  // ---------- receiving ----------
  onFrame(frame) {
    const c = this.conn;
    if (c === void 0) return;
    c.lastRecv = Date.now();
    if (!c.gotFrame) {
      c.gotFrame = true;
      this.attempts = 0;
    }
    if (typeof frame !== "string") {
      const d = decodeBinaryDelivery(frame);
      if (d !== void 0) this.deliver({ room: d.room, seq: d.seq, from: d.from, data: d.payload, binary: true, ts: d.ts });
      return;
    }
    let m;
    try {
      const parsed = JSON.parse(frame);
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return;
      m = parsed;
    } catch {
      return;
    }
    const id = typeof m.id === "number" ? m.id : void 0;
    const f = id === void 0 ? void 0 : this.inflight.get(id);
    if (f !== void 0 && id !== void 0 && m.type !== "message") this.inflight.delete(id);
    switch (m.type) {
      case "message":
        this.deliver(toMessage(m));
        break;
      case "joined":
        this.onJoined(m, f);
        break;
      case "ack":
        if (f?.kind === "publish") {
          this.settle(f.pub);
          if (!this.echo) this.tracker.own(f.pub.room, num(m.seq));
          f.pub.resolve({ seq: num(m.seq), duplicate: m.duplicate === true });
        }
        break;
      case "presence":
        this.onPresence(m);
        break;
      case "typing":
        if (this.rooms.has(str(m.room))) this.emit("typing", { room: str(m.room), from: str(m.from) });
        break;
      case "history":
        if (f?.kind === "history") {
          const msgs = Array.isArray(m.messages) ? m.messages.map(toMessage) : [];
          f.resolve({ room: str(m.room), seq: num(m.seq), epoch: str(m.epoch), messages: msgs });
        }
        break;
      case "members":
        if (f?.kind === "members") {
          const r = { room: str(m.room), members: strs(m.members), memberCount: num(m.member_count) };
          if (typeof m.next === "string") r.next = m.next;
          f.resolve(r);
        }
        break;
      case "refreshed":
        if (f?.kind === "refresh") {
          this.token = f.token;
          this.scheduleRefresh(num(m.exp));
          f.resolve({ exp: num(m.exp) });
        }
        break;
      case "left":
        if (f?.kind === "leave") f.resolve();
        break;
      case "error":
        this.onError(m, f);
        break;
      default:
        break;
    }
  }
  settle(pub) {
    const i = this.publishes.indexOf(pub);
    if (i >= 0) this.publishes.splice(i, 1);
  }
  deliver(msg) {
    if (!this.tracker.deliver(msg.room, msg.seq)) return;
    this.emit("message", msg);
    const pos = this.tracker.since(msg.room);
    if (pos !== void 0) this.opts.resume?.save(msg.room, pos);
  }
  onJoined(m, f) {
    const room = this.rooms.get(str(m.room));
    if (room === void 0) return;
    const rejoin = f?.kind === "join" ? f.rejoin : true;
    const recovered = typeof m.recovered === "boolean" ? m.recovered : void 0;
    const epoch = typeof m.epoch === "string" ? m.epoch : void 0;
    const seq = num(m.seq);
    const out = this.tracker.joined(room.name, seq, epoch, recovered, rejoin);
    room.ready = true;
    room.members = new Set(strs(m.members));
    room.truncated = m.members_truncated === true;
    room.memberCount = typeof m.member_count === "number" ? m.member_count : room.members.size;
    const result = {
      room: room.name,
      members: [...room.members],
      memberCount: room.memberCount,
      membersTruncated: room.truncated,
      seq,
      epoch: epoch ?? ""
    };
    if (recovered !== void 0) result.recovered = recovered;
    for (const w of room.waiters.splice(0)) w.resolve(result);
    this.emitPresence(room, [], [], true);
    if (out.kind === "resync") {
      this.emit("resync", {
        room: room.name,
        recovered: false,
        seq,
        epoch: epoch ?? "",
        previous: out.previous,
        reason: out.previous === void 0 || out.previous.epoch !== epoch ? "epoch" : "gap"
      });
    }
    const pos = this.tracker.since(room.name);
    if (pos !== void 0) this.opts.resume?.save(room.name, pos);
    this.flushPublishes(room);
  }
  /** All three forms: `event`+`user`, coalesced `joins`/`leaves`, count-only (docs: PRESENCE-WIRE). */
  onPresence(m) {
    const room = this.rooms.get(str(m.room));
    if (room === void 0) return;
    const joins = strs(m.joins);
    const leaves = strs(m.leaves);
    if (typeof m.user === "string") (m.event === "leave" ? leaves : m.event === "join" ? joins : []).push(m.user);
    for (const u of leaves) room.members.delete(u);
    let added = 0;
    for (const u of joins) {
      if (!room.members.has(u)) added++;
      room.members.add(u);
    }
    if (typeof m.member_count === "number") room.memberCount = m.member_count;
    else if (room.truncated) room.memberCount = Math.max(room.members.size, room.memberCount + added - leaves.length);
    else room.memberCount = room.members.size;
    this.emitPresence(room, joins, leaves, false);
  }
  emitPresence(room, joins, leaves, snapshot) {
    const ev = {
      room: room.name,
      joins,
      leaves,
      members: [...room.members],
      memberCount: room.memberCount,
      membersTruncated: room.truncated,
      snapshot
    };
    this.emit("presence", ev);
  }
  onError(m, f) {
    const code = str(m.code) || "internal";
    const text = str(m.message) || code;
    const room = f !== void 0 && "room" in f ? f.room : f?.kind === "publish" ? f.pub.room : void 0;
    const err = new SwitchboardError(code, text, room === void 0 ? {} : { room });
    if (f === void 0) {
      this.emit("error", err);
      if (code === "rate_limited") this.resendAfterRateLimit();
      return;
    }
    switch (f.kind) {
      case "publish":
        this.settle(f.pub);
        f.pub.reject(err);
        break;
      case "join": {
        const r = this.rooms.get(f.room);
        if (r === void 0) break;
        if (f.rejoin && (code === "unavailable" || code === "internal")) {
          const c = this.conn;
          setTimeout(() => {
            if (this.conn === c && this.rooms.get(f.room) === r) this.sendJoin(r, true);
          }, REJOIN_RETRY_MS);
          this.emit("error", err);
          break;
        }
        const waiters = r.waiters.splice(0);
        void this.leave(f.room);
        for (const w of waiters) w.reject(err);
        if (waiters.length === 0) this.emit("error", err);
        break;
      }
      case "history":
      case "members":
      case "refresh":
        f.reject(err);
        break;
      case "leave":
        f.resolve();
        break;
      case "ping":
        break;
    }
  }
  /** `rate_limited` names no request: re-send what is unanswered (publishes keep their msg_id). */
  resendAfterRateLimit() {
    const c = this.conn;
    setTimeout(() => {
      if (this.conn !== c || c === void 0) return;
      for (const f of this.inflight.values()) if (f.kind !== "ping") this.send(f.frame);
    }, RESEND_AFTER_RATE_LIMIT_MS);
  }
};
function str(v) {
  return typeof v === "string" ? v : "";
}
function num(v) {
  return typeof v === "number" ? v : 0;
}
function strs(v) {
  return Array.isArray(v) ? v.filter((x) => typeof x === "string") : [];
}
function toMessage(m) {
  const binary = typeof m.binary === "string";
  return {
    room: str(m.room),
    seq: num(m.seq),
    from: str(m.from),
    data: binary ? fromBase64(m.binary) : m.data ?? null,
    binary,
    ts: num(m.ts)
  };
}
function statusText(status) {
  switch (status) {
    case 401:
      return ": the token is missing, invalid or expired";
    case 403:
      return ": this origin is not allowed";
    case 429:
      return ": too many new connections from this address";
    case 503:
      return ": the server is at its connection limit";
    default:
      return "";
  }
}
function randomTag() {
  const c = globalThis.crypto;
  const a = new Uint32Array(2);
  if (c?.getRandomValues) c.getRandomValues(a);
  else for (let i = 0; i < a.length; i++) a[i] = Math.floor(Math.random() * 2 ** 32);
  return Array.from(a, (x) => x.toString(36).padStart(7, "0")).join("").slice(0, 12);
}

// src/index.ts
function sessionPositions(key = "switchboard") {
  const store = globalThis.sessionStorage;
  const k = (room) => `${key}:pos:${room}`;
  return {
    load(room) {
      try {
        const v = JSON.parse(store?.getItem(k(room)) ?? "null");
        const p = v;
        return p && typeof p.seq === "number" && typeof p.epoch === "string" ? { seq: p.seq, epoch: p.epoch } : void 0;
      } catch {
        return void 0;
      }
    },
    save(room, pos) {
      try {
        store?.setItem(k(room), JSON.stringify(pos));
      } catch {
      }
    },
    remove(room) {
      try {
        store?.removeItem(k(room));
      } catch {
      }
    }
  };
}
export {
  Client,
  SwitchboardError,
  sessionPositions,
  webSocketTransport
};
