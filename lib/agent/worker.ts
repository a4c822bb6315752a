// The pull side of pull-mode jobs (`drover worker`): register once with a Pleiades server, then
// per slot: contract (long-poll) → job → codex blob (a source archive with a Procfile) → a
// supervised process of the one Supervisor, restart policy `never`, running the Procfile entry
// named by the lambda's runtime with the input on stdin and stdout in a file → upload the
// output → report. Network faults are retried with jittered backoff; a finished job's report is
// retried until the server has it.
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExitInfo } from '../os/child.js';
import { backoffDelay } from '../process/backoff.js';
import { exitText, message } from '../process/wording.js';
import type { BlobStore } from '../store/blobs.js';
import { writeDurably } from '../store/desired.js';
import { PleiadesClient, RefusedError, UnreachableError } from './pleiades-client.js';
import type { ManagedProcess, Supervisor } from './supervisor.js';

export interface WorkerOptions {
  client: PleiadesClient;
  supervisor: Supervisor;
  /** Where codex archives are kept, so the release cache reads them by content hash. */
  blobs: BlobStore;
  stateDir: string;
  runtime: string[];
  tags: string[];
  concurrency: number;
  /** Contract long-poll, in seconds (the server may answer sooner). */
  pollSeconds?: number;
  /** How often a job in hand is reported `running` (renewing its lease). */
  heartbeatMs?: number;
  /** Reconnect backoff: first delay and cap (jittered). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Finished jobs kept as processes (to watch with --serve) before the oldest are deleted. */
  keepFinished?: number;
  log?: (line: string) => void;
}

type Outcome = { exit: ExitInfo } | { error: string };

interface InHand {
  jobId: string;
  /** Aborted to hand the job back (interrupted). */
  cancel: AbortController;
  done: Promise<void>;
  proc?: ManagedProcess;
}

