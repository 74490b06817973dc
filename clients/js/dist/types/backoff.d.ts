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
export declare const STABLE_AFTER_MS = 10000;
/**
 * The upper bound of the delay before attempt `attempt` (1-based): `min(cap, base * factor^(attempt-1))`.
 * The cap is applied first and the jitter after it (socket.io jitters before its cap, so its clients
 * re-synchronise into a herd by the fourth attempt).
 */
export declare function maxDelay(o: Required<BackoffOptions>, attempt: number): number;
/** The delay before attempt `attempt` for a random `unit` in [0, 1): uniform in [0, maxDelay] ("full jitter"). */
export declare function delay(o: Required<BackoffOptions>, attempt: number, unit: number): number;
/** Fills in the defaults. */
export declare function backoffSettings(o: BackoffOptions | undefined): Required<BackoffOptions>;
