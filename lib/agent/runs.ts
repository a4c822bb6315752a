// Runs: run-to-completion jobs (the morph.io "server API", as openaustralia/yinyo serves it).
// A run is one actor of the one Supervisor (restart policy `never`) whose `downloading` is
// "the app was uploaded" and whose `building` is the release build run in the run's own
// directory. Its event log is drover's log for the actor; the run's own events (first, start,
// finish, network, last) are appended to it beside drover's, and api/runs.ts reads them back
// in yinyo's shape. Lifecycle: created → app uploaded → started → build → execute → finished,
// then finalised (DELETE, or a TTL). Runs live under STATE_DIR/runs/ID and in the run journal
// (run-store.ts) until finalised: after an agent restart a queued run is queued again in its
// place, a finished one is still there, and one that was building or executing is reported
// interrupted (and queued again when it asked for retry_on_restart).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import type { Journal } from '../store/journal.js';
import type { CallbackSpec } from '../store/outbox.js';
import { openRunStore, type RecordPhase, type RunRecord, type RunStoreRecord } from './run-store.js';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { create as tarCreate } from 'tar';
import { shellCommand } from '../os/child.js';
import { startForwardProxy, type ForwardProxy, type ProxyExchange } from '../os/proxy.js';
import type { RunUsage } from '../os/usage.js';
import { message } from '../process/wording.js';
import { runBuild } from '../release/build.js';
import { readProcfile, resolveLaunch, type ProcessSpec } from '../release/launch.js';
import { describeTypes } from '../release/procfile.js';
import { unpack, type UnpackOptions } from '../release/unpack.js';
import type { EventLogs } from '../store/event-log/registry.js';
import type { EventLog } from '../store/event-log/log.js';
import { parseSignal, type SignalId } from '../os/signals.js';
import { signalGroup } from '../os/proc.js';
import { nextToStart, serveOrder, countsByUser, type Priority, type QueueEntry } from './run-queue.js';
import { ConflictError, type ManagedProcess, type Supervisor } from './supervisor.js';

export type RunStage = 'build' | 'execute';
export type RunPhase = 'created' | 'uploaded' | 'queued' | 'started' | 'building' | 'executing' | 'finished' | 'finalised';

/** The longest max_run_time accepted (a day, as yinyo's default maximum). */
export const MAX_RUN_TIME_S = 86_400;

export interface StageUsage {
  utime: number | null;
  stime: number | null;
  /** Bytes: the peak memory of the stage's tree. */
  max_rss: number | null;
  network_in: number;
  network_out: number;
}

export interface StageExit {
  exit_code: number | null;
  signal?: string | null;
  usage: StageUsage;
  /** Ended by POST /runs/ID/stop (or a finalise). */
  stopped?: boolean;
  /** Ended because it ran past max_run_time. */
  timed_out?: boolean;
  /** Ended by an agent restart (stopped with the agent, or the agent was killed). */
  interrupted?: boolean;
  /** The kernel OOM-killed part of the tree at the memory limit. */
  oom_killed?: boolean;
  /** Why it ended, in words, when not by a plain exit. */
  error?: string;
}

export type { CallbackSpec };

export interface StartOptions {
  env: Record<string, string>;
  output: string[];
  callback?: CallbackSpec;
  /** Queue class or number (see run-queue.ts); default normal. */
  priority?: Priority;
  /** Whose run it is, for the queue's fairness; default "anonymous". */
  user?: string;
  /** Seconds. */
  maxRunTime?: number;
  /** Bytes. */
  memory?: number;
  processType?: string;
  command?: string;
  /** Queued again (rather than reported failed) when an agent restart interrupts it. */
  retryOnRestart?: boolean;
}

/** A run event as appended to the log: its type and its `data`. */
export interface RunEventNotice {
  id: number;
  runId: string;
  type: string;
  data: Record<string, unknown>;
}

export class RunError extends Error {
  constructor(
    readonly status: number,
    detail: string,
    readonly field?: string,
  ) {
    super(detail);
  }
}

export class Run {
  phase: RunPhase = 'created';
  startedAt?: Date;
  finishedAt?: Date;
  options?: StartOptions;
  proc?: ManagedProcess;
  stage: RunStage | null = null;
  readonly exitData: { build?: StageExit; execute?: StageExit } = {};
  /** Bytes through the proxy, per stage. */
  readonly network = { build: { in: 0, out: 0 }, execute: { in: 0, out: 0 } };
  proxy?: ForwardProxy;
  stopRequested = false;
  /** Cancelled (POST /runs/ID/cancel): the final event says so. */
  cancelled = false;
  /** The build's process group while the build runs (a cancel signals it). */
  buildPgid?: number;
  cancelTimer?: NodeJS.Timeout;
  queueSeq?: number;
  timedOut = false;
  hasCache = false;
  /** The uploaded app archive: what `downloading` hands to `building`, as a process's download does. */
  archive?: { sha256: string; file: string; bytes: number };
  /** The id of its `last` event, once appended. */
  lastEventId?: number;
  /** The working directory of the build and the execute stage (the app's root). */
  appRoot?: string;
  ttlTimer?: NodeJS.Timeout;
  runTimer?: NodeJS.Timeout;
  /** Settles once the `last` event is appended. */
  readonly ended: Promise<void>;
  endedResolve!: () => void;

