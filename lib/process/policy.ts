// The restart-policy vocabulary: shared by the machine, the desired state on disk and the
// API's validation, none of which needs the rest of the other.
import type { ExitInfo } from '../os/child.js';

/**
 * When a child that exited on its own is started again: `always` (seed 001: until deleted),
 * `on-failure` (a non-zero code, a signal or a failed start), `never`. Failed downloads and
 * builds are retried whatever the policy: the process has not run yet.
 */
export type RestartPolicy = 'always' | 'on-failure' | 'never';
export const RESTART_POLICIES: readonly RestartPolicy[] = ['always', 'on-failure', 'never'];

/** Whether an exit calls for a restart under `on-failure`. */
export function failed(exit: ExitInfo | null): boolean {
  return !exit || Boolean(exit.error) || exit.signal !== null || exit.code !== 0;
}

/** The part of the machine's context that decides a restart. */
export interface RestartFacts {
  /** A RESTART is under way. */
  restartNow: boolean;
  /** Stopped on request. */
  stopped: boolean;
  policy: RestartPolicy;
  lastExit: ExitInfo | null;
}

/** Whether a process in `exited` goes on to `restarting` (else it rests there until START). */
export function shouldRestart(c: RestartFacts): boolean {
  return c.restartNow || (!c.stopped && (c.policy === 'always' || (c.policy === 'on-failure' && failed(c.lastExit))));
}
