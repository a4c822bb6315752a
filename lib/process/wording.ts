// How drover words an exit and an error, in one place: the machine's error list, the event
// log's "why" and the foreground runner's notices say the same thing the same way.
import type { ExitInfo } from '../os/child.js';

/** A thrown value as text. */
export function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The verb of an exit that happened: "killed by SIGTERM", "exited with code 3". */
function ending(exit: ExitInfo): string {
  return exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

/** An exit as the end of a sentence about the child: "the child was killed by SIGTERM". */
export function exitText(exit: ExitInfo): string {
  if (exit.error) return `could not start: ${exit.error}`;
  return exit.signal ? `was ${ending(exit)}` : ending(exit);
}

/** Seconds, two significant digits: "0.041 s", "0.5 s". */
export function seconds(ms: number): string {
  return `${Number((Math.max(0, ms) / 1000).toPrecision(2))} s`;
}

/**
 * An exit as an entry of the process's error list; null for a clean exit (code 0), unless the
 * run lasted less than `minUptimeMs`: "process exited after 0.04 s (code 0)".
 */
export function exitError(exit: ExitInfo, minUptimeMs = 0): string | null {
  if (exit.error) return exit.error;
  if (exit.signal) return `process was ${ending(exit)}`;
  if (exit.code) return `process ${ending(exit)}`;
  const ran = exit.endedAt - exit.startedAt;
  if (exit.code === 0 && ran < minUptimeMs) return `process exited after ${seconds(ran)} (code ${exit.code})`;
  return null;
}

/** An exit as a notice of its own ("exited with code 3"); "exited" when nothing is known. */
export function exitNotice(exit: ExitInfo | null): string {
  if (!exit) return 'exited';
  return exit.error ?? ending(exit);
}
