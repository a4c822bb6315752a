import { join } from 'node:path';
import { createActor, type Actor } from 'xstate';
import type { Config } from './config.js';
import { ReleaseCache, type Archive } from '../release/cache.js';
import type { DesiredProcess } from '../store/desired.js';
import type { EventLog } from '../store/event-log/log.js';
import type { Store } from '../store/store.js';
import { agentEnv, childEnv, readDotenv } from '../release/env.js';
import { buildEnvPath } from '../release/build.js';
import { DEFAULT_PROCFILE_MAX_BYTES, describeTypes, parseProcfile } from '../release/procfile.js';
import { readSmallFile } from '../release/small-file.js';
import { Cgroups } from '../os/cgroup.js';
import { Child } from '../os/child.js';
import { userEnv, type RunAs } from '../os/identity.js';
import { InspectionHub } from '../process/inspection.js';
import { groupMeter, type GroupMeter } from '../os/meter.js';
import { processMachine, shouldRestart, type ProcessDeps, type ProcessState, type RestartPolicy } from '../process/machine.js';
import { ProcessMetrics } from '../process/metrics.js';
import { OutputHub } from './output.js';
import { PortPool } from '../os/ports.js';
import { signalGroup } from '../os/proc.js';
import { ProcessRecorder } from '../process/record.js';
import { UsageSampler } from '../os/sampler.js';
import { findWaitHelper } from '../os/wait-helper.js';

export interface CreateRequest {
  app: string;
  node: string;
  processType: string;
  sourceUrl: string;
  env: Record<string, string>;
  /** Restart policy and backoff; the agent's settings fill in what is not given. */
  restart?: RestartRequest;
}

export interface RestartRequest {
  policy?: RestartPolicy;
  delayMs?: number;
  maxDelayMs?: number;
  resetAfterMs?: number;
}

/** The restart policy in force for a process. */
export interface RestartSettings {
  policy: RestartPolicy;
  delayMs: number;
  maxDelayMs: number;
  resetAfterMs: number;
}

/** What a process needs to start its command: produced by `building`, reused on every restart. */
export interface Launch {
  command: string;
  cwd: string;
  env: Record<string, string>;
}

export interface ManagedProcess extends CreateRequest {
  slug: string;
  createdAt: Date;
  port: number;
  actor: Actor<typeof processMachine>;
  output: OutputHub;
  /** When the current (or last) child was started. */
  startedAt?: Date;
  metrics: ProcessMetrics;
  restartSettings: RestartSettings;
  /** Its event log; every output line passes through it first, and gets its id there. */
  events: EventLog;
  /** Resolves once its saved desired state reflects a stop or start that has taken effect. */
  saved(): Promise<void>;
}

export class ConflictError extends Error {}

/** Errors quote archive entry names and the like: no newline or escape sequence of theirs reaches the log. */
function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function slugOf(app: string, node: string): string {
  return `${app}.${node}`;
}

