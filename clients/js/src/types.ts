// The public types of the client: options, results, events, the error.

import type { BackoffOptions } from './backoff.js';
import type { Position } from './tracker.js';
import type { TransportFactory, WebSocketConstructor } from './transport.js';

/** A JSON value, as published and delivered. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Connection states, in the order a client goes through them; `closed` is final. */
export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed';

/** Where positions are kept between page loads (opt-in; `sessionPositions()` keeps them in sessionStorage). */
export interface PositionStore {
  load(room: string): Position | undefined;
  save(room: string, position: Position): void;
  remove(room: string): void;
}

export interface ClientOptions {
  /** User name for servers with anonymous access (ignored when a token is sent). Needed for publish retries to be recognised across reconnects. */
  user?: string;
  /** A token (JWT) for every connection. Prefer `getToken`, which can renew it. */
  token?: string;
  /** Called before every connection and before the token's `exp` (then sent as `refresh`). */
  getToken?: () => Promise<string>;
  /** The WebSocket implementation; default the global one (browsers, Node 22+). In Node 20, pass the `ws` package's default export. */
  WebSocket?: WebSocketConstructor;
  /** Replaces the WebSocket transport (tests, other transports). */
  transport?: TransportFactory;
  /** Reconnect delays, ms. Default base 500, factor 2, cap 30,000, with full jitter. */
  backoff?: BackoffOptions;
  /** Deliver your own JSON publishes to you as `message` events too (publish with `echo:true`). Default true. */
  echo?: boolean;
  /** Send a `ping` after this much silence from the server, ms. Default 15,000. */
  pingInterval?: number;
  /** Give the connection up when nothing arrives this long after a ping, ms. Default 10,000. */
  pingTimeout?: number;
  /** Publishes waiting for their ack (sent or not, e.g. while disconnected), at most. Default 1,000; the next publish fails with `buffer_full`. */
  maxBuffered?: number;
  /** `typing` is sent at most this often per room, ms. Default 2,000. */
  typingInterval?: number;
  /** Client-side pacing of frames, matching the server's per-connection rate limit (default 30/s, bursts of 60); `false` turns it off. */
  rateLimit?: { perSecond: number; burst: number } | false;
  /** Keep positions across page reloads (opt-in), e.g. `sessionPositions()`. */
  resume?: PositionStore;
  /** Random numbers in [0, 1) for the backoff jitter and ids (tests). Default Math.random. */
  random?: () => number;
}

/** What `join` resolves with. */
export interface JoinResult {
  room: string;
  /** Users in the room (at most the server's list limit, see `membersTruncated`). Empty without the presence right. */
  members: string[];
  /** Distinct users in the room; `members.length` from servers that do not send it. */
  memberCount: number;
  /** The server cut the member list (large room); fetch more with `client.members()`. */
  membersTruncated: boolean;
  /** The room's seq at the join. */
  seq: number;
  epoch: string;
  /** Present when the join asked to recover (`since`). */
  recovered?: boolean;
}

/** What `publish` resolves with. */
export interface PublishResult {
  /** The message's seq; undefined for a binary publish (the server does not ack them). */
  seq: number | undefined;
  /** The server had already accepted this msg_id (a retry after a lost ack); it was not delivered again. */
  duplicate: boolean;
}

export interface PublishOptions {
  /** Idempotency key, 1 to 64 bytes, unique per user. Generated when absent. Not used for binary publishes. */
  msgId?: string;
}

/** A room message, JSON (`binary: false`, `data` is the JSON value) or binary (`data` is a Uint8Array). */
export interface Message {
  room: string;
  seq: number;
  from: string;
  data: Json | Uint8Array;
  binary: boolean;
  /** Server time of sequencing, ms since the Unix epoch (display only). */
  ts: number;
}

export interface HistoryOptions {
  /** Messages wanted, counting back from the newest; default and cap: the room's history size. */
  limit?: number;
}

export interface HistoryResult {
  room: string;
  seq: number;
  epoch: string;
  /** Oldest first, without gaps; the last one has `seq` equal to the reply's `seq`. */
  messages: Message[];
}

export interface MembersOptions {
  after?: string;
  limit?: number;
}

export interface MembersResult {
  room: string;
  members: string[];
  memberCount: number;
  /** Pass as `after` for the next page; absent on the last page. */
  next?: string;
}

/** Presence changes in a room; the client keeps the member list and passes the result along. */
export interface PresenceEvent {
  room: string;
  joins: string[];
  leaves: string[];
  /** The client's member list after the change (partial when `membersTruncated`). */
  members: string[];
  memberCount: number;
  membersTruncated: boolean;
  /** The list was replaced as a whole (a `joined` reply, e.g. after a reconnect), not changed. */
  snapshot: boolean;
}

export interface TypingEvent {
  room: string;
  from: string;
}

/** Recovery was not possible: messages between `previous` and `seq` are lost to this client; re-sync (e.g. with `history`). */
export interface ResyncEvent {
  room: string;
  recovered: false;
  /** The new position. */
  seq: number;
  epoch: string;
  /** The position held before; undefined when none was known. */
  previous: Position | undefined;
  /** `epoch`: the room was re-created or the server restarted; `gap`: missed messages left the history. */
  reason: 'epoch' | 'gap';
}

export interface StateDetail {
  previous: ConnectionState;
  /** For `disconnected`: the wait before the next attempt, ms. */
  retryIn?: number;
  /** The close that caused `disconnected` or `closed`. */
  closeCode?: number;
  closeReason?: string;
  /** For `closed` after a terminal failure. */
  error?: SwitchboardError;
}

export interface ClientEvents {
  message: (message: Message) => void;
  presence: (event: PresenceEvent) => void;
  typing: (event: TypingEvent) => void;
  state: (state: ConnectionState, detail: StateDetail) => void;
  resync: (event: ResyncEvent) => void;
  error: (error: SwitchboardError) => void;
}

/**
 * Every failure the client reports. `code` is a server error code (docs/protocol.md section 6.1) or one
 * of the client's: `closed`, `buffer_full`, `not_joined`, `left`, `connect_failed`, `refused`,
 * `token_expired`, `identity_changed`, `policy`, `rejected_frame`, `token_error`, `no_websocket`.
 */
export class SwitchboardError extends Error {
  readonly code: string;
  readonly room: string | undefined;
  /** The WebSocket close code, for errors that closed the connection. */
  readonly closeCode: number | undefined;
  /** The HTTP status of a refused upgrade, when known (Node; browsers hide it). */
  readonly status: number | undefined;
  /** The client stopped (state `closed`) because of it. */
  readonly fatal: boolean;

  constructor(code: string, message: string, extra: { room?: string; closeCode?: number; status?: number; fatal?: boolean } = {}) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    this.room = extra.room;
    this.closeCode = extra.closeCode;
    this.status = extra.status;
    this.fatal = extra.fatal ?? false;
  }
}
