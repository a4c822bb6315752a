// One process's event log: numbered events, one JSON object a line, in segment files
//   DIR/<id of the segment's first event, 16 digits>.ndjson
// Appending is synchronous and in memory (the id is known at once): each line is encoded at
// once into a reusable buffer chunk, so queued events are not strings the GC must keep moving.
// A single writer hands the filled chunks to the OS in batches, one write in flight at a time. Readers only ever see events
// already written (`writtenId`): an agent killed with SIGKILL keeps those (the page cache
// survives the process), so an id a client has seen is never handed out again.
import { mkdir, open, readdir, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

export interface EventLogOptions {
  dir: string;
  /** Disk cap for this log: the oldest segments are dropped to stay under it. */
  maxBytes: number;
  /** Size at which a new segment starts (default maxBytes / 8, at least 16 KiB). */
  segmentBytes?: number;
  /** In-memory window of recent events, by count and by size. */
  recentEvents?: number;
  recentBytes?: number;
  /** Queued (unwritten) size above which producers are asked to pause. */
  highWaterBytes?: number;
  /** Queued size above which output lines are dropped (and counted) instead of queued. */
  maxQueuedBytes?: number;
  /** One-line warnings (repairs, write failures), meant for stderr. */
  warn?: (message: string) => void;
  /** Name used in warnings. */
  name?: string;
}

/** Where a reader is: the next id it wants, and where that id's line starts on disk if known. */
export interface Cursor {
  id: number;
  seg: number;
  pos: number;
}

export interface ReadResult {
  /** Complete NDJSON lines, each ending in "\n". */
  lines: string[];
  next: Cursor;
}

const SEGMENT = /^(\d{16})\.ndjson$/;
const MAX_READ = 8 * 1024 * 1024;

export const segmentName = (start: number) => `${String(start).padStart(16, '0')}.ndjson`;

export function cursorAt(id: number): Cursor {
  return { id, seg: -1, pos: 0 };
}

let now: string | null = null;
const forgetNow = () => {
  now = null;
};
/**
 * The current time as ISO 8601, read once per synchronous run: every line of one chunk of
 * output arrived together and gets the same time, for one clock read instead of thousands.
 */
function isoNow(): string {
  if (now === null) {
    now = new Date().toISOString();
    queueMicrotask(forgetNow);
  }
  return now;
}

/** The id at the start of an event line (`{"id":N,...`), or -1 if the line is not one of ours. */
export function lineId(line: string | Buffer, start = 0): number {
  const get = typeof line === 'string' ? (i: number) => line.charCodeAt(i) : (i: number) => line[i];
  const prefix = '{"id":';
  for (let i = 0; i < prefix.length; i++) if (get(start + i) !== prefix.charCodeAt(i)) return -1;
  let n = 0;
  let i = start + prefix.length;
  const first = i;
  for (let c = get(i); c >= 48 && c <= 57; c = get(++i)) n = n * 10 + (c - 48);
  return i === first || get(i) !== 44 ? -1 : n;
}

/** The `type` of an event line, read without parsing it (ids and times hold no quotes). */
export function lineType(line: string): string {
  const at = line.indexOf('"type":"');
  if (at === -1) return '';
  return line.slice(at + 8, line.indexOf('"', at + 8));
}

interface Segment {
  start: number;
  bytes: number;
}

/** Encoded events waiting to be written. */
interface Chunk {
  buf: Buffer;
  bytes: number;
  lines: number;
}

/** Encoded-chunk sizes: small for a quiet log, growing with the queue up to the maximum. */
const MIN_CHUNK = 8 * 1024;
const MAX_CHUNK = 256 * 1024;

/** writev until everything is written (a write may take only part). */
async function writeAll(fh: FileHandle, bufs: Buffer[]): Promise<void> {
  for (;;) {
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await fh.writev(bufs);
    if (bytesWritten >= total) return;
    let skip = bytesWritten;
    while (skip >= bufs[0].length) skip -= bufs.shift()!.length;
    bufs[0] = bufs[0].subarray(skip);
  }
}

type PressureListener = (congested: boolean) => void;

export class EventLog {
  /** Last id handed out. */
  lastId: number;
  /** Last id written to the OS (or given up on after a write failure): what readers may see. */
  writtenId: number;
  /** Output lines refused because the queue was full, not yet reported. */
  private dropped = 0;
  private readonly segments: Segment[];
  private totalBytes: number;
  private fh: FileHandle | null = null;
  private fhStart = -1;
  private readonly segmentBytes: number;
  private readonly batchBytes: number;
  private readonly maxChunk: number;
  private readonly textBatch: number;
  private readonly recentMax: number;
  private readonly recentMaxChars: number;
  private readonly highWater: number;
  private readonly maxQueued: number;
  // Recent window: recent[recentHead + (id - recentFirstId)] is event `id`.
  private recent: string[] = [];
  private recentHead = 0;
  private recentFirstId: number;
  private recentChars = 0;
  // Unwritten events, encoded: sealed chunks, then the one being filled. The first queued
  // event is writtenId + 1 (+ the lines of the batch in flight).
  private sealed: Chunk[] = [];
  private cur: Chunk | null = null;
  private text = '';
  private textLines = 0;
  private spare: Buffer[] = [];
  /** Bytes appended but not yet written (including the batch in flight). */
  private queuedBytes = 0;
  private writing = false;
  private scheduled = false;
  private congested = false;
  private failing = false;
  private forceRoll = false;
  private lost = 0;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  private readonly pressure = new Set<PressureListener>();
  private idle: (() => void)[] = [];

  private constructor(
    private readonly opts: EventLogOptions,
    segments: Segment[],
    lastId: number,
  ) {
    this.segments = segments;
    this.totalBytes = segments.reduce((n, s) => n + s.bytes, 0);
    this.lastId = lastId;
    this.writtenId = lastId;
    this.recentFirstId = lastId + 1;
    this.segmentBytes = Math.max(16 * 1024, opts.segmentBytes ?? Math.floor(opts.maxBytes / 8));
    // A chunk is written whole into one segment: keep it small against the segment size, so the
    // cap holds even for small logs.
    this.maxChunk = Math.max(MIN_CHUNK, Math.min(MAX_CHUNK, Math.floor(this.segmentBytes / 4)));
    this.textBatch = Math.floor(this.maxChunk / 12);
    this.batchBytes = Math.max(this.maxChunk, Math.min(4 * 1024 * 1024, Math.floor(this.segmentBytes / 4)));
    this.recentMax = opts.recentEvents ?? 1024;
    this.recentMaxChars = opts.recentBytes ?? 256 * 1024;
    this.highWater = opts.highWaterBytes ?? 4 * 1024 * 1024;
    this.maxQueued = Math.max(this.highWater, opts.maxQueuedBytes ?? 16 * 1024 * 1024);
  }

  /** Opens (or creates) the log in `dir`, repairing a torn final line left by a crash. */
  static async open(opts: EventLogOptions): Promise<EventLog> {
    await mkdir(opts.dir, { recursive: true });
    const segments: Segment[] = [];
    for (const name of (await readdir(opts.dir)).sort()) {
      const m = SEGMENT.exec(name);
      if (!m) continue;
      segments.push({ start: Number(m[1]), bytes: (await stat(join(opts.dir, name))).size });
    }
    let lastId = segments.length ? segments[0].start - 1 : 0;
    while (segments.length) {
      const seg = segments[segments.length - 1];
      const found = await repairTail(join(opts.dir, segmentName(seg.start)), seg, opts);
      if (found !== null) {
        lastId = found;
        break;
      }
      lastId = seg.start - 1;
      if (segments.length === 1) break; // keep an empty first segment: it records where ids resume
      segments.pop();
      await unlink(join(opts.dir, segmentName(seg.start))).catch(() => {});
    }
    return new EventLog(opts, segments, lastId);
  }

  /** The first id still kept (older ones were dropped to respect the disk cap). */
  get firstId(): number {
    if (this.segments.length) return Math.min(this.segments[0].start, this.recentFirstId);
    return Math.min(this.recentFirstId, this.writtenId + 1);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** True while the unwritten queue is above the high-water mark. */
  get isCongested(): boolean {
    return this.congested;
  }

  /** Appends an event; returns its id (0 once the log is closed). */
  append(type: string, fields?: Record<string, unknown>): number {
    if (this.closed) return 0;
    const id = ++this.lastId;
    let rest = '}\n';
    if (fields) {
      const json = JSON.stringify(fields);
      if (json.length > 2) rest = `,${json.slice(1)}\n`;
    }
    this.push(`{"id":${id},"time":"${isoNow()}","type":"${type}"${rest}`);
    return id;
  }

  /** Appends an output line: the hot path, so no object is built for it. */
  output(stream: string, text: string): number {
    if (this.closed) return 0;
    if (this.queuedBytes > this.maxQueued) {
      // The disk is far behind and the producer could not be paused (e.g. build output).
      this.dropped++;
      return 0;
    }
    const id = ++this.lastId;
    this.push(`{"id":${id},"time":"${isoNow()}","type":"output","stream":"${stream}","text":${JSON.stringify(text)}}\n`);
    return id;
  }

  /** Called with true when producers should pause, false when they may go on. */
  onPressure(listener: PressureListener): () => void {
    this.pressure.add(listener);
    return () => this.pressure.delete(listener);
  }

  /**
   * Reads written events from `cursor` on, up to about `maxChars`: from memory when they are
   * recent, else from disk. An empty result with an unchanged cursor means "nothing new yet".
   */
  async read(cursor: Cursor, maxChars = 256 * 1024): Promise<ReadResult> {
    // Each disk pass either returns lines or moves on (next segment, or past ids that were lost).
    for (let pass = 0; pass < 1000; pass++) {
      const id = Math.max(cursor.id, this.firstId);
      if (id > this.writtenId) return { lines: [], next: id === cursor.id ? cursor : cursorAt(id) };
      if (id >= this.recentFirstId) return this.readRecent(id, maxChars);
      const r = await this.readDisk(id, id === cursor.id ? cursor : cursorAt(id), maxChars);
      if (r.lines.length) return r;
      if (r.next.id === cursor.id && r.next.seg === cursor.seg && r.next.pos === cursor.pos) return r;
      cursor = r.next;
    }
    return { lines: [], next: cursor };
  }

  /** True once the log is closed and everything in it is readable: no event will follow. */
  get ended(): boolean {
    return this.closed && this.writtenId >= this.lastId;
  }

  /** Resolves once an event past `afterId` is readable, the log has ended, or `signal` aborts. */
  waitFor(afterId: number, signal?: AbortSignal): Promise<void> {
    if (this.writtenId > afterId || this.ended || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Resolves once everything appended so far is written. */
  flush(): Promise<void> {
    if (!this.writing && !this.scheduled && this.sealed.length === 0 && !this.cur?.lines && !this.textLines) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** Stops accepting events, writes what is queued, and closes the file. Readers may go on. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    const fh = this.fh;
    this.fh = null;
    this.fhStart = -1;
    await fh?.close().catch(() => {});
    this.wake();
  }

  /** Closes the log and deletes its files. */
  async remove(): Promise<void> {
    await this.close();
    await rm(this.opts.dir, { recursive: true, force: true });
  }

  /**
   * The id of the first of the last `n` events of `type` (e.g. the last n output lines), or
   * writtenId + 1 when there are none, scanning segments newest first.
   */
  async findTail(n: number, type: string): Promise<number> {
    const upTo = this.writtenId;
    if (n <= 0) return upTo + 1;
    const isType = (line: string) => lineType(line) === type;
    let need = n;
    let start = upTo + 1;
    // The recent window first: it holds the newest events, possibly not yet in any segment file.
    const recentFrom = Math.max(this.recentFirstId, this.firstId);
    for (let id = upTo; id >= recentFrom; id--) {
      if (isType(this.recent[this.recentHead + (id - this.recentFirstId)])) {
        start = id;
        if (--need === 0) return start;
      }
    }
    const below = Math.min(recentFrom, upTo + 1);
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const seg = this.segments[i];
      if (seg.start >= below) continue;
      const ids: number[] = [];
      let cursor: Cursor = { id: seg.start, seg: seg.start, pos: 0 };
      for (;;) {
        const r = await this.readDisk(cursor.id, cursor, MAX_READ, Math.min(below - 1, (this.segments[i + 1]?.start ?? Infinity) - 1));
        for (const line of r.lines) if (isType(line)) ids.push(lineId(line));
        if (!r.lines.length || r.next.seg !== seg.start) break;
        cursor = r.next;
      }
      for (let j = ids.length - 1; j >= 0; j--) {
        start = ids[j];
        if (--need === 0) return start;
      }
    }
    return start;
  }

  private push(line: string): void {
    const recent = this.recent;
    recent.push(line);
    this.recentChars += line.length;
    while (recent.length - this.recentHead > this.recentMax || (this.recentChars > this.recentMaxChars && recent.length - this.recentHead > 1)) {
      this.recentChars -= recent[this.recentHead].length;
      recent[this.recentHead++] = '';
      this.recentFirstId++;
    }
    if (this.recentHead > 4096 && this.recentHead * 2 > recent.length) {
      this.recent = recent.slice(this.recentHead);
      this.recentHead = 0;
    }
    this.encode(line);
    if (!this.congested && this.queuedBytes > this.highWater) this.setCongested(true);
    if (!this.writing && !this.scheduled) {
      this.scheduled = true;
      // One write per turn of the event loop: every line that arrived in this turn goes together.
      setImmediate(() => {
        this.scheduled = false;
        void this.drain();
      });
    }
  }

  private setCongested(on: boolean): void {
    this.congested = on;
    for (const l of [...this.pressure]) l(on);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private encode(line: string): void {
    // Lines are joined first and encoded a few kilobytes at a time: one Buffer.write per
    // line costs more than the encoding itself.
    this.text += line;
    this.textLines++;
    this.queuedBytes += line.length;
    if (this.text.length >= this.textBatch) this.encodeText();
  }

  private encodeText(): void {
    const text = this.text;
    if (!text) return;
    const lines = this.textLines;
    this.text = '';
    this.textLines = 0;
    const room = text.length * 3; // UTF-8 needs at most 3 bytes per UTF-16 unit
    let cur = this.cur;
    if (room > this.maxChunk) {
      if (cur?.lines) this.sealed.push(cur);
      this.cur = null;
      const buf = Buffer.from(text, 'utf8');
      this.sealed.push({ buf, bytes: buf.length, lines });
      this.queuedBytes += buf.length - text.length;
      return;
    }
    if (!cur || cur.bytes + room > cur.buf.length) {
      if (cur?.lines) this.sealed.push(cur);
      const size = Math.min(this.maxChunk, Math.max(MIN_CHUNK, room, this.queuedBytes));
      const spare = this.spare.pop();
      cur = this.cur = { buf: spare && spare.length >= size ? spare : Buffer.allocUnsafe(size), bytes: 0, lines: 0 };
    }
    const n = cur.buf.write(text, cur.bytes, 'utf8');
    cur.bytes += n;
    cur.lines += lines;
    this.queuedBytes += n - text.length;
  }

  private seal(): void {
    this.encodeText();
    if (this.cur?.lines) this.sealed.push(this.cur);
    else if (this.cur) this.spare.push(this.cur.buf);
    this.cur = null;
  }

  private async drain(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      for (;;) {
        if (!this.sealed.length) this.seal(); // take the partly filled chunk too: latency matters
        if (!this.sealed.length) break;
        let end = 0;
        let bytes = 0;
        let lines = 0;
        while (end < this.sealed.length && (end === 0 || bytes + this.sealed[end].bytes <= this.batchBytes)) {
          bytes += this.sealed[end].bytes;
          lines += this.sealed[end++].lines;
        }
        const batch = this.sealed.splice(0, end);
        const first = this.writtenId + 1;
        await this.writeBatch(batch, bytes, first, lines);
        this.writtenId = first + lines - 1;
        this.queuedBytes -= bytes;
        for (const c of batch) if (c.buf.length <= this.maxChunk && this.spare.length < 2) this.spare.push(c.buf);
        this.wake();
        if (this.congested && this.queuedBytes < this.highWater / 2) this.setCongested(false);
        if (this.dropped > 0 && this.queuedBytes < this.highWater / 2 && !this.closed) {
          const count = this.dropped;
          this.dropped = 0;
          this.append('lines_dropped', { count, reason: 'output arrived faster than the event log could be written' });
        }
      }
    } finally {
      this.writing = false;
    }
    this.spare = []; // a quiet log keeps no buffers
    const idle = this.idle;
    this.idle = [];
    for (const r of idle) r();
  }

  /** Writes one batch (events first..first+count-1). A failure loses the batch, never the agent. */
  private async writeBatch(batch: Chunk[], bytes: number, first: number, count: number): Promise<void> {
    let active = this.segments[this.segments.length - 1];
    let created = false;
    try {
      if (!active || active.bytes >= this.segmentBytes || this.forceRoll) {
        this.forceRoll = false;
        if (!active || active.start !== first) {
          active = { start: first, bytes: 0 };
          this.segments.push(active);
          created = true;
        }
      }
      if (this.fhStart !== active.start) {
        const old = this.fh;
        this.fh = null;
        this.fhStart = -1;
        await old?.close().catch(() => {});
        this.fh = await open(join(this.opts.dir, segmentName(active.start)), 'a', 0o600);
        this.fhStart = active.start;
      }
      await writeAll(this.fh!, batch.map((c) => c.buf.subarray(0, c.bytes)));
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
      if (created && this.fhStart !== active.start) {
        this.segments.pop(); // its file could not even be created
      } else if (this.fh) {
        // Cut a partial write so the next batch starts on a line boundary; failing that,
        // start a fresh segment next time.
        const cut = await this.fh.truncate(active.bytes).then(() => true, () => false);
        if (!cut) this.forceRoll = true;
      }
      if (!this.failing) {
        this.failing = true;
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        this.report(`cannot write the event log (${code}); events are kept in memory only until writes work again`);
      }
    }
  }

  private report(message: string): void {
    this.opts.warn?.(`drover: ${this.opts.name ?? this.opts.dir}: ${message}`);
    if (!this.closed) this.append('error', { message });
  }

  private async enforceCap(): Promise<void> {
    while (this.totalBytes > this.opts.maxBytes && this.segments.length > 1) {
      const old = this.segments.shift()!;
      this.totalBytes -= old.bytes;
      await unlink(join(this.opts.dir, segmentName(old.start))).catch(() => {});
    }
  }

  private readRecent(id: number, maxChars: number): ReadResult {
    const lines: string[] = [];
    let chars = 0;
    let next = id;
    while (next <= this.writtenId && chars < maxChars) {
      const line = this.recent[this.recentHead + (next - this.recentFirstId)];
      lines.push(line);
      chars += line.length;
      next++;
    }
    return { lines, next: cursorAt(next) };
  }

  /**
   * Reads lines with id >= `id` (and <= `upTo`) from the segment holding `id`. A segment that
   * vanished (dropped by the cap) or ids missing after a failed write are skipped over.
   */
  private async readDisk(id: number, cursor: Cursor, maxChars: number, upTo = this.writtenId): Promise<ReadResult> {
    let i = this.segments.length - 1;
    while (i > 0 && this.segments[i].start > id) i--;
    const seg = this.segments[i];
    if (!seg) return { lines: [], next: cursorAt(this.writtenId + 1) };
    const nextStart = this.segments[i + 1]?.start;
    let pos = cursor.seg === seg.start && cursor.id === id ? cursor.pos : 0;
    let fh: FileHandle;
    try {
      fh = await open(join(this.opts.dir, segmentName(seg.start)), 'r');
    } catch {
      return { lines: [], next: cursorAt(Math.max(id, nextStart ?? this.firstId)) };
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
        if (next <= upTo && next < this.recentFirstId) next = Math.min(upTo + 1, this.recentFirstId);
      }
    } finally {
      await fh.close().catch(() => {});
    }
    return { lines, next: { id: next, seg: seg.start, pos } };
  }
}

/**
 * Finds the last complete, valid event of a segment, cutting off whatever follows it (a torn
 * line from a crash mid-write). Returns its id, or null if the segment holds none.
 */
async function repairTail(file: string, seg: Segment, opts: EventLogOptions): Promise<number | null> {
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
        const text = buf.toString('utf8', prev + 1, nl);
        const id = validId(text);
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

function validId(text: string): number | null {
  const id = lineId(text);
  if (id < 1) return null;
  try {
    const v = JSON.parse(text) as { id?: unknown; type?: unknown };
    return v.id === id && typeof v.type === 'string' ? id : null;
  } catch {
    return null;
  }
}
