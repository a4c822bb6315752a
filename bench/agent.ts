// Helpers for benchmarks: the agent as its own OS process, and a small app archive.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create as tarCreate } from 'tar';

export const bin = join(import.meta.dirname, '..', '..', 'bin', 'drover.js');

export interface BenchAgent {
  proc: ChildProcess;
  url: string;
  dir: string;
  stop(): Promise<void>;
}

export async function startAgent(args: string[] = []): Promise<BenchAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'drover-bench-'));
  const proc = spawn(process.execPath, [...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), bin, 'serve', '--port', '0', '--state-dir', join(dir, 'state'), '--allow-file-urls', 'true', ...args], {
    stdio: ['ignore', process.env.BENCH_NODE_ARGS ? 'inherit' : 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (c) => (err += c));
  const url = await until(() => /listening on (http:\/\/\S+)/.exec(err)?.[1], 30_000, () => `agent did not start: ${err}`);
  return {
    proc,
    url,
    dir,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGINT');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A tar.gz of an app with this Procfile, under `dir`; returns its file: URL. */
export async function appArchive(dir: string, procfile: string): Promise<string> {
  const app = join(dir, 'app');
  mkdirSync(app, { recursive: true });
  writeFileSync(join(app, 'Procfile'), procfile);
  const file = join(dir, 'app.tgz');
  await tarCreate({ gzip: true, file, cwd: app, portable: true }, ['Procfile']);
  return `file://${file}`;
}

export async function until<T>(check: () => T | Promise<T>, timeoutMs: number, what: () => string): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(what());
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function post(url: string, body: unknown): Promise<any> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

export async function get(url: string): Promise<any> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Peak and current resident set size of a process, in bytes, from /proc. */
export function rss(pid: number): { peak: number; now: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { peak: kb('VmHWM'), now: kb('VmRSS') };
}
