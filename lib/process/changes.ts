// What changed between two snapshots of a process actor, computed once for every observer
// (the event log, the inspection stream, the supervisor, the foreground runner) so that they
// agree on what counts as a change.
import type { ProcessContext } from './machine.js';

/** The part of a snapshot the observers compare. */
export interface SnapshotView {
  value: string;
  context: Pick<ProcessContext, 'pid' | 'restarts' | 'errors'>;
}

export interface SnapshotDiff {
  /** `next` is in another state than `prev` (always, when there is no `prev`). */
  state: boolean;
  pid: boolean;
  restarts: boolean;
  /** The machine replaces `errors` whenever it adds one. */
  errors: boolean;
  /** The error added by this step, if any. */
  newError: string | null;
  /** Any of the above. */
  any: boolean;
}

export function lastError(errors: readonly string[]): string | null {
  return errors.length ? errors[errors.length - 1] : null;
}

export function diffSnapshots(prev: SnapshotView | null, next: SnapshotView): SnapshotDiff {
  const state = !prev || prev.value !== next.value;
  const pid = !prev || prev.context.pid !== next.context.pid;
  const restarts = !prev || prev.context.restarts !== next.context.restarts;
  const errors = !prev || prev.context.errors !== next.context.errors;
  const newError = errors ? lastError(next.context.errors) : null;
  return { state, pid, restarts, errors, newError, any: state || pid || restarts || errors };
}
