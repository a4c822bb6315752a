import { slugOf } from '../process/slug.js';
import { createActor, type Actor } from 'xstate';
import type { Config } from './config.js';
import { ReleaseCache, RememberedBuildFailure, type Archive } from '../release/cache.js';
import { specOf, type DesiredProcess, type RestartRequest } from '../store/desired.js';
import type { EventLog } from '../store/event-log/log.js';
import type { Store } from '../store/store.js';
import { agentEnv } from '../release/env.js';
import { checkSpec, resolveLaunch, type Launch } from '../release/launch.js';
import { Cgroups } from '../os/cgroup.js';
import { Child, helperServes } from '../os/child.js';
import { resolveUser, userEnv, type RunAs } from '../os/identity.js';
import { diffSnapshots, type SnapshotView } from '../process/changes.js';
import { InspectionHub } from '../process/inspection.js';
import { groupMeter, type GroupMeter } from '../os/meter.js';
import { processMachine, type ChildHandle, type ProcessDeps } from '../process/machine.js';
import { watchReadiness } from '../os/ready.js';
import { ProcessMetrics } from '../process/metrics.js';
import { shouldRestart, type RestartPolicy } from '../process/policy.js';
import { exitText, message, seconds } from '../process/wording.js';
import { OutputHub } from './output.js';
import { PortPool } from '../os/ports.js';
import { groupHasLiveMembers, signalGroup } from '../os/proc.js';
import { ProcessRecorder } from '../process/record.js';
import { UsageSampler } from '../os/sampler.js';
import { findWaitHelper } from '../os/wait-helper.js';
import { join } from 'node:path';
import { checkExecutable, prepareFds, SetupError } from '../os/fds.js';
import type { ArgvSpec, LaunchOrigin } from '../release/launch.js';
import { procKey, procSlug, ProcRuntime } from './procs.js';
import { sharedSpawnHelper, type SpawnHelper } from '../os/spawn-helper.js';

/**
 * Restart delays are up to 10% shorter than the backoff says, at random: a hundred processes
 * that crash together (their database went away) would otherwise restart in lockstep, each
 * burst holding the event loop for all of them at once.
 */
const RESTART_JITTER = 0.1;

/** What a create request asks for; the agent adds the slug, the port and the time. */
export type CreateRequest = Pick<DesiredProcess, 'app' | 'node' | 'processType' | 'sourceUrl' | 'env' | 'restart' | 'argv' | 'readiness'> &
  Partial<Pick<DesiredProcess, 'job' | 'callback'>> & {
    /** Start from this process's env (config kept across a deploy that adds processes); `env` is merged over it. */
    envFrom?: string;
  };

/** A replace: a new source and/or env, built while the old child runs, then swapped in. */
export interface ReplaceOptions {
  sourceUrl?: string;
  env?: Record<string, string>;
  /** Merge `env` into the current env (else it replaces it). */
  envMerge?: boolean;
  strategy: 'stop-first' | 'start-first';
  requestId?: string;
}

/** How a replace went: the ports, and how long no child answered (null when no readiness was checked). */
export interface ReplaceOutcome {
  strategy: 'stop-first' | 'start-first';
  fromPort: number;
  toPort: number;
  /** Between the old child's stop and the new one's readiness; 0 for start-first. */
  downMs: number | null;
  /** What changed: "source", "env NAME" (names only). Empty: nothing to do, nothing was stopped. */
  changed: string[];
}

/** The new release could not be built or started: the old child runs on untouched. */
export class ReplaceError extends Error {}

export type { RestartRequest };

/** The restart policy in force for a process. */
export interface RestartSettings {
  policy: RestartPolicy;
  delayMs: number;
  maxDelayMs: number;
  resetAfterMs: number;
}

export type { Launch };

/** Limits a run's child gets beyond a process's. */
export interface ChildLimits {
  /** Hard memory limit of the tree: the cgroup's when the run gets one that can carry it. */
  memoryBytes?: number;
}

/**
 * A run-to-completion actor (POST /runs): the same machine, log, inspector and usage as a
 * process, restart policy `never`, failed builds not retried, not in the desired state. Its
 * owner supplies what `downloading` and `building` do (the uploaded app, the run's own build).
 */
export interface RunActorRequest {
  slug: string;
  app: string;
  node: string;
  processType: string;
  env: Record<string, string>;
  events: EventLog;
  prepare(signal: AbortSignal): Promise<unknown>;
  build(proc: ManagedProcess, prepared: unknown, signal: AbortSignal): Promise<Launch>;
  limits?: ChildLimits;
}

type ProcessActor = Actor<typeof processMachine>;

/** A supervised process: its saved record (the one copy of what was asked for) and what runs it. */
export class ManagedProcess {
  readonly createdAt: Date;
  readonly actor: ProcessActor;
  /** When the current (or last) child was started. */
  startedAt?: Date;
  /** The save of the record's last `stopped` change; see saved(). */
  saving: Promise<void> = Promise.resolve();
  /** The X-Request-Id of the create: sent with its downloads, recorded in the events it caused. */
  requestId?: string;
  /** Set by a restart request: the next build runs even when this release's build is known to fail. */
  forceRebuild = false;
  /** The current child and when it became ready (accepted connections on $PORT); see checksReadiness. */
  current: { child: ChildHandle; readyAt: Date | null } | null = null;
  /** A replace under way: a second one is refused (409). */
  replacing = false;
  /** What the current (or last) child runs and where that comes from (Procfile, package.json, argv). */
  origin?: LaunchOrigin;
  /** Set for a proc (POST /procs): its errors, captures and end. */
  proc?: ProcRuntime;
  /** A long-running process, or a run (POST /runs) that runs once. */
  kind: 'process' | 'run' = 'process';
  /** Limits for its children (runs). */
  limits: ChildLimits = {};
  /** Settles once the actor knows the current child's pids (with an exit helper, a moment after it starts); null once it has. */
  private appPidPending: Promise<unknown> | null = null;