  constructor(
    readonly id: string,
    readonly name: string | undefined,
    readonly dir: string,
    readonly events: EventLog,
    readonly createdAt = new Date(),
  ) {
    this.ended = new Promise((r) => (this.endedResolve = r));
  }

  get slug(): string {
    return slugOfRun(this.id);
  }

  get finished(): boolean {
    return this.phase === 'finished' || (this.phase === 'finalised' && this.finishedAt !== undefined);
  }

  get appArchive(): string {
    return join(this.dir, 'app.tar.gz');
  }

  get cacheArchive(): string {
    return join(this.dir, 'cache.tar.gz');
  }

  /** Where the build finds (and leaves) what it caches: $CACHE_DIR. */
  get cacheDir(): string {
    return join(this.dir, 'cache');
  }
}

/** The actor's and the log's name for a run. */
export function slugOfRun(id: string): string {
  return `run.${id}`;
}

/** 128 random bits, hex: a run id is handed around like a capability. */
export function newRunId(): string {
  return randomBytes(16).toString('hex');
}

export const RUN_ID = /^[0-9a-f]{32}$/;

export interface RunsOptions {
  /** STATE_DIR/runs */
  dir: string;
  ttlMs: number;
  unstartedTtlMs: number;
  retentionMs: number;
  stopGraceMs: number;
  /** Runs building or executing at once; the rest wait queued. */
  maxConcurrentRuns: number;
  /** Slots only admin-priority runs may use. */
  adminReservedRuns: number;
  unpack?: Omit<UnpackOptions, 'signal'>;
  /** Records a build's process group so a successor of a killed agent can sweep it. */
  trackGroup?: (pgid: number, slug: string) => () => void;
  log: (line: string) => void;
}

/** The registry of runs and their orchestration; see the top of this file. */
export class Runs {
  private readonly runs = new Map<string, Run>();
  private readonly listeners = new Set<(e: RunEventNotice, run: Run) => void>();
  private readonly forgetTimers = new Set<NodeJS.Timeout>();
  private closing = false;
  /** Started runs waiting for a slot, and when each user was last served (fairness). */
  private readonly queue = new Map<string, QueueEntry>();
  private readonly lastServed = new Map<string, number>();
  private served = 0;
  private seq = 0;
  /** Runs holding a slot (launched, not yet at `last`). */
  private readonly active = new Set<string>();
  private store?: Journal<RunStoreRecord>;
  /** Runs a previous agent left building or executing: reported (or queued again) by resume(). */
  private interrupted: { run: Run; stage: RunStage }[] = [];
  /** Others' work on runs not started yet (an experiment's downloads): stopped and awaited by shutdown(). */
  private readonly shutdownHooks = new Set<() => Promise<void>>();

  constructor(
    private readonly supervisor: Supervisor,
    private readonly logs: EventLogs,
    private readonly opts: RunsOptions,
  ) {}

  /**
   * Loads the runs a previous agent kept (their logs reopened, queued ones back in the queue)
   * and removes the directories of runs it no longer knew. Returns their log slugs. Nothing is
   * emitted or launched until resume(), so the callbacks can listen first.
   */
  async init(): Promise<Set<string>> {
    await mkdir(this.opts.dir, { recursive: true });
    this.store = await openRunStore(this.opts.dir, this.opts.log);
    const records = this.store.all();
    const served = records.find((r) => r.kind === 'served');
    if (served) {
      this.served = served.clock;
      for (const [user, n] of Object.entries(served.users)) this.lastServed.set(user, n);
    }
    const kept = new Set<string>();
    for (const r of records) {
      if (r.kind !== 'run') continue;
      try {
        await this.restore(r);
        kept.add(r.id);
      } catch (err) {
        this.opts.log(`drover: run ${r.id}: cannot restore: ${message(err)}`);
        await this.store.remove(r.id).catch(() => {});
      }
    }
    for (const name of await readdir(this.opts.dir)) {
      if (!kept.has(name) && !name.startsWith('runs.')) await rm(join(this.opts.dir, name), { recursive: true, force: true });
    }
    return new Set([...kept].map(slugOfRun));
  }

  private async restore(r: RunRecord): Promise<void> {
    const dir = join(this.opts.dir, r.id);
    await mkdir(dir, { recursive: true });
    const events = await this.logs.open(slugOfRun(r.id));
    const run = new Run(r.id, r.name, dir, events, new Date(r.createdAt));
    run.options = r.options;
    if (r.archive) run.archive = { ...r.archive, file: run.appArchive };
    if (r.appRoot !== undefined) run.appRoot = join(dir, r.appRoot);
    run.hasCache = Boolean(r.hasCache);
    run.queueSeq = r.queueSeq;
    if (r.startedAt) run.startedAt = new Date(r.startedAt);
    if (r.finishedAt) run.finishedAt = new Date(r.finishedAt);
    Object.assign(run.exitData, r.exitData ?? {});
    run.cancelled = Boolean(r.cancelled);
    run.lastEventId = r.lastEventId;
    this.runs.set(run.id, run);
    const left = (from: string | undefined, ms: number) => Math.max(0, Date.parse(from ?? r.createdAt) + ms - Date.now());
    if (r.phase === 'created' || r.phase === 'uploaded') {
      run.phase = r.phase;
      this.arm(run, left(r.createdAt, this.opts.unstartedTtlMs));
    } else if (r.phase === 'finished') {
      run.phase = 'finished';
      run.endedResolve();
      this.arm(run, left(r.finishedAt, this.opts.ttlMs));
    } else if (r.phase === 'queued') {
      run.phase = 'queued';
      this.seq = Math.max(this.seq, r.queueSeq ?? 0);
    } else {
      run.phase = r.phase;
      this.interrupted.push({ run, stage: r.phase === 'building' ? 'build' : 'execute' });
    }
  }

