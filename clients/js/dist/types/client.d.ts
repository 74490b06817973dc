import type { ClientEvents, ClientOptions, ConnectionState, HistoryOptions, HistoryResult, JoinResult, Json, MembersOptions, MembersResult, PublishOptions, PublishResult } from './types.js';
/** The Switchboard client. See docs/sdk-js.md. */
export declare class Client {
    readonly url: string;
    private readonly opts;
    private readonly factory;
    private readonly backoff;
    private readonly echo;
    private readonly pingInterval;
    private readonly pingTimeout;
    private readonly maxBuffered;
    private readonly typingInterval;
    private readonly random;
    private readonly handlers;
    private readonly tracker;
    private readonly rooms;
    private readonly publishes;
    private readonly queued;
    private inflight;
    private stateNow;
    private conn;
    /** Bumped for every connection attempt; callbacks of older ones are ignored. */
    private gen;
    private attempts;
    private nextId;
    private readonly idPrefix;
    private idCounter;
    private token;
    private reconnectTimer;
    private refreshTimer;
    private connectWaiters;
    private detach;
    constructor(url: string, options?: ClientOptions);
    /** The connection state. */
    get state(): ConnectionState;
    on<E extends keyof ClientEvents>(event: E, handler: ClientEvents[E]): this;
    off<E extends keyof ClientEvents>(event: E, handler: ClientEvents[E]): this;
    private emit;
    private setState;
    /** Starts connecting (and reconnecting). Resolves once connected; rejects if the client closes first. */
    connect(): Promise<void>;
    /** Closes the connection for good: pending requests fail with `closed`. `connect()` starts again. */
    close(): void;
    private finish;
    private open;
    private onOpen;
    private onClose;
    /** Forgets the current connection; everything sent on it and not answered goes back to wait. */
    private dropConn;
    private scheduleReconnect;
    /** Browsers: `online` reconnects at once, `offline` and a tab coming back check the link at once. */
    private listenToBrowser;
    /** Sends a `ping` now (unless one is out) and checks for an answer after `pingTimeout`. */
    private probe;
    private sendPing;
    private armTick;
    /**
     * Liveness check. Any frame from the server counts as life. A timer that fired much later than
     * asked for means the tab was throttled or the machine slept: the silence proves nothing then, so
     * the client pings again instead of giving up (socket.io#4040's false alarms in background tabs).
     */
    private onTick;
    /** Queues a frame behind the client-side rate limiter. */
    private send;
    private flush;
    private request;
    private sendRequest;
    private sendJoin;
    /** Sends the room's publishes that wait, in order, once the room is joined on this connection. */
    private flushPublishes;
    /** Joins a room (again after every reconnect, until `leave`). Resolves with the first `joined`. */
    join(room: string): Promise<JoinResult>;
    /** Leaves a room: no more messages, no re-join; its waiting publishes fail with `left`. */
    leave(room: string): Promise<void>;
    /**
     * Publishes JSON (`data` any JSON value) or bytes (`Uint8Array`/`ArrayBuffer`, sent as a binary frame)
     * to a room you joined. While disconnected, it waits (at most `maxBuffered` publishes) and is sent
     * after the re-join, with the same msg_id, so a publish whose ack was lost is counted once.
     */
    publish(room: string, data: Json | Uint8Array | ArrayBuffer, options?: PublishOptions): Promise<PublishResult>;
    /** Tells the room you are typing; sent at most every `typingInterval` per room. True if it was sent. */
    typing(room: string): boolean;
    /** The room's latest messages (oldest first). Membership is not needed, the `join` right is. */
    history(room: string, options?: HistoryOptions): Promise<HistoryResult>;
    /** A page of the room's member list (large rooms; needs a server with the `members` request). */
    members(room: string, options?: MembersOptions): Promise<MembersResult>;
    /** The client's view of a room's members, kept from `joined` and presence events. */
    presence(room: string): {
        members: string[];
        memberCount: number;
        membersTruncated: boolean;
    } | undefined;
    /** The last position delivered in a room (what a re-join recovers from). */
    position(room: string): {
        seq: number;
        epoch: string;
    } | undefined;
    /** Sends a new token now (`refresh`); later connections use it too. Resolves with the new expiry (s). */
    refresh(token: string): Promise<{
        exp: number;
    }>;
    /**
     * Sets the token for later connections (e.g. after a close 4001 of a client without `getToken`) and,
     * while connected, sends it as `refresh` at once (a refusal is reported as an `error` event).
     */
    setToken(token: string): void;
    private scheduleRefresh;
    private renewToken;
    private newMsgId;
    private onFrame;
    private settle;
    private deliver;
    private onJoined;
    /** All three forms: `event`+`user`, coalesced `joins`/`leaves`, count-only (docs: PRESENCE-WIRE). */
    private onPresence;
    private emitPresence;
    private onError;
    /** `rate_limited` names no request: re-send what is unanswered (publishes keep their msg_id). */
    private resendAfterRateLimit;
}
