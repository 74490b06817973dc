// Wire helpers of protocol v1 (docs/protocol.md): the binary envelope (section 7), base64 of
// `history` entries (section 4.9), the close codes (section 8.3). Pure: no IO, no clock.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** A room message delivered by a binary frame (section 7.2). */
export interface BinaryDelivery {
  room: string;
  seq: number;
  ts: number;
  from: string;
  payload: Uint8Array;
}

/** Section 7.1: `[room_len u8][room][payload]`. Throws on a room name that cannot fit. */
export function encodeBinaryPublish(room: string, payload: Uint8Array): Uint8Array {
  const r = utf8Encoder.encode(room);
  if (r.length < 1 || r.length > 255) throw new RangeError(`room name of ${r.length} bytes cannot be sent in a binary frame`);
  const out = new Uint8Array(1 + r.length + payload.length);
  out[0] = r.length;
  out.set(r, 1);
  out.set(payload, 1 + r.length);
  return out;
}

/** Section 7.2. Returns undefined for a frame too short for its own length fields. */
export function decodeBinaryDelivery(frame: Uint8Array): BinaryDelivery | undefined {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (frame.length < 1) return undefined;
  const r = frame[0] as number;
  if (frame.length < 18 + r) return undefined;
  const f = frame[17 + r] as number;
  if (frame.length < 18 + r + f) return undefined;
  return {
    room: utf8Decoder.decode(frame.subarray(1, 1 + r)),
    seq: Number(view.getBigUint64(1 + r)),
    ts: Number(view.getBigUint64(9 + r)),
    from: utf8Decoder.decode(frame.subarray(18 + r, 18 + r + f)),
    payload: frame.slice(18 + r + f),
  };
}

/** Standard base64 (RFC 4648 section 4) to bytes; `atob` exists in browsers and Node 16+. */
export function fromBase64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** The `exp` claim (seconds since the epoch) of a JWT, read without checking it; undefined if unreadable. */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split('.')[1];
  if (part === undefined) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims: unknown = JSON.parse(utf8Decoder.decode(fromBase64(b64 + '='.repeat((4 - (b64.length % 4)) % 4))));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a close ends the client for good (section 8.3): reconnecting with the same credentials
 * would only be closed again. `canRenewToken`: the client has `getToken`, so after 4001 (expired) a
 * reconnect with a fresh token is right.
 */
export function isTerminalClose(code: number, reason: string, canRenewToken: boolean): boolean {
  // 1000 is not here: the server sends it only in answer to our own close, after which this client
  // has stopped listening; one that arrives otherwise comes from something in between (a proxy
  // ending an idle tunnel), and reconnecting is right.
  if (code === 1008) return reason !== 'ping timeout'; // too many protocol errors: a bug, fix it first
  if (code === 4001) return !canRenewToken;
  if (code === 4003) return true; // the token names another user
  // 1002, 1003, 1007, 1009: the client sent something the server will refuse again.
  return code === 1002 || code === 1003 || code === 1007 || code === 1009;
}

/** Whether an HTTP refusal of the upgrade (known in Node, hidden by browsers) is terminal. */
export function isTerminalStatus(status: number, canRenewToken: boolean): boolean {
  if (status === 401) return !canRenewToken;
  return status === 400 || status === 403 || status === 404 || status === 426;
}

/** The least wait (ms) the server asks for after a refusal (section 2.5: 429 at least 1 s, 503 5 s). */
export function retryHint(status: number | undefined): number {
  if (status === 429) return 1_000;
  if (status === 503) return 5_000;
  return 0;
}

/**
 * The WebSocket URL for the connection: `http(s)` becomes `ws(s)`, a relative URL is resolved against
 * the page, `user` and `token` go into the query (browsers cannot set headers on a WebSocket request).
 */
export function connectUrl(base: string, auth: { user?: string | undefined; token?: string | undefined }): string {
  const loc = (globalThis as { location?: { href: string } }).location;
  const u = loc ? new URL(base, loc.href) : new URL(base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  u.searchParams.delete('token');
  u.searchParams.delete('user');
  if (auth.token) u.searchParams.set('token', auth.token);
  else if (auth.user !== undefined) u.searchParams.set('user', auth.user);
  return u.toString();
}
