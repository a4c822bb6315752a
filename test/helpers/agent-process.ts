import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listProcesses, readProc } from '../../lib/os/proc.js';
import { waitFor } from './wait.js';

export const bin = join(import.meta.dirname, '..', '..', 'bin', 'drover.js');

/** The agent as its own OS process (the compiled CLI), on an ephemeral port. */
export async function spawnAgent(
  args: string[] = [],
  opts: { env?: NodeJS.ProcessEnv; stateDir?: string } = {},
): Promise<{
  proc: ChildProcess;
  url: string;
  stateDir: string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}> {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'drover-agent-'));
  const proc = spawn(process.execPath, [bin, 'serve', '--port', '0', '--state-dir', stateDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });
  let err = '';
  proc.stderr!.on('data', (c) => (err += c));
  proc.stdout!.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => {
      if (!opts.stateDir) rmSync(stateDir, { recursive: true, force: true }); // ours to clean up
      r({ code, signal });
    }),
  );
  const url = await waitFor(() => /listening on (http:\/\/\S+)/.exec(err)?.[1], 'the agent to listen', 30_000);
  return { proc, url, stateDir, stderr: () => err, exit };
}

/** Every live descendant of `pid`, with start times so a reused pid isn't mistaken for it. */
export function descendants(pid: number): { pid: number; starttime: number }[] {
  const all = listProcesses().filter((p) => p.state !== 'Z');
  const out: { pid: number; starttime: number }[] = [];
  const walk = (parent: number) => {
    for (const p of all) {
      if (p.ppid === parent) {
        out.push({ pid: p.pid, starttime: p.starttime });
        walk(p.pid);
      }
    }
  };
  walk(pid);
  return out;
}

export function stillAlive(procs: { pid: number; starttime: number }[]): number[] {
  return procs
    .filter((p) => {
      const now = readProc(p.pid);
      return now !== null && now.starttime === p.starttime && now.state !== 'Z';
    })
    .map((p) => p.pid);
}