  /** Called by the supervisor for each child it starts. */
  childStarted(appPid: Promise<unknown>): void {
    // One turn later, so the actor has taken in the pid (its own handler runs in the same turn).
    const pending = appPid.then(() => new Promise((r) => setImmediate(r)));
    this.appPidPending = pending;
    const settled = () => {
      if (this.appPidPending === pending) this.appPidPending = null;
    };
    pending.then(settled, settled);
  }

  /** Whether the actor knows the current child's pids: pidSettled() has nothing to wait for. */
  get pidKnown(): boolean {
    return this.appPidPending === null;
  }

  /**
   * Resolves once a child just started has its pid in the status, bounded by `ms`: a document
   * rendered after it shows `running` with the app's pid, never null for want of a moment.
   */
  async pidSettled(ms = 2000): Promise<void> {
    const pending = this.appPidPending;
    if (!pending) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([pending, new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  constructor(
    readonly record: DesiredProcess,
    /** Its event log; every output line passes through it first, and gets its id there. */
    readonly events: EventLog,
    readonly output: OutputHub,
    readonly metrics: ProcessMetrics,
    readonly restartSettings: RestartSettings,
    actorFor: (proc: ManagedProcess) => ProcessActor,
  ) {
    this.createdAt = new Date(record.createdAt);
    this.actor = actorFor(this);
  }

  // Read through to the record, so the status documents see what is saved.
  get slug(): string {
    return this.record.slug;
  }
  get app(): string {
    return this.record.app;
  }
  get node(): string {
    return this.record.node;
  }
  get processType(): string {
    return this.record.processType;
  }
  get sourceUrl(): string {
    return this.record.sourceUrl;
  }
  get env(): Record<string, string> {
    return this.record.env;
  }
  get port(): number {
    return this.record.port;
  }
  /**
   * Web processes, and any created with `readiness: {port: true}`, are ready once $PORT accepts
   * connections. Procs (no $PORT) and runs (they run once, nothing to restart) are not checked.
   */
  get checksReadiness(): boolean {
    if (this.proc || this.kind === 'run') return false;
    return this.record.readiness?.port ?? this.record.processType === 'web';
  }
  /** When the current child became ready: for a process without a readiness check, when it started. */
  get readyAt(): Date | null {
    if (this.actor.getSnapshot().value !== 'running' || !this.current) return null;
    return this.checksReadiness ? this.current.readyAt : (this.startedAt ?? null);
  }

  /** Resolves once its saved desired state reflects a stop or start that has taken effect. */
  saved(): Promise<void> {
    return this.saving;
  }
}

export class ConflictError extends Error {}

/** Errors quote archive entry names and the like: no newline or escape sequence of theirs reaches the log. */
function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export { slugOf };

/** Names added, removed or changed between two envs (never the values). */
export function envChanges(before: Record<string, string>, after: Record<string, string>): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].filter((n) => before[n] !== after[n]).sort();
}

/** Owns every process actor: creates them, routes deletes, stops them all on shutdown. */
export class Supervisor {
  private readonly procs = new Map<string, ManagedProcess>();
  /** Slugs claimed by a create or restore still under way, so a concurrent twin gets 409. */
  private readonly reserved = new Set<string>();
  private readonly deletions = new Map<string, Promise<void>>();
  /** Set by shutdown: a create still in flight is saved but not started (the next agent starts it). */
  private closing = false;
  private readonly ports = new PortPool();
  /** The environment every child and build step starts from (the agent's minus DROVER_*, and --user's). */
  readonly baseEnv: Record<string, string>;
  /** How runs are measured here (see usage.ts): found once, used for every child. */
  readonly sampler: UsageSampler;
  readonly cgroups: Cgroups | null;
  readonly waitHelper: string | null;
  /** Measures build steps (runs' builds too). */
  readonly buildMeter: GroupMeter;
  /**
   * The resident spawn helper, or null: children are then spawned by the agent itself. Asked
   * at each start, so a helper that died is replaced by a new one.
   */
  get spawner(): SpawnHelper | null {
    return this.config.spawnHelper ? sharedSpawnHelper() : null;
  }
  /** Every actor's state transitions, for /inspect and the dashboard. */
  readonly inspection: InspectionHub;

  constructor(
    private readonly config: Config,
    private readonly releases: ReleaseCache,
    private readonly store: Store,
    private readonly log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
    /** The user children run as (--user); undefined for the agent's own. */
    private readonly runAs?: RunAs,
  ) {
    this.baseEnv = { ...agentEnv(process.env), ...(runAs ? userEnv(runAs) : {}) };
    this.inspection = new InspectionHub(config.clientMaxBufferedBytes);
    this.cgroups = config.cgroups ? Cgroups.detect() : null;
    const cgroups = this.cgroups;
    // An idle fleet in run cgroups costs one read per tick instead of a /proc pass (sampler.ts).
    this.sampler = new UsageSampler({ intervalMs: config.usageSampleMs, activity: cgroups ? () => cgroups.cpuUsage() : undefined });
    this.waitHelper = findWaitHelper();
    this.buildMeter = groupMeter(this.cgroups, this.sampler, this.waitHelper);
  }

