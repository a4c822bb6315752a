// A keyed set of records, durable across agent crashes, kept the way the desired state is:
//   DIR/NAME.json      snapshot {"version":1,"records":[...]}, replaced by temp file + fsync + rename
//   DIR/NAME.journal   one change a line since the snapshot: {"op":"put","record":{...}} | {"op":"del","key":"..."}
// A change is durable once its journal line is fdatasync'ed; concurrent changes share one sync.
// Both ops are idempotent, so compaction (new snapshot, then empty journal) is safe to interrupt.
import { open, readFile, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StoreWriteError, writeDurably } from './desired.js';

type Op<T> = { op: 'put'; record: T } | { op: 'del'; key: string };

interface Pending<T> {
  op: Op<T>;
  line: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface JournalOptions<T> {
  dir: string;
  /** File name stem: NAME.json and NAME.journal. */
  name: string;
  keyOf: (record: T) => string;
  /** Whether a parsed record is one; others are skipped with a warning. */
  isRecord: (v: unknown) => v is T;
  warn: (message: string) => void;
}

export class Journal<T> {
  private readonly records = new Map<string, T>();
  private queue: Pending<T>[] = [];
  private running: Promise<void> | null = null;
  private journal: FileHandle | null = null;
  private journalBytes = 0;
  private snapshotBytes = 0;

  private constructor(private readonly opts: JournalOptions<T>) {}

  static async open<T>(opts: JournalOptions<T>): Promise<Journal<T>> {
    const j = new Journal(opts);
    for (const name of await readdir(opts.dir)) {
      if (name.startsWith(`${opts.name}.json.tmp-`)) await rm(join(opts.dir, name), { force: true });
    }
    await j.loadSnapshot();
    await j.loadJournal();
    return j;
  }

  all(): T[] {
    return [...this.records.values()];
  }

  get(key: string): T | undefined {
    return this.records.get(key);
  }

  /**
   * Records (or replaces) a record; resolves once that is on disk. The record is written as it
   * is now, and the object itself is what get() returns afterwards: its owner keeps one copy.
   */
  put(record: T): Promise<void> {
    return this.enqueue({ op: 'put', record });
  }

  /** Forgets a record; resolves once that is on disk. */
  remove(key: string): Promise<void> {
    return this.enqueue({ op: 'del', key });
  }

  async close(): Promise<void> {
    await this.running;
    await this.journal?.close().catch(() => {});
    this.journal = null;
  }

  private enqueue(op: Op<T>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ op, line: `${JSON.stringify(op)}\n`, resolve, reject });
      this.running ??= this.commitAll();
    });
  }

  private async commitAll(): Promise<void> {
    for (;;) {
      if (!this.queue.length) {
        this.running = null;
        return;
      }
      const batch = this.queue;
      this.queue = [];
      const buf = Buffer.from(batch.map((p) => p.line).join(''));
      try {
        const fh = await this.journalHandle();
        try {
          for (let off = 0; off < buf.length;) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
          await fh.datasync();
        } catch (err) {
          await fh.truncate(this.journalBytes).catch(() => {});
          throw err;
        }
        this.journalBytes += buf.length;
      } catch (err) {
        await this.journal?.close().catch(() => {});
        this.journal = null;
        const e = new StoreWriteError(`cannot save ${this.opts.name}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        for (const p of batch) p.reject(e);
        continue;
      }
      for (const p of batch) {
        this.apply(p.op);
        p.resolve();
      }
      if (this.journalBytes > Math.max(64 * 1024, this.snapshotBytes)) {
        await this.compact().catch((err) => this.opts.warn(`drover: cannot compact ${this.opts.name}: ${(err as Error).message}`));
      }
    }
  }

  private apply(op: Op<T>): void {
    if (op.op === 'put') this.records.set(this.opts.keyOf(op.record), op.record);
    else this.records.delete(op.key);
  }

  private async journalHandle(): Promise<FileHandle> {
    if (!this.journal) {
      this.journal = await open(join(this.opts.dir, `${this.opts.name}.journal`), 'a', 0o600);
      this.journalBytes = (await this.journal.stat()).size;
      const d = await open(this.opts.dir, 'r');
      await d.sync().finally(() => d.close());
    }
    return this.journal;
  }

  private async compact(): Promise<void> {
    const text = `${JSON.stringify({ version: 1, records: this.all() })}\n`;
    await writeDurably(this.opts.dir, `${this.opts.name}.json`, text);
    this.snapshotBytes = Buffer.byteLength(text);
    const fh = await this.journalHandle();
    await fh.truncate(0);
    await fh.datasync();
    this.journalBytes = 0;
  }

  private async loadSnapshot(): Promise<void> {
    const file = join(this.opts.dir, `${this.opts.name}.json`);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    this.snapshotBytes = Buffer.byteLength(text);
    let doc: { records?: unknown };
    try {
      doc = JSON.parse(text) as { records?: unknown };
    } catch {
      this.opts.warn(`drover: ${file} is damaged; starting from its journal alone`);
      return;
    }
    let bad = 0;
    for (const r of Array.isArray(doc.records) ? doc.records : []) {
      if (this.opts.isRecord(r)) this.records.set(this.opts.keyOf(r), r);
      else bad++;
    }
    if (bad) this.opts.warn(`drover: skipped ${bad} unreadable record(s) in ${file}`);
  }

  private async loadJournal(): Promise<void> {
    const file = join(this.opts.dir, `${this.opts.name}.journal`);
    let buf: Buffer;
    try {
      if (!(await stat(file)).isFile()) {
        this.opts.warn(`drover: ${file} is not a regular file; not reading it`);
        return;
      }
      buf = await readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let good = 0;
    let skipped = 0;
    let start = 0;
    for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10, start)) {
      const op = this.parseOp(buf.toString('utf8', start, nl));
      if (op) this.apply(op);
      else skipped++;
      start = nl + 1;
      good = start;
    }
    if (good < buf.length) {
      // A torn final line: its change never got its fdatasync, so nobody was told it was saved.
      const fh = await open(file, 'r+');
      await fh.truncate(good).finally(() => fh.close());
      this.opts.warn(`drover: cut a torn final line (${buf.length - good} bytes) from ${file}`);
    }
    if (skipped) this.opts.warn(`drover: skipped ${skipped} unreadable line(s) in ${file}`);
  }

  private parseOp(text: string): Op<T> | null {
    try {
      const v = JSON.parse(text) as Record<string, unknown>;
      if (v.op === 'put' && this.opts.isRecord(v.record)) return { op: 'put', record: v.record };
      if (v.op === 'del' && typeof v.key === 'string') return { op: 'del', key: v.key };
    } catch {
      // fall through
    }
    return null;
  }
}