/** A delay that ends early when `signal` aborts (resolving false). */
function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(ok);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class PullWorker {
  id = '';
  private readonly client: PleiadesClient;
  /** Aborted on stop: no new contract, the waiting ones end. */
  private readonly stopping = new AbortController();
  private readonly inHand = new Map<string, InHand>();
  private readonly finished: ManagedProcess[] = [];
  /** Codex data id → the sha256 it is stored under here. */
  private readonly codexes = new Map<string, string>();
  private loops: Promise<void>[] = [];
  private readonly log: (line: string) => void;

  constructor(private readonly opts: WorkerOptions) {
    this.client = opts.client;
    this.log = opts.log ?? ((l) => process.stderr.write(`${l}\n`));
  }

  private delay(attempt: number): number {
    // Jittered by half: workers restarted together spread out.
    return backoffDelay(attempt + 1, {
      initialMs: this.opts.backoffInitialMs ?? 1000,
      maxMs: this.opts.backoffMaxMs ?? 60_000,
      resetAfterMs: 0,
      jitter: 0.5,
    });
  }

  /** Runs `fn` until it succeeds or is refused; network faults wait a backoff. False if `signal` ended it. */
  private async retry<T>(what: string, fn: () => Promise<T>, signal: AbortSignal): Promise<{ value: T } | null> {
    for (let attempt = 0; ; attempt++) {
      try {
        return { value: await fn() };
      } catch (err) {
        if (!(err instanceof UnreachableError) || signal.aborted) throw err;
        const ms = this.delay(attempt);
        this.log(`drover: worker: ${what}: ${err.message}; retrying in ${(ms / 1000).toFixed(1)} s`);
        if (!(await sleep(ms, signal))) return null;
      }
    }
  }

  private get idFile(): string {
    return join(this.opts.stateDir, 'worker.json');
  }

  /** The worker id: the saved one while the server knows it, else a new registration (saved). */
  async register(): Promise<string> {
    const signal = this.stopping.signal;
    const runtime = [...this.opts.runtime].sort();
    try {
      const saved = JSON.parse(await readFile(this.idFile, 'utf8')) as { server?: string; id?: string; runtime?: string[] };
      if (saved.server === this.client.base && typeof saved.id === 'string' && JSON.stringify(saved.runtime) === JSON.stringify(runtime)) {
        const known = await this.retry('checking the saved worker id', () => this.client.knowsWorker(saved.id!), signal);
        if (!known) throw new Error('stopped');
        if (known.value) return (this.id = saved.id);
        this.log(`drover: worker: the server no longer knows worker ${saved.id}; registering again`);
      }
    } catch (err) {
      if (err instanceof RefusedError || (err as Error).message === 'stopped') throw err;
      // no saved id (or an unreadable one): register
    }
    const got = await this.retry('registering', () => this.client.register(this.opts.runtime), signal);
    if (!got) throw new Error('stopped before registering');
    this.id = got.value;
    // Atomic: a worker killed right now keeps its old id or its new one, never half a file.
    await writeDurably(this.opts.stateDir, 'worker.json', `${JSON.stringify({ server: this.client.base, id: this.id, runtime })}\n`);
    return this.id;
  }

  /** Registers, then runs `concurrency` contract loops until stop(). */
  async start(): Promise<void> {
    // Files of jobs a previous run had in hand: those jobs went back to the queue with their lease.
    await rm(join(this.opts.stateDir, 'jobs'), { recursive: true, force: true });
    await mkdir(join(this.opts.stateDir, 'jobs'), { recursive: true });
    await this.register();
    this.log(`drover: worker ${this.id} pulling from ${this.client.base} (runtime ${this.opts.runtime.join(',')})`);
    this.loops = Array.from({ length: this.opts.concurrency }, () => this.loop());
  }

  private async loop(): Promise<void> {
    const signal = this.stopping.signal;
    let failures = 0;
    while (!signal.aborted) {
      let jobId: string | null;
      try {
        jobId = await this.client.contract(this.id, this.opts.tags, this.opts.pollSeconds ?? 20, signal);
        if (failures) this.log('drover: worker: connected again');
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof RefusedError && err.httpStatus === 404) {
          // The server forgot us (a new server on the same address): register again.
          await rm(this.idFile, { force: true });
          await this.register().catch(() => {});
          continue;
        }
        const ms = this.delay(failures++);
        this.log(`drover: worker: contract: ${message(err)}; retrying in ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms, signal);
        continue;
      }
      if (!jobId) continue;
      if (this.inHand.has(jobId)) continue; // already ours (a contract answered twice)
      const job: InHand = { jobId, cancel: new AbortController(), done: Promise.resolve() };
      job.done = this.run(job).finally(() => this.inHand.delete(jobId));
      this.inHand.set(jobId, job);
      await job.done;
    }
  }

  /** One job from contract to report. Never throws. */
  private async run(job: InHand): Promise<void> {
    const { jobId } = job;
    const dir = join(this.opts.stateDir, 'jobs', jobId.replace(/[^A-Za-z0-9_-]/g, '_'));
    const signal = job.cancel.signal;
    let outcome: Outcome;
    const beat = setInterval(() => {
      this.client.report(jobId, 'running').catch((err) => this.log(`drover: worker: job ${jobId}: running report: ${message(err)}`));
    }, this.opts.heartbeatMs ?? 30_000);
    try {
      await mkdir(dir, { recursive: true });
      const info = await this.retry(`job ${jobId}`, () => this.client.job(jobId), signal);
      if (!info) throw new Interrupted();
      const { lambda, input } = info.value;
      const sha = await this.codex(lambda.codex, dir, signal);
      const inputFile = join(dir, 'input');
      const outputFile = join(dir, 'output');
      if (!(await this.retry(`input of job ${jobId}`, () => this.client.download(input.id, inputFile, signal), signal)))
        throw new Interrupted();
      if (signal.aborted) throw new Interrupted();
      const proc = await this.opts.supervisor.create({
        app: `job-${jobId}`,
        node: lambda.runtime,
        processType: lambda.runtime,
        // A blob URL names the archive by its sha256: the release cache reads it from the local store.
        sourceUrl: `http://drover-worker.invalid/data/${sha}/blob`,
        env: { PLEIADES_JOB: jobId, PLEIADES_LAMBDA: lambda.id, PLEIADES_RUNTIME: lambda.runtime },
        restart: { policy: 'never' },
        job: { kind: 'job', processType: lambda.runtime, stdin: inputFile, stdout: outputFile },
      });
      job.proc = proc;
      outcome = await this.outcome(proc, signal);
      if ('exit' in outcome && outcome.exit.code === 0) {
        clearInterval(beat);
        await this.deliver(jobId, outputFile);
      } else {
        if ('error' in outcome) {
          // A failed download or build is retried by the actor whatever its policy: not for a job.
          await this.opts.supervisor.delete(proc.slug).catch(() => {});
          job.proc = undefined;
        }
        const why = signal.aborted
          ? 'interrupted: worker shutting down'
          : 'exit' in outcome
            ? `process ${exitText(outcome.exit)}`
            : outcome.error;
        clearInterval(beat);
        await this.reportFailed(jobId, why);
      }
    } catch (err) {
      clearInterval(beat);
      const why = err instanceof Interrupted || signal.aborted ? 'interrupted: worker shutting down' : message(err);
      if (job.proc) await this.opts.supervisor.delete(job.proc.slug).catch(() => {});
      job.proc = undefined;
      await this.reportFailed(jobId, why);
    } finally {
      clearInterval(beat);
    }
    if (job.proc) this.keep(job.proc, dir);
    else await rm(dir, { recursive: true, force: true });
  }

  /** The codex archive in the local store (downloaded once per data id); its sha256. */
  private async codex(dataId: string, dir: string, signal: AbortSignal): Promise<string> {
    const known = this.codexes.get(dataId);
    if (known && (await this.opts.blobs.get(known))) return known;
    const file = join(dir, 'codex');
    if (!(await this.retry(`codex ${dataId}`, () => this.client.download(dataId, file, signal), signal))) throw new Interrupted();
    const { info } = await this.opts.blobs.put(createReadStream(file));
    await rm(file, { force: true });
    this.codexes.set(dataId, info.id);
    return info.id;
  }

  /** How the job's process ended: its exit, or the error that kept it from running. */
  private outcome(proc: ManagedProcess, signal: AbortSignal): Promise<Outcome> {
    return new Promise((resolve) => {
      let settled = false;
      const onAbort = () => void this.opts.supervisor.delete(proc.slug).catch(() => {});
      const finish = (o: Outcome) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        queueMicrotask(() => sub.unsubscribe());
        resolve(o);
      };
      const check = () => {
        const snap = proc.actor.getSnapshot();
        const c = snap.context;
        if (snap.value === 'exited' && c.lastExit) finish({ exit: c.lastExit });
        else if (snap.value === 'restarting' && c.launch === null) finish({ error: c.errors.at(-1) ?? 'the release could not be built' });
        else if (snap.status === 'done') finish(c.lastExit ? { exit: c.lastExit } : { error: 'interrupted: worker shutting down' });
      };
      const sub = proc.actor.subscribe({ next: check, complete: check });
      signal.addEventListener('abort', onAbort, { once: true });
      check();
    });
  }

  /** Uploads the output and reports the job finished, retrying both until the server has them. */
  private async deliver(jobId: string, outputFile: string): Promise<void> {
    const never = new AbortController().signal; // a finished job's result is never dropped
    try {
      const up = await this.retry(`output of job ${jobId}`, () => this.client.upload(outputFile), never);
      await this.retry(`report of job ${jobId}`, () => this.client.report(jobId, 'finished', { output: up!.value }), never);
      this.log(`drover: worker: job ${jobId} finished`);
    } catch (err) {
      this.log(`drover: worker: job ${jobId}: the server refused its result: ${message(err)}`);
    }
  }

  private async reportFailed(jobId: string, why: string): Promise<void> {
    // Bounded: a job handed back at shutdown must not hold the worker up for ever (its lease
    // returns it to the queue anyway).
    const giveUp = AbortSignal.timeout(this.stopping.signal.aborted ? 10_000 : 300_000);
    try {
      await this.retry(`report of job ${jobId}`, () => this.client.report(jobId, 'failed', { message: why }), giveUp);
      this.log(`drover: worker: job ${jobId} failed: ${why}`);
    } catch (err) {
      this.log(`drover: worker: job ${jobId}: cannot report its failure: ${message(err)}`);
    }
  }

  /** Keeps the last few finished jobs' processes to watch; deletes older ones and their files. */
  private keep(proc: ManagedProcess, dir: string): void {
    this.finished.push(proc);
    this.dirs.set(proc.slug, dir);
    while (this.finished.length > (this.opts.keepFinished ?? 20)) {
      const old = this.finished.shift()!;
      const oldDir = this.dirs.get(old.slug);
      this.dirs.delete(old.slug);
      void this.opts.supervisor
        .delete(old.slug)
        .then(() => (oldDir ? rm(oldDir, { recursive: true, force: true }) : undefined))
        .catch(() => {});
    }
  }
  private readonly dirs = new Map<string, string>();

  /** Jobs in hand now. */
  get busy(): string[] {
    return [...this.inHand.keys()];
  }

  /**
   * Stops contracting; the jobs in hand get `drainMs` to finish (or `now()` to cut that short),
   * then the rest are handed back: stopped and reported failed (interrupted).
   */
  async stop(drainMs: number, now?: Promise<unknown>): Promise<void> {
    this.stopping.abort();
    const all = () => Promise.all([...this.inHand.values()].map((j) => j.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise((r) => (timer = setTimeout(r, drainMs))), now ?? new Promise(() => {})]);
    clearTimeout(timer);
    for (const j of this.inHand.values()) j.cancel.abort();
    await all();
    await Promise.all(this.loops);
  }
}

class Interrupted extends Error {}