  /** One line for the operator: where exit detail and usage figures come from on this host. */
  describeMeasurement(): string {
    const cg = this.cgroups ? this.cgroups.describe() : 'no cgroups';
    const helper = this.spawner
      ? 'spawn helper (exact status, core dumps, wait4)'
      : this.waitHelper
        ? 'exit helper (exact status, core dumps, wait4)'
        : 'no exit helper (core dumps inferred, no wait4)';
    return `usage: ${cg}; ${helper}; live samples from /proc every ${this.config.usageSampleMs} ms`;
  }

  /** Fetches an archive through the release cache (blob URLs from disk), as a create's download does. */
  fetchArchive(url: string, signal?: AbortSignal, authorization?: string): Promise<Archive> {
    return this.releases.fetch(url, { signal, authorization });
  }

  /** The user children run as (--user), if any. */
  get childUser(): RunAs | undefined {
    return this.runAs;
  }

  /** The event log of a process, or of a deleted one still within its retention time. */
  eventLog(slug: string): EventLog | undefined {
    return this.store.events.get(slug);
  }

  /** A long-running process (runs are reached through their registry, see runs.ts). */
  get(slug: string): ManagedProcess | undefined {
    const p = this.procs.get(slug);
    return p?.kind === 'process' ? p : undefined;
  }

  /** The long-running processes. */
  list(): ManagedProcess[] {
    return [...this.procs.values()].filter((p) => p.kind === 'process');
  }

  /** Every actor: processes and runs. */
  private all(): ManagedProcess[] {
    return [...this.procs.values()];
  }

  /** Whether a run's memory limit can be a cgroup's here (else it is RLIMIT_AS, see runs.ts). */
  get cgroupMemoryLimits(): boolean {
    return Boolean(this.cgroups?.memory) && !(this.runAs && !this.waitHelper);
  }

  /**
   * Creates a run's actor (restart policy `never`) and starts it on the next turn. Not saved in
   * the desired state: runs are short-term, and an agent restart ends them.
   */
  async createRun(req: RunActorRequest): Promise<ManagedProcess> {
    const { slug, events } = req;
    if (this.procs.has(slug) || this.reserved.has(slug)) throw new ConflictError(`"${slug}" already exists`);
    if (this.closing) throw new ConflictError('the agent is shutting down');
    this.reserved.add(slug);
    let port: number;
    try {
      // A $PORT like any process's: a scraper may start a helper server of its own.
      port = await this.ports.reserve();
    } finally {
      this.reserved.delete(slug);
    }
    const record: DesiredProcess = {
      slug,
      app: req.app,
      node: req.node,
      processType: req.processType,
      sourceUrl: '',
      env: { ...req.env },
      restart: { policy: 'never' },
      port,
      createdAt: new Date().toISOString(),
    };
    const output = new OutputHub((stream, line) => events.output(stream, line));
    const settings = this.restartSettings(record.restart);
    const recorder = new ProcessRecorder(events, port);
    const observe = this.inspection.observer(slug);
    const proc = new ManagedProcess(record, events, output, new ProcessMetrics(this.config.usageSamples), settings, (self) =>
      createActor(processMachine, {
        id: slug,
        input: {
          deps: {
            download: (signal) => req.prepare(signal),
            build: (prepared, signal) => req.build(self, prepared, signal),
            start: (launch) => this.spawn(self, launch as Launch, port).child,
            backoff: { initialMs: settings.delayMs, maxMs: settings.maxDelayMs, resetAfterMs: settings.resetAfterMs },
            stopGraceMs: this.config.stopGraceMs,
            minUptimeMs: 0,
          },
          maxErrors: this.config.maxErrors,
          policy: 'never',
          retryFailures: false,
        },
        inspect: (ev) => {
          recorder.inspect(ev);
          observe(ev);
        },
      }),
    );
    proc.kind = 'run';
    proc.limits = { ...req.limits };
    this.procs.set(slug, proc);
    recorder.begin(proc.actor, 'created', {});
    proc.actor.start();
    setImmediate(() => proc.actor.send({ type: 'START' }));
    return proc;
  }

  /** Stops a run's actor (if it still runs) and forgets it; its log is retired (readable for the retention time). */
  async removeRun(slug: string): Promise<void> {
    const proc = this.procs.get(slug);
    if (!proc || proc.kind !== 'run') return;
    let deletion = this.deletions.get(slug);
    if (!deletion) {
      deletion = (async () => {
        await this.stop(proc, 'run finalised');
        await this.store.events.retire(slug);
        this.procs.delete(slug);
        this.ports.release(proc.port);
      })().finally(() => this.deletions.delete(slug));
      this.deletions.set(slug, deletion);
    }
    await deletion;
  }

  /**
   * Registers the process in `pending` and starts it on the next turn, so its creator sees
   * `pending`. It is durable (restored by the next agent) once this resolves.
   */
  async create(req: CreateRequest, opts: { requestId?: string } = {}): Promise<ManagedProcess> {
    const slug = slugOf(req.app, req.node);
    if (this.procs.has(slug) || this.reserved.has(slug)) throw new ConflictError(`process "${slug}" already exists`);
    let baseEnv: Record<string, string> = {};
    if (req.envFrom !== undefined) {
      const from = this.procs.get(req.envFrom);
      if (!from) throw new ConflictError(`env_from: no process "${req.envFrom}"`);
      baseEnv = from.record.env;
    }
    this.reserved.add(slug); // before awaiting, so a concurrent twin gets 409
    let port = 0;
    let events: EventLog | undefined;
    try {
      port = await this.ports.reserve();
      events = await this.store.events.open(slug);
      const record: DesiredProcess = {
        slug,
        app: req.app,
        node: req.node,
        processType: req.processType,
        sourceUrl: req.sourceUrl,
        env: { ...baseEnv, ...req.env },
        ...(req.argv ? { argv: req.argv } : {}),
        ...(req.job ? { job: { ...req.job } } : {}),
        ...(req.restart ? { restart: { ...req.restart } } : {}),
        ...(req.readiness ? { readiness: { ...req.readiness } } : {}),
        ...(req.callback ? { callback: { ...req.callback } } : {}),
        port,
        createdAt: new Date().toISOString(),
      };
      await this.store.desired.put(record);
      return this.launch(record, events, false, opts.requestId);
    } catch (err) {
      if (port) this.ports.release(port);
      if (events) await this.store.events.abandon(slug);
      throw err;
    } finally {
      this.reserved.delete(slug);
    }
  }

