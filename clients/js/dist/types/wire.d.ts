/** A room message delivered by a binary frame (section 7.2). */
export interface BinaryDelivery {
    room: string;
    seq: number;
    ts: number;
    from: string;
    payload: Uint8Array;
}
/** Section 7.1: `[room_len u8][room][payload]`. Throws on a room name that cannot fit. */
export declare function encodeBinaryPublish(room: string, payload: Uint8Array): Uint8Array;
/** Section 7.2. Returns undefined for a frame too short for its own length fields. */
export declare function decodeBinaryDelivery(frame: Uint8Array): BinaryDelivery | undefined;
/** Standard base64 (RFC 4648 section 4) to bytes; `atob` exists in browsers and Node 16+. */
export declare function fromBase64(b64: string): Uint8Array;
/** The `exp` claim (seconds since the epoch) of a JWT, read without checking it; undefined if unreadable. */
export declare function tokenExpiry(token: string): number | undefined;
/**
 * Whether a close ends the client for good (section 8.3): reconnecting with the same credentials
 * would only be closed again. `canRenewToken`: the client has `getToken`, so after 4001 (expired) a
 * reconnect with a fresh token is right.
 */
export declare function isTerminalClose(code: number, reason: string, canRenewToken: boolean): boolean;
/** Whether an HTTP refusal of the upgrade (known in Node, hidden by browsers) is terminal. */
export declare function isTerminalStatus(status: number, canRenewToken: boolean): boolean;
/** The least wait (ms) the server asks for after a refusal (section 2.5: 429 at least 1 s, 503 5 s). */
export declare function retryHint(status: number | undefined): number;
/**
 * The WebSocket URL for the connection: `http(s)` becomes `ws(s)`, a relative URL is resolved against
 * the page, `user` and `token` go into the query (browsers cannot set headers on a WebSocket request).
 */
export declare function connectUrl(base: string, auth: {
    user?: string | undefined;
    token?: string | undefined;
}): string;
