// The client: one connection at a time, rooms and requests that outlive it.
//
// What survives a reconnect lives on the Client (desired rooms, positions, publishes not yet acked,
// requests not yet answered); what belongs to one connection lives in `conn` and is dropped with it.
// On every (re)connect the client re-joins each room with `since` (its position), then re-sends that
// room's publishes with their msg_id once the room's `joined` arrived; the tracker drops whatever
// arrives twice around the switch, so each room's messages reach the app once and in seq order.

import { backoffSettings, delay, STABLE_AFTER_MS } from './backoff.js';
import { Tracker } from './tracker.js';
import type { Transport, TransportClose, TransportFactory } from './transport.js';
import { webSocketTransport } from './transport.js';
import type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  HistoryOptions,
  HistoryResult,
  JoinResult,
  Json,
  MembersOptions,
  MembersResult,
  Message,
  PresenceEvent,
  PublishOptions,
  PublishResult,
  StateDetail,
} from './types.js';
import { SwitchboardError } from './types.js';
import {
  connectUrl,
  decodeBinaryDelivery,
  encodeBinaryPublish,
  fromBase64,
  isTerminalClose,
  isTerminalStatus,
  retryHint,
  tokenExpiry,
} from './wire.js';

type Resolve<T> = (value: T) => void;
type Reject = (error: SwitchboardError) => void;

/** A room the application joined (and has not left): re-joined after every reconnect. */
interface Room {
  name: string;
  /** `joined` arrived on the current connection. */
  ready: boolean;
  members: Set<string>;
  memberCount: number;
  truncated: boolean;
  /** `join` calls waiting for the next `joined`. */
  waiters: { resolve: Resolve<JoinResult>; reject: Reject }[];
  lastTyping: number;
}

/** A publish not yet acked (binary: not yet sent). Kept in order of the calls, across reconnects. */
interface Publish {
  room: string;
  msgId: string;
  data: Json | Uint8Array;
  binary: boolean;
  sent: boolean;
  resolve: Resolve<PublishResult>;
  reject: Reject;
}

/** A request sent on the current connection, by its id. */
type Inflight =
  | { kind: 'join'; room: string; rejoin: boolean; frame: string }
  | { kind: 'leave'; resolve: () => void; frame: string }
  | { kind: 'publish'; pub: Publish; frame: string }
  | { kind: 'ping'; frame: string }
  | Queued;

/** A request that waits for a connection: re-sent on the next one if unanswered. */
type Queued =
  | { kind: 'history'; room: string; limit: number | undefined; resolve: Resolve<HistoryResult>; reject: Reject; frame: string }
  | { kind: 'members'; room: string; opts: MembersOptions; resolve: Resolve<MembersResult>; reject: Reject; frame: string }
  | { kind: 'refresh'; token: string; resolve: Resolve<{ exp: number }>; reject: Reject; frame: string };

/** One connection's state. */
interface Conn {
  transport: Transport;
  open: boolean;
  openedAt: number;
  lastRecv: number;
  /** When the outstanding `ping` was sent; undefined when none is. */
  pingSentAt: number | undefined;
  tick: ReturnType<typeof setTimeout> | undefined;
  tickDue: number;
  /** Frames waiting for the rate limiter. */
  outq: (string | Uint8Array)[];
  flushTimer: ReturnType<typeof setTimeout> | undefined;
  tokens: number;
  tokensAt: number;
  gotFrame: boolean;
}

type Handler = (...args: never[]) => void;

const RESEND_AFTER_RATE_LIMIT_MS = 1_000;
const REJOIN_RETRY_MS = 2_000;

/** The Switchboard client. See docs/sdk-js.md. */
export class Client {
  readonly url: string;
  private readonly opts: ClientOptions;
  private readonly factory: TransportFactory;
  private readonly backoff;
  private readonly echo: boolean;
  private readonly pingInterval: number;
  private readonly pingTimeout: number;
  private readonly maxBuffered: number;
  private readonly typingInterval: number;
  private readonly random: () => number;
  private readonly handlers = new Map<keyof ClientEvents, Set<Handler>>();
  private readonly tracker = new Tracker();
  private readonly rooms = new Map<string, Room>();
  private readonly publishes: Publish[] = [];
  private readonly queued: Queued[] = [];
  private inflight = new Map<number, Inflight>();
  private stateNow: ConnectionState = 'idle';
  private conn: Conn | undefined;
  /** Bumped for every connection attempt; callbacks of older ones are ignored. */
  private gen = 0;
  private attempts = 0;
  private nextId = 1;
  private readonly idPrefix: string;
  private idCounter = 0;
  private token: string | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private connectWaiters: { resolve: () => void; reject: Reject }[] = [];
  private detach: (() => void) | undefined;