  /** The proc with this client id, if any. */
  getProc(id: string): ManagedProcess | undefined {
    const p = this.procs.get(procSlug(id));
    return p?.proc?.id === id ? p : undefined;
  }

  /** Every proc (POST /procs), in the order they were created. */
  listProcs(): ManagedProcess[] {
    return this.list().filter((p) => p.proc);
  }

  /**
   * Creates a proc: an argv spec with no source archive, run once (restart policy never). Its
   * `downloading` and `building` resolve at once; what keeps it from starting (a missing
   * executable, a file it cannot open) is its error, not the request's.
   */
  async createProc(id: string, spec: ArgvSpec): Promise<ManagedProcess> {
    const slug = procSlug(id);
    if (this.procs.has(slug) || this.reserved.has(slug)) throw new ConflictError(`duplicate proc id: ${id}`);
    this.reserved.add(slug);
    let events: EventLog | undefined;
    try {
      events = await this.store.events.open(slug);
      const record: DesiredProcess = {
        slug,
        app: 'proc',
        node: procKey(id),
        processType: 'proc',
        sourceUrl: '',
        env: {},
        argv: spec,
        restart: { policy: 'never' },
        port: 0,
        createdAt: new Date().toISOString(),
        proc: { id },
      };
      await this.store.desired.put(record);
      return this.launch(record, events, false);
    } catch (err) {
      if (events) await this.store.events.abandon(slug);
      throw err;
    } finally {
      this.reserved.delete(slug);
    }
  }

  /** Brings back a process the previous agent had, with its port and its event log. */
  async restore(record: DesiredProcess): Promise<ManagedProcess> {
    this.reserved.add(record.slug);
    this.ports.claim(record.port);
    try {
      const events = await this.store.events.open(record.slug);
      events.append('agent_restarted', { agent_pid: process.pid });
      return this.launch(record, events, true);
    } catch (err) {
      this.ports.release(record.port);
      throw err;
    } finally {
      this.reserved.delete(record.slug);
    }
  }

  /** The policy the request asked for, with the agent's settings for what it left out. */
  private restartSettings(req: RestartRequest | undefined): RestartSettings {
    return {
      policy: req?.policy ?? 'always',
      delayMs: req?.delayMs ?? this.config.backoffInitialMs,
      maxDelayMs: req?.maxDelayMs ?? Math.max(this.config.backoffMaxMs, req?.delayMs ?? 0),
      resetAfterMs: req?.resetAfterMs ?? this.config.backoffResetMs,
    };
  }

  /** Creates the actor of a saved record, registers it and starts it on the next turn. */
  private launch(record: DesiredProcess, events: EventLog, restored: boolean, requestId?: string): ManagedProcess {
    const { slug } = record;
    // The log numbers each line before any client sees it.
    const output = new OutputHub((stream, line) => events.output(stream, line));
    const settings = this.restartSettings(record.restart);
    // The port can change (a start-first replace): the recorder reads the record's.
    const recorder = new ProcessRecorder(events, () => record.port);
    const observe = this.inspection.observer(slug);
    const proc = new ManagedProcess(record, events, output, new ProcessMetrics(this.config.usageSamples), settings, (self) =>
      createActor(processMachine, {
        id: slug,
        input: {
          deps: this.deps(self, restored),
          maxErrors: this.config.maxErrors,
          policy: settings.policy,
          restarts: record.restarts ?? 0,
        },
        inspect: (ev) => {
          recorder.inspect(ev);
          observe(ev);
        },
      }),
    );
    proc.requestId = requestId;
    if (record.proc) {
      const rt = new ProcRuntime(
        record.proc.id,
        join(this.config.stateDir, 'procs', record.node),
        record.argv?.fds ?? [],
        this.config.procCaptureMaxBytes,
      );
      proc.proc = rt;
      if (restored) {
        rt.restored = true;
        rt.restoreFrom(record.proc);
        // It ran under the previous agent, which died without seeing its end: say so, never re-run it.
        if (!record.proc.final) rt.errors.push('the agent restarted while the proc was running; how it ended is unknown');
      }
    }
    this.procs.set(slug, proc);
    recorder.begin(proc.actor, restored ? 'restored after an agent restart' : 'created', requestId ? { request_id: requestId } : {});
    this.watch(proc);
    proc.actor.start();
    if (!this.closing) {
      // A process that was kept down comes back down; the rest start again.
      // A restored proc is over (it runs once): it comes back down, with its end or its loss.
      const down = restored && (record.stopped || record.proc);
      setImmediate(() => proc.actor.send(down ? { type: 'STOP', reason: 'kept down across the agent restart' } : { type: 'START' }));
      if (restored && record.proc && !record.proc.final) void this.saveProcFinal(proc);
    }
    return proc;
  }

