import type { ExitInfo } from '../os/child.js';
import { round6, usageDocument } from '../os/usage.js';

/**
 * How a run ended, as the API shows it: the status document's `last_exit` (lib/api/status.ts)
 * and the `child_exited` event the event log records (record.ts), so both carry the same fields.
 *
 * `core_dump` is true/false when known: always with the exit helper; without it, false for
 * exit codes and for signals that never dump core, null for those that may (SIGSEGV, ...).
 */
export function exitDetail(exit: ExitInfo | null) {
  if (!exit) return null;
  return {
    exit_code: exit.code,
    signal: exit.signal,
    signum: exit.signum ?? null,
    core_dump: exit.coreDump ?? null,
    started_at: new Date(exit.startedAt).toISOString(),
    ended_at: new Date(exit.endedAt).toISOString(),
    /** Seconds, like utime and stime. */
    duration: round6((exit.endedAt - exit.startedAt) / 1000),
    ...(exit.error ? { error: exit.error } : {}),
    usage: usageDocument(exit.usage),
  };
}
