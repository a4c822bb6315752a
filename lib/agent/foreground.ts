// Runs a local Procfile app in this process, like foreman or honcho, with the agent's own
// process model: one XState actor per process (restart with backoff), each child in its own
// process group with the watchdog, graceful group stop. No HTTP, no release cache.
//
// The source is the directory itself, used in place: `downloading` resolves at once with it,
// and `building` does not run the buildpack steps (npm ci, pip install) — a working copy is
// the developer's, and like foreman we run it as it is. `building` only resolves the Procfile
// entry and the environment, which is what a start needs.
import { createActor, type Actor } from 'xstate';
import { agentEnv } from '../release/env.js';
import { resolveLaunch, type Launch, type Procfile } from '../release/launch.js';
import type { BackoffPolicy } from '../process/backoff.js';
import { diffSnapshots, type SnapshotView } from '../process/changes.js';
import { Child, type ExitInfo, type GroupSampler, type OutputStream } from '../os/child.js';
import { processMachine, type ProcessDeps } from '../process/machine.js';
import { exitNotice } from '../process/wording.js';
import { signalGroup } from '../os/proc.js';

export interface ForegroundOptions {
  /** The app directory (holds the Procfile). */
  dir: string;
  /** Its Procfile, read once by the caller (through the agent's safe read) for every process. */
  procfile: Procfile;
  /** The app's name, for DROVER_APP and slugs (the directory's name by default). */
  app: string;
  /** Process types in order, with how many of each. */
  formation: { type: string; count: number }[];
  /** PORT of the first process; each type gets the next hundred, each instance the next port (foreman). */
  basePort: number;
  /** Variables from the command line, over .env and the Procfile's. */
  env: Record<string, string>;
  /** Replaces the app's .env when set (--env-file). */
  dotenv?: Record<string, string>;
  stopGraceMs: number;
  backoff: BackoffPolicy;
  maxLineLength?: number;
  /** Measures each run (the /proc sampler on Linux, pidusage elsewhere); its totals follow each exit. */
  sampler?: GroupSampler;
  onLine: (name: string, stream: OutputStream, line: string) => void;
  /** A change worth telling the user about (started, exited, restarting, failed). */
  onNotice: (name: string, message: string, bad: boolean) => void;
}

export interface ForegroundProcess {
  name: string;
  type: string;
  port: number;
  actor: Actor<typeof processMachine>;
}

/** A run's CPU and peak memory, when the sampler caught it running; null otherwise. */
export function usageNotice(exit: ExitInfo | null): string | null {
  const u = exit?.usage;
  if (!u || (u.utime === null && u.maxrss === null)) return null;
  const parts: string[] = [];
  if (u.utime !== null) parts.push(`cpu ${(u.utime + (u.stime ?? 0)).toFixed(2)} s`);
  if (u.maxrss !== null) parts.push(`peak memory ${(u.maxrss / 1024 / 1024).toFixed(1)} MB`);
  return `used ${parts.join(', ')}`;
}

export class ForegroundRunner {
  readonly processes: ForegroundProcess[] = [];
  private readonly baseEnv = agentEnv(process.env);

  constructor(private readonly opts: ForegroundOptions) {
    opts.formation.forEach(({ type, count }, typeIndex) => {
      for (let i = 0; i < count; i++) {
        const name = `${type}.${i}`;
        const port = opts.basePort + typeIndex * 100 + i;
        const actor = createActor(processMachine, { input: { deps: this.deps(name, type, port) } });
        this.watch(name, actor);
        this.processes.push({ name, type, port, actor });
      }
    });
  }

  start(): void {
    for (const p of this.processes) {
      p.actor.start();
      p.actor.send({ type: 'START' });
    }
  }

  /** Stops every process gracefully (SIGTERM to each group, SIGKILL after the grace); resolves when all are gone. */
  async stop(): Promise<void> {
    await Promise.all(
      this.processes.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.actor.getSnapshot().status === 'done') return resolve();
            p.actor.subscribe({ complete: () => resolve() });
            p.actor.send({ type: 'DELETE' });
          }),
      ),
    );
  }

  /** SIGKILLs every child's group at once (a second Ctrl-C). */
  kill(): void {
    for (const p of this.processes) {
      const pgid = p.actor.getSnapshot().context.pgid;
      if (pgid) signalGroup(pgid, 'SIGKILL');
    }
  }

  private watch(name: string, actor: Actor<typeof processMachine>): void {
    let last: SnapshotView = { value: 'pending', context: actor.getSnapshot().context };
    actor.subscribe((snap) => {
      const state = String(snap.value);
      const ctx = snap.context;
      const changed = diffSnapshots(last, { value: state, context: ctx });
      const prev = last.value;
      last = { value: state, context: ctx };
      // `running` is entered before the child reports its pid: announce once the pid is known.
      if (state === 'running' && ctx.pid && changed.pid) this.opts.onNotice(name, `started with pid ${ctx.pid}`, false);
      if (!changed.state) return;
      if (state === 'exited') {
        this.opts.onNotice(name, exitNotice(ctx.lastExit), ctx.lastExit?.code !== 0);
        const used = usageNotice(ctx.lastExit);
        if (used) this.opts.onNotice(name, used, false);
      }
      if (state === 'restarting') {
        if (prev === 'downloading' || prev === 'building')
          this.opts.onNotice(name, `cannot start: ${ctx.errors[ctx.errors.length - 1]}`, true);
        this.opts.onNotice(
          name,
          ctx.restartDelayMs > 0 ? `restarting in ${(ctx.restartDelayMs / 1000).toFixed(1)} s` : 'restarting',
          false,
        );
      }
      if (state === 'deleted') this.opts.onNotice(name, prev === 'running' ? `stopped (${exitNotice(ctx.lastExit)})` : 'stopped', false);
    });
  }

  private deps(name: string, type: string, port: number): ProcessDeps<string, Launch> {
    const { dir, app, procfile } = this.opts;
    return {
      download: async () => dir,
      build: () =>
        resolveLaunch({
          dir,
          spec: { kind: 'procfile', processType: type },
          procfile,
          agentEnv: this.baseEnv,
          env: this.opts.env,
          dotenv: this.opts.dotenv,
          port,
          identity: { app, node: name, slug: `${app}.${name}`, processType: type },
        }),
      start: (launch) =>
        new Child({
          ...launch,
          onLine: (stream, line) => this.opts.onLine(name, stream, line),
          maxLineLength: this.opts.maxLineLength,
          sampler: this.opts.sampler,
        }),
      backoff: this.opts.backoff,
      stopGraceMs: this.opts.stopGraceMs,
    };
  }
}
