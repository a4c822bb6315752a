// The newest events of a log, kept in memory as their lines so that readers keeping up (the
// common case) never touch the disk. Bounded by count and by size; it always holds at least
// the newest event, and it holds events before they are written.
import { cursorAt, lineType, type ReadResult } from './line.js';

export interface WindowOptions {
  /** At most this many events (default 1024)... */
  maxEvents?: number;
  /** ...and about this many characters, but always the newest event (default 256 KiB). */
  maxChars?: number;
}

export class RecentWindow {
  // lines[head + (id - first)] is event `id`; slots before head are emptied, and compacted away
  // once they are most of the array.
  private lines: string[] = [];
  private head = 0;
  private first: number;
  private chars = 0;
  private readonly maxEvents: number;
  private readonly maxChars: number;

  /** `nextId`: the id the first pushed line will have. */
  constructor(nextId: number, opts: WindowOptions = {}) {
    this.first = nextId;
    this.maxEvents = opts.maxEvents ?? 1024;
    this.maxChars = opts.maxChars ?? 256 * 1024;
  }

  /** The oldest id held (the next id to be pushed when empty). */
  get firstId(): number {
    return this.first;
  }

  /** Adds the next event's line, dropping the oldest ones beyond the bounds. */
  push(line: string): void {
    const lines = this.lines;
    lines.push(line);
    this.chars += line.length;
    while (lines.length - this.head > this.maxEvents || (this.chars > this.maxChars && lines.length - this.head > 1)) {
      this.chars -= lines[this.head].length;
      lines[this.head++] = '';
      this.first++;
    }
    if (this.head > 4096 && this.head * 2 > lines.length) {
      this.lines = lines.slice(this.head);
      this.head = 0;
    }
  }

  /** The line of event `id`, which must be held. */
  get(id: number): string {
    return this.lines[this.head + (id - this.first)];
  }

  /** Lines from `id` (which must be held) up to `upTo`, until about `maxChars`. */
  read(id: number, upTo: number, maxChars: number): ReadResult {
    const lines: string[] = [];
    let chars = 0;
    let next = id;
    while (next <= upTo && chars < maxChars) {
      const line = this.get(next);
      lines.push(line);
      chars += line.length;
      next++;
    }
    return { lines, next: cursorAt(next) };
  }

  /** Of the held events up to `upTo`, the last `n` of `type`: how many there are and the first one's id. */
  lastOfType(type: string, n: number, upTo: number): { count: number; first: number } {
    let count = 0;
    let first = upTo + 1;
    for (let id = upTo; id >= this.first && count < n; id--) {
      if (lineType(this.get(id)) === type) {
        first = id;
        count++;
      }
    }
    return { count, first };
  }
}
