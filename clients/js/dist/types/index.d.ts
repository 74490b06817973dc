export type { BackoffOptions } from './backoff.js';
export { Client } from './client.js';
export type { Position } from './tracker.js';
export type { Transport, TransportClose, TransportFactory, TransportHandlers, WebSocketConstructor, WebSocketLike, } from './transport.js';
export { webSocketTransport } from './transport.js';
export type { ClientEvents, ClientOptions, ConnectionState, HistoryOptions, HistoryResult, JoinResult, Json, MembersOptions, MembersResult, Message, PositionStore, PresenceEvent, PublishOptions, PublishResult, ResyncEvent, StateDetail, TypingEvent, } from './types.js';
export { SwitchboardError } from './types.js';
import type { PositionStore } from './types.js';
/**
 * Positions kept in `sessionStorage` (per tab, cleared when the tab closes), so a reloaded page
 * recovers what it missed instead of starting over. `key` separates clients of one page (e.g. the user).
 */
export declare function sessionPositions(key?: string): PositionStore;
