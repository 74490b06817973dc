// Reconnection delays: exponential backoff with full jitter (the Rust SDK's crates/client/src/backoff.rs).
// Pure: the caller passes the random number, so every rule is unit-testable.

/** Backoff settings, in milliseconds. */
export interface BackoffOptions {
  /** Upper bound of the first delay. Default 500 ms. */
  base?: number;
  /** Growth of the upper bound per attempt. Default 2; values below 1 count as 1. */
  factor?: number;
  /** Largest upper bound. Default 30,000 ms. */
  cap?: number;
}

/** A connection that stayed up at least this long resets the attempt counter (ms). */
export const STABLE_AFTER_MS = 10_000;

/**
 * The upper bound of the delay before attempt `attempt` (1-based): `min(cap, base * factor^(attempt-1))`.
 * The cap is applied first and the jitter after it (socket.io jitters before its cap, so its clients
 * re-synchronise into a herd by the fourth attempt).
 */
export function maxDelay(o: Required<BackoffOptions>, attempt: number): number {
  const factor = Number.isFinite(o.factor) ? Math.max(1, o.factor) : 1;
  const bound = o.base * factor ** Math.max(0, attempt - 1);
  return Number.isFinite(bound) && bound < o.cap ? Math.max(0, bound) : o.cap;
}

/** The delay before attempt `attempt` for a random `unit` in [0, 1): uniform in [0, maxDelay] ("full jitter"). */
export function delay(o: Required<BackoffOptions>, attempt: number, unit: number): number {
  const u = Number.isNaN(unit) ? 0 : Math.min(1, Math.max(0, unit));
  return Math.round(maxDelay(o, attempt) * u);
}

/** Fills in the defaults. */
export function backoffSettings(o: BackoffOptions | undefined): Required<BackoffOptions> {
  return { base: o?.base ?? 500, factor: o?.factor ?? 2, cap: o?.cap ?? 30_000 };
}