/** Owns every process actor: creates them, routes deletes, stops them all on shutdown. */
export class Supervisor {
  private readonly procs = new Map<string, ManagedProcess>();
  private readonly deletions = new Map<string, Promise<void>>();
  /** Set by shutdown: a create still in flight is saved but not started (the next agent starts it). */
  private closing = false;
  private readonly ports = new PortPool();
  private readonly baseEnv: Record<string, string>;
  /** How runs are measured here (see usage.ts): found once, used for every child. */
  readonly sampler: UsageSampler;
  readonly cgroups: Cgroups | null;
  readonly waitHelper: string | null;
  private readonly buildMeter: GroupMeter;
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
    const helper = this.waitHelper ? 'exit helper (exact status, core dumps, wait4)' : 'no exit helper (core dumps inferred, no wait4)';
    return `usage: ${cg}; ${helper}; live samples from /proc every ${this.config.usageSampleMs} ms`;
  }

  /** The event log of a process, or of a deleted one still within its retention time. */
  eventLog(slug: string): EventLog | undefined {
    return this.store.events.get(slug);
  }

  get(slug: string): ManagedProcess | undefined {
    return this.procs.get(slug);
  }

  list(): ManagedProcess[] {
    return [...this.procs.values()];
  }

  /**
   * Registers the process in `pending` and starts it on the next turn, so its creator sees
   * `pending`. It is durable (restored by the next agent) once this resolves.
   */
  async create(req: CreateRequest): Promise<ManagedProcess> {
    const slug = slugOf(req.app, req.node);
    if (this.procs.has(slug)) throw new ConflictError(`process "${slug}" already exists`);
    const placeholder = {} as ManagedProcess;
    this.procs.set(slug, placeholder); // claim the slug before awaiting, so a concurrent twin gets 409
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
        ...(req.restart ? { restart: { ...req.restart } } : {}),
        port,
        createdAt: new Date().toISOString(),
      };
      await this.store.desired.put(record);
      return this.launch(placeholder, record, events, false);
    } catch (err) {
      this.procs.delete(slug);
      if (port) this.ports.release(port);
      if (events) await this.store.events.abandon(slug);
      throw err;
    }
  }

  /** Brings back a process the previous agent had, with its port and its event log. */
  async restore(record: DesiredProcess): Promise<ManagedProcess> {
    const placeholder = {} as ManagedProcess;
    this.procs.set(record.slug, placeholder);
    this.ports.claim(record.port);
    try {
      const events = await this.store.events.open(record.slug);
      events.append('agent_restarted', { agent_pid: process.pid });
      return this.launch(placeholder, record, events, true);
    } catch (err) {
      this.procs.delete(record.slug);
      this.ports.release(record.port);
      throw err;
    }
  }

  private launch(placeholder: ManagedProcess, record: DesiredProcess, events: EventLog, restored: boolean): ManagedProcess {
    const { slug, port } = record;
    const req = record.restart;
    // The log numbers each line before any client sees it.
    const output = new OutputHub((stream, line) => events.output(stream, line));
    const metrics = new ProcessMetrics(this.config.usageSamples);
    const restartSettings: RestartSettings = {
      policy: req?.policy ?? 'always',
      delayMs: req?.delayMs ?? this.config.backoffInitialMs,
      maxDelayMs: req?.maxDelayMs ?? Math.max(this.config.backoffMaxMs, req?.delayMs ?? 0),
      resetAfterMs: req?.resetAfterMs ?? this.config.backoffResetMs,
    };
    const deps = this.deps(placeholder, record, output, events, metrics, restartSettings, restored);
    const recorder = new ProcessRecorder(events, port);
    const observe = this.inspection.observer(slug);
    const proc: ManagedProcess = Object.assign(placeholder, {
      app: record.app,
      node: record.node,
      processType: record.processType,
      sourceUrl: record.sourceUrl,
      env: record.env,
      ...(record.restart ? { restart: record.restart } : {}),
      slug,
      createdAt: new Date(record.createdAt),
      port,
      output,
      metrics,
      restartSettings,
      events,
      actor: createActor(processMachine, {
        id: slug,
        input: { deps, maxErrors: this.config.maxErrors, policy: restartSettings.policy },
        inspect: (ev) => {
          recorder.inspect(ev);
          observe(ev);
        },
      }),
    });
    recorder.begin(proc.actor, restored ? 'restored after an agent restart' : 'created');
    let errors = proc.actor.getSnapshot().context.errors;
    let down = Boolean(record.stopped);
    let saving = Promise.resolve();
    proc.saved = () => saving;
    proc.actor.subscribe((snap) => {
      // The machine replaces `errors` whenever it adds one: each new entry is also a warning on stderr.
      if (snap.context.errors !== errors) {
        errors = snap.context.errors;
        if (errors.length > 0) this.log(`drover: ${slug}: ${oneLine(errors[errors.length - 1])}`);
      }
      // Kept down (stopped, or finished under its restart policy): saved, so it comes back down
      // after an agent restart. `pending` (where a restored process starts) decides nothing.
      const isDown = snap.value === 'exited' && !shouldRestart(snap.context);
      // Never once a delete is under way: saving would bring the process back.
      if (isDown !== down && snap.value !== 'pending' && snap.status === 'active' && !this.closing && !this.deletions.has(slug)) {
        down = isDown;
        record.stopped = isDown || undefined;
        saving = this.store.desired.put(record).catch((err) => this.log(`drover: ${slug}: ${(err as Error).message}`));
      }
    });
    proc.actor.start();
    if (!this.closing) {
      // A process that was kept down comes back down; the rest start again.
      setImmediate(() => proc.actor.send(restored && record.stopped ? { type: 'STOP', reason: 'kept down across the agent restart' } : { type: 'START' }));
    }
    return proc;
  }

  /**
   * Deletes a process in any state; resolves once its child is gone. The deletion is durable
   * before anything is stopped; if it cannot be saved, nothing changes and this throws.
   */
  async delete(slug: string): Promise<boolean> {
    const proc = this.procs.get(slug);
    if (!proc || !proc.actor) return false;
    let deletion = this.deletions.get(slug);
    if (!deletion) {
      deletion = (async () => {
        await this.store.desired.remove(slug);
        await this.stop(proc, 'delete requested');
        await this.store.events.retire(slug);
        this.procs.delete(slug);
        this.ports.release(proc.port);
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
    await Promise.all(this.list().map((p) => p.actor && this.stop(p, 'agent shutting down')));
    this.sampler.close();
    this.cgroups?.close();
  }

  /** Last resort: SIGKILL every child's group at once, without waiting. */
  killAll(): void {
    for (const p of this.procs.values()) {
      const pid = p.actor?.getSnapshot().context.pid;
      if (pid) signalGroup(pid, 'SIGKILL');
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

  private deps(
    proc: ManagedProcess,
    record: DesiredProcess,
    output: OutputHub,
    events: EventLog,
    metrics: ProcessMetrics,
    restart: RestartSettings,
    restored: boolean,
  ): ProcessDeps {
    const { slug, port } = record;
    const buildEnv = { ...this.baseEnv, ...record.env };
    // A restored process first runs the release it ran before, from the cache: no network, and
    // no surprise upgrade if the URL now serves something else. Later downloads (after a
    // failure) go to the source again.
    let reuse = restored ? record.archive : undefined;
    return {
      download: async (signal) => {
        if (reuse) {
          const cached = await this.releases.cached(reuse);
          reuse = undefined;
          if (cached) return { ...cached, reused: true };
        }
        const archive = await this.releases.fetch(record.sourceUrl, {
          signal,
          onProgress: (bytes, total) => events.append('download', { bytes, total }),
        });
        if (record.archive !== archive.sha256 && !this.deletions.has(slug) && this.procs.has(slug)) {
          record.archive = archive.sha256;
          this.store.desired.put(record).catch((err) => this.log(`drover: ${slug}: ${(err as Error).message}`));
        }
        return archive;
      },
      build: async (archive, signal): Promise<Launch> => {
        events.append('build_started', { sha256: (archive as Archive).sha256 });
        let release;
        try {
          release = await this.releases.build(archive as Archive, {
            signal,
            env: buildEnv,
            onLine: (line) => output.publish('build', line),
            meter: this.buildMeter,
          });
        } catch (err) {
          events.append('build_finished', { exit_code: (err as { exitCode?: number }).exitCode ?? null, error: (err as Error).message });
          throw err;
        }
        events.append('build_finished', { exit_code: 0 });
        metrics.releaseBuilt(release.id, release.usage);
        const entry = await this.procfileEntry(release.root, record.processType);
        const dotenv = await readDotenv(release.root);
        const env = childEnv({
          agent: this.baseEnv,
          dotenv,
          procfile: entry.env,
          request: record.env,
          port,
          identity: { app: record.app, node: record.node, slug, processType: record.processType },
        });
        env.PATH = buildEnvPath(release.root, env.PATH ?? '');
        return { command: entry.command, cwd: release.root, env };
      },
      start: (launch) => {
        const l = launch as Launch;
        const child = new Child({
          ...l,
          runAs: this.runAs,
          onLine: (s, line) => output.publish(s, line),
          maxLineLength: this.config.maxLineLength,
          helper: this.waitHelper,
          // A --user child cannot join a cgroup by itself; the exit helper does it as root.
          cgroup: this.runAs && !this.waitHelper ? null : (this.cgroups?.create() ?? null),
          sampler: this.sampler,
          onSample: (u) => metrics.sample(u),
        });
        proc.startedAt = new Date(child.startedAt);
        const pid = child.pid;
        if (pid) this.store.groups.add(pid, slug, 'child');
        // When the log's queue is high (disk slower than the child), stop reading the child.
        if (events.isCongested) child.pauseOutput(true);
        const unwatch = events.onPressure((congested) => child.pauseOutput(congested));
        void child.exited.then((exit) => {
          metrics.runEnded(exit.usage ?? null);
          unwatch();
          if (pid) this.store.groups.remove(pid);
        });
        return child;
      },
      backoff: { initialMs: restart.delayMs, maxMs: restart.maxDelayMs, resetAfterMs: restart.resetAfterMs },
      stopGraceMs: this.config.stopGraceMs,
    };
  }

  private async procfileEntry(root: string, type: string) {
    const text = await readSmallFile(join(root, 'Procfile'), DEFAULT_PROCFILE_MAX_BYTES, 'Procfile');
    if (text === null) throw new Error('the source archive has no Procfile at its root');
    const entries = parseProcfile(text);
    const entry = entries.get(type);
    if (!entry) throw new Error(`unknown process type "${type}"; the Procfile has: ${describeTypes(entries)}`);
    return entry;
  }
}

export type { ProcessState };
