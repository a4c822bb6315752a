import { cursorAt, lineId } from './line.js';
import type { EventLog } from './log.js';

export interface FollowOptions {
  /** Keep waiting for new events; otherwise stop at the last event that existed at the start. */
  follow: boolean;
  signal: AbortSignal;
  /** Characters per batch handed to the consumer. */
  maxChars?: number;
  /** When following and nothing happens for this long, yield `null` (a keep-alive). 0: never. */
  keepaliveMs?: number;
}

/**
 * Reads a log's events after `since`, batch by batch, then (when following) waits for more
 * until the log ends. Pull-based: a slow consumer just reads later (from disk if it fell out
 * of the recent window), so it costs no memory, and ids make it gap- and duplicate-free.
 */
export async function* followLog(log: EventLog, since: number, opts: FollowOptions): AsyncGenerator<string[] | null> {
  let cursor = cursorAt(since + 1);
  const tail = opts.follow ? Infinity : log.lastId;
  // One registration at a time: a keep-alive timeout leaves it in place for the next round.
  let waiting: Promise<void> | null = null;
  while (!opts.signal.aborted) {
    const r = await log.read(cursor, opts.maxChars);
    const moved = r.next.id !== cursor.id;
    cursor = r.next;
    if (r.lines.length) {
      if (cursor.id > tail + 1) {
        // Stop exactly at the tail of a non-following read.
        const keep = r.lines.filter((l) => lineId(l) <= tail);
        if (keep.length) yield keep;
        return;
      }
      yield r.lines;
      continue;
    }
    if (cursor.id > tail || (log.ended && cursor.id > log.writtenId)) return;
    if (moved) continue;
    waiting ??= log.waitFor(cursor.id - 1, opts.signal).then(() => {
      waiting = null;
    });
    if (!(await waitOrTimeout(waiting, opts.keepaliveMs ?? 0))) yield null;
  }
}

/** True if `p` settled first, false if `ms` passed (ms 0: wait for `p` alone). */
function waitOrTimeout(p: Promise<void>, ms: number): Promise<boolean> {
  if (ms <= 0) return p.then(() => true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void p.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
