// The log's files: DIR/<id of the segment's first event, 16 digits>.ndjson, appended to one at
// a time, a new one started at the segment size, the oldest dropped to stay under the disk cap.
// Opening repairs a torn final line left by a crash; reading never goes past what is known to
// be written; a failed write loses its batch, never the agent.
import { close, ftruncate, open as fsOpen, writev } from 'node:fs';
import { mkdir, open, readdir, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { cursorAt, lineId, lineType, segmentName, segmentStart, validLineId, type Cursor, type ReadResult } from './line.js';

export interface SegmentsOptions {
  dir: string;
  /** Disk cap: the oldest segments are dropped to stay under it. */
  maxBytes: number;
  /** Size at which a new segment starts. */
  segmentBytes: number;
  /** One-line warnings (repairs, write failures), meant for stderr. */
  warn?: (message: string) => void;
  /** Name used in warnings. */
  name?: string;
  /** Write failures and recoveries, to be recorded as events. */
  report?: (message: string) => void;
}

export interface Segment {
  start: number;
  bytes: number;
}

const MAX_READ = 8 * 1024 * 1024;

// The write path uses fs's callback API: a thread-pool trip without the promise API's
// FileHandle and promise machinery, which cost more than the write itself for the few events
// of a starting process. Nothing here blocks the event loop: on a disk busy with writeback, a
// synchronous create or append can stall for many milliseconds.
const openAppend = (file: string) =>
  new Promise<number>((resolve, reject) => fsOpen(file, 'a', 0o600, (err, fd) => (err ? reject(err) : resolve(fd))));

/** writev until everything is written (a write may take only part). */
async function writeAll(fd: number, bufs: Buffer[]): Promise<void> {
  for (;;) {
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const written = await new Promise<number>((resolve, reject) => writev(fd, bufs, (err, n) => (err ? reject(err) : resolve(n))));
    if (written >= total) return;
    let skip = written;
    while (skip >= bufs[0].length) skip -= bufs.shift()!.length;
    bufs[0] = bufs[0].subarray(skip);
  }
}

export class Segments {
  private totalBytes: number;
  /** The segment being appended to (a plain descriptor: small writes are synchronous). */
  private fd: number | null = null;
  private fdStart = -1;
  private forceRoll = false;
  private failing = false;
  private lost = 0;

  private constructor(
    private readonly opts: SegmentsOptions,
    private readonly list: Segment[],
    /** The id of the last event on disk (or the one before the first segment when there is none). */
    readonly lastId: number,
    /** The directory was made by open(): no earlier log was there. */
    readonly fresh = false,
  ) {
    this.totalBytes = list.reduce((n, s) => n + s.bytes, 0);
  }

  /** Opens (or creates) the files in `dir`, repairing a torn final line left by a crash. */
  static async open(opts: SegmentsOptions): Promise<Segments> {
    // A directory made just now is empty: nothing to list or repair (a new process's log,
    // the common case, costs one thread-pool trip less).
    if ((await mkdir(opts.dir, { recursive: true })) !== undefined) return new Segments(opts, [], 0, true);
    const list: Segment[] = [];
    for (const name of (await readdir(opts.dir)).sort()) {
      const start = segmentStart(name);
      if (start !== null) list.push({ start, bytes: (await stat(join(opts.dir, name))).size });
    }
    let lastId = list.length ? list[0].start - 1 : 0;
    while (list.length) {
      const seg = list[list.length - 1];
      const found = await repairTail(join(opts.dir, segmentName(seg.start)), seg, opts);
      if (found !== null) {
        lastId = found;
        break;
      }
      lastId = seg.start - 1;
      if (list.length === 1) break; // keep an empty first segment: it records where ids resume
      list.pop();
      await unlink(join(opts.dir, segmentName(seg.start))).catch(() => {});
    }
    return new Segments(opts, list, lastId);
  }

  /** The first id of the oldest segment, if there is one. */
  get firstStart(): number | undefined {
    return this.list[0]?.start;
  }

  /** Bytes in all segments. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Appends events `first`..`first+count-1`. A failure is reported and loses the batch. */
  async write(bufs: Buffer[], bytes: number, first: number, count: number): Promise<void> {
    let active = this.list[this.list.length - 1];
    let created = false;
    try {
      if (!active || active.bytes >= this.opts.segmentBytes || this.forceRoll) {
        this.forceRoll = false;
        if (!active || active.start !== first) {
          active = { start: first, bytes: 0 };
          this.list.push(active);
          created = true;
        }
      }
      if (this.fdStart !== active.start) {
        await this.close();
        this.fd = await openAppend(join(this.opts.dir, segmentName(active.start)));
        this.fdStart = active.start;
      }
      await writeAll(this.fd!, bufs);
      active.bytes += bytes;
      this.totalBytes += bytes;
      await this.enforceCap();
      if (this.failing) {
        this.failing = false;
        this.report(`event log writes work again; ${this.lost} events could not be saved`);
        this.lost = 0;
      }
    } catch (err) {
      this.lost += count;
      if (created && this.fdStart !== active.start) {
        this.list.pop(); // its file could not even be created
      } else if (this.fd !== null) {
        // Cut a partial write so the next batch starts on a line boundary; failing that,
        // start a fresh segment next time.
        const fd = this.fd;
        const cut = await new Promise<boolean>((resolve) => ftruncate(fd, active.bytes, (e) => resolve(!e)));
        if (!cut) this.forceRoll = true;
      }
      if (!this.failing) {
        this.failing = true;
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        this.report(`cannot write the event log (${code}); events are kept in memory only until writes work again`);
      }
    }
  }

  /** Closes the file being appended to (a later write opens it again). */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = null;
    this.fdStart = -1;
    if (fd !== null) await new Promise<void>((resolve) => close(fd, () => resolve()));
  }

  /** Closes and deletes the directory. */
  async remove(): Promise<void> {
    await this.close();
    await rm(this.opts.dir, { recursive: true, force: true });
  }

  /**
   * Reads lines with id >= `id` (and <= `upTo`) from the segment holding `id`. A segment that
   * vanished (dropped by the cap) or ids missing after a failed write are skipped over; events
   * from `inMemory` on are the caller's (held in memory), so a missing stretch skips to them.
   */
  async read(id: number, cursor: Cursor, maxChars: number, upTo: number, inMemory: number): Promise<ReadResult> {
    let i = this.list.length - 1;
    while (i > 0 && this.list[i].start > id) i--;
    const seg = this.list[i];
    if (!seg) return { lines: [], next: cursorAt(upTo + 1) };
    const nextStart = this.list[i + 1]?.start;
    let pos = cursor.seg === seg.start && cursor.id === id ? cursor.pos : 0;
    let fh: FileHandle;
    try {
      fh = await open(join(this.opts.dir, segmentName(seg.start)), 'r');
    } catch {
      return { lines: [], next: cursorAt(Math.max(id, nextStart ?? Math.min(this.list[0]?.start ?? inMemory, inMemory))) };
    }
    const lines: string[] = [];
    let next = id;
    try {
      let size = Math.min(Math.max(maxChars, 64 * 1024), MAX_READ);
      let atEnd = false;
      for (;;) {
        // Only what is known to be written: never past the segment's size.
        const want = Math.min(size, seg.bytes - pos);
        const buf = Buffer.allocUnsafe(Math.max(want, 0));
        const bytesRead = want > 0 ? (await fh.read(buf, 0, want, pos)).bytesRead : 0;
        let start = 0;
        let stop = false;
        for (let nl = buf.indexOf(10, 0); nl !== -1 && nl < bytesRead; nl = buf.indexOf(10, start)) {
          const lid = lineId(buf, start);
          if (lid !== -1 && lid >= next) {
            if (lid > upTo) {
              stop = true;
              break;
            }
            lines.push(buf.toString('utf8', start, nl + 1));
            next = lid + 1;
          }
          start = nl + 1;
        }
        pos += start;
        if (stop || lines.length) break;
        if (bytesRead === 0 || (start === 0 && (bytesRead < size || size >= MAX_READ * 4))) {
          atEnd = true; // the end, or a damaged stretch without line breaks: skip it
          break;
        }
        if (start === 0) size *= 2; // a line longer than the buffer
      }
      if (atEnd) {
        // The id is in the next segment, or was never saved (a failed write).
        if (nextStart !== undefined) return { lines, next: { id: Math.max(next, nextStart), seg: nextStart, pos: 0 } };
        if (next <= upTo && next < inMemory) next = Math.min(upTo + 1, inMemory);
      }
    } finally {
      await fh.close().catch(() => {});
    }
    return { lines, next: { id: next, seg: seg.start, pos } };
  }

  /**
   * Of the events before `below` on disk, the last `n` of `type`: how many there are and the
   * first one's id. Scans segments newest first.
   */
  async lastOfType(type: string, n: number, below: number): Promise<{ count: number; first: number }> {
    let count = 0;
    let first = below;
    for (let i = this.list.length - 1; i >= 0 && count < n; i--) {
      const seg = this.list[i];
      if (seg.start >= below) continue;
      const ids: number[] = [];
      let cursor: Cursor = { id: seg.start, seg: seg.start, pos: 0 };
      for (;;) {
        const r = await this.read(cursor.id, cursor, MAX_READ, Math.min(below - 1, (this.list[i + 1]?.start ?? Infinity) - 1), below);
        for (const line of r.lines) if (lineType(line) === type) ids.push(lineId(line));
        if (!r.lines.length || r.next.seg !== seg.start) break;
        cursor = r.next;
      }
      for (let j = ids.length - 1; j >= 0 && count < n; j--) {
        first = ids[j];
        count++;
      }
    }
    return { count, first };
  }

  private report(message: string): void {
    this.opts.warn?.(`drover: ${this.opts.name ?? this.opts.dir}: ${message}`);
    this.opts.report?.(message);
  }

  private async enforceCap(): Promise<void> {
    while (this.totalBytes > this.opts.maxBytes && this.list.length > 1) {
      const old = this.list.shift()!;
      this.totalBytes -= old.bytes;
      await unlink(join(this.opts.dir, segmentName(old.start))).catch(() => {});
    }
  }
}

