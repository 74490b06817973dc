// @switchboard/client: the browser and Node client of the Switchboard real-time server.
// docs/sdk-js.md is its manual; docs/protocol.md the wire it speaks.

export type { BackoffOptions } from './backoff.js';
export { Client } from './client.js';
export type { Position } from './tracker.js';
export type {
  Transport,
  TransportClose,
  TransportFactory,
  TransportHandlers,
  WebSocketConstructor,
  WebSocketLike,
} from './transport.js';
export { webSocketTransport } from './transport.js';
export type {
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
  PositionStore,
  PresenceEvent,
  PublishOptions,
  PublishResult,
  ResyncEvent,
  StateDetail,
  TypingEvent,
} from './types.js';
export { SwitchboardError } from './types.js';

import type { Position } from './tracker.js';
import type { PositionStore } from './types.js';

/**
 * Positions kept in `sessionStorage` (per tab, cleared when the tab closes), so a reloaded page
 * recovers what it missed instead of starting over. `key` separates clients of one page (e.g. the user).
 */
export function sessionPositions(key = 'switchboard'): PositionStore {
  const store = (globalThis as { sessionStorage?: Storage }).sessionStorage;
  const k = (room: string) => `${key}:pos:${room}`;
  return {
    load(room) {
      try {
        const v: unknown = JSON.parse(store?.getItem(k(room)) ?? 'null');
        const p = v as Partial<Position> | null;
        return p && typeof p.seq === 'number' && typeof p.epoch === 'string' ? { seq: p.seq, epoch: p.epoch } : undefined;
      } catch {
        return undefined;
      }
    },
    save(room, pos) {
      try {
        store?.setItem(k(room), JSON.stringify(pos));
      } catch {
        // Storage full or disabled: resuming after a reload is best effort.
      }
    },
    remove(room) {
      try {
        store?.removeItem(k(room));
      } catch {
        // as above
      }
    },
  };
}
