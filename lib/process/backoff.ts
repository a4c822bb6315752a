export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** A run at least this long counts as healthy and resets the backoff. */
  resetAfterMs: number;
}

/**
 * Delay before restart number `attempt` (0-based count of consecutive failures so far):
 * the first restart happens at once, then initial, doubling, capped at max.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy): number {
  if (attempt <= 0) return 0;
  const exp = Math.min(attempt - 1, 30); // avoid overflow for very long crash loops
  return Math.min(policy.initialMs * 2 ** exp, policy.maxMs);
}

/** Consecutive failures to count for the coming restart: a healthy run (null: nothing ran) starts over. */
export function effectiveAttempt(attempt: number, ranMs: number | null, policy: BackoffPolicy): number {
  return ranMs !== null && ranMs >= policy.resetAfterMs ? 0 : attempt;
}