  /** Warns of each new error, and saves whether the process is kept down when that changes. */
  private watch(proc: ManagedProcess): void {
    const { slug, record } = proc;
    const view = (snap: ReturnType<typeof proc.actor.getSnapshot>): SnapshotView => ({ value: snap.value, context: snap.context });
    let prev = view(proc.actor.getSnapshot());
    let down = Boolean(record.stopped);
    proc.actor.subscribe((snap) => {
      const next = view(snap);
      const { newError } = diffSnapshots(prev, next);
      prev = next;
      if (newError !== null && !proc.proc) this.log(`drover: ${slug}: ${oneLine(newError)}`);
      if (proc.proc && snap.value === 'exited' && !proc.proc.restored && !record.proc?.final) void this.saveProcFinal(proc);
      // Restarts are saved so that an agent restart does not count from 0 again.
      let save = false;
      let saveLater = false;
      if (snap.context.restarts !== (record.restarts ?? 0) && !this.closing && !this.deletions.has(slug)) {
        record.restarts = snap.context.restarts;
        saveLater = true;
      }
      // Kept down (stopped, or finished under its restart policy): saved, so it comes back down
      // after an agent restart. `pending` (where a restored process starts) decides nothing.
      const isDown = snap.value === 'exited' && !shouldRestart(snap.context);
      // Never once a delete is under way: saving would bring the process back.
      if (isDown !== down && snap.value !== 'pending' && snap.status === 'active' && !this.closing && !this.deletions.has(slug)) {
        down = isDown;
        record.stopped = isDown || undefined;
        save = true;
      }
      if (save) proc.saving = this.store.desired.put(record).catch((err) => this.log(`drover: ${slug}: ${message(err)}`));
      else if (saveLater) this.store.desired.putLater(record);
    });
  }

  /**
   * Deletes a process in any state; resolves once its child is gone. The deletion is durable
   * before anything is stopped; if it cannot be saved, nothing changes and this throws.
   */
  async delete(slug: string): Promise<boolean> {
    const proc = this.get(slug);
    if (!proc) return false;
    let deletion = this.deletions.get(slug);
    if (!deletion) {
      deletion = (async () => {
        await this.store.desired.remove(slug);
        await this.stop(proc, 'delete requested');
        await this.store.events.retire(slug);
        await proc.proc?.removeFiles();
        this.procs.delete(slug);
        if (proc.port) this.ports.release(proc.port);
      })().finally(() => this.deletions.delete(slug));
      this.deletions.set(slug, deletion);
    }
    await deletion;
    return true;
  }

  /**
   * Replaces what a process runs, in its own actor (same slug, event log and restart count):
   * downloads and builds the new release while the old child runs on, then swaps. stop-first
   * stops the old child and starts the new one on the same $PORT; start-first starts the new
   * one on a new port, waits until it is ready, moves the process to that port, then stops the
   * old one. Anything failing before the swap throws ReplaceError and leaves the old child as it was.
   */
  async replace(slug: string, opts: ReplaceOptions): Promise<ReplaceOutcome> {
    const proc = this.procs.get(slug);
    if (!proc) throw new ConflictError(`process "${slug}" does not exist`);
    if (proc.proc || proc.kind === 'run')
      throw new ConflictError(`"${slug}" is a ${proc.proc ? 'proc' : 'run'}: it has no release to replace`);
    const live = () => !this.deletions.has(slug) && this.procs.get(slug) === proc && !proc.actor.getSnapshot().context.deleting;
    if (!live()) throw new ConflictError(`process "${slug}" is being deleted`);
    if (proc.replacing) throw new ConflictError(`process "${slug}" is already being replaced`);
    proc.replacing = true;
    const { record, events } = proc;
    const traced = opts.requestId ? { request_id: opts.requestId } : {};
    const fromPort = record.port;
    const env = opts.envMerge ? { ...record.env, ...opts.env } : { ...(opts.env ?? record.env) };
    const next: DesiredProcess = { ...record, sourceUrl: opts.sourceUrl ?? record.sourceUrl, env };
    const changed = [
      ...(next.sourceUrl !== record.sourceUrl ? ['source'] : []),
      ...envChanges(record.env, next.env).map((n) => `env ${n}`),
    ];
    if (changed.length === 0 && opts.sourceUrl === undefined) {
      // Only env was given and it is what the process has: nothing to replace.
      proc.replacing = false;
      return { strategy: opts.strategy, fromPort, toPort: fromPort, downMs: null, changed };
    }
    events.append('replace_started', { strategy: opts.strategy, changed, ...traced });
    const stopFirst = opts.strategy === 'stop-first' || proc.actor.getSnapshot().context.stopped;
    let toPort = fromPort;
    const abort = new AbortController();
    const onDone = proc.actor.subscribe({ complete: () => abort.abort() });
    try {
      let launch: Launch;
      let archive: Archive;
      try {
        archive = await this.releases.fetch(next.sourceUrl, {
          signal: abort.signal,
          requestId: opts.requestId,
          onProgress: (bytes, total) => events.append('download', { bytes, total, ...traced }),
          unpack: true,
        });
        if (!stopFirst) toPort = await this.ports.reserve();
        launch = await this.build(proc, archive, abort.signal, { ...next, port: toPort });
      } catch (err) {
        if (toPort !== fromPort) this.ports.release(toPort);
        throw new ReplaceError(`the new release failed, the old one runs on: ${oneLine(message(err))}`);
      }
      if (!live()) {
        if (toPort !== fromPort) this.ports.release(toPort);
        throw new ConflictError(`process "${slug}" was deleted during the replace`);
      }
      let handle: ChildHandle | undefined;
      if (!stopFirst) {
        // start-first: the new child runs beside the old one until it accepts connections.
        const started = this.spawn(proc, launch, toPort, { detached: true });
        const ok = started.ready
          ? await Promise.race([started.ready, started.child.exited.then(() => false)])
          : await new Promise<boolean>((r) => {
              // No readiness check: it must at least outlive the minimum uptime.
              const t = setTimeout(() => r(true), this.config.minUptimeMs);
              void started.child.exited.then(() => (clearTimeout(t), r(false)));
            });
        if (!ok || !live()) {
          await started.child.stop(this.config.stopGraceMs);
          const exit = await started.child.exited;
          this.ports.release(toPort);
          const why = !live()
            ? 'the process was deleted meanwhile'
            : started.ready && !(await started.ready) && exit.endedAt - exit.startedAt >= this.config.bootTimeoutMs
              ? `did not bind $PORT (${toPort}) within ${seconds(this.config.bootTimeoutMs)}`
              : `it ${exitText(exit)}`;
          throw new ReplaceError(`the new release did not start, the old one runs on: ${why}`);
        }
        started.makeCurrent();
        handle = started.child;
      }
      // The swap: from here the process is the new release.
      Object.assign(record, { sourceUrl: next.sourceUrl, env: next.env, archive: archive.sha256, port: toPort });
      await this.store.desired.put(record);
      if (toPort !== fromPort) events.append('port_changed', { from: fromPort, to: toPort });
      // Clients that follow `port` need a moment to see the new one before the old one goes.
      if (handle && this.config.replaceDrainMs > 0) await new Promise((r) => setTimeout(r, this.config.replaceDrainMs));
      const stoppedAt = Date.now();
      const oldPgid = proc.actor.getSnapshot().context.pgid;
      proc.actor.send({ type: 'REPLACE', launch, ...(handle ? { child: handle } : {}), reason: `replaced (${opts.strategy})` });
      let downMs: number | null = null;
      if (record.stopped || proc.actor.getSnapshot().context.stopped) {
        downMs = null; // kept down: it takes the new release when started
      } else if (stopFirst) {
        // Measured until the new child answers (or, without a readiness check, runs).
        downMs = await this.waitNewChild(proc, oldPgid, stoppedAt);
      } else {
        // The new child answered all along; the answer waits until the actor has adopted it,
        // so the status document's pid is the new child's, as its port already is.
        await this.waitNewChild(proc, oldPgid, stoppedAt, true);
        downMs = 0;
      }
      if (toPort !== fromPort) {
        // The old child holds the old port until it is gone.
        const pgid = oldPgid;
        const until = Date.now() + this.config.stopGraceMs * 3 + 10_000;
        void (async () => {
          while (pgid !== null && Date.now() < until && (await groupHasLiveMembers(pgid))) await new Promise((r) => setTimeout(r, 100));
          this.ports.release(fromPort);
        })();
      }
      events.append('replaced', { strategy: opts.strategy, from_port: fromPort, to_port: toPort, down_ms: downMs, changed, ...traced });
      return { strategy: opts.strategy, fromPort, toPort, downMs, changed };
    } catch (err) {
      events.append('replace_failed', { error: message(err), ...traced });
      throw err;
    } finally {
      onDone.unsubscribe();
      proc.replacing = false;
    }
  }

