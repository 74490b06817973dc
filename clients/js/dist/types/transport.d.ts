/** How a transport ended. */
export interface TransportClose {
    /** The close code; 1006 when the connection ended without a close frame. */
    code: number;
    reason: string;
    /** Whether the connection had opened. */
    opened: boolean;
    /** The HTTP status of a refused upgrade, when the implementation exposes it (Node's `ws` does, browsers do not). */
    status?: number;
}
/** What the client hands to a transport. */
export interface TransportHandlers {
    open(): void;
    /** A text frame (string) or a binary frame. */
    message(frame: string | Uint8Array): void;
    /** Called once, when the transport ended (not after the client called `close` on it). */
    close(info: TransportClose): void;
}
/** One connection. */
export interface Transport {
    send(frame: string | Uint8Array): void;
    /** Ends the connection; `abort` skips the closing handshake (a dead link). No `close` callback follows. */
    close(code: number, reason: string, abort: boolean): void;
}
/** Opens a connection to `url`. */
export type TransportFactory = (url: string, handlers: TransportHandlers) => Transport;
/** The part of the WebSocket API the client uses (browsers' WebSocket and the `ws` package both fit). */
export interface WebSocketLike {
    binaryType: string;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    send(data: string | ArrayBufferView | ArrayBuffer): void;
    close(code?: number, reason?: string): void;
    terminate?: () => void;
}
/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
/** The transport over a WebSocket implementation (the global one when `impl` is undefined). */
export declare function webSocketTransport(impl: WebSocketConstructor | undefined): TransportFactory;
