// Every process's event log, by slug, under DIR/<slug>/. A deleted process's log stays
// readable for the retention time (DIR/<slug>/deleted.json says since when), then goes.
import { unlink } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EventLog } from './log.js';

export interface EventLogsOptions {
  maxBytes: number;
  retentionMs: number;
  warn: (message: string) => void;
}

const MARKER = 'deleted.json';
const MAX_TIMER_MS = 2 ** 31 - 1;

export class EventLogs {
  private readonly logs = new Map<string, EventLog>();
  private readonly expiry = new Map<string, NodeJS.Timeout>();
  /** Output lines dropped by every log since the agent started (a full write queue). */
  droppedLines = 0;

  constructor(
    private readonly root: string,
    private readonly opts: EventLogsOptions,
  ) {}

  /** Opens a process's log for writing; a retained log of an earlier process of that slug continues. */
  async open(slug: string): Promise<EventLog> {
    this.cancelExpiry(slug);
    const old = this.logs.get(slug);
    if (old && !old.isClosed) throw new Error(`event log of ${slug} is already open`);
    const dir = join(this.root, slug);
    const log = await EventLog.open({
      dir,
      maxBytes: this.opts.maxBytes,
      warn: this.opts.warn,
      name: slug,
      onDrop: (n) => (this.droppedLines += n),
    });
    // A retired log taken up again loses its deletion mark; a directory made just now has none.
    // Usually there is none either way: one unlink (its ENOENT ignored) is cheaper than rm's lstat first.
    if (!log.fresh) {
      try {
        await new Promise<void>((resolve, reject) =>
          unlink(join(dir, MARKER), (err) => (err && err.code !== 'ENOENT' ? reject(err) : resolve())),
        );
      } catch (err) {
        await log.close();
        throw err;
      }
    }
    this.logs.set(slug, log);
    return log;
  }

  /** The log of a live process, or of a deleted one still retained. */
  get(slug: string): EventLog | undefined {
    return this.logs.get(slug);
  }

  /** Every open or retained log. */
  all(): IterableIterator<EventLog> {
    return this.logs.values();
  }

  /** After a delete: closes the log, keeps it readable for the retention time, then removes it. */
  async retire(slug: string): Promise<void> {
    const log = this.logs.get(slug);
    if (!log) return;
    await log.close();
    const deletedAt = Date.now();
    await writeFile(join(this.root, slug, MARKER), JSON.stringify({ deleted_at: new Date(deletedAt).toISOString() }), {
      mode: 0o600,
    }).catch((err) => this.opts.warn(`drover: ${slug}: cannot mark its event log deleted: ${(err as NodeJS.ErrnoException).code ?? err}`));
    this.scheduleExpiry(slug, deletedAt + this.opts.retentionMs);
  }

  /** Gives up a log opened for a create that then failed: a fresh one goes, an older one is retained again. */
  async abandon(slug: string): Promise<void> {
    const log = this.logs.get(slug);
    if (!log) return;
    if (log.lastId > 0) return this.retire(slug);
    this.logs.delete(slug);
    await log.remove();
  }

  /**
   * At start: every log on disk whose process is not in `live` belongs to a deleted process
   * (or one whose delete was cut short by a crash): keep it for what is left of its retention.
   */
  async recover(live: Set<string>): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const slug of names) {
      if (live.has(slug) || this.logs.has(slug)) continue;
      const dir = join(this.root, slug);
      let deletedAt = Date.now();
      try {
        const t = Date.parse((JSON.parse(await readFile(join(dir, MARKER), 'utf8')) as { deleted_at?: string }).deleted_at ?? '');
        if (Number.isFinite(t)) deletedAt = t;
      } catch {
        await writeFile(join(dir, MARKER), JSON.stringify({ deleted_at: new Date(deletedAt).toISOString() }), { mode: 0o600 }).catch(
          () => {},
        );
      }
      if (deletedAt + this.opts.retentionMs <= Date.now()) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      try {
        const log = await EventLog.open({
          dir,
          maxBytes: this.opts.maxBytes,
          warn: this.opts.warn,
          name: slug,
          onDrop: (n) => (this.droppedLines += n),
        });
        await log.close();
        this.logs.set(slug, log);
        this.scheduleExpiry(slug, deletedAt + this.opts.retentionMs);
      } catch (err) {
        this.opts.warn(`drover: cannot read the event log in ${dir}: ${(err as Error).message}`);
      }
    }
  }

  /** Closes every log (agent shutdown); retained logs stay on disk for the next agent. */
  async close(): Promise<void> {
    for (const t of this.expiry.values()) clearTimeout(t);
    this.expiry.clear();
    await Promise.all([...this.logs.values()].map((l) => l.close()));
  }

  private scheduleExpiry(slug: string, at: number): void {
    this.cancelExpiry(slug);
    const timer = setTimeout(
      () => {
        this.expiry.delete(slug);
        if (Date.now() < at) return this.scheduleExpiry(slug, at); // beyond one timer's reach
        const log = this.logs.get(slug);
        if (!log || !log.isClosed) return;
        this.logs.delete(slug);
        void log.remove().catch((err) => this.opts.warn(`drover: ${slug}: cannot remove its event log: ${(err as Error).message}`));
      },
      Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS),
    );
    timer.unref();
    this.expiry.set(slug, timer);
  }

  private cancelExpiry(slug: string): void {
    const t = this.expiry.get(slug);
    if (t) clearTimeout(t);
    this.expiry.delete(slug);
  }
}
