// The server side of pull-mode jobs (the Pleiades worker API): workers, lambdas, the job queue,
// contracts (long-polls a job is handed to), leases, and waits on a job's state. Every change is
// saved in the journal before it is answered, so an agent restart loses nothing it confirmed.
import { randomBytes } from 'node:crypto';
import type { Journal } from '../store/journal.js';
import {
  keyOf,
  TERMINAL_STATES,
  type JobRecord,
  type JobState,
  type LambdaRecord,
  type PleiadesRecord,
  type WorkerRecord,
} from '../store/pleiades.js';

/** A request the board refuses: `status` is the HTTP status, `field` what was wrong. */
export class BoardError extends Error {
  override name = 'BoardError';
  constructor(
    readonly status: number,
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export interface BoardOptions {
  /** How long a worker holds a job without reporting `running`. */
  leaseMs: number;
  /** The longest any long-poll is held, whatever the client asks. */
  maxWaitMs: number;
  /** Whether a data id names a stored blob. */
  dataExists: (id: string) => Promise<boolean>;
  log?: (line: string) => void;
}

interface Waiter {
  worker: WorkerRecord;
  tags: string[];
  resolve: (job: JobRecord | null) => void;
}

/** Pleiades ids are 64-bit integers sent as strings: random ones, positive in a signed int64. */
function newId(): string {
  return (randomBytes(8).readBigUInt64BE() >> 1n).toString();
}

export class JobBoard {
  /** Contracts waiting for a job, oldest first. */
  private readonly waiters: Waiter[] = [];
  /** Callbacks run on every change of a job's state. */
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly leaseTimers = new Map<string, NodeJS.Timeout>();
  private seq = 0;
  private closed = false;

  constructor(
    private readonly journal: Journal<PleiadesRecord>,
    private readonly opts: BoardOptions,
  ) {
    const jobs = this.jobs();
    this.seq = jobs.reduce((m, j) => Math.max(m, j.seq), 0);
    // A restart is no worker's fault: every lease in force starts afresh from now.
    const fresh = Date.now() + opts.leaseMs;
    for (const job of jobs) {
      if (job.state !== 'Running') continue;
      job.leaseUntil = Math.max(job.leaseUntil ?? 0, fresh);
      this.armLease(job);
    }
  }

  get leaseMs(): number {
    return this.opts.leaseMs;
  }

  private get<T extends PleiadesRecord>(kind: T['kind'], id: string): T | undefined {
    return this.journal.get(keyOf({ kind, id })) as T | undefined;
  }

  private jobs(): JobRecord[] {
    return this.journal.all().filter((r): r is JobRecord => r.kind === 'job');
  }

  /** Every data id a lambda or job refers to: kept by the blob store's sweep. */
  referencedData(): Set<string> {
    const ids = new Set<string>();
    for (const r of this.journal.all()) {
      if (r.kind === 'lambda') ids.add(r.codex);
      if (r.kind === 'job') {
        ids.add(r.input);
        if (r.output) ids.add(r.output);
      }
    }
    return ids;
  }

  worker(id: string): WorkerRecord {
    const w = this.get<WorkerRecord>('worker', id);
    if (!w) throw new BoardError(404, 'id', `no worker "${id.slice(0, 80)}"`);
    return w;
  }

  lambda(id: string): LambdaRecord {
    const l = this.get<LambdaRecord>('lambda', id);
    if (!l) throw new BoardError(404, 'lambda', `no lambda "${id.slice(0, 80)}"`);
    return l;
  }

  job(id: string): JobRecord {
    const j = this.get<JobRecord>('job', id);
    if (!j) throw new BoardError(404, 'id', `no job "${id.slice(0, 80)}"`);
    return j;
  }

  listJobs(): JobRecord[] {
    return this.jobs().sort((a, b) => a.seq - b.seq);
  }

  async registerWorker(runtime: string[]): Promise<WorkerRecord> {
    const w: WorkerRecord = { kind: 'worker', id: newId(), runtime: [...new Set(runtime)], createdAt: new Date().toISOString() };
    await this.journal.put(w);
    return w;
  }

  async createLambda(codex: string, runtime: string): Promise<LambdaRecord> {
    if (!(await this.opts.dataExists(codex))) throw new BoardError(404, 'codex', `no data object "${codex.slice(0, 80)}"`);
    const l: LambdaRecord = { kind: 'lambda', id: newId(), codex, runtime, createdAt: new Date().toISOString() };
    await this.journal.put(l);
    return l;
  }

  async createJob(lambda: string, input: string, tags: string[]): Promise<JobRecord> {
    this.lambda(lambda);
    if (!(await this.opts.dataExists(input))) throw new BoardError(404, 'input', `no data object "${input.slice(0, 80)}"`);
    const now = new Date().toISOString();
    const job: JobRecord = {
      kind: 'job',
      id: newId(),
      lambda,
      input,
      tags: [...new Set(tags)],
      state: 'Enqueued',
      seq: ++this.seq,
      createdAt: now,
      updatedAt: now,
      attempts: 0,
    };
    await this.journal.put(job);
    this.dispatch();
    return job;
  }

  /** Whether this worker (with these contract tags) may run the job. */
  private matches(job: JobRecord, worker: WorkerRecord, tags: string[]): boolean {
    const lambda = this.get<LambdaRecord>('lambda', job.lambda);
    return !!lambda && worker.runtime.includes(lambda.runtime) && job.tags.every((t) => tags.includes(t));
  }

  /**
   * A worker asks for a job: the oldest queued one it can run, at once or within `waitMs`;
   * null when none came. An aborted wait (the client went away) takes nothing.
   */
  async contract(workerId: string, tags: string[], waitMs: number, signal?: AbortSignal): Promise<JobRecord | null> {
    const worker = this.worker(workerId);
    const now = this.listJobs().find((j) => j.state === 'Enqueued' && this.matches(j, worker, tags));
    if (now) return this.assign(now, worker);
    if (this.closed || signal?.aborted) return null;
    const wait = Math.min(Math.max(0, waitMs), this.opts.maxWaitMs);
    if (wait === 0) return null;
    return new Promise<JobRecord | null>((resolve) => {
      const done = (job: JobRecord | null) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(job);
      };
      const waiter: Waiter = { worker, tags, resolve: done };
      const onAbort = () => done(null);
      const timer = setTimeout(() => done(null), wait);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Hands queued jobs to waiting contracts, oldest job first, each to the longest-waiting match. */
  private dispatch(): void {
    if (!this.waiters.length) return;
    for (const job of this.listJobs()) {
      if (job.state !== 'Enqueued') continue;
      const waiter = this.waiters.find((w) => this.matches(job, w.worker, w.tags));
      if (!waiter) continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      // Taken now (synchronously), answered once saved.
      this.assign(job, waiter.worker).then(waiter.resolve, () => waiter.resolve(null));
      if (!this.waiters.length) return;
    }
  }

  private async assign(job: JobRecord, worker: WorkerRecord): Promise<JobRecord> {
    const prev = { ...job };
    job.state = 'Running';
    job.worker = worker.id;
    job.attempts += 1;
    job.leaseUntil = Date.now() + this.opts.leaseMs;
    job.updatedAt = new Date().toISOString();
    try {
      await this.journal.put(job);
    } catch (err) {
      // Not saved: the job goes back to the queue as it was.
      Object.assign(job, prev);
      if (prev.worker === undefined) delete job.worker;
      if (prev.leaseUntil === undefined) delete job.leaseUntil;
      throw err;
    }
    this.armLease(job);
    this.changed(job);
    return job;
  }

  private armLease(job: JobRecord): void {
    clearTimeout(this.leaseTimers.get(job.id));
    if (this.closed || job.state !== 'Running' || job.leaseUntil === undefined) return;
    const timer = setTimeout(() => this.expire(job.id), Math.max(0, job.leaseUntil - Date.now()));
    this.leaseTimers.set(job.id, timer);
  }

  /** A lease ran out: the job goes back to the queue, for another worker. */
  private expire(id: string): void {
    this.leaseTimers.delete(id);
    const job = this.get<JobRecord>('job', id);
    if (!job || job.state !== 'Running') return;
    if ((job.leaseUntil ?? 0) > Date.now()) return this.armLease(job); // a timer may fire a moment early
    const worker = job.worker;
    job.state = 'Enqueued';
    job.message = `lease lost: worker ${worker} did not report within ${Math.round(this.opts.leaseMs / 1000)} s`;
    delete job.worker;
    delete job.leaseUntil;
    job.updatedAt = new Date().toISOString();
    this.opts.log?.(`drover: job ${id}: ${job.message}; back in the queue`);
    this.journal.put(job).catch((err) => this.opts.log?.(`drover: job ${id}: ${(err as Error).message}`));
    this.changed(job);
    this.dispatch();
  }

  /**
   * A report on a job: `running` renews its lease, `finished` (with its output) and `failed`
   * end it, `cancelled` withdraws it. A report repeated after the fact changes nothing: a
   * worker retrying a report it could not confirm gets ok.
   */
  async update(id: string, status: string, output: string | undefined, message: string | undefined): Promise<JobRecord> {
    const job = this.job(id);
    const s = status.toLowerCase();
    const terminal = TERMINAL_STATES.includes(job.state);
    if (s === 'running') {
      if (job.state === 'Running') {
        job.leaseUntil = Date.now() + this.opts.leaseMs;
        this.armLease(job);
        await this.journal.put(job);
        return job;
      }
      if (terminal) throw new BoardError(409, 'status', `job ${id} is already ${job.state}`);
      throw new BoardError(409, 'status', `job ${id} is ${job.state}: no worker holds it (its lease may have run out)`);
    }
    const target: JobState | undefined = ({ finished: 'Finished', failed: 'Failed', cancelled: 'Cancelled' } as const)[
      s as 'finished' | 'failed' | 'cancelled'
    ];
    if (!target)
      throw new BoardError(400, 'status', `status must be one of running, finished, failed, cancelled; got ${JSON.stringify(status)}`);
    if (target === 'Finished') {
      if (output === undefined) throw new BoardError(400, 'output', 'a finished job needs its output (a data id)');
      if (!(await this.opts.dataExists(output))) throw new BoardError(404, 'output', `no data object "${output.slice(0, 80)}"`);
    }
    if (terminal) {
      if (job.state === target && (target !== 'Finished' || job.output === output)) return job; // a retried report
      throw new BoardError(409, 'status', `job ${id} is already ${job.state}`);
    }
    // A result arriving after the lease ran out is still the job's result.
    job.state = target;
    if (output !== undefined && target === 'Finished') job.output = output;
    if (message !== undefined) job.message = message.slice(0, 4096);
    delete job.leaseUntil;
    job.updatedAt = new Date().toISOString();
    clearTimeout(this.leaseTimers.get(id));
    this.leaseTimers.delete(id);
    await this.journal.put(job);
    this.changed(job);
    return job;
  }

  /**
   * The job once it is in state `until` (any letter case) or in a final state, or after
   * `waitMs`, whichever comes first: how a client waits for a result (`except=Finished`).
   */
  async waitFor(id: string, until: string, waitMs: number, signal?: AbortSignal): Promise<JobRecord> {
    const job = this.job(id);
    const reached = () => job.state.toLowerCase() === until.toLowerCase() || TERMINAL_STATES.includes(job.state);
    const wait = Math.min(Math.max(0, waitMs), this.opts.maxWaitMs);
    if (reached() || wait === 0 || this.closed || signal?.aborted) return job;
    await new Promise<void>((resolve) => {
      let set = this.watchers.get(id);
      if (!set) this.watchers.set(id, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        set.delete(check);
        if (!set.size && this.watchers.get(id) === set) this.watchers.delete(id);
        resolve();
      };
      const check = () => {
        if (reached() || this.closed) done();
      };
      const timer = setTimeout(done, wait);
      signal?.addEventListener('abort', done, { once: true });
      set.add(check);
    });
    return job;
  }

  private changed(job: JobRecord): void {
    for (const check of [...(this.watchers.get(job.id) ?? [])]) check();
  }

  /** Answers every long-poll (no job; the job as it is) and stops the lease timers. */
  close(): void {
    this.closed = true;
    for (const t of this.leaseTimers.values()) clearTimeout(t);
    this.leaseTimers.clear();
    for (const w of [...this.waiters]) w.resolve(null);
    for (const set of [...this.watchers.values()]) for (const check of [...set]) check();
  }
}
