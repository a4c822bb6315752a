// Runs a local Procfile app in this process, like foreman or honcho, with the agent's own
// process model: one XState actor per process (restart with backoff), each child in its own
// process group with the watchdog, graceful group stop. No HTTP, no release cache.
//
// The source is the directory itself, used in place: `downloading` resolves at once with it,
// and `building` does not run the buildpack steps (npm ci, pip install) — a working copy is
// the developer's, and like foreman we run it as it is. `building` only resolves the Procfile
// entry and the environment, which is what a start needs.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, type Actor } from 'xstate';
import { buildEnvPath } from '../release/build.js';
import { agentEnv, childEnv, readDotenv } from '../release/env.js';
import { describeTypes, parseProcfile } from '../release/procfile.js';
import type { BackoffPolicy } from '../process/backoff.js';
import { Child, type ExitInfo, type OutputStream } from '../os/child.js';
import { processMachine, type ProcessDeps } from '../process/machine.js';
import { signalGroup } from '../os/proc.js';

export interface ForegroundOptions {
  /** The app directory (holds the Procfile). */
  dir: string;
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

interface Launch {
  command: string;
  cwd: string;
  env: Record<string, string>;
}

function describeExit(exit: ExitInfo | null): string {
  if (!exit) return 'exited';
  if (exit.error) return exit.error;
  if (exit.signal) return `killed by ${exit.signal}`;
  return `exited with code ${exit.code}`;
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
      const pid = p.actor.getSnapshot().context.pid;
      if (pid) signalGroup(pid, 'SIGKILL');
    }
  }

  private watch(name: string, actor: Actor<typeof processMachine>): void {
    let prev = 'pending';
    let announced: number | null = null;
    actor.subscribe((snap) => {
      const state = String(snap.value);
      const ctx = snap.context;
      // `running` is entered before the child reports its pid: announce once the pid is known.
      if (state === 'running' && ctx.pid && ctx.pid !== announced) {
        announced = ctx.pid;
        this.opts.onNotice(name, `started with pid ${ctx.pid}`, false);
      }
      if (state === prev) return;
      if (state === 'exited') this.opts.onNotice(name, describeExit(ctx.lastExit), ctx.lastExit?.code !== 0);
      if (state === 'restarting') {
        if (prev === 'downloading' || prev === 'building') this.opts.onNotice(name, `cannot start: ${ctx.errors[ctx.errors.length - 1]}`, true);
        this.opts.onNotice(name, ctx.restartDelayMs > 0 ? `restarting in ${(ctx.restartDelayMs / 1000).toFixed(1)} s` : 'restarting', false);
      }
      if (state === 'deleted') this.opts.onNotice(name, prev === 'running' ? `stopped (${describeExit(ctx.lastExit)})` : 'stopped', false);
      prev = state;
    });
  }

  private deps(name: string, type: string, port: number): ProcessDeps {
    const { dir, app } = this.opts;
    return {
      download: async () => dir,
      build: async (): Promise<Launch> => {
        const entries = parseProcfile(await readFile(join(dir, 'Procfile')));
        const entry = entries.get(type);
        if (!entry) throw new Error(`unknown process type "${type}"; the Procfile has: ${describeTypes(entries)}`);
        const env = childEnv({
          agent: this.baseEnv,
          dotenv: this.opts.dotenv ?? (await readDotenv(dir)),
          procfile: entry.env,
          request: this.opts.env,
          port,
          identity: { app, node: name, slug: `${app}.${name}`, processType: type },
        });
        env.PATH = buildEnvPath(dir, env.PATH ?? '');
        return { command: entry.command, cwd: dir, env };
      },
      start: (launch) =>
        new Child({ ...(launch as Launch), onLine: (stream, line) => this.opts.onLine(name, stream, line), maxLineLength: this.opts.maxLineLength }),
      backoff: this.opts.backoff,
      stopGraceMs: this.opts.stopGraceMs,
    };
  }
}
