// The resident spawn helper (native/drover-spawn.c): one small process, started once, that
// forks children from its own tiny image on the agent's behalf. A spawn from the agent costs
// in proportion to the agent's memory and blocks its event loop until the exec; a request to
// the helper is one write. Each child's stdout and stderr come back as connections to a Unix
// socket the agent listens on, so output never passes through the helper.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { getSystemErrorName } from 'node:util';
import { LineSplitter } from './lines.js';
import { parseHelperLine, type HelperReport } from './wait-helper.js';

/** Resource limits by name (setrlimit(2) without RLIMIT_); null is unlimited. */
export type Rlimits = Partial<Record<RlimitName, { soft: number | null; hard: number | null }>>;
export type RlimitName = 'cpu' | 'fsize' | 'data' | 'stack' | 'core' | 'rss' | 'nproc' | 'nofile' | 'memlock' | 'as';
export const RLIMIT_NUMBERS: Record<RlimitName, number> = {
  cpu: 0,
  fsize: 1,
  data: 2,
  stack: 3,
  core: 4,
  rss: 5,
  nproc: 6,
  nofile: 7,
  memlock: 8,
  as: 9,
};

export interface SpawnRequest {
  /** argv[0] is looked up on the env's PATH. */
  argv: readonly string[];
  cwd: string;
  env: Record<string, string>;
  /** Switch to this user before the exec (the helper runs as the agent's user). */
  user?: { uid: number; gid: number; groups: number[] } | null;
  rlimits?: Rlimits | null;
  /** cgroup.procs files the child joins before it execs. */
  cgroupFiles?: readonly string[];
}

/** What the helper tells about one run, in this order: pid (or failed), streams, exit. */
export interface RunEvents {
  /** `keeper`: the helper's process watching the run; `starttime`: the child's, from /proc (clock ticks). */
  onPid(pid: number, keeper?: number, starttime?: number): void;
  onStream(fd: 1 | 2, socket: Socket): void;
  onCgroupFailed(file: string): void;
  /** It could not start: `stage` is fork, user, rlimit or chdir. */
  onFailed(error: string): void;
  onExit(report: HelperReport): void;
}

const NUL = 'a NUL byte cannot be passed to a program';

/**
 * Encodes one request: a 4-byte little-endian length, then NUL-terminated fields. Written
 * straight into one buffer, the env's names and values included, with no string or array per
 * variable in between: a restart of a process with a large environment made kilobytes of
 * garbage here.
 */
export function encodeRequest(id: number, req: SpawnRequest): Buffer {
  const limits = Object.entries(req.rlimits ?? {}).map(
    ([name, l]) => `${RLIMIT_NUMBERS[name as RlimitName]}:${l!.soft ?? 'inf'}:${l!.hard ?? 'inf'}`,
  );
  const user = req.user;
  const names = Object.keys(req.env);
  const fields = [
    'spawn',
    String(id),
    req.cwd,
    user ? String(user.uid) : '',
    user ? String(user.gid) : '',
    user ? (user.groups.length ? user.groups.join(',') : '-') : '',
    limits.join(','),
    (req.cgroupFiles ?? []).join('\n'),
    String(req.argv.length),
    ...req.argv,
    String(names.length),
  ];
  let bytes = 0;
  for (const f of fields) {
    if (f.includes('\0')) throw new Error(NUL);
    bytes += Buffer.byteLength(f, 'utf8') + 1;
  }
  for (const k of names) {
    const v = req.env[k];
    if (k.includes('\0') || v.includes('\0')) throw new Error(NUL);
    bytes += Buffer.byteLength(k, 'utf8') + Buffer.byteLength(v, 'utf8') + 2; // "=" and the NUL
  }
  const out = Buffer.allocUnsafe(4 + bytes);
  out.writeUInt32LE(bytes, 0);
  let at = 4;
  const put = (text: string, end: number) => {
    at += out.write(text, at, 'utf8');
    out[at++] = end;
  };
  for (const f of fields) put(f, 0);
  for (const k of names) {
    put(k, 0x3d); // "="
    put(req.env[k], 0);
  }
  return out;
}