  /**
   * After init() and once the callbacks listen: reports the runs the previous agent left
   * running as interrupted (or queues them again), then starts serving the queue.
   */
  async resume(): Promise<void> {
    const requeued = new Set<string>();
    for (const { run, stage } of this.interrupted.sort((a, b) => (a.run.queueSeq ?? 0) - (b.run.queueSeq ?? 0))) {
      const retry = Boolean(run.options?.retryOnRestart);
      this.emit(run, 'interrupted', { stage, retry, reason: `the agent restarted while the run was in its ${stage} stage` });
      if (retry) {
        try {
          await this.reunpack(run);
          for (const k of Object.keys(run.exitData) as RunStage[]) delete run.exitData[k];
          run.network.build = { in: 0, out: 0 };
          run.network.execute = { in: 0, out: 0 };
          run.startedAt = undefined;
          run.phase = 'queued';
          requeued.add(run.id);
          continue;
        } catch (err) {
          this.opts.log(`drover: run ${run.id}: cannot queue it again: ${message(err)}`);
        }
      }
      run.finishedAt = new Date();
      run.phase = 'finished';
      this.recordStage(run, stage, {
        exit_code: null,
        ...(stage === 'execute' ? { signal: null } : {}),
        usage: this.stageUsage(run, stage, null),
        interrupted: true,
        error: `interrupted: the agent restarted while the run was in its ${stage} stage`,
      });
      run.lastEventId = this.emit(run, 'last', {});
      run.endedResolve();
      this.arm(run, this.opts.ttlMs);
      this.save(run);
    }
    this.interrupted = [];
    const waiting = this.list()
      .filter((r) => r.phase === 'queued')
      .sort((a, b) => (a.queueSeq ?? 0) - (b.queueSeq ?? 0));
    for (const run of waiting) {
      try {
        this.specs.set(run.id, await this.specFor(run.appRoot!, run.options!));
        this.queue.set(run.id, { ...this.entryOf(run), ...(requeued.has(run.id) ? { resumed: true } : {}) });
      } catch (err) {
        this.failUnstartable(run, err);
      }
    }
    for (const run of waiting) {
      if (!requeued.has(run.id) || !this.queue.has(run.id)) continue;
      const e = this.entryOf(run);
      this.emit(run, 'queued', { position: this.position(run.id), user: e.user, priority: e.priority, retry: true });
      this.save(run);
    }
    this.pump();
  }

