// Expected release-pipeline failures (bad URL, HTTP error, hostile archive, failed
// build). Callers can show `message` to users as-is; anything else is a bug.
export class ReleaseError extends Error {
  override name = 'ReleaseError';
  /** Set when a build step exited with a non-zero code. */
  exitCode?: number;
}

/** The error to throw when `signal` aborted: its reason, like fetch() and timers do. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}