/** One reply line from the helper, or null for anything else. */
export type HelperReply =
  | { kind: 'pid'; id: number; pid: number; keeper?: number; starttime?: number }
  | { kind: 'cgroup-failed'; id: number; file: string }
  | { kind: 'failed'; id: number; errno: number; stage: string }
  | { kind: 'exit'; id: number; report: HelperReport };

export function parseReply(line: string): HelperReply | null {
  const m = /^(pid|cgroup-failed|failed|exit) (\d+) (.*)$/.exec(line);
  if (!m) return null;
  const id = Number(m[2]);
  const rest = m[3];
  switch (m[1]) {
    case 'pid': {
      // "PID KEEPER STARTTIME"; the last two are a newer helper's (0: unknown).
      const p = /^(\d+)(?: (\d+) (\d+))?$/.exec(rest);
      if (!p) return null;
      const [keeper, starttime] = [Number(p[2] ?? 0), Number(p[3] ?? 0)];
      return { kind: 'pid', id, pid: Number(p[1]), ...(keeper ? { keeper } : {}), ...(starttime ? { starttime } : {}) };
    }
    case 'cgroup-failed':
      return { kind: 'cgroup-failed', id, file: rest };
    case 'failed': {
      const f = /^(\d+) (\w+)$/.exec(rest);
      return f ? { kind: 'failed', id, errno: Number(f[1]), stage: f[2] } : null;
    }
    default: {
      const report = parseHelperLine(`exit ${rest}`);
      return report ? { kind: 'exit', id, report } : null;
    }
  }
}

/** "chdir /x: ENOENT" for `failed ID 2 chdir`. */
function failure(req: SpawnRequest, errno: number, stage: string): string {
  let name: string;
  try {
    name = getSystemErrorName(-errno);
  } catch {
    name = `errno ${errno}`;
  }
  const what =
    stage === 'chdir' ? `chdir ${req.cwd}` : stage === 'user' ? 'switching user' : stage === 'rlimit' ? 'setting rlimits' : stage;
  return `${what}: ${name}`;
}

const MAX_HEADER = 64;

export class SpawnHelper {
  private readonly proc: ChildProcess;
  private readonly server: Server;
  private readonly dir: string;
  /** Runs from their request until they ended and their streams arrived (or were given up). */
  private readonly runs = new Map<number, { req: SpawnRequest; events: RunEvents; ended: boolean; streams: number }>();
  /** Runs not yet ended: while there are any, the helper's socket keeps this process alive. */
  private pending = 0;
  private nextId = 1;
  private dead: string | null = null;
  private readonly control: Socket;

