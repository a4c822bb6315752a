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
import { processMachine, type ProcessDeps } from '../process/machine.js';
import { ProcessMetrics } from '../process/metrics.js';
import { shouldRestart, type RestartPolicy } from '../process/policy.js';
import { message } from '../process/wording.js';
import { OutputHub } from './output.js';
import { PortPool } from '../os/ports.js';
import { signalGroup } from '../os/proc.js';
import { ProcessRecorder } from '../process/record.js';
import { UsageSampler } from '../os/sampler.js';
import { findWaitHelper } from '../os/wait-helper.js';
import { join } from 'node:path';
import { checkExecutable, prepareFds, SetupError } from '../os/fds.js';
import type { ArgvSpec } from '../release/launch.js';
import { procKey, procSlug, ProcRuntime } from './procs.js';
import { sharedSpawnHelper, type SpawnHelper } from '../os/spawn-helper.js';

/** What a create request asks for; the agent adds the slug, the port and the time. */
export type CreateRequest = Pick<DesiredProcess, 'app' | 'node' | 'processType' | 'sourceUrl' | 'env' | 'restart' | 'argv'> &
  Partial<Pick<DesiredProcess, 'job' | 'callback'>>;

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
  /** Set for a proc (POST /procs): its errors, captures and end. */
  proc?: ProcRuntime;
  /** A long-running process, or a run (POST /runs) that runs once. */
  kind: 'process' | 'run' = 'process';
  /** Limits for its children (runs). */
  limits: ChildLimits = {};
  /** Settles once the actor knows the current child's pids (with an exit helper, a moment after it starts). */
  private appPidKnown: Promise<unknown> = Promise.resolve();

  /** Called by the supervisor for each child it starts. */
  childStarted(appPid: Promise<unknown>): void {
    // One turn later, so the actor has taken in the pid (its own handler runs in the same turn).
    this.appPidKnown = appPid.then(() => new Promise((r) => setImmediate(r)));
  }

  /**
   * Resolves once a child just started has its pid in the status, bounded by `ms`: a document
   * rendered after it shows `running` with the app's pid, never null for want of a moment.
   */
  async pidSettled(ms = 2000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.appPidKnown, new Promise((r) => (timer = setTimeout(r, ms)))]);
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
    this.sampler = new UsageSampler({ intervalMs: config.usageSampleMs });
    this.cgroups = config.cgroups ? Cgroups.detect() : null;
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
            start: (launch) => this.startChild(self, launch as Launch),
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
        env: { ...req.env },
        ...(req.argv ? { argv: req.argv } : {}),
        ...(req.job ? { job: { ...req.job } } : {}),
        ...(req.restart ? { restart: { ...req.restart } } : {}),
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
    const { slug, port } = record;
    // The log numbers each line before any client sees it.
    const output = new OutputHub((stream, line) => events.output(stream, line));
    const settings = this.restartSettings(record.restart);
    const recorder = new ProcessRecorder(events, port);
    const observe = this.inspection.observer(slug);
    const proc = new ManagedProcess(record, events, output, new ProcessMetrics(this.config.usageSamples), settings, (self) =>
      createActor(processMachine, {
        id: slug,
        input: { deps: this.deps(self, restored), maxErrors: this.config.maxErrors, policy: settings.policy },
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
      // Kept down (stopped, or finished under its restart policy): saved, so it comes back down
      // after an agent restart. `pending` (where a restored process starts) decides nothing.
      const isDown = snap.value === 'exited' && !shouldRestart(snap.context);
      // Never once a delete is under way: saving would bring the process back.
      if (isDown !== down && snap.value !== 'pending' && snap.status === 'active' && !this.closing && !this.deletions.has(slug)) {
        down = isDown;
        record.stopped = isDown || undefined;
        proc.saving = this.store.desired.put(record).catch((err) => this.log(`drover: ${slug}: ${message(err)}`));
      }
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
      start: (launch) => this.startChild(proc, launch),
      backoff: { initialMs: r.delayMs, maxMs: r.maxDelayMs, resetAfterMs: r.resetAfterMs },
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
  private async build(proc: ManagedProcess, archive: Archive, signal: AbortSignal): Promise<Launch> {
    const { record, events } = proc;
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

  /** Starts one child of the process, measured, registered as a live group, throttled by its log. */
  private startChild(proc: ManagedProcess, launch: Launch): Child {
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
    const child = new Child({
      ...launch,
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
    proc.startedAt = new Date(child.startedAt);
    proc.childStarted(child.appPid);
    // The group is known at once from a direct spawn, a moment later from the spawn helper.
    let pid: number | undefined;
    void child.appPid.then(() => {
      pid = child.pid;
      if (pid && child.running) this.store.groups.add(pid, slug, 'child');
    });
    // When the log's queue is high (disk slower than the child), stop reading the child.
    if (events.isCongested) child.pauseOutput(true);
    const unwatch = events.onPressure((congested) => child.pauseOutput(congested));
    if (rt) {
      rt.startedAt = child.startedAt;
      void child.appPid.then((p) => (rt.pid = p ?? rt.pid));
    }
    void child.exited.then((exit) => {
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
    return child;
  }
}
