// The queue between appending (synchronous) and the disk: each line is encoded at once into a
// reusable buffer chunk, so queued events are not strings the GC must keep moving, and the
// filled chunks go to a single writer in batches, one write in flight at a time, one write per
// turn of the event loop. Back-pressure: above the high-water mark producers are asked to pause;
// above the hard cap, output lines are refused and counted, and the count is reported once the
// queue has drained.

export interface WriteQueueOptions {
  /** Segment size of the log: a chunk is written whole into one segment, so chunks stay well below it. */
  segmentBytes: number;
  /** Queued (unwritten) size above which producers are asked to pause (default 4 MiB). */
  highWaterBytes?: number;
  /** Queued size above which output lines are refused (default 16 MiB, at least the high-water mark). */
  maxQueuedBytes?: number;
  /** Writes one batch: `count` events, `bytes` long. Must not throw: a failure loses the batch. */
  write(bufs: Buffer[], bytes: number, count: number): Promise<void>;
  /** After each batch: `count` more events are written (or given up on). */
  written(count: number): void;
  /** `count` output lines were refused since the last report and the queue has drained. */
  dropped(count: number): void;
}

export type PressureListener = (congested: boolean) => void;

/** Encoded events waiting to be written. */
interface Chunk {
  buf: Buffer;
  bytes: number;
  lines: number;
  /** A slice of Node's shared pool: never reused as a spare. */
  pooled?: boolean;
}

/** Encoded-chunk sizes: small for a quiet log, growing with the queue up to the maximum. */
const MIN_CHUNK = 8 * 1024;
/** Text up to this many bytes, when no chunk is being filled, gets a buffer from Node's pool (which serves up to 4 KiB). */
const SMALL_BATCH = 4 * 1024;
const MAX_CHUNK = 256 * 1024;

export class WriteQueue {
  private readonly maxChunk: number;
  private readonly textBatch: number;
  private readonly batchBytes: number;
  private readonly highWater: number;
  private readonly maxQueued: number;
  // Sealed chunks, then the one being filled, then text not yet encoded.
  private sealed: Chunk[] = [];
  private cur: Chunk | null = null;
  private text = '';
  private textLines = 0;
  private spare: Buffer[] = [];
  /** Bytes queued but not yet written (including the batch in flight). */
  private queuedBytes = 0;
  private writing = false;
  private scheduled = false;
  private congested = false;
  private refused = 0;
  private readonly pressure = new Set<PressureListener>();
  private idle: (() => void)[] = [];

  constructor(private readonly opts: WriteQueueOptions) {
    // Keep a chunk small against the segment size, so the cap holds even for small logs.
    this.maxChunk = Math.max(MIN_CHUNK, Math.min(MAX_CHUNK, Math.floor(opts.segmentBytes / 4)));
    this.textBatch = Math.floor(this.maxChunk / 12);
    this.batchBytes = Math.max(this.maxChunk, Math.min(4 * 1024 * 1024, Math.floor(opts.segmentBytes / 4)));
    this.highWater = opts.highWaterBytes ?? 4 * 1024 * 1024;
    this.maxQueued = Math.max(this.highWater, opts.maxQueuedBytes ?? 16 * 1024 * 1024);
  }

  /** True while the queue is above the high-water mark. */
  get isCongested(): boolean {
    return this.congested;
  }

  /** Bytes queued and not yet written (UTF-8 once encoded; the newest lines counted as UTF-16 units until then). */
  get queued(): number {
    return this.queuedBytes;
  }

  /** Called with true when producers should pause, false when they may go on. */
  onPressure(listener: PressureListener): () => void {
    this.pressure.add(listener);
    return () => this.pressure.delete(listener);
  }

  /** True, and counted, when an output line must be refused because the queue is full. */
  refuse(): boolean {
    if (this.queuedBytes <= this.maxQueued) return false;
    // The disk is far behind and the producer could not be paused (e.g. build output).
    this.refused++;
    return true;
  }

  /** Queues the next event's line. */
  push(line: string): void {
    // Lines are joined first and encoded a few kilobytes at a time: one Buffer.write per
    // line costs more than the encoding itself.
    this.text += line;
    this.textLines++;
    this.queuedBytes += line.length;
    if (this.text.length >= this.textBatch) this.encodeText();
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

  /** Resolves once everything queued so far is written. */
  flush(): Promise<void> {
    if (!this.writing && !this.scheduled && this.sealed.length === 0 && !this.cur?.lines && !this.textLines) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private setCongested(on: boolean): void {
    this.congested = on;
    for (const l of [...this.pressure]) l(on);
  }

  private encodeText(): void {
    const text = this.text;
    if (!text) return;
    const lines = this.textLines;
    this.text = '';
    this.textLines = 0;
    const room = text.length * 3; // UTF-8 needs at most 3 bytes per UTF-16 unit
    let cur = this.cur;
    if (!cur && room <= SMALL_BATCH) {
      // A few events (a process starting, exiting): a buffer of their own size from Node's
      // shared pool, instead of a chunk allocated for them alone and dropped after one write.
      const buf = Buffer.from(text, 'utf8');
      this.sealed.push({ buf, bytes: buf.length, lines, pooled: true });
      this.queuedBytes += buf.length - text.length;
      return;
    }
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
        await this.opts.write(
          batch.map((c) => c.buf.subarray(0, c.bytes)),
          bytes,
          lines,
        );
        this.queuedBytes -= bytes;
        for (const c of batch) if (!c.pooled && c.buf.length <= this.maxChunk && this.spare.length < 2) this.spare.push(c.buf);
        this.opts.written(lines);
        if (this.congested && this.queuedBytes < this.highWater / 2) this.setCongested(false);
        if (this.refused > 0 && this.queuedBytes < this.highWater / 2) {
          const count = this.refused;
          this.refused = 0;
          this.opts.dropped(count);
        }
      }
    } finally {
      this.writing = false;
    }
    this.spare = []; // a quiet queue keeps no buffers
    const idle = this.idle;
    this.idle = [];
    for (const r of idle) r();
  }
}