  constructor(url: string, options: ClientOptions = {}) {
    this.url = url;
    this.opts = options;
    this.factory = options.transport ?? webSocketTransport(options.WebSocket);
    this.backoff = backoffSettings(options.backoff);
    this.echo = options.echo ?? true;
    this.pingInterval = options.pingInterval ?? 15_000;
    this.pingTimeout = options.pingTimeout ?? 10_000;
    this.maxBuffered = options.maxBuffered ?? 1_000;
    this.typingInterval = options.typingInterval ?? 2_000;
    this.random = options.random ?? Math.random;
    this.token = options.token;
    this.idPrefix = randomTag();
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this.stateNow;
  }

  // ---------- events ----------

  on<E extends keyof ClientEvents>(event: E, handler: ClientEvents[E]): this {
    let set = this.handlers.get(event);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler as Handler);
    return this;
  }

  off<E extends keyof ClientEvents>(event: E, handler: ClientEvents[E]): this {
    this.handlers.get(event)?.delete(handler as Handler);
    return this;
  }

  private emit<E extends keyof ClientEvents>(event: E, ...args: Parameters<ClientEvents[E]>): void {
    const set = this.handlers.get(event);
    if (set === undefined) return;
    for (const h of [...set]) {
      try {
        (h as unknown as (...a: Parameters<ClientEvents[E]>) => void)(...args);
      } catch (err) {
        // An application handler's bug must not break the client's bookkeeping: rethrow it outside.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  private setState(state: ConnectionState, detail: Partial<StateDetail> = {}): void {
    const previous = this.stateNow;
    if (previous === state && state !== 'disconnected') return;
    this.stateNow = state;
    this.emit('state', state, { previous, ...detail } as StateDetail);
  }

  // ---------- lifecycle ----------

  /** Starts connecting (and reconnecting). Resolves once connected; rejects if the client closes first. */
  connect(): Promise<void> {
    if (this.stateNow === 'connected') return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.stateNow === 'idle' || this.stateNow === 'closed') {
      this.attempts = 0;
      this.listenToBrowser();
      void this.open();
    }
    return p;
  }

  /** Closes the connection for good: pending requests fail with `closed`. `connect()` starts again. */
  close(): void {
    this.finish(new SwitchboardError('closed', 'the client was closed'), false);
  }

  private finish(error: SwitchboardError, fatal: boolean, close?: TransportClose): void {
    if (this.stateNow === 'closed') return;
    this.gen++;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    this.dropConn(1000, 'client closed', false);
    this.detach?.();
    this.detach = undefined;
    for (const pub of this.publishes.splice(0)) pub.reject(error);
    for (const q of this.queued.splice(0)) q.reject(error);
    for (const room of this.rooms.values()) for (const w of room.waiters.splice(0)) w.reject(error);
    for (const w of this.connectWaiters.splice(0)) w.reject(error);
    const detail: Partial<StateDetail> = {};
    if (close !== undefined) {
      detail.closeCode = close.code;
      detail.closeReason = close.reason;
    }
    if (fatal) {
      detail.error = error;
      this.emit('error', error);
    }
    this.setState('closed', detail);
  }

  private async open(): Promise<void> {
    const gen = ++this.gen;
    this.setState('connecting');
    if (this.opts.getToken) {
      try {
        this.token = await this.opts.getToken();
      } catch (err) {
        if (gen !== this.gen) return;
        this.emit('error', new SwitchboardError('token_error', `getToken failed: ${String(err)}`));
        this.scheduleReconnect(undefined, 0);
        return;
      }
      if (gen !== this.gen) return;
    }
    let transport: Transport;
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
        },
      });
    } catch (err) {
      this.finish(new SwitchboardError('no_websocket', String(err instanceof Error ? err.message : err), { fatal: true }), true);
      return;
    }
    const now = Date.now();
    const rate = this.opts.rateLimit;
    this.conn = {
      transport,
      open: false,
      openedAt: now,
      lastRecv: now,
      pingSentAt: undefined,
      tick: undefined,
      tickDue: 0,
      outq: [],
      flushTimer: undefined,
      tokens: rate === false ? Number.POSITIVE_INFINITY : (rate?.burst ?? 60),
      tokensAt: now,
      gotFrame: false,
    };
  }

  private onOpen(): void {
    const c = this.conn;
    if (c === undefined) return;
    c.open = true;
    c.openedAt = Date.now();
    c.lastRecv = c.openedAt;
    this.setState('connected');
    for (const w of this.connectWaiters.splice(0)) w.resolve();
    this.armTick(this.pingInterval);
    for (const room of this.rooms.values()) this.sendJoin(room, true);
    for (const q of this.queued.splice(0)) this.sendRequest(q);
    this.scheduleRefresh(this.token === undefined ? undefined : tokenExpiry(this.token));
  }

  private onClose(info: TransportClose): void {
    const c = this.conn;
    const uptime = c?.open ? Date.now() - c.openedAt : 0;
    this.dropConn(1000, '', false);
    const canRenew = this.opts.getToken !== undefined;
    if (!info.opened) {
      const status = info.status;
      const known = status !== undefined ? ` (HTTP ${status}${statusText(status)})` : '';
      const err = new SwitchboardError(
        status !== undefined ? 'refused' : 'connect_failed',
        `could not connect to ${this.url}${known}` +
          (status === undefined ? ': the server is unreachable, or it refused the upgrade (a missing, invalid or expired token, or an origin it does not allow)' : ''),
        status === undefined ? {} : { status, fatal: isTerminalStatus(status, canRenew) },
      );
      if (err.fatal) {
        this.finish(err, true, info);
        return;
      }
      this.emit('error', err);
      this.scheduleReconnect(info, retryHint(status));
      return;
    }
    if (isTerminalClose(info.code, info.reason, canRenew)) {
      const code = info.code === 4001 ? 'token_expired' : info.code === 4003 ? 'identity_changed' : info.code === 1008 ? 'policy' : 'connection_closed';
      this.finish(
        new SwitchboardError(code, `the server closed the connection for good: ${info.code} ${info.reason}`.trim(), {
          closeCode: info.code,
          fatal: true,
        }),
        true,
        info,
      );
      return;
    }
    if (uptime >= STABLE_AFTER_MS) this.attempts = 0;
    this.scheduleReconnect(info, 0);
  }

  /** Forgets the current connection; everything sent on it and not answered goes back to wait. */
  private dropConn(code: number, reason: string, abort: boolean): void {
    const c = this.conn;
    if (c === undefined) return;
    this.conn = undefined;
    clearTimeout(c.tick);
    clearTimeout(c.flushTimer);
    clearTimeout(this.refreshTimer);
    c.transport.close(code, reason, abort);
    for (const room of this.rooms.values()) room.ready = false;
    for (const pub of this.publishes) pub.sent = false;
    for (const f of this.inflight.values()) {
      if (f.kind === 'history' || f.kind === 'members' || f.kind === 'refresh') this.queued.push(f);
      else if (f.kind === 'leave') f.resolve(); // the connection is gone, and with it the membership
    }
    this.inflight = new Map();
  }

  private scheduleReconnect(close: TransportClose | undefined, atLeast: number): void {
    this.attempts++;
    const wait = Math.max(atLeast, delay(this.backoff, this.attempts, this.random()));
    const detail: Partial<StateDetail> = { retryIn: wait };
    if (close !== undefined) {
      detail.closeCode = close.code;
      detail.closeReason = close.reason;
    }
    this.setState('disconnected', detail);
    const gen = this.gen;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (gen === this.gen && this.stateNow === 'disconnected') void this.open();
    }, wait);
  }

  /** Browsers: `online` reconnects at once, `offline` and a tab coming back check the link at once. */
  private listenToBrowser(): void {
    const g = globalThis as {
      addEventListener?: (t: string, f: () => void) => void;
      removeEventListener?: (t: string, f: () => void) => void;
      document?: { visibilityState?: string; addEventListener(t: string, f: () => void): void; removeEventListener(t: string, f: () => void): void };
    };
    if (typeof g.addEventListener !== 'function' || this.detach) return;
    const online = () => {
      if (this.stateNow === 'disconnected') {
        clearTimeout(this.reconnectTimer);
        void this.open();
      }
    };
    const check = () => {
      if (g.document?.visibilityState === 'hidden') return;
      this.probe();
    };
    g.addEventListener('online', online);
    g.addEventListener('offline', check);
    g.document?.addEventListener('visibilitychange', check);
    this.detach = () => {
      g.removeEventListener?.('online', online);
      g.removeEventListener?.('offline', check);
      g.document?.removeEventListener('visibilitychange', check);
    };
  }

  // ---------- liveness ----------

  /** Sends a `ping` now (unless one is out) and checks for an answer after `pingTimeout`. */
  private probe(): void {
    const c = this.conn;
    if (c === undefined || !c.open) return;
    if (c.pingSentAt === undefined) this.sendPing(c);
    this.armTick(this.pingTimeout);
  }

  private sendPing(c: Conn): void {
    c.pingSentAt = Date.now();
    const id = this.nextId++;
    const frame = JSON.stringify({ type: 'ping', id });
    this.inflight.set(id, { kind: 'ping', frame });
    c.tokens -= 1; // pings skip the queue: they are rare and must not wait behind a burst
    c.transport.send(frame);
  }

  private armTick(ms: number): void {
    const c = this.conn;
    if (c === undefined) return;
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
  private onTick(c: Conn, asked: number): void {
    if (this.conn !== c) return;
    const now = Date.now();
    const late = now - c.tickDue > Math.max(1_000, asked / 2);
    if (c.pingSentAt !== undefined) {
      if (c.lastRecv >= c.pingSentAt) {
        c.pingSentAt = undefined;
      } else if (late) {
        this.sendPing(c);
      } else if (now - c.pingSentAt >= this.pingTimeout) {
        this.dropConn(4000, 'ping timeout', true);
        this.scheduleReconnect({ code: 1006, reason: 'no answer to ping', opened: true }, 0);
        return;
      }
    }
    if (c.pingSentAt === undefined && now - c.lastRecv >= this.pingInterval) this.sendPing(c);
    if (c.pingSentAt !== undefined) this.armTick(c.pingSentAt + this.pingTimeout - now);
    else this.armTick(c.lastRecv + this.pingInterval - now);
  }

  // ---------- sending ----------

  /** Queues a frame behind the client-side rate limiter. */
  private send(frame: string | Uint8Array): void {
    const c = this.conn;
    if (c === undefined || !c.open) return;
    c.outq.push(frame);
    this.flush(c);
  }

  private flush(c: Conn): void {
    const rate = this.opts.rateLimit;
    const perSecond = rate === false ? 0 : (rate?.perSecond ?? 30);
    const burst = rate === false ? 0 : (rate?.burst ?? 60);
    if (rate !== false) {
      const now = Date.now();
      c.tokens = Math.min(burst, c.tokens + ((now - c.tokensAt) * perSecond) / 1000);
      c.tokensAt = now;
    }
    while (c.outq.length > 0 && c.tokens >= 1) {
      c.tokens -= 1;
      c.transport.send(c.outq.shift() as string | Uint8Array);
    }
    if (c.outq.length > 0 && c.flushTimer === undefined) {
      const wait = Math.ceil(((1 - c.tokens) * 1000) / perSecond);
      c.flushTimer = setTimeout(() => {
        c.flushTimer = undefined;
        if (this.conn === c) this.flush(c);
      }, wait);
    }
  }

  private request(f: Inflight, fields: Record<string, unknown>): void {
    const id = this.nextId++;
    f.frame = JSON.stringify({ ...fields, id });
    this.inflight.set(id, f);
    this.send(f.frame);
  }

  private sendRequest(q: Queued): void {
    if (this.conn?.open !== true) {
      this.queued.push(q);
      return;
    }
    if (q.kind === 'history') {
      this.request(q, { type: 'history', room: q.room, ...(q.limit === undefined ? {} : { limit: q.limit }) });
    } else if (q.kind === 'members') {
      this.request(q, { type: 'members', room: q.room, ...q.opts });
    } else {
      this.request(q, { type: 'refresh', token: q.token });
    }
  }

  private sendJoin(room: Room, rejoin: boolean): void {
    if (this.conn?.open !== true) return;
    const since = this.tracker.since(room.name);
    this.request(
      { kind: 'join', room: room.name, rejoin: rejoin && since !== undefined, frame: '' },
      { type: 'join', room: room.name, ...(since === undefined ? {} : { since }) },
    );
  }

  /** Sends the room's publishes that wait, in order, once the room is joined on this connection. */
  private flushPublishes(room: Room): void {
    if (!room.ready || this.conn?.open !== true) return;
    for (const pub of [...this.publishes]) {
      if (pub.room !== room.name || pub.sent) continue;
      if (pub.binary) {
        this.send(encodeBinaryPublish(pub.room, pub.data as Uint8Array));
        this.publishes.splice(this.publishes.indexOf(pub), 1);
        pub.resolve({ seq: undefined, duplicate: false });
      } else {
        pub.sent = true;
        this.request(
          { kind: 'publish', pub, frame: '' },
          { type: 'publish', room: pub.room, data: pub.data, msg_id: pub.msgId, ...(this.echo ? { echo: true } : {}) },
        );
      }
    }
  }

  // ---------- the API ----------

  /** Joins a room (again after every reconnect, until `leave`). Resolves with the first `joined`. */
  join(room: string): Promise<JoinResult> {
    if (this.stateNow === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed', { room }));
    let r = this.rooms.get(room);
    const fresh = r === undefined;
    if (r === undefined) {
      r = { name: room, ready: false, members: new Set(), memberCount: 0, truncated: false, waiters: [], lastTyping: 0 };
      this.rooms.set(room, r);
      const kept = this.opts.resume?.load(room);
      if (kept !== undefined) this.tracker.seed(room, kept);
    }
    const room_ = r;
    const p = new Promise<JoinResult>((resolve, reject) => room_.waiters.push({ resolve, reject }));
    if (this.conn?.open === true) this.sendJoin(room_, fresh && this.tracker.since(room) !== undefined);
    return p;
  }

  /** Leaves a room: no more messages, no re-join; its waiting publishes fail with `left`. */
  leave(room: string): Promise<void> {
    const r = this.rooms.get(room);
    if (r === undefined) return Promise.resolve();
    this.rooms.delete(room);
    this.tracker.forget(room);
    this.opts.resume?.remove(room);
    const err = new SwitchboardError('left', `left room "${room}"`, { room });
    for (const w of r.waiters.splice(0)) w.reject(err);
    for (const pub of this.publishes.filter((p) => p.room === room)) {
      this.publishes.splice(this.publishes.indexOf(pub), 1);
      pub.reject(err);
    }
    if (this.conn?.open !== true) return Promise.resolve();
    return new Promise((resolve) => this.request({ kind: 'leave', resolve, frame: '' }, { type: 'leave', room }));
  }

  /**
   * Publishes JSON (`data` any JSON value) or bytes (`Uint8Array`/`ArrayBuffer`, sent as a binary frame)
   * to a room you joined. While disconnected, it waits (at most `maxBuffered` publishes) and is sent
   * after the re-join, with the same msg_id, so a publish whose ack was lost is counted once.
   */
  publish(room: string, data: Json | Uint8Array | ArrayBuffer, options: PublishOptions = {}): Promise<PublishResult> {
    if (this.stateNow === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed', { room }));
    const r = this.rooms.get(room);
    if (r === undefined) return Promise.reject(new SwitchboardError('not_joined', `join room "${room}" before publishing to it`, { room }));
    if (this.publishes.length >= this.maxBuffered) {
      return Promise.reject(
        new SwitchboardError('buffer_full', `${this.publishes.length} publishes are waiting to be sent or acked (maxBuffered); this one was not queued`, { room }),
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
  typing(room: string): boolean {
    const r = this.rooms.get(room);
    const now = Date.now();
    if (r === undefined || !r.ready || now - r.lastTyping < this.typingInterval) return false;
    r.lastTyping = now;
    this.send(JSON.stringify({ type: 'typing', room }));
    return true;
  }

  /** The room's latest messages (oldest first). Membership is not needed, the `join` right is. */
  history(room: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    if (this.stateNow === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed', { room }));
    return new Promise((resolve, reject) =>
      this.sendRequest({ kind: 'history', room, limit: options.limit, resolve, reject, frame: '' }),
    );
  }

  /** A page of the room's member list (large rooms; needs a server with the `members` request). */
  members(room: string, options: MembersOptions = {}): Promise<MembersResult> {
    if (this.stateNow === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed', { room }));
    return new Promise((resolve, reject) => this.sendRequest({ kind: 'members', room, opts: options, resolve, reject, frame: '' }));
  }

  /** The client's view of a room's members, kept from `joined` and presence events. */
  presence(room: string): { members: string[]; memberCount: number; membersTruncated: boolean } | undefined {
    const r = this.rooms.get(room);
    return r === undefined ? undefined : { members: [...r.members], memberCount: r.memberCount, membersTruncated: r.truncated };
  }

  /** The last position delivered in a room (what a re-join recovers from). */
  position(room: string): { seq: number; epoch: string } | undefined {
    return this.tracker.since(room);
  }

  /** Sends a new token now (`refresh`); later connections use it too. Resolves with the new expiry (s). */
  refresh(token: string): Promise<{ exp: number }> {
    if (this.stateNow === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed'));
    return new Promise((resolve, reject) => this.sendRequest({ kind: 'refresh', token, resolve, reject, frame: '' }));
  }

  /**
   * Sets the token for later connections (e.g. after a close 4001 of a client without `getToken`) and,
   * while connected, sends it as `refresh` at once (a refusal is reported as an `error` event).
   */
  setToken(token: string): void {
    this.token = token;
    if (this.conn?.open === true) this.refresh(token).catch((err: SwitchboardError) => this.emit('error', err));
  }

  private scheduleRefresh(exp: number | undefined): void {
    clearTimeout(this.refreshTimer);
    if (exp === undefined || this.opts.getToken === undefined) return;
    // Refresh a minute before exp, or at three quarters of what is left for short-lived tokens.
    const left = exp * 1000 - Date.now();
    const wait = left > 240_000 ? left - 60_000 : Math.max(0, left * 0.75);
    const gen = this.gen;
    this.refreshTimer = setTimeout(() => void this.renewToken(gen), wait);
  }

  private async renewToken(gen: number): Promise<void> {
    const getToken = this.opts.getToken;
    if (getToken === undefined || gen !== this.gen) return;
    let token: string;
    try {
      token = await getToken();
    } catch (err) {
      this.emit('error', new SwitchboardError('token_error', `getToken failed: ${String(err)}`));
      this.refreshTimer = setTimeout(() => void this.renewToken(gen), 5_000);
      return;
    }
    if (gen !== this.gen) return;
    this.refresh(token).catch((err: SwitchboardError) => {
      if (err.code === 'closed' || gen !== this.gen) return;
      this.emit('error', err);
      this.refreshTimer = setTimeout(() => void this.renewToken(gen), 5_000);
    });
  }

  private newMsgId(): string {
    this.idCounter++;
    return `${this.idPrefix}-${this.idCounter.toString(36)}`;
  }

  // ---------- receiving ----------

  private onFrame(frame: string | Uint8Array): void {
    const c = this.conn;
    if (c === undefined) return;
    c.lastRecv = Date.now();
    if (!c.gotFrame) {
      c.gotFrame = true;
      this.attempts = 0; // the server answers: the next failure starts from the first backoff step
    }
    if (typeof frame !== 'string') {
      const d = decodeBinaryDelivery(frame);
      if (d !== undefined) this.deliver({ room: d.room, seq: d.seq, from: d.from, data: d.payload, binary: true, ts: d.ts });
      return;
    }
    let m: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(frame);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return;
      m = parsed as Record<string, unknown>;
    } catch {
      return;
    }
    const id = typeof m.id === 'number' ? m.id : undefined;
    const f = id === undefined ? undefined : this.inflight.get(id);
    if (f !== undefined && id !== undefined && m.type !== 'message') this.inflight.delete(id);
    switch (m.type) {
      case 'message':
        this.deliver(toMessage(m));
        break;
      case 'joined':
        this.onJoined(m, f);
        break;
      case 'ack':
        if (f?.kind === 'publish') {
          this.settle(f.pub);
          if (!this.echo) this.tracker.own(f.pub.room, num(m.seq));
          f.pub.resolve({ seq: num(m.seq), duplicate: m.duplicate === true });
        }
        break;
      case 'presence':
        this.onPresence(m);
        break;
      case 'typing':
        if (this.rooms.has(str(m.room))) this.emit('typing', { room: str(m.room), from: str(m.from) });
        break;
      case 'history':
        if (f?.kind === 'history') {
          const msgs = Array.isArray(m.messages) ? (m.messages as Record<string, unknown>[]).map(toMessage) : [];
          f.resolve({ room: str(m.room), seq: num(m.seq), epoch: str(m.epoch), messages: msgs });
        }
        break;
      case 'members':
        if (f?.kind === 'members') {
          const r: MembersResult = { room: str(m.room), members: strs(m.members), memberCount: num(m.member_count) };
          if (typeof m.next === 'string') r.next = m.next;
          f.resolve(r);
        }
        break;
      case 'refreshed':
        if (f?.kind === 'refresh') {
          this.token = f.token;
          this.scheduleRefresh(num(m.exp));
          f.resolve({ exp: num(m.exp) });
        }
        break;
      case 'left':
        if (f?.kind === 'leave') f.resolve();
        break;
      case 'error':
        this.onError(m, f);
        break;
      default:
        break; // pong, and types of later versions (section 1: ignore)
    }
  }

  private settle(pub: Publish): void {
    const i = this.publishes.indexOf(pub);
    if (i >= 0) this.publishes.splice(i, 1);
  }

  private deliver(msg: Message): void {
    if (!this.tracker.deliver(msg.room, msg.seq)) return;
    this.emit('message', msg);
    const pos = this.tracker.since(msg.room);
    if (pos !== undefined) this.opts.resume?.save(msg.room, pos);
  }

  private onJoined(m: Record<string, unknown>, f: Inflight | undefined): void {
    const room = this.rooms.get(str(m.room));
    if (room === undefined) return; // left meanwhile
    const rejoin = f?.kind === 'join' ? f.rejoin : true; // no id: an unsolicited `joined` (section 4.1)
    const recovered = typeof m.recovered === 'boolean' ? m.recovered : undefined;
    const epoch = typeof m.epoch === 'string' ? m.epoch : undefined;
    const seq = num(m.seq);
    const out = this.tracker.joined(room.name, seq, epoch, recovered, rejoin);
    room.ready = true;
    room.members = new Set(strs(m.members));
    room.truncated = m.members_truncated === true;
    room.memberCount = typeof m.member_count === 'number' ? m.member_count : room.members.size;
    const result: JoinResult = {
      room: room.name,
      members: [...room.members],
      memberCount: room.memberCount,
      membersTruncated: room.truncated,
      seq,
      epoch: epoch ?? '',
    };
    if (recovered !== undefined) result.recovered = recovered;
    for (const w of room.waiters.splice(0)) w.resolve(result);
    this.emitPresence(room, [], [], true);
    if (out.kind === 'resync') {
      this.emit('resync', {
        room: room.name,
        recovered: false,
        seq,
        epoch: epoch ?? '',
        previous: out.previous,
        reason: out.previous === undefined || out.previous.epoch !== epoch ? 'epoch' : 'gap',
      });
    }
    const pos = this.tracker.since(room.name);
    if (pos !== undefined) this.opts.resume?.save(room.name, pos);
    this.flushPublishes(room);
  }

  /** All three forms: `event`+`user`, coalesced `joins`/`leaves`, count-only (docs: PRESENCE-WIRE). */
  private onPresence(m: Record<string, unknown>): void {
    const room = this.rooms.get(str(m.room));
    if (room === undefined) return;
    const joins = strs(m.joins);
    const leaves = strs(m.leaves);
    if (typeof m.user === 'string') (m.event === 'leave' ? leaves : m.event === 'join' ? joins : []).push(m.user);
    for (const u of leaves) room.members.delete(u);
    let added = 0;
    for (const u of joins) {
      if (!room.members.has(u)) added++;
      room.members.add(u);
    }
    if (typeof m.member_count === 'number') room.memberCount = m.member_count;
    else if (room.truncated) room.memberCount = Math.max(room.members.size, room.memberCount + added - leaves.length);
    else room.memberCount = room.members.size;
    this.emitPresence(room, joins, leaves, false);
  }

  private emitPresence(room: Room, joins: string[], leaves: string[], snapshot: boolean): void {
    const ev: PresenceEvent = {
      room: room.name,
      joins,
      leaves,
      members: [...room.members],
      memberCount: room.memberCount,
      membersTruncated: room.truncated,
      snapshot,
    };
    this.emit('presence', ev);
  }

  private onError(m: Record<string, unknown>, f: Inflight | undefined): void {
    const code = str(m.code) || 'internal';
    const text = str(m.message) || code;
    const room = f !== undefined && 'room' in f ? f.room : f?.kind === 'publish' ? f.pub.room : undefined;
    const err = new SwitchboardError(code, text, room === undefined ? {} : { room });
    if (f === undefined) {
      this.emit('error', err);
      if (code === 'rate_limited') this.resendAfterRateLimit();
      return;
    }
    switch (f.kind) {
      case 'publish':
        this.settle(f.pub);
        f.pub.reject(err);
        break;
      case 'join': {
        const r = this.rooms.get(f.room);
        if (r === undefined) break;
        if (f.rejoin && (code === 'unavailable' || code === 'internal')) {
          // A cluster node whose broker is away: try again, the room is still wanted.
          const c = this.conn;
          setTimeout(() => {
            if (this.conn === c && this.rooms.get(f.room) === r) this.sendJoin(r, true);
          }, REJOIN_RETRY_MS);
          this.emit('error', err);
          break;
        }
        const waiters = r.waiters.splice(0);
        void this.leave(f.room);
        for (const w of waiters) w.reject(err);
        if (waiters.length === 0) this.emit('error', err);
        break;
      }
      case 'history':
      case 'members':
      case 'refresh':
        f.reject(err);
        break;
      case 'leave':
        f.resolve();
        break;
      case 'ping':
        break;
    }
  }

  /** `rate_limited` names no request: re-send what is unanswered (publishes keep their msg_id). */
  private resendAfterRateLimit(): void {
    const c = this.conn;
    setTimeout(() => {
      if (this.conn !== c || c === undefined) return;
      for (const f of this.inflight.values()) if (f.kind !== 'ping') this.send(f.frame);
    }, RESEND_AFTER_RATE_LIMIT_MS);
  }
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

function strs(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** A `message` frame or `history` entry (section 4.9: a `binary` field holds base64 bytes). */
function toMessage(m: Record<string, unknown>): Message {
  const binary = typeof m.binary === 'string';
  return {
    room: str(m.room),
    seq: num(m.seq),
    from: str(m.from),
    data: binary ? fromBase64(m.binary as string) : ((m.data ?? null) as Json),
    binary,
    ts: num(m.ts),
  };
}

function statusText(status: number): string {
  switch (status) {
    case 401:
      return ': the token is missing, invalid or expired';
    case 403:
      return ': this origin is not allowed';
    case 429:
      return ': too many new connections from this address';
    case 503:
      return ': the server is at its connection limit';
    default:
      return '';
  }
}

/** 12 random base-36 characters: the msg_id prefix of this client (unique per user with high probability). */
function randomTag(): string {
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint32Array) => Uint32Array } }).crypto;
  const a = new Uint32Array(2);
  if (c?.getRandomValues) c.getRandomValues(a);
  else for (let i = 0; i < a.length; i++) a[i] = Math.floor(Math.random() * 2 ** 32);
  return Array.from(a, (x) => x.toString(36).padStart(7, '0')).join('').slice(0, 12);
}
