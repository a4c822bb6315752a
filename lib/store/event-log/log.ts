// One process's event log: numbered events (line.ts), the newest kept in memory (window.ts),
// queued and written in batches (writer.ts) to segment files (segments.ts).
// Appending is synchronous and in memory, so the id is known at once. Readers only ever see
// events already written (`writtenId`): an agent killed with SIGKILL keeps those (the page
// cache survives the process), so an id a client has seen is never handed out again.
import { cursorAt, eventLine, outputLine, type Cursor, type ReadResult } from './line.js';
import { Segments } from './segments.js';
import { RecentWindow } from './window.js';
import { WriteQueue, type PressureListener } from './writer.js';

export type { Cursor, ReadResult } from './line.js';

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
  /** Told how many output lines were dropped, each time some are. */
  onDrop?: (count: number) => void;
}

export class EventLog {
  /** Last id handed out. */
  lastId: number;
  /** Last id written to the OS (or given up on after a write failure): what readers may see. */
  writtenId: number;
  private closed = false;
  /** Output lines refused because the write queue was full (see `lines_dropped` events). */
  droppedLines = 0;
  private readonly window: RecentWindow;
  private readonly queue: WriteQueue;
  private readonly waiters = new Set<() => void>();

  private constructor(
    opts: EventLogOptions,
    private readonly segments: Segments,
    segmentBytes: number,
  ) {
    this.lastId = this.writtenId = segments.lastId;
    this.window = new RecentWindow(this.lastId + 1, { maxEvents: opts.recentEvents, maxChars: opts.recentBytes });
    this.queue = new WriteQueue({
      segmentBytes,
      highWaterBytes: opts.highWaterBytes,
      maxQueuedBytes: opts.maxQueuedBytes,
      write: (bufs, bytes, count) => segments.write(bufs, bytes, this.writtenId + 1, count),
      written: (count) => {
        this.writtenId += count;
        this.wake();
      },
      dropped: (count) => {
        this.droppedLines += count;
        opts.onDrop?.(count);
        if (!this.closed) this.append('lines_dropped', { count, reason: 'output arrived faster than the event log could be written' });
      },
    });
  }

  /** Opens (or creates) the log in `dir`, repairing a torn final line left by a crash. */
  static async open(opts: EventLogOptions): Promise<EventLog> {
    const segmentBytes = Math.max(16 * 1024, opts.segmentBytes ?? Math.floor(opts.maxBytes / 8));
    let log: EventLog | undefined;
    // Write failures are recorded as events too, once the log exists (none happen while opening).
    const report = (message: string) => {
      if (log && !log.closed) log.append('error', { message });
    };
    const segments = await Segments.open({
      dir: opts.dir,
      maxBytes: opts.maxBytes,
      segmentBytes,
      warn: opts.warn,
      name: opts.name,
      report,
    });
    log = new EventLog(opts, segments, segmentBytes);
    return log;
  }

  /** The first id still kept (older ones were dropped to respect the disk cap). */
  get firstId(): number {
    const start = this.segments.firstStart;
    return Math.min(start ?? this.writtenId + 1, this.window.firstId);
  }

  /** Bytes of its segment files on disk. */
  get diskBytes(): number {
    return this.segments.bytes;
  }

  /** Opened on a directory that did not exist: no earlier log, nor anything else, was there. */
  get fresh(): boolean {
    return this.segments.fresh;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** True while the unwritten queue is above the high-water mark. */
  get isCongested(): boolean {
    return this.queue.isCongested;
  }

  /** True once the log is closed and everything in it is readable: no event will follow. */
  get ended(): boolean {
    return this.closed && this.writtenId >= this.lastId;
  }

  /** Appends an event; returns its id (0 once the log is closed). */
  append(type: string, fields?: Record<string, unknown>): number {
    if (this.closed) return 0;
    const id = ++this.lastId;
    this.push(eventLine(id, type, fields));
    return id;
  }

  /** Appends an output line (the hot path); returns its id, or 0 if refused (closed, or the queue is full). */
  output(stream: string, text: string): number {
    if (this.closed || this.queue.refuse()) return 0;
    const id = ++this.lastId;
    this.push(outputLine(id, stream, text));
    return id;
  }

  /** Called with true when producers should pause, false when they may go on. */
  onPressure(listener: PressureListener): () => void {
    return this.queue.onPressure(listener);
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
      if (id >= this.window.firstId) return this.window.read(id, this.writtenId, maxChars);
      const r = await this.segments.read(id, id === cursor.id ? cursor : cursorAt(id), maxChars, this.writtenId, this.window.firstId);
      if (r.lines.length) return r;
      if (r.next.id === cursor.id && r.next.seg === cursor.seg && r.next.pos === cursor.pos) return r;
      cursor = r.next;
    }
    return { lines: [], next: cursor };
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
    return this.queue.flush();
  }

  /** Stops accepting events, writes what is queued, and closes the file. Readers may go on. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    await this.segments.close();
    this.wake();
  }

  /** Closes the log and deletes its files. */
  async remove(): Promise<void> {
    await this.close();
    await this.segments.remove();
  }

  /**
   * The id of the first of the last `n` events of `type` (e.g. the last n output lines), or
   * writtenId + 1 when there are none: the recent window first, then segments newest first.
   */
  async findTail(n: number, type: string): Promise<number> {
    const upTo = this.writtenId;
    if (n <= 0) return upTo + 1;
    const recent = this.window.lastOfType(type, n, upTo);
    if (recent.count === n) return recent.first;
    const older = await this.segments.lastOfType(type, n - recent.count, Math.min(this.window.firstId, upTo + 1));
    return older.count ? older.first : recent.first;
  }

  private push(line: string): void {
    this.window.push(line);
    this.queue.push(line);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