  /** After a stop-first REPLACE: resolves with the time without a ready child, or null if none came up. */
  private waitNewChild(proc: ManagedProcess, oldPgid: number | null, since: number, needPid = false): Promise<number | null> {
    const bound = this.config.stopGraceMs * 3 + this.config.bootTimeoutMs + 5000;
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (v: number | null) => {
        clearTimeout(timer);
        clearInterval(poll);
        sub.unsubscribe();
        resolve(v);
      };
      const check = () => {
        const snap = proc.actor.getSnapshot();
        if (snap.status !== 'active') return finish(null);
        if (snap.value !== 'running' || snap.context.pgid === oldPgid || !proc.current) return;
        // An adopted child (start-first) runs already: wait until the actor knows its pid.
        if (needPid && snap.context.pid === null) return;
        const at = proc.readyAt;
        if (at) finish(Math.max(0, at.getTime() - since));
      };
      const sub = proc.actor.subscribe({ next: check, complete: () => finish(null) });
      // Readiness is no state change: poll it too.
      const poll = setInterval(check, 50);
      timer = setTimeout(() => finish(null), bound);
      check();
    });
  }

  /**
   * Stops every process gracefully and waits for all of them. They stay in the desired state:
   * the next agent on this state directory brings them back.
   */
  async shutdown(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.deletions.values()].map((d) => d.catch(() => {})));
    await Promise.all(this.all().map((p) => this.stop(p, 'agent shutting down')));
    // A proc stopped by the shutdown ended here: the next agent reports that end.
    await Promise.all(this.listProcs().map((p) => (p.record.proc?.final || p.proc?.restored ? null : this.saveProcFinal(p, true))));
    this.sampler.close();
    this.cgroups?.close();
  }

  /** Last resort: SIGKILL every child's group at once, without waiting. */
  killAll(): void {
    for (const p of this.procs.values()) {
      const pgid = p.actor.getSnapshot().context.pgid;
      if (pgid) signalGroup(pgid, 'SIGKILL');
    }
  }

  /** Saves a proc's end in its record (and its memory captures beside it), once. */
  private async saveProcFinal(proc: ManagedProcess, closing = false): Promise<void> {
    const { record, slug } = proc;
    const rt = proc.proc;
    if (!rt || !record.proc || record.proc.final || this.deletions.has(slug) || (this.closing && !closing)) return;
    try {
      const final = await rt.saveFinal();
      if (this.deletions.has(slug) || !this.procs.has(slug)) return;
      record.proc.final = final;
      record.stopped = true;
      await this.store.desired.put(record);
    } catch (err) {
      this.log(`drover: ${slug}: cannot save how the proc ended: ${message(err)}`);
    }
  }

  private async stop(proc: ManagedProcess, reason: string): Promise<void> {
    const done = new Promise<void>((resolve) => {
      const sub = proc.actor.subscribe({ complete: () => resolve() });
      if (proc.actor.getSnapshot().status === 'done') {
        sub.unsubscribe();
        resolve();
      }
    });
    proc.actor.send({ type: 'DELETE', reason });
    await done;
    proc.output.close();
  }

  /** The machine's outside world for one process: its release, its launch, its children. */
  private deps(proc: ManagedProcess, restored: boolean): ProcessDeps<Archive, Launch> {
    const { restartSettings: r } = proc;
    // A restored process first runs the release it ran before, from the cache: no network, and
    // no surprise upgrade if the URL now serves something else. Later downloads (after a
    // failure) go to the source again.
    let reuse = restored ? proc.record.archive : undefined;
    // A proc has no source: downloading and building resolve at once.
    const sourceless = proc.record.sourceUrl === '';
    return {
      download: async (signal) => {
        if (sourceless) return null as unknown as Archive;
        const cached = reuse ? await this.releases.cached(reuse) : null;
        reuse = undefined;
        return cached ? { ...cached, reused: true } : this.download(proc, signal);
      },
      build: (archive, signal) => (sourceless ? this.resolveProc(proc) : this.build(proc, archive, signal)),
      start: (launch) => this.spawn(proc, launch as Launch, proc.record.port).child,
      backoff: { initialMs: r.delayMs, maxMs: r.maxDelayMs, resetAfterMs: r.resetAfterMs, jitter: RESTART_JITTER },
      stopGraceMs: this.config.stopGraceMs,
      minUptimeMs: this.config.minUptimeMs,
    };
  }

  /** Fetches the source; a new archive is saved in the record, for the next restore. */
  private async download(proc: ManagedProcess, signal: AbortSignal): Promise<Archive> {
    const { record, slug, events, requestId } = proc;
    const traced = requestId ? { request_id: requestId } : {};
    const archive = await this.releases.fetch(record.sourceUrl, {
      signal,
      requestId,
      onProgress: (bytes, total) => events.append('download', { bytes, total, ...traced }),
      unpack: true,
    });
    if (record.archive !== archive.sha256 && !this.deletions.has(slug) && this.procs.has(slug)) {
      record.archive = archive.sha256;
      this.store.desired.put(record).catch((err) => this.log(`drover: ${slug}: ${message(err)}`));
    }
    return archive;
  }

  /**
   * What a proc runs, in the agent's working directory unless its spec says otherwise. A
   * failure here (an environment over the kernel's limits) is the proc's error when it starts,
   * never a retry: a proc runs once.
   */
  private async resolveProc(proc: ManagedProcess): Promise<Launch> {
    const { record } = proc;
    const spec = specOf(record);
    try {
      return await resolveLaunch({
        dir: process.cwd(),
        spec,
        agentEnv: this.baseEnv,
        env: {},
        port: 0,
        identity: { app: record.app, node: record.node, slug: record.slug, processType: record.processType },
      });
    } catch (err) {
      proc.proc?.errors.push(message(err));
      return { argv: spec.kind === 'argv' ? spec.argv : [], cwd: process.cwd(), env: {}, failed: true } as Launch;
    }
  }

  /** Builds the release (or finds it built) and resolves what the process runs in it. */
  private async build(proc: ManagedProcess, archive: Archive, signal: AbortSignal, record: DesiredProcess = proc.record): Promise<Launch> {
    const { events } = proc;
    const traced = proc.requestId ? { request_id: proc.requestId } : {};
    const spec = specOf(record);
    const force = proc.forceRebuild;
    proc.forceRebuild = false;
    events.append('build_started', { sha256: archive.sha256, ...traced, ...(force ? { forced: true } : {}) });
    let release;
    try {
      release = await this.releases.build(archive, {
        signal,
        env: { ...this.baseEnv, ...record.env },
        onLine: (line) => proc.output.publish('build', line),
        meter: this.buildMeter,
        // Right after unpacking, before any build step: a release this process cannot run is not built for it.
        check: (root) => checkSpec(root, spec),
        force,
      });
    } catch (err) {
      const remembered = err instanceof RememberedBuildFailure ? { remembered: true, failed_at: err.failedAt, log: err.log } : {};
      events.append('build_finished', {
        exit_code: (err as { exitCode?: number }).exitCode ?? null,
        error: message(err),
        ...remembered,
        ...traced,
      });
      throw err;
    }
    events.append('build_finished', { exit_code: 0, ...traced });
    proc.metrics.releaseBuilt(release.id, release.usage);
    return resolveLaunch({
      dir: release.root,
      spec,
      agentEnv: this.baseEnv,
      env: record.env,
      port: record.port,
      identity: { app: record.app, node: record.node, slug: record.slug, processType: record.processType },
    });
  }

  /**
   * A proc's program and fds, checked and opened before it starts: what fails here is the
   * proc's error (state `error`), in Procstar's words ("execve failed: …").
   */
  private procChildOptions(proc: ManagedProcess, rt: ProcRuntime, launch: Launch) {
    try {
      if ((launch as { failed?: boolean }).failed) throw new SetupError(rt.errors.at(-1) ?? 'cannot start');
      if (!launch.argv) throw new SetupError('a proc needs an argv');
      const exe = launch.exe ?? launch.argv[0];
      const path = checkExecutable(exe, launch.cwd);
      if (rt.fds.some((e) => e.spec.type === 'capture' && e.spec.mode === 'tempfile')) rt.ensureDir();
      const prepared = prepareFds(rt.fds, launch.cwd, (fd) => rt.tempfile(fd));
      // execve semantics: a name without a slash is a file in the cwd, never looked up in PATH.
      // drover's extension: a proc of its own user (validated at create: the agent is root).
      const user = launch.user;
      const runAs = user ? resolveUser(user) : this.runAs;
      return { exe: exe.includes('/') ? exe : path, prepared, captures: rt.captures, runAs };
    } catch (err) {
      if (!(launch as { failed?: boolean }).failed) rt.errors.push(message(err));
      throw err;
    }
  }

  /**
   * Starts one child of the process, measured, registered as a live group, throttled by its log.
   * A process checked for readiness is watched until it accepts connections on `port`; one that
   * does not within the boot timeout is stopped and restarted by its actor (unless `detached`: a
   * start-first replace, whose caller waits for `ready` itself and owns the child until adopted).
   */
  private spawn(
    proc: ManagedProcess,
    launch: Launch,
    port: number,
    opts: { detached?: boolean } = {},
  ): { child: Child; ready: Promise<boolean> | null; makeCurrent: () => void } {
    const { slug, events, metrics } = proc;
    const rt = proc.proc;
    const procOptions = rt ? this.procChildOptions(proc, rt, launch) : null;
    const runAs = procOptions ? procOptions.runAs : this.runAs;
    const spawner = helperServes({ ...launch, ...procOptions }) ? this.spawner : null;
    // A --user child cannot join a cgroup by itself; the exit or spawn helper does it as root.
    // The spawn helper makes the run's directories itself, off the event loop, unless a limit
    // must be written into them before the start.
    const lazy = spawner !== null && proc.limits.memoryBytes === undefined;
    const cgroup = runAs && !this.waitHelper && !spawner ? null : (this.cgroups?.create({ lazy }) ?? null);
    if (proc.limits.memoryBytes !== undefined && !cgroup?.limitMemory(proc.limits.memoryBytes)) {
      cgroup?.remove();
      throw new Error('the memory limit cannot be enforced: no cgroup with a memory controller for this run');
    }
    const { origin, ...command } = launch;
    const child = new Child({
      ...command,
      ...procOptions,
      runAs,
      onLine: (s, line) => proc.output.publish(s, line),
      maxLineLength: this.config.maxLineLength,
      helper: this.waitHelper,
      spawner,
      cgroup,
      sampler: this.sampler,
      onSample: (u) => metrics.sample(u),
    });
    const entry = { child: child as ChildHandle, readyAt: null as Date | null };
    if (!opts.detached) {
      proc.startedAt = new Date(child.startedAt);
      proc.childStarted(child.appPid);
      proc.current = entry;
      proc.origin = origin;
    }
    // The group is known at once from a direct spawn, a moment later from the spawn helper.
    let pid: number | undefined;
    void child.appPid.then(() => {
      pid = child.pid;
      if (pid && child.running) this.store.groups.add(pid, slug, 'child', child.leaderStarttime);
    });
    let ready: Promise<boolean> | null = null;
    let cancelReady = () => {};
    if (proc.checksReadiness) {
      const bootMs = this.config.bootTimeoutMs;
      const watch = watchReadiness(port, { timeoutMs: bootMs });
      cancelReady = watch.cancel;
      let exited = false;
      void child.exited.then(() => (exited = true));
      ready = watch.ready.then(async (ok) => {
        if (ok) {
          entry.readyAt = new Date();
          const appPid = (await child.appPid) ?? child.pid ?? null;
          const afterMs = entry.readyAt.getTime() - child.startedAt;
          events.append('ready', { pid: appPid, port, after_ms: afterMs });
          this.inspection.notice({ type: 'ready', slug, time: entry.readyAt.toISOString(), pid: appPid, port, after_ms: afterMs });
        } else if (!exited && !opts.detached && proc.current === entry) {
          // Heroku's R10: the child stays `running` but never answered; its actor stops and restarts it.
          proc.actor.send({ type: 'CHILD.UNREADY', error: `did not bind $PORT (${port}) within ${seconds(bootMs)}` });
        }
        return ok;
      });
    }
    // Once handed to its actor (start-first), the child is the current one.
    const makeCurrent = () => {
      proc.startedAt = new Date(child.startedAt);
      proc.childStarted(child.appPid);
      proc.current = entry;
      proc.origin = origin;
    };
    // When the log's queue is high (disk slower than the child), stop reading the child.
    if (events.isCongested) child.pauseOutput(true);
    const unwatch = events.onPressure((congested) => child.pauseOutput(congested));
    if (rt) {
      rt.startedAt = child.startedAt;
      void child.appPid.then((p) => (rt.pid = p ?? rt.pid));
    }
    void child.exited.then((exit) => {
      cancelReady();
      // Let the ended child go (its streams, splitters and promises): held until the next
      // start, a crash loop's children outlived a young-generation collection and were copied
      // and promoted, which made each scavenge pause longer.
      if (proc.current === entry) proc.current = null;
      if (rt) {
        // Before the actor hears of the exit: `terminated` comes with everything in place.
        rt.exit = exit;
        if (exit.error) rt.errors.push(exit.error);
        rt.noteDropped('setting proc_capture_max_bytes');
      }
      metrics.runEnded(exit.usage ?? null);
      unwatch();
      if (pid) this.store.groups.remove(pid);
    });
    return { child, ready, makeCurrent };
  }
}
