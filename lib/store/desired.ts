// Desired state: the processes the agent was asked to run, durable across agent crashes.
//   DIR/desired.json      snapshot {"version":1,"processes":[...]}, replaced by temp file + fsync + rename
//   DIR/desired.journal   one change a line since the snapshot: {"op":"put","process":{...}} | {"op":"del","slug":"..."}
// A change is durable once its journal line is fdatasync'ed. Concurrent changes share one sync
// (group commit): an fdatasync of an append costs a quarter of a temp file + fsync + rename +
// directory fsync, and a burst of creates pays for a few syncs instead of one each. Both ops are
// idempotent, so replaying a journal over a snapshot that already contains it is harmless, which
// makes compaction (new snapshot, then empty journal) safe to interrupt anywhere.
import { open, readFile, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { RESTART_POLICIES, type RestartPolicy } from '../process/policy.js';
import type { ArgvSpec, JobSpec, ProcessSpec } from '../release/launch.js';
import type { CallbackSpec } from './outbox.js';

/** Restart policy and backoff of a create request; the agent's settings fill in the rest. */
export interface RestartRequest {
  policy?: RestartPolicy;
  delayMs?: number;
  maxDelayMs?: number;
  resetAfterMs?: number;
}

export interface DesiredProcess {
  slug: string;
  app: string;
  node: string;
  /** Its type: the Procfile entry it runs, unless `argv` is set (then only its name). */
  processType: string;
  sourceUrl: string;
  env: Record<string, string>;
  /** An explicit command run instead of the Procfile entry; absent in every record before specs. */
  argv?: ArgvSpec;
  /** A pull-mode job (drover worker): its Procfile entry run once with stdin and stdout on files. */
  job?: JobSpec;
  /** The child's $PORT, kept across agent restarts. */
  port: number;
  createdAt: string;
  /** sha256 of the archive the process last downloaded: a restore reuses it from the cache. */
  archive?: string;
  /** Restart policy and backoff of the create request, if it gave any. */
  restart?: RestartRequest;
  /** `{port: true}`: ready once $PORT accepts connections (web processes are, unless `{port: false}`). */
  readiness?: { port: boolean };
  /** Restarts so far, kept across agent restarts. */
  restarts?: number;
  /** Kept down (stopped, or finished under its restart policy): restored without starting. */
  stopped?: boolean;
  /** Set for a proc (POST /procs): the client's id, and how it ended once it has. */
  proc?: ProcRecord;
  /** Where its events are POSTed (agent/callbacks.ts). */
  callback?: CallbackSpec;
}

/** What is kept of a proc across agent restarts. */
export interface ProcRecord {
  id: string;
  /** Its end, saved when it ended (its exit as ExitInfo, plain JSON), so a restarted agent still reports it. */
  final?: {
    errors: string[];
    pid: number | null;
    startedAt: number | null;
    exit: unknown;
    /** Bytes captured in memory per fd, saved beside its tempfiles. */
    saved: Record<string, number>;
  };
}

/** What the process runs. */
export function specOf(p: Pick<DesiredProcess, 'processType' | 'argv' | 'job'>): ProcessSpec {
  return p.job ?? p.argv ?? { kind: 'procfile', processType: p.processType };
}

type Op = { op: 'put'; process: DesiredProcess } | { op: 'del'; slug: string };

interface Pending {
  op: Op;
  line: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const SNAPSHOT = 'desired.json';
/** Longest a deferred change (putLater) waits to be written. */
const DEFER_MS = 5000;
const JOURNAL = 'desired.journal';

export class StoreWriteError extends Error {
  override name = 'StoreWriteError';
}

export class DesiredState {
  private readonly procs = new Map<string, DesiredProcess>();
  private queue: Pending[] = [];
  private running: Promise<void> | null = null;
  private journal: FileHandle | null = null;
  private journalBytes = 0;
  private snapshotBytes = 0;
  private readonly deferred = new Map<string, DesiredProcess>();
  private deferTimer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly dir: string,
    private readonly warn: (message: string) => void,
  ) {}

  /** Loads the snapshot and replays the journal; damage is repaired or skipped with a warning. */
  static async open(dir: string, warn: (message: string) => void): Promise<DesiredState> {
    const s = new DesiredState(dir, warn);
    for (const name of await readdir(dir)) {
      if (name.startsWith(`${SNAPSHOT}.tmp-`)) await rm(join(dir, name), { force: true }); // a crash mid-snapshot
    }
    await s.loadSnapshot();
    await s.loadJournal();
    return s;
  }

  all(): DesiredProcess[] {
    return [...this.procs.values()];
  }

  get(slug: string): DesiredProcess | undefined {
    return this.procs.get(slug);
  }

  /** Records (or replaces) a process; resolves once that is on disk. */
  put(p: DesiredProcess): Promise<void> {
    this.deferred.delete(p.slug); // this put carries the latest of it
    return this.enqueue({ op: 'put', process: { ...p, env: { ...p.env } } });
  }

  /**
   * Records a change that may wait (a restart count): the record as it is then is written
   * within DEFER_MS, with the first later put, or at close. A crash loop restarting every
   * second would otherwise cost a journal line and an fdatasync per restart; what a hard crash
   * can lose is the last few seconds of a counter.
   */
  putLater(p: DesiredProcess): void {
    this.deferred.set(p.slug, p);
    if (this.deferTimer) return;
    this.deferTimer = setTimeout(() => {
      this.deferTimer = null;
      void this.flushDeferred().catch((err) => this.warn(`drover: ${(err as Error).message}`));
    }, DEFER_MS);
    this.deferTimer.unref(); // close() writes what is left
  }

  /** Forgets a process; resolves once that is on disk. */
  remove(slug: string): Promise<void> {
    this.deferred.delete(slug); // a deferred put must not bring it back
    return this.enqueue({ op: 'del', slug });
  }

  private async flushDeferred(): Promise<void> {
    const list = [...this.deferred.values()];
    this.deferred.clear();
    await Promise.all(list.map((p) => this.put(p)));
  }

  async close(): Promise<void> {
    if (this.deferTimer) clearTimeout(this.deferTimer);
    this.deferTimer = null;
    await this.flushDeferred().catch((err) => this.warn(`drover: ${(err as Error).message}`));
    await this.running;
    await this.journal?.close().catch(() => {});
    this.journal = null;
  }

  private enqueue(op: Op): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ op, line: `${JSON.stringify(op)}\n`, resolve, reject });
      this.running ??= this.commitAll();
    });
  }

  /**
   * Commits batches until the queue is empty. The last check of the queue and the end of the
   * loop happen in one synchronous step: a caller woken by a commit may enqueue at any await.
   * Nothing in here throws: a failed write rejects its batch.
   */
  private async commitAll(): Promise<void> {
    for (;;) {
      if (!this.queue.length) {
        this.running = null;
        return;
      }
      const batch = this.queue;
      this.queue = [];
      const text = batch.map((p) => p.line).join('');
      try {
        const fh = await this.journalHandle();
        const buf = Buffer.from(text);
        try {
          for (let off = 0; off < buf.length;) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
          await fh.datasync();
        } catch (err) {
          // Leave no partial line behind for the next batch to be glued onto.
          await fh.truncate(this.journalBytes).catch(() => {});
          throw err;
        }
        this.journalBytes += buf.length;
      } catch (err) {
        // Reopen next time: the disk may recover, or the file be replaced.
        await this.journal?.close().catch(() => {});
        this.journal = null;
        const e = new StoreWriteError(`cannot save the desired state: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        for (const p of batch) p.reject(e);
        continue;
      }
      for (const p of batch) {
        apply(this.procs, p.op);
        p.resolve();
      }
      if (this.journalBytes > Math.max(64 * 1024, this.snapshotBytes)) {
        await this.compact().catch((err) => this.warn(`drover: cannot compact the desired state: ${(err as Error).message}`));
      }
    }
  }

  private async journalHandle(): Promise<FileHandle> {
    if (!this.journal) {
      this.journal = await open(join(this.dir, JOURNAL), 'a', 0o600);
      this.journalBytes = (await this.journal.stat()).size;
      await syncDir(this.dir); // the journal's directory entry must survive a crash too
    }
    return this.journal;
  }

  /** Writes the whole state as a new snapshot, then empties the journal. */
  private async compact(): Promise<void> {
    const text = `${JSON.stringify({ version: 1, processes: this.all() })}\n`;
    await writeDurably(this.dir, SNAPSHOT, text);
    this.snapshotBytes = Buffer.byteLength(text);
    const fh = await this.journalHandle();
    await fh.truncate(0);
    await fh.datasync();
    this.journalBytes = 0;
  }

  private async loadSnapshot(): Promise<void> {
    let text: string;
    try {
      text = await readFile(join(this.dir, SNAPSHOT), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    this.snapshotBytes = Buffer.byteLength(text);
    let doc: { processes?: unknown };
    try {
      doc = JSON.parse(text) as { processes?: unknown };
    } catch {
      this.warn(`drover: ${join(this.dir, SNAPSHOT)} is damaged; starting from its journal alone`);
      return;
    }
    const list = Array.isArray(doc.processes) ? doc.processes : [];
    let bad = 0;
    for (const p of list) {
      if (isDesiredProcess(p)) this.procs.set(p.slug, p);
      else bad++;
    }
    if (bad) this.warn(`drover: skipped ${bad} unreadable process record(s) in ${join(this.dir, SNAPSHOT)}`);
  }

  private async loadJournal(): Promise<void> {
    const file = join(this.dir, JOURNAL);
    let buf: Buffer;
    try {
      if (!(await stat(file)).isFile()) {
        this.warn(`drover: ${file} is not a regular file; not reading it`);
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
      const op = parseOp(buf.toString('utf8', start, nl));
      if (op) apply(this.procs, op);
      else skipped++;
      start = nl + 1;
      good = start;
    }
    if (good < buf.length) {
      // A torn final line: the change it held never got its fdatasync, so nobody was told it was saved.
      const fh = await open(file, 'r+');
      await fh.truncate(good).finally(() => fh.close());
      this.warn(`drover: cut a torn final line (${buf.length - good} bytes) from ${file}`);
    }
    if (skipped) this.warn(`drover: skipped ${skipped} unreadable line(s) in ${file}`);
  }
}

function apply(procs: Map<string, DesiredProcess>, op: Op): void {
  if (op.op === 'put') procs.set(op.process.slug, op.process);
  else procs.delete(op.slug);
}

function parseOp(text: string): Op | null {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    if (v.op === 'put' && isDesiredProcess(v.process)) return { op: 'put', process: v.process };
    if (v.op === 'del' && typeof v.slug === 'string') return { op: 'del', slug: v.slug };
  } catch {
    // fall through
  }
  return null;
}

function isDesiredProcess(v: unknown): v is DesiredProcess {
  if (typeof v !== 'object' || v === null) return false;
  const p = v as Record<string, unknown>;
  const strings = ['slug', 'app', 'node', 'processType', 'sourceUrl', 'createdAt'];
  return (
    strings.every((k) => typeof p[k] === 'string') &&
    Number.isInteger(p.port) &&
    (p.archive === undefined || typeof p.archive === 'string') &&
    (p.stopped === undefined || typeof p.stopped === 'boolean') &&
    (p.restart === undefined || isRestart(p.restart)) &&
    (p.argv === undefined || isArgv(p.argv)) &&
    (p.job === undefined || isJob(p.job)) &&
    (p.callback === undefined ||
      (typeof p.callback === 'object' && p.callback !== null && typeof (p.callback as { url?: unknown }).url === 'string')) &&
    typeof p.env === 'object' &&
    p.env !== null &&
    Object.values(p.env).every((x) => typeof x === 'string')
  );
}

const isStrings = (v: unknown) => typeof v === 'object' && v !== null && Object.values(v).every((x) => typeof x === 'string');

function isArgv(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const a = v as Record<string, unknown>;
  return (
    a.kind === 'argv' &&
    Array.isArray(a.argv) &&
    a.argv.length > 0 &&
    isStrings(a.argv) &&
    (a.cwd === undefined || typeof a.cwd === 'string') &&
    (a.env === undefined || isStrings(a.env))
  );
}

function isJob(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const j = v as Record<string, unknown>;
  return j.kind === 'job' && ['processType', 'stdin', 'stdout'].every((k) => typeof j[k] === 'string');
}

function isRestart(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  const ms = (x: unknown) => x === undefined || (Number.isInteger(x) && (x as number) >= 0);
  return (
    (r.policy === undefined || RESTART_POLICIES.includes(r.policy as RestartPolicy)) &&
    ms(r.delayMs) &&
    ms(r.maxDelayMs) &&
    ms(r.resetAfterMs)
  );
}

/** Replaces DIR/NAME atomically and durably: temp file, fsync, rename, directory fsync. */
export async function writeDurably(dir: string, name: string, text: string, mode = 0o600): Promise<void> {
  const tmp = join(dir, `${name}.tmp-${process.pid}-${Date.now()}`);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, join(dir, name));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