  constructor(path: string) {
    // A private directory: only the agent's user may connect a stream.
    this.dir = mkdtempSync(join(tmpdir(), 'drover-spawn-'));
    const sock = join(this.dir, 's');
    this.server = createServer((s) => this.accept(s));
    this.server.listen(sock);
    this.server.unref();
    this.proc = spawn(path, [sock], { stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
    this.proc.unref();
    this.control = this.proc.stdio[3] as Socket;
    this.control.unref();
    const lines = new LineSplitter((l) => this.onReply(l), 8192);
    this.control.on('data', (c: Buffer) => lines.push(c));
    this.control.on('error', () => {});
    this.proc.once('error', (e) => this.died(`the spawn helper could not start: ${e.message}`));
    this.proc.once('exit', (code, signal) => this.died(`the spawn helper ended (${signal ?? `exit ${code}`})`));
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** Starts a run; its events arrive on `events`. Throws only for a request that cannot be encoded. */
  spawn(req: SpawnRequest, events: RunEvents): number {
    const id = this.nextId++;
    const frame = encodeRequest(id, req);
    if (this.dead) {
      const why = this.dead;
      queueMicrotask(() => events.onFailed(why));
      return id;
    }
    this.runs.set(id, { req, events, ended: false, streams: 0 });
    // While a run is pending, the helper's socket keeps the process alive, as a child would.
    if (++this.pending === 1) this.control.ref();
    this.control.write(frame);
    return id;
  }

  /** Stops the helper: it kills every run it started (and what they left) before it exits. */
  close(): void {
    if (!this.dead) this.proc.kill('SIGTERM');
    this.died('the spawn helper was closed');
  }

  /** Like close, and resolves once the helper has exited (SIGKILL after `timeoutMs`). */
  async stop(timeoutMs: number): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null || this.proc.pid === undefined) return this.close();
    const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    this.close();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await gone;
    clearTimeout(timer);
  }

  /** Forgets a run: its streams, if they still come, are closed. */
  release(id: number): void {
    const run = this.runs.get(id);
    if (!run) return;
    if (!run.ended) this.end(run);
    this.runs.delete(id);
  }

  private end(run: { ended: boolean }): void {
    run.ended = true;
    if (--this.pending === 0) this.control.unref();
  }

  private onReply(line: string): void {
    const r = parseReply(line);
    const run = r && this.runs.get(r.id);
    if (!r || !run) return;
    switch (r.kind) {
      case 'pid':
        return run.events.onPid(r.pid, r.keeper, r.starttime);
      case 'cgroup-failed':
        return run.events.onCgroupFailed(r.file);
      case 'failed':
        this.end(run);
        return run.events.onFailed(failure(run.req, r.errno, r.stage));
      case 'exit':
        // The streams may still be on their way: the run stays until they came or it is released.
        this.end(run);
        if (run.streams === 2) this.runs.delete(r.id);
        return run.events.onExit(r.report);
    }
  }

  /** A child's stream: "ID FD\n", then its output. */
  private accept(s: Socket): void {
    s.on('error', () => {});
    let head = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      head = Buffer.concat([head, c]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > MAX_HEADER) s.destroy();
        return;
      }
      s.off('data', onData);
      s.pause();
      const m = /^(\d+) ([12])$/.exec(head.subarray(0, nl).toString('latin1'));
      const id = Number(m?.[1]);
      const run = this.runs.get(id);
      if (!run || run.streams >= 2) return void s.destroy();
      if (++run.streams === 2 && run.ended) this.runs.delete(id);
      if (nl + 1 < head.length) s.unshift(head.subarray(nl + 1));
      run.events.onStream(Number(m![2]) as 1 | 2, s);
    };
    s.on('data', onData);
  }

  private died(why: string): void {
    if (this.dead) return;
    this.dead = why;
    this.server.close();
    this.control.destroy();
    rmSync(this.dir, { recursive: true, force: true });
    if (shared === this) shared = undefined;
    const runs = [...this.runs.values()];
    this.runs.clear();
    for (const r of runs) r.events.onFailed(why);
  }
}

function packageRoot(): string | null {
  for (let dir = import.meta.dirname; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return null;
  }
}

/** The path of the built helper, or null (no C compiler at install, or not Linux). */
export function findSpawnHelper(): string | null {
  const root = packageRoot();
  const path = root && join(root, 'native', 'build', 'drover-spawn');
  if (!path) return null;
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    return null;
  }
}

let shared: SpawnHelper | undefined;

/**
 * The process's one helper, started at first use (and again if it died); null when there is
 * none. It dies with this process: on EOF of its socket or its parent-death signal.
 */
export function sharedSpawnHelper(): SpawnHelper | null {
  if (shared) return shared;
  const path = findSpawnHelper();
  if (!path) return null;
  shared = new SpawnHelper(path);
  return shared;
}

/** Ends the process's helper and waits until it is gone, with what its runs left: for a process about to exit. */
export async function stopSharedSpawnHelper(timeoutMs = 5000): Promise<void> {
  await shared?.stop(timeoutMs);
}
