// The transport seam: the client speaks to a Transport, never to WebSocket directly, so SSE and
// long-polling can slot in later. This file is the only one that names the WebSocket API.

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
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  terminate?: () => void;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // ws may hand fragmented binary messages as a list of Buffers.
    const parts = data.map((p) => toBytes(p) ?? new Uint8Array(0));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  return undefined;
}

/** The transport over a WebSocket implementation (the global one when `impl` is undefined). */
export function webSocketTransport(impl: WebSocketConstructor | undefined): TransportFactory {
  return (url, h) => {
    const Ctor = impl ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Ctor === undefined) {
      throw new Error('no WebSocket implementation: pass options.WebSocket (in Node 20, the `ws` package)');
    }
    const ws = new Ctor(url);
    ws.binaryType = 'arraybuffer';
    let opened = false;
    let done = false;
    let status: number | undefined;
    ws.onopen = () => {
      opened = true;
      if (!done) h.open();
    };
    ws.onmessage = (ev) => {
      if (done) return;
      if (typeof ev.data === 'string') h.message(ev.data);
      else {
        const b = toBytes(ev.data);
        if (b !== undefined) h.message(b);
      }
    };
    ws.onerror = (ev) => {
      // Node's `ws`: "Unexpected server response: 401". Browsers say nothing about refusals.
      const text = String((ev as { message?: unknown } | null)?.message ?? '');
      const m = /server response: (\d{3})/.exec(text);
      if (m) status = Number(m[1]);
    };
    ws.onclose = (ev) => {
      if (done) return;
      done = true;
      const info: TransportClose = { code: ev.code, reason: ev.reason, opened };
      if (status !== undefined) info.status = status;
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
          // Closing a socket that is still connecting throws in some implementations; it is gone either way.
        }
      },
    };
  };
}