  /** Hears of every run event appended (first, start, finish, network, last); returns the unsubscribe. */
  onEvent(listener: (e: RunEventNotice, run: Run) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get(id: string): Run | undefined {
    return RUN_ID.test(id) ? this.runs.get(id) : undefined;
  }

  list(): Run[] {
    return [...this.runs.values()];
  }

  async create(name?: string): Promise<Run> {
    if (this.closing) throw new ConflictError('the agent is shutting down');
    const id = newRunId();
    const dir = join(this.opts.dir, id);
    await mkdir(dir, { recursive: true });
    const events = await this.logs.open(slugOfRun(id));
    const run = new Run(id, name, dir, events);
    this.runs.set(id, run);
    try {
      await this.save(run, true);
    } catch (err) {
      this.runs.delete(id);
      await this.logs.abandon(slugOfRun(id));
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    this.emit(run, 'first', {});
    this.arm(run, this.opts.unstartedTtlMs);
    return run;
  }

  /**
   * Takes the app as an archive file (moved into the run's directory) and unpacks it with the
   * release hardening; a bad archive is a 400 and leaves the previous app, if any.
   */
  async setApp(run: Run, file: string): Promise<void> {
    this.mustBeBefore(run, 'app', 'the app cannot change once the run has started');
    const next = join(run.dir, 'app.new');
    await rm(next, { recursive: true, force: true });
    let root: string;
    try {
      root = await unpack(file, next, { ...this.opts.unpack });
    } catch (err) {
      await rm(next, { recursive: true, force: true });
      await rm(file, { force: true });
      throw new RunError(400, `the app is not a usable archive: ${message(err)}`, 'app');
    }
    this.mustBeBefore(run, 'app', 'the app cannot change once the run has started');
    const dest = join(run.dir, 'app');
    await rm(dest, { recursive: true, force: true });
    await rename(next, dest);
    const bytes = (await stat(file)).size;
    const sha256 = await sha256Of(file);
    await rename(file, run.appArchive);
    run.archive = { sha256, file: run.appArchive, bytes };
    run.appRoot = join(dest, root.slice(next.length + 1));
    run.phase = 'uploaded';
    await this.save(run, true);
  }

  /**
   * Unpacks a second archive into the uploaded app, under `subdir` (the experiment's protocol),
   * with the same hardening; a bad archive is a 400 naming `field`.
   */
  async unpackInto(run: Run, file: string, subdir: string, field: string): Promise<void> {
    this.mustBeBefore(run, field, 'the app cannot change once the run has started');
    if (!run.appRoot) throw new RunError(400, 'app needs to be uploaded first', 'app');
    const scratch = join(run.dir, `${subdir}.new`);
    await rm(scratch, { recursive: true, force: true });
    try {
      const root = await unpack(file, scratch, { ...this.opts.unpack });
      const dest = join(run.appRoot, subdir);
      await rm(dest, { recursive: true, force: true });
      await rename(root, dest);
    } catch (err) {
      throw new RunError(400, `${field} is not a usable archive: ${message(err)}`, field);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /** A retried run builds from its uploaded app again, not from what its interrupted build left. */
  private async reunpack(run: Run): Promise<void> {
    if (!run.archive || !run.appRoot) throw new Error('its app is gone');
    const next = join(run.dir, 'app.new');
    await rm(next, { recursive: true, force: true });
    const root = await unpack(run.appArchive, next, { ...this.opts.unpack });
    const dest = join(run.dir, 'app');
    await rm(dest, { recursive: true, force: true });
    await rename(next, dest);
    run.appRoot = join(dest, root.slice(next.length + 1));
  }

  /** Takes the cache archive; checked by unpacking it (into a scratch directory) with the same hardening. */
  async setCache(run: Run, file: string): Promise<void> {
    this.mustBeBefore(run, 'cache', 'the cache cannot change once the run has started');
    const scratch = join(run.dir, 'cache.check');
    try {
      await unpack(file, scratch, { ...this.opts.unpack });
    } catch (err) {
      await rm(file, { force: true });
      throw new RunError(400, `the cache is not a usable archive: ${message(err)}`, 'cache');
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
    await rename(file, run.cacheArchive);
    run.hasCache = true;
    await this.save(run, true);
  }

  /** A scratch file in the run's directory for an upload. */
  uploadPath(run: Run): string {
    return join(run.dir, `.upload-${randomBytes(6).toString('hex')}`);
  }

  private mustBeBefore(run: Run, field: string, why: string): void {
    if (run.phase === 'finalised') throw new RunError(404, `run ${run.id}: finalised`, 'id');
    if (run.phase !== 'created' && run.phase !== 'uploaded') throw new RunError(409, why, field);
  }

  /** Starts the run: it is queued, and its actor builds the app then runs the command once a slot is free. */
  async start(run: Run, options: StartOptions): Promise<void> {
    if (run.phase === 'finalised') throw new RunError(404, `run ${run.id}: finalised`, 'id');
    if (run.phase !== 'created' && run.phase !== 'uploaded') throw new RunError(409, 'the run has already been started', 'id');
    if (run.phase === 'created' || !run.appRoot) throw new RunError(400, 'app needs to be uploaded before starting a run', 'app');
    const spec = await this.specFor(run.appRoot, options);
    if (run.phase !== 'uploaded') throw new RunError(409, 'the run has already been started', 'id');
    run.options = options;
    run.phase = 'queued';
    run.queueSeq = ++this.seq;
    try {
      // Durable before it counts as queued: a restarted agent serves it in its place.
      await this.save(run, true);
    } catch (err) {
      run.options = undefined;
      run.phase = 'uploaded';
      throw err;
    }
    this.disarm(run);
    const entry = this.entryOf(run);
    this.queue.set(run.id, entry);
    this.specs.set(run.id, spec);
    this.emit(run, 'queued', { position: this.position(run.id), user: entry.user, priority: entry.priority });
    this.pump();
  }

  private entryOf(run: Run): QueueEntry {
    const o = run.options;
    return { id: run.id, user: o?.user ?? 'anonymous', priority: o?.priority ?? 'normal', seq: run.queueSeq ?? 0 };
  }

  /**
   * Ends a run that was never started: its app could not be prepared (an experiment's archive
   * could not be fetched), or it was cancelled meanwhile. `error` is its build stage's error (the
   * stage that prepares the app); `options` are kept, so its callback and its user are known.
   */
  abandon(run: Run, options: StartOptions, error: string, cancelled = false): void {
    if (run.phase !== 'created' && run.phase !== 'uploaded') throw new RunError(409, 'the run has already been started', 'id');
    run.options = options;
    run.cancelled = cancelled;
    run.finishedAt = new Date();
    run.phase = 'finished';
    this.recordStage(run, 'build', {
      exit_code: null,
      usage: this.stageUsage(run, 'build', null),
      ...(cancelled ? { cancelled: true } : {}),
      error,
    });
    if (cancelled) this.emit(run, 'cancelled', { stage: null, reason: error });
    run.lastEventId = this.emit(run, 'last', {});
    run.endedResolve();
    this.arm(run, this.opts.ttlMs);
    this.save(run);
  }

  /** Runs `hook` first when the agent stops (after new runs are refused); returns the unsubscribe. */
  onShutdown(hook: () => Promise<void>): () => void {
    this.shutdownHooks.add(hook);
    return () => this.shutdownHooks.delete(hook);
  }

  /** A restored queued run that can no longer start (its app changed under it): it failed. */
  private failUnstartable(run: Run, err: unknown): void {
    run.finishedAt = new Date();
    run.phase = 'finished';
    this.recordStage(run, 'build', { exit_code: null, usage: this.stageUsage(run, 'build', null), error: message(err) });
    run.lastEventId = this.emit(run, 'last', {});
    run.endedResolve();
    this.arm(run, this.opts.ttlMs);
    this.save(run);
  }

  /** The run's record as it is now. */
  private recordOf(run: Run): RunRecord {
    const phase: RecordPhase =
      run.phase === 'started'
        ? 'building'
        : run.phase === 'finalised'
          ? 'finished'
          : (run.phase as Exclude<RunPhase, 'started' | 'finalised'>);
    return {
      kind: 'run',
      id: run.id,
      ...(run.name !== undefined ? { name: run.name } : {}),
      createdAt: run.createdAt.toISOString(),
      phase,
      ...(run.options ? { options: run.options } : {}),
      ...(run.archive ? { archive: { sha256: run.archive.sha256, bytes: run.archive.bytes } } : {}),
      ...(run.appRoot ? { appRoot: run.appRoot.slice(run.dir.length + 1) } : {}),
      ...(run.hasCache ? { hasCache: true } : {}),
      ...(run.queueSeq !== undefined ? { queueSeq: run.queueSeq } : {}),
      ...(run.startedAt ? { startedAt: run.startedAt.toISOString() } : {}),
      ...(run.finishedAt ? { finishedAt: run.finishedAt.toISOString() } : {}),
      ...(run.exitData.build || run.exitData.execute ? { exitData: { ...run.exitData } } : {}),
      ...(run.cancelled ? { cancelled: true } : {}),
      ...(run.lastEventId !== undefined ? { lastEventId: run.lastEventId } : {}),
    };
  }

  /**
   * Saves the run's record. Awaited where the answer promises durability (create, upload,
   * start); elsewhere a failure is logged (the run goes on; a restart may then see it older).
   */
  private save(run: Run, strict: true): Promise<void>;
  private save(run: Run): void;
  private save(run: Run, strict?: true): Promise<void> | void {
    if (!this.store || this.closing || run.phase === 'finalised') return strict ? Promise.resolve() : undefined;
    const p = this.store.put(this.recordOf(run));
    if (strict) return p;
    p.catch((err) => this.opts.log(`drover: run ${run.id}: cannot save its state: ${message(err)}`));
  }

  private readonly specs = new Map<string, ProcessSpec>();

  /** The 1-based place of a queued run in serve order, or null. */
  position(id: string): number | null {
    const i = this.queued().findIndex((e) => e.id === id);
    return i < 0 ? null : i + 1;
  }

  /** The queue in the order it will be served. */
  queued(): QueueEntry[] {
    return serveOrder([...this.queue.values()], this.lastServed);
  }

  /** GET /queue's figures. */
  queueState() {
    const order = this.queued();
    return {
      running: this.active.size,
      max_concurrent_runs: this.opts.maxConcurrentRuns,
      admin_reserved_runs: this.opts.adminReservedRuns,
      queued: order,
      users: countsByUser(order),
    };
  }

  /** Launches queued runs while slots are free. */
  private pump(): void {
    if (this.closing) return;
    for (;;) {
      const next = nextToStart(
        [...this.queue.values()],
        this.active.size,
        { maxConcurrent: this.opts.maxConcurrentRuns, adminReserved: this.opts.adminReservedRuns },
        this.lastServed,
      );
      if (!next) return;
      this.queue.delete(next.id);
      this.lastServed.set(next.user, ++this.served);
      this.store
        ?.put({ kind: 'served', id: 'served', clock: this.served, users: Object.fromEntries(this.lastServed) })
        .catch((err) => this.opts.log(`drover: cannot save the run queue's state: ${message(err)}`));
      const run = this.runs.get(next.id);
      const spec = this.specs.get(next.id);
      this.specs.delete(next.id);
      if (!run || !spec) continue;
      this.active.add(run.id);
      this.launch(run, spec).catch((err) => {
        this.opts.log(`drover: run ${run.id}: cannot start: ${message(err)}`);
        this.active.delete(run.id);
        if (!run.finishedAt) {
          run.finishedAt = new Date();
          run.phase = run.phase === 'finalised' ? 'finalised' : 'finished';
          this.recordStage(run, 'build', { exit_code: null, usage: this.stageUsage(run, 'build', null), error: message(err) });
          run.lastEventId = this.emit(run, 'last', {});
          run.endedResolve();
          this.save(run);
        }
        this.pump();
      });
    }
  }

  private async launch(run: Run, spec: ProcessSpec): Promise<void> {
    const options = run.options!;
    run.phase = 'started';
    run.startedAt = new Date();
    this.save(run);
    run.proxy = await startForwardProxy((e) => this.onExchange(run, e));
    const memory = options.memory;
    // Where the cgroup cannot carry the limit, RLIMIT_AS on each process is the (weaker) fallback.
    const cgroupLimit = memory !== undefined && this.supervisor.cgroupMemoryLimits;
    const rlimitKb = memory !== undefined && !cgroupLimit ? Math.max(1, Math.floor(memory / 1024)) : undefined;
    const proc = await this.supervisor.createRun({
      slug: run.slug,
      app: 'run',
      node: run.id,
      processType: spec.kind === 'procfile' ? spec.processType : 'command',
      env: options.env,
      events: run.events,
      prepare: async () => run.archive,
      build: (p, _prepared, signal) => this.build(run, p, spec, signal, rlimitKb),
      limits: cgroupLimit ? { memoryBytes: memory } : {},
    });
    run.proc = proc;
    proc.actor.subscribe((snap) => {
      if (snap.value === 'exited' || snap.value === 'deleted') void this.finish(run);
    });
  }

  /**
   * Cancels the run: a queued one never runs; a building or executing one gets `signal` (default
   * SIGTERM), then the usual stop (TERM, grace, KILL) after `graceMs`. Resolves once it is over.
   */
  async cancel(run: Run, signal: SignalId | null, graceMs: number): Promise<boolean> {
    if (run.phase === 'finalised') throw new RunError(404, `run ${run.id}: finalised`, 'id');
    if (run.finishedAt) return false;
    if (run.phase === 'created' || run.phase === 'uploaded')
      throw new RunError(409, 'the run has not been started: delete it instead', 'id');
    run.cancelled = true;
    if (this.queue.delete(run.id)) {
      this.specs.delete(run.id);
      run.finishedAt = new Date();
      run.phase = 'finished';
      this.emit(run, 'cancelled', { stage: null, reason: 'cancelled while queued' });
      run.lastEventId = this.emit(run, 'last', {});
      this.arm(run, this.opts.ttlMs);
      run.endedResolve();
      this.save(run);
      return true;
    }
    run.stopRequested = true;
    const sig = signal ?? parseSignal('SIGTERM')!;
    const pgid = run.stage === 'build' ? run.buildPgid : run.proc?.actor.getSnapshot().context.pgid;
    if (pgid) signalGroup(pgid, sig.number);
    clearTimeout(run.cancelTimer);
    const stop = () => run.proc?.actor.send({ type: 'STOP', reason: 'cancelled' });
    if (!pgid || graceMs <= 0) stop();
    else {
      run.cancelTimer = setTimeout(stop, graceMs);
      run.cancelTimer.unref();
    }
    await run.ended;
    return true;
  }

  /** The Procfile entry named by process_type (default `run`, else the only one), or `command`. */
  private async specFor(root: string, o: StartOptions): Promise<ProcessSpec> {
    if (o.command !== undefined) return { kind: 'argv', argv: ['/bin/sh', '-c', o.command] };
    let procfile;
    try {
      procfile = await readProcfile(root);
    } catch (err) {
      throw new RunError(400, `the app's Procfile cannot be read: ${message(err)}`, 'app');
    }
    if (!procfile) throw new RunError(400, 'the app has no Procfile at its root: give "command" or upload an app with one', 'command');
    if (o.processType !== undefined) {
      if (!procfile.has(o.processType))
        throw new RunError(400, `unknown process type "${o.processType}"; the Procfile has: ${describeTypes(procfile)}`, 'process_type');
      return { kind: 'procfile', processType: o.processType };
    }
    if (procfile.has('run')) return { kind: 'procfile', processType: 'run' };
    if (procfile.size === 1) return { kind: 'procfile', processType: [...procfile.keys()][0] };
    throw new RunError(
      400,
      `the Procfile has no "run" entry and more than one type (${describeTypes(procfile)}): name one in process_type`,
      'process_type',
    );
  }

  /** The variables that send the stages' traffic through the run's proxy, and its cache dir. */
  private stageEnv(run: Run): Record<string, string> {
    const p = run.proxy!.url;
    return { HTTP_PROXY: p, HTTPS_PROXY: p, http_proxy: p, https_proxy: p, CACHE_DIR: run.cacheDir };
  }

  /** The build stage: the cache in, the release build in the run's app, the cache out; then the launch. */
  private async build(run: Run, proc: ManagedProcess, spec: ProcessSpec, signal: AbortSignal, rlimitKb: number | undefined) {
    const root = run.appRoot!;
    const options = run.options!;
    run.phase = 'building';
    run.stage = 'build';
    this.save(run);
    this.emit(run, 'start', { stage: 'build' });
    let usage: RunUsage | null = null;
    try {
      await mkdir(run.cacheDir, { recursive: true });
      if (run.hasCache) await unpack(run.cacheArchive, run.cacheDir, { ...this.opts.unpack, signal });
      const env = { ...this.supervisor.baseEnv, ...options.env, ...this.stageEnv(run) };
      usage = await runBuild(root, {
        signal,
        env,
        onLine: (line) => proc.output.publish('build', line),
        meter: this.supervisor.buildMeter,
        runAs: this.supervisor.childUser,
        track: (pgid) => {
          run.buildPgid = pgid;
          const untrack = this.opts.trackGroup?.(pgid, run.slug);
          return () => {
            run.buildPgid = undefined;
            untrack?.();
          };
        },
      });
      await this.saveCache(run);
      const launch = await resolveLaunch({
        dir: root,
        spec,
        agentEnv: this.supervisor.baseEnv,
        env: { ...options.env, ...this.stageEnv(run) },
        port: proc.port,
        identity: { app: 'run', node: run.id, slug: run.slug, processType: spec.kind === 'procfile' ? spec.processType : 'command' },
      });
      if (rlimitKb !== undefined) {
        const cmd = launch.command ?? launch.argv.map(shq).join(' ');
        Object.assign(launch, { command: `ulimit -v ${rlimitKb} || exit 125\n${shellCommand(cmd)}`, argv: undefined });
      }
      signal.throwIfAborted();
      this.recordStage(run, 'build', { exit_code: 0, usage: this.stageUsage(run, 'build', usage) });
      run.phase = 'executing';
      run.stage = 'execute';
      this.save(run);
      this.emit(run, 'start', { stage: 'execute' });
      if (options.maxRunTime !== undefined) {
        run.runTimer = setTimeout(() => {
          run.timedOut = true;
          run.proc?.actor.send({ type: 'STOP', reason: `max_run_time of ${options.maxRunTime} s exceeded` });
        }, options.maxRunTime * 1000);
      }
      return launch;
    } catch (err) {
      if (!run.exitData.build) {
        const code = (err as { exitCode?: number }).exitCode;
        this.recordStage(run, 'build', {
          exit_code: code ?? null,
          usage: this.stageUsage(run, 'build', usage),
          ...(run.stopRequested ? { stopped: true } : {}),
          ...(run.cancelled ? { cancelled: true } : {}),
          error: run.cancelled ? 'cancelled' : run.stopRequested ? 'stopped on request' : message(err),
        });
      }
      throw err;
    }
  }

  /** Packs $CACHE_DIR back into the run's cache archive (a temp name, then renamed). */
  private async saveCache(run: Run): Promise<void> {
    const tmp = `${run.cacheArchive}.${randomBytes(6).toString('hex')}`;
    try {
      await pipeline(tarCreate({ gzip: true, cwd: run.cacheDir, portable: true }, ['.']) as unknown as Readable, createWriteStream(tmp));
      await rename(tmp, run.cacheArchive);
      run.hasCache = true;
    } catch (err) {
      await rm(tmp, { force: true });
      this.opts.log(`drover: run ${run.id}: cannot save its cache: ${message(err)}`);
    }
  }

  private stageUsage(run: Run, stage: RunStage, u: RunUsage | null | undefined): StageUsage {
    return {
      utime: u?.utime ?? null,
      stime: u?.stime ?? null,
      max_rss: u?.maxrss ?? null,
      network_in: run.network[stage].in,
      network_out: run.network[stage].out,
    };
  }

  private recordStage(run: Run, stage: RunStage, exit: StageExit): void {
    run.exitData[stage] = exit;
    this.emit(run, 'finish', { stage, exit_data: exit });
  }

  private onExchange(run: Run, e: ProxyExchange): void {
    if (!run.stage) return;
    const counts = run.network[run.stage];
    counts.in += e.bytesIn;
    counts.out += e.bytesOut;
    this.emit(run, 'network', {
      stage: run.stage,
      method: e.method,
      url: e.url,
      status: e.status,
      bytes_in: e.bytesIn,
      bytes_out: e.bytesOut,
      ...(e.error ? { error: e.error } : {}),
    });
  }

  /** The actor came to rest: the stage that ran is finished, then `last`. Once. */
  private async finish(run: Run): Promise<void> {
    // Everything up to `last` runs in the same turn as the snapshot that called it.
    // An agent stopping interrupts it: the next agent reports that (see resume()).
    if (run.finishedAt || !run.proc || this.closing) return;
    run.finishedAt = new Date();
    clearTimeout(run.runTimer);
    clearTimeout(run.cancelTimer);
    const snap = run.proc.actor.getSnapshot();
    if (run.stage === 'execute' && !run.exitData.execute) {
      const exit = snap.context.lastExit;
      const memory = run.options?.memory;
      const oom = Boolean(exit?.oomKills);
      const why = run.timedOut
        ? `stopped after max_run_time of ${run.options?.maxRunTime} s`
        : oom
          ? `out of memory: the kernel killed it at the memory limit of ${memory} bytes`
          : run.cancelled
            ? 'cancelled'
            : run.stopRequested
              ? 'stopped on request'
              : exit?.error;
      this.recordStage(run, 'execute', {
        exit_code: exit?.code ?? null,
        signal: exit?.signal ?? null,
        usage: this.stageUsage(run, 'execute', exit?.usage),
        ...(run.stopRequested ? { stopped: true } : {}),
        ...(run.timedOut ? { timed_out: true } : {}),
        ...(run.cancelled ? { cancelled: true } : {}),
        ...(oom ? { oom_killed: true } : {}),
        ...(why ? { error: why } : {}),
      });
    } else if (run.stage === 'build' && !run.exitData.build) {
      // Stopped while building: the machine left `building` before the build's own catch ran.
      this.recordStage(run, 'build', {
        exit_code: null,
        usage: this.stageUsage(run, 'build', null),
        ...(run.stopRequested ? { stopped: true } : {}),
        ...(run.cancelled ? { cancelled: true } : {}),
        error: run.cancelled
          ? 'cancelled'
          : run.stopRequested
            ? 'stopped on request'
            : (snap.context.errors.at(-1) ?? 'the build did not finish'),
      });
    }
    const stage = run.stage;
    run.stage = null;
    if (run.cancelled) this.emit(run, 'cancelled', { stage, reason: 'cancelled' });
    if (run.phase !== 'finalised') run.phase = 'finished';
    // Synchronously with the actor's last step: a finalise closes the log right after it.
    run.lastEventId = this.emit(run, 'last', {});
    if (run.phase === 'finished') this.arm(run, this.opts.ttlMs);
    this.save(run);
    this.active.delete(run.id);
    this.pump();
    await run.proxy?.close();
    run.endedResolve();
  }

  /** Stops the run (TERM, grace, KILL to its tree); resolves with whether it was running, once it is over. */
  async stop(run: Run): Promise<boolean> {
    if (run.phase === 'finalised') throw new RunError(404, `run ${run.id}: finalised`, 'id');
    if (this.queue.has(run.id)) return this.cancel(run, null, 0);
    if (!run.proc || run.finishedAt) return false;
    run.stopRequested = true;
    run.proc.actor.send({ type: 'STOP', reason: 'stop requested' });
    await run.ended;
    return true;
  }

  /** Finalise: stop if needed, remove its directory, app, cache and files; its log stays for the retention time. */
  async finalise(run: Run): Promise<void> {
    if (run.phase === 'finalised') return;
    if (this.queue.has(run.id)) await this.cancel(run, null, 0);
    this.disarm(run);
    if (run.proc && !run.finishedAt) run.stopRequested = true;
    const wasStarted = Boolean(run.proc);
    run.phase = 'finalised';
    await this.store?.remove(run.id).catch((err) => this.opts.log(`drover: run ${run.id}: cannot forget it: ${message(err)}`));
    if (wasStarted) {
      await this.supervisor.removeRun(run.slug);
      await run.ended;
    } else {
      await this.logs.retire(run.slug);
    }
    await run.proxy?.close();
    await rm(run.dir, { recursive: true, force: true, maxRetries: 3 });
    // Kept (without files) while its log is readable, so /runs/ID/events still answers.
    const t = setTimeout(() => {
      this.forgetTimers.delete(t);
      if (this.runs.get(run.id) === run) this.runs.delete(run.id);
    }, this.opts.retentionMs);
    t.unref();
    this.forgetTimers.add(t);
  }

  private arm(run: Run, ms: number): void {
    this.disarm(run);
    run.ttlTimer = setTimeout(() => {
      run.ttlTimer = undefined;
      this.finalise(run).catch((err) => this.opts.log(`drover: run ${run.id}: cannot finalise: ${message(err)}`));
    }, ms);
    run.ttlTimer.unref();
  }

  private disarm(run: Run): void {
    clearTimeout(run.ttlTimer);
    run.ttlTimer = undefined;
  }

  private emit(run: Run, type: string, data: Record<string, unknown>): number {
    // While the agent stops nothing is said: the next agent tells how it ended.
    if (this.closing) return 0;
    const id = run.events.append(type, { run_id: run.id, data });
    if (!id) return 0;
    for (const l of this.listeners) {
      try {
        l({ id, runId: run.id, type, data }, run);
      } catch {
        // one listener's failure is not the run's
      }
    }
    return id;
  }

  /** Appends an event of drover's (a callback attempt) to a run's log, if the run is still known. */
  note(id: string, type: string, data: Record<string, unknown>): void {
    const run = this.runs.get(id);
    if (run && run.phase !== 'finalised') run.events.append(type, { run_id: run.id, data });
  }

  /** The file a path of the run's output refers to (see files.ts for the checks). */
  async fileSize(path: string): Promise<number | null> {
    try {
      const st = await stat(path);
      return st.isFile() ? st.size : null;
    } catch {
      return null;
    }
  }

  /** Streams a stored archive (app or cache). */
  readArchive(file: string): Readable {
    return createReadStream(file);
  }

  /**
   * The agent is stopping: runs building or executing are stopped (the next agent reports them
   * interrupted, or queues them again); queued, unstarted and finished runs stay on disk for it.
   */
  async shutdown(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.shutdownHooks].map((h) => h().catch((err) => this.opts.log(`drover: while stopping: ${message(err)}`))));
    this.queue.clear();
    this.specs.clear();
    for (const t of this.forgetTimers) clearTimeout(t);
    this.forgetTimers.clear();
    for (const r of this.list()) this.disarm(r);
    await Promise.all(
      this.list().map(async (run) => {
        clearTimeout(run.runTimer);
        clearTimeout(run.cancelTimer);
        const actor = run.proc?.actor;
        if (actor && !run.finishedAt) {
          await new Promise<void>((resolve) => {
            const atRest = (v: unknown) => v === 'exited' || v === 'deleted';
            const sub = actor.subscribe((snap) => {
              if (atRest(snap.value) || snap.status !== 'active') {
                sub.unsubscribe();
                resolve();
              }
            });
            if (atRest(actor.getSnapshot().value) || actor.getSnapshot().status !== 'active') {
              sub.unsubscribe();
              resolve();
            } else actor.send({ type: 'STOP', reason: 'agent shutting down' });
          });
        }
        await run.proxy?.close();
      }),
    );
    await this.store?.close();
    this.runs.clear();
  }
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** Quotes one word for /bin/sh. */
function shq(word: string): string {
  return /^[A-Za-z0-9_\/.,:=+@%-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