/**
 * Finds the last complete, valid event of a segment, cutting off whatever follows it (a torn
 * line from a crash mid-write). Returns its id, or null if the segment holds none.
 */
async function repairTail(file: string, seg: Segment, opts: SegmentsOptions): Promise<number | null> {
  const fh = await open(file, 'r+');
  try {
    let window = Math.min(seg.bytes, 1024 * 1024);
    for (;;) {
      const from = seg.bytes - window;
      const buf = Buffer.allocUnsafe(window);
      const { bytesRead } = await fh.read(buf, 0, window, from);
      let end = bytesRead;
      // Walk back over lines until one parses as an event.
      while (end > 0) {
        const nl = buf.lastIndexOf(10, end - 1);
        if (nl === -1) break;
        const prev = nl > 0 ? buf.lastIndexOf(10, nl - 1) : -1;
        if (prev === -1 && from > 0) break; // the line may start before the window
        const id = validLineId(buf.toString('utf8', prev + 1, nl));
        if (id !== null) {
          const keep = from + nl + 1;
          if (keep !== seg.bytes) {
            await fh.truncate(keep);
            opts.warn?.(`drover: ${opts.name ?? file}: cut ${seg.bytes - keep} bytes of a torn or damaged final event from ${file}`);
            seg.bytes = keep;
          }
          return id;
        }
        end = nl;
        if (prev === -1) break;
      }
      if (from === 0) {
        if (seg.bytes > 0) {
          await fh.truncate(0);
          opts.warn?.(`drover: ${opts.name ?? file}: no complete event in ${file}; emptied it`);
          seg.bytes = 0;
        }
        return null;
      }
      window = Math.min(seg.bytes, window * 2);
    }
  } finally {
    await fh.close();
  }
}
