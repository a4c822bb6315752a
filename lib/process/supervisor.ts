import { join } from 'node:path';
import { createActor, type Actor } from 'xstate';
import type { Config } from '../config.js';
import { ReleaseCache, type Archive } from '../release/cache.js';
import { agentEnv, childEnv, readDotenv } from '../release/env.js';
import { buildEnvPath } from '../release/build.js';
import { DEFAULT_PROCFILE_MAX_BYTES, describeTypes, parseProcfile } from '../release/procfile.js';
import { readSmallFile } from '../release/small-file.js';
import { Cgroups } from './cgroup.js';
import { Child } from './child.js';
import { userEnv, type RunAs } from './identity.js';
import { InspectionHub } from './inspection.js';
import { groupMeter, type GroupMeter } from './meter.js';
import { processMachine, type ProcessDeps, type ProcessState, type RestartPolicy } from './machine.js';
import { ProcessMetrics } from './metrics.js';
import { OutputHub } from './output.js';
import { PortPool } from './ports.js';
import { signalGroup } from './proc.js';
import { UsageSampler } from './sampler.js';
import { findWaitHelper } from './wait-helper.js';

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

  get(slug: string): ManagedProcess | undefined {
    return this.procs.get(slug);
  }

  list(): ManagedProcess[] {
    return [...this.procs.values()];
  }

  /** Registers the process in `pending` and starts it on the next turn, so its creator sees `pending`. */
  async create(req: CreateRequest): Promise<ManagedProcess> {
    const slug = slugOf(req.app, req.node);
    if (this.procs.has(slug)) throw new ConflictError(`process "${slug}" already exists`);
    const placeholder = {} as ManagedProcess;
    this.procs.set(slug, placeholder); // claim the slug before awaiting, so a concurrent twin gets 409
    let port: number;
    try {
      port = await this.ports.reserve();
    } catch (err) {
      this.procs.delete(slug);
      throw err;
    }
    const output = new OutputHub();
    const metrics = new ProcessMetrics(this.config.usageSamples);
    const restartSettings: RestartSettings = {
      policy: req.restart?.policy ?? 'always',
      delayMs: req.restart?.delayMs ?? this.config.backoffInitialMs,
      maxDelayMs: req.restart?.maxDelayMs ?? Math.max(this.config.backoffMaxMs, req.restart?.delayMs ?? 0),
      resetAfterMs: req.restart?.resetAfterMs ?? this.config.backoffResetMs,
    };
    const deps = this.deps(placeholder, req, port, output, metrics, restartSettings);
    const proc: ManagedProcess = Object.assign(placeholder, {
      ...req,
      slug,
      createdAt: new Date(),
      port,
      output,
      metrics,
      restartSettings,
      actor: createActor(processMachine, {
        id: slug,
        input: { deps, maxErrors: this.config.maxErrors, policy: restartSettings.policy },
        inspect: this.inspection.observer(slug),
      }),
    });
    let errors = proc.actor.getSnapshot().context.errors;
    proc.actor.subscribe((snap) => {
      // The machine replaces `errors` whenever it adds one: each new entry is also a warning on stderr.
      if (snap.context.errors !== errors) {
        errors = snap.context.errors;
        if (errors.length > 0) this.log(`drover: ${slug}: ${oneLine(errors[errors.length - 1])}`);
      }
    });
    proc.actor.start();
    setImmediate(() => proc.actor.send({ type: 'START' }));
    return proc;
  }

  /** Deletes a process in any state; resolves once its child is gone. */
  async delete(slug: string): Promise<boolean> {
    const proc = this.procs.get(slug);
    if (!proc || !proc.actor) return false;
    await this.stop(proc);
    this.procs.delete(slug);
    this.ports.release(proc.port);
    return true;
  }

  /** Stops every process gracefully and waits for all of them. */
  async shutdown(): Promise<void> {
    await Promise.all(this.list().map((p) => p.actor && this.delete(p.slug)));
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

  private async stop(proc: ManagedProcess): Promise<void> {
    const done = new Promise<void>((resolve) => {
      const sub = proc.actor.subscribe({ complete: () => resolve() });
      if (proc.actor.getSnapshot().status === 'done') {
        sub.unsubscribe();
        resolve();
      }
    });
    proc.actor.send({ type: 'DELETE' });
    await done;
    proc.output.close();
  }

  private deps(proc: ManagedProcess, req: CreateRequest, port: number, output: OutputHub, metrics: ProcessMetrics, restart: RestartSettings): ProcessDeps {
    const slug = slugOf(req.app, req.node);
    const buildEnv = { ...this.baseEnv, ...req.env };
    return {
      download: (signal) => this.releases.fetch(req.sourceUrl, { signal }),
      build: async (archive, signal): Promise<Launch> => {
        const release = await this.releases.build(archive as Archive, {
          signal,
          env: buildEnv,
          onLine: (line) => output.publish('build', line),
          meter: this.buildMeter,
        });
        metrics.releaseBuilt(release.id, release.usage);
        const entry = await this.procfileEntry(release.root, req.processType);
        const dotenv = await readDotenv(release.root);
        const env = childEnv({
          agent: this.baseEnv,
          dotenv,
          procfile: entry.env,
          request: req.env,
          port,
          identity: { app: req.app, node: req.node, slug, processType: req.processType },
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
        void child.exited.then((exit) => metrics.runEnded(exit.usage ?? null));
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
