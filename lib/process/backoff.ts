export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** A run at least this long counts as healthy and resets the backoff. */
  resetAfterMs: number;
  /**
   * Each delay is drawn from [(1 - jitter) · d, d]: never longer than the policy says, and
   * processes that crashed together (a database down for a whole app) drift apart instead of
   * restarting in lockstep. 0 or absent: exactly d.
   */
  jitter?: number;
}

/**
 * Delay before restart number `attempt` (0-based count of consecutive failures so far):
 * the first restart happens at once, then initial, doubling, capped at max.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  if (attempt <= 0) return 0;
  const exp = Math.min(attempt - 1, 30); // avoid overflow for very long crash loops
  const delay = Math.min(policy.initialMs * 2 ** exp, policy.maxMs);
  return policy.jitter ? Math.round(delay * (1 - policy.jitter * random())) : delay;
}

/** Consecutive failures to count for the coming restart: a healthy run (null: nothing ran) starts over. */
export function effectiveAttempt(attempt: number, ranMs: number | null, policy: BackoffPolicy): number {
  return ranMs !== null && ranMs >= policy.resetAfterMs ? 0 : attempt;
}
