import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { onCleanup } from './cleanup.js';
import type { BenchContext } from './context.js';
import { json } from './http.js';
import { descendants, stillAlive } from './procfs.js';
import { until } from './wait.js';

/** Compiled to dist/bench/lib/, so the repository root is three levels up. */
export const droverBin = join(import.meta.dirname, '..', '..', '..', 'bin', 'drover.js');

export interface AgentLinks {
  create: string;
  list: string;
}

export interface AgentProcess {
  pid: number;
  url: string;
  links: AgentLinks;
  stderrTail(): string;
  /** SIGTERM (graceful stop of every process), waits for exit; returns how long it took, in ms. */
  stop(): Promise<number>;
}

const STDERR_TAIL = 64 * 1024;

/**
 * Starts `drover serve` as its own OS process on an ephemeral port, with a fresh state dir in
 * the bench's work dir. `settings` are the scenario's; the bench's --agent-setting ones win.
 */
export async function startAgent(ctx: BenchContext, settings: Record<string, string | number> = {}): Promise<AgentProcess> {
  const stateDir = mkdtempSync(join(ctx.workDir, 'agent-'));
  const flags = Object.entries({ 'allow-file-urls': 'true', ...settings, ...ctx.agentSettings }).flatMap(([k, v]) => [`--${k}`, String(v)]);
  // e.g. BENCH_AGENT_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the agent under load.
  const nodeFlags = process.env.BENCH_AGENT_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
  const proc = spawn(process.execPath, [...nodeFlags, droverBin, 'serve', '--port', '0', '--state-dir', stateDir, ...flags], {
    stdio: ['ignore', 'ignore', 'pipe'],
    // A DROVER_TOKEN in the caller's environment would make the agent demand it: run with the defaults.
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DROVER_'))),
  });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => {
    // Crash-looping children make the agent warn on every exit: keep only the tail.
    stderr = (stderr + c).slice(-STDERR_TAIL);
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((r) => proc.once('exit', (code) => ((exitCode = code), r())));
  const unregister = onCleanup(() => {
    proc.kill('SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });

  const url = await until(
    () => {
      if (exitCode !== undefined) throw new Error(`agent exited with ${exitCode} before listening: ${stderr}`);
      return /agent listening on (http:\/\/\S+)/.exec(stderr)?.[1];
    },
    'the agent to listen',
    30_000,
  );
  const links = await json<AgentLinks>('GET', `${url}/`);

  return {
    pid: proc.pid!,
    url,
    links,
    stderrTail: () => stderr,
    async stop() {
      const children = descendants(proc.pid!);
      const t0 = performance.now();
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 180_000);
      await exited;
      clearTimeout(timer);
      const ms = performance.now() - t0;
      unregister();
      rmSync(stateDir, { recursive: true, force: true });
      // The agent promises to leave no child behind; a bench that leaked them would skew the next scenario.
      const left = stillAlive(children);
      if (left.length > 0) throw new Error(`agent left ${left.length} processes behind after stopping`);
      if (exitCode !== 0) throw new Error(`agent exited with ${exitCode} on SIGTERM: ${stderr.slice(-2000)}`);
      return ms;
    },
  };
}
