// File descriptors of a child given explicitly (Procstar's fd specs): what each fd of the
// child is, set up before the program runs. Most are plain spawn() stdio entries (a file the
// agent opens, a pipe it reads); the rest (dup, closing 0-2, fd 3, which the wrapper uses to
// talk to the agent) are shell redirections the wrapper applies just before it execs.
import { accessSync, closeSync, constants as fsc, openSync, statSync, type StatsBase } from 'node:fs';
import { resolve } from 'node:path';
import type { StdioOptions } from 'node:child_process';

export type OpenFlag = 'Default' | 'Read' | 'Write' | 'Create' | 'Replace' | 'CreateAppend' | 'Append' | 'ReadWrite';
export const OPEN_FLAGS: readonly OpenFlag[] = ['Default', 'Read', 'Write', 'Create', 'Replace', 'CreateAppend', 'Append', 'ReadWrite'];

export type CaptureMode = 'memory' | 'tempfile';

export type FdSpec =
  | { type: 'inherit' }
  | { type: 'close' }
  | { type: 'null'; flags: OpenFlag }
  | { type: 'file'; path: string; flags: OpenFlag; mode: number }
  | { type: 'dup'; fd: number }
  | { type: 'capture'; mode: CaptureMode; encoding: 'utf-8' | null; attached: boolean };

/** One fd of the child: its number, the name it is known by (stdin, stdout, stderr or the number) and what it is. */
export interface FdEntry {
  fd: number;
  name: string;
  spec: FdSpec;
}

/** The name of fd `n` in documents: stdin, stdout, stderr or the decimal number. */
export function fdName(n: number): string {
  return n === 0 ? 'stdin' : n === 1 ? 'stdout' : n === 2 ? 'stderr' : String(n);
}

/** The fd a name stands for: stdin/stdout/stderr or a decimal number; null for anything else. */
export function parseFdName(name: string): number | null {
  if (name === 'stdin') return 0;
  if (name === 'stdout') return 1;
  if (name === 'stderr') return 2;
  if (!/^(0|[1-9][0-9]{0,3})$/.test(name)) return null;
  return Number(name);
}

/** Highest fd a spec may name: the shell the wrapper runs in (dash) redirects only 0-9, and spawn() needs no more. */
export const MAX_FD = 9;

/** open(2) flags of a Procstar flag name; Default means Read for stdin, Write for stdout and stderr, ReadWrite for others. */
export function openFlags(flag: OpenFlag, fd: number): number {
  const f = flag === 'Default' ? (fd === 0 ? 'Read' : fd <= 2 ? 'Write' : 'ReadWrite') : flag;
  switch (f) {
    case 'Read':
      return fsc.O_RDONLY;
    case 'Write':
      return fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC;
    case 'Create':
      return fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL;
    case 'Replace':
      return fsc.O_WRONLY | fsc.O_TRUNC;
    case 'CreateAppend':
      return fsc.O_WRONLY | fsc.O_CREAT | fsc.O_APPEND;
    case 'Append':
      return fsc.O_WRONLY | fsc.O_APPEND;
    default:
      return fsc.O_RDWR | fsc.O_CREAT;
  }
}

/** A failure to set up the child's fds or find its program: the proc's error, in Procstar's words. */
export class SetupError extends Error {}

function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const what = e.message?.replace(/^[A-Z0-9]+: /, '').replace(/, \w+ '.*'$/, '') ?? String(err);
  return e.code ? `${e.code}: ${what}` : what;
}

/**
 * Checks, as execve(2) would, that `exe` (relative to `cwd` when it has no leading slash; no
 * PATH search) is an executable file. Throws a SetupError "execve failed: EXE: ENOENT: …".
 */
export function checkExecutable(exe: string, cwd: string): string {
  const path = resolve(cwd, exe);
  let st: StatsBase<number>;
  try {
    st = statSync(path);
    if (st.isDirectory()) throw Object.assign(new Error('permission denied'), { code: 'EACCES' });
    accessSync(path, fsc.X_OK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const msg = e.code === 'ENOENT' ? 'no such file or directory' : e.code === 'EACCES' ? 'permission denied' : errnoText(err);
    throw new SetupError(`execve failed: ${exe}: ${e.code ?? 'error'}: ${msg}`);
  }
  return path;
}

/** What spawn() and the wrapper need to give the child its fds, and what the agent then reads or closes. */
export interface PreparedFds {
  stdio: StdioOptions;
  /** Shell redirections the wrapper runs after closing its own fd 3, in order. */
  prelude: string[];
  /** Fds the watchdog must not hold (it would keep a capture pipe open). */
  watchdogCloses: number[];
  /** stdio index (a pipe the agent reads) of each memory capture, by child fd. */
  pipes: Map<number, number>;
  /** Fds the agent opened for spawn(): closed in the agent once the child has them. */
  opened: number[];
}

/** The fd the wrapper uses to talk to the agent; a spec's own fd 3 is moved there after the wrapper is done with it. */
const CONTROL_FD = 3;

/**
 * Turns fd entries into spawn() stdio and wrapper redirections, opening files now (so a bad
 * path is the proc's error before anything runs). `tempfile(fd)` gives the path of a tempfile
 * capture. Fds the spec does not name: 0-2 inherit the agent's; higher ones are closed.
 */
export function prepareFds(entries: readonly FdEntry[], cwd: string, tempfile: (fd: number) => string): PreparedFds {
  const stdio: (StdioOptions & unknown[])[number][] = ['inherit', 'inherit', 'inherit', 'pipe'];
  const prelude: string[] = [];
  const pipes = new Map<number, number>();
  const opened: number[] = [];
  const late: string[] = [];
  const used = new Set(entries.map((e) => e.fd));
  // Fd 3 of the spec sits at a free slot until the wrapper has closed its own fd 3.
  let staged3: number | null = null;
  const slot = (fd: number): number => {
    if (fd !== CONTROL_FD) return fd;
    if (staged3 === null) {
      for (let s = 4; s <= MAX_FD; s++)
        if (!used.has(s)) {
          staged3 = s;
          break;
        }
      if (staged3 === null) throw new SetupError('fd 3 cannot be set up together with every fd from 4 to 9');
      used.add(staged3);
    }
    return staged3;
  };
  const put = (fd: number, value: (typeof stdio)[number]) => {
    // A closed fd 3 needs no slot: the wrapper closes its own fd 3 anyway.
    if (fd === CONTROL_FD && value === 'ignore') return;
    const at = slot(fd);
    while (stdio.length <= at) stdio.push('ignore');
    stdio[at] = value;
  };
  try {
    for (const { fd, spec } of entries) {
      switch (spec.type) {
        case 'inherit':
          // The agent's own fds beyond stdio are its internals: never handed to a child.
          put(fd, fd <= 2 ? 'inherit' : 'ignore');
          break;
        case 'close':
          if (fd <= 2) {
            put(fd, 'ignore');
            late.push(`exec ${fd}<&-`);
          } else put(fd, 'ignore');
          break;
        case 'null':
        case 'file': {
          const path = spec.type === 'null' ? '/dev/null' : resolve(cwd, spec.path);
          let n: number;
          try {
            n = openSync(path, openFlags(spec.flags, fd), spec.type === 'file' ? spec.mode : 0o666);
          } catch (err) {
            throw new SetupError(`failed to open ${spec.type === 'null' ? '/dev/null' : spec.path} for fd ${fd}: ${errnoText(err)}`);
          }
          opened.push(n);
          put(fd, n);
          break;
        }
        case 'dup':
          // The source as the child has it by then, so done by the wrapper, in order.
          put(fd, 'ignore');
          late.push(`exec ${fd}>&${spec.fd}`);
          break;
        case 'capture':
          if (spec.mode === 'memory') {
            put(fd, 'pipe');
            pipes.set(fd, slot(fd));
          } else {
            let n: number;
            try {
              n = openSync(tempfile(fd), fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
            } catch (err) {
              throw new SetupError(`failed to create the capture file of fd ${fd}: ${errnoText(err)}`);
            }
            opened.push(n);
            put(fd, n);
          }
          break;
      }
    }
  } catch (err) {
    for (const n of opened) closeSync(n);
    throw err;
  }
  if (staged3 !== null) prelude.push(`exec 3>&${staged3} ${staged3}>&-`);
  // A fd 3 the spec does not name stays closed (the wrapper closed its own).
  prelude.push(...late);
  const watchdogCloses = [...used].filter((n) => n > CONTROL_FD && n <= MAX_FD).sort((a, b) => a - b);
  return { stdio: stdio as StdioOptions, prelude, watchdogCloses, pipes, opened };
}

/** Closes the agent's copies of the fds it opened for a child. */
export function closeOpened(fds: PreparedFds): void {
  for (const n of fds.opened) {
    try {
      closeSync(n);
    } catch {
      // already closed
    }
  }
  fds.opened = [];
}

/**
 * The memory captures of one proc: bytes as the child wrote them (no line splitting), up to
 * `maxBytes` for all of its fds together; past it the rest is read and dropped, and counted.
 */
export class MemoryCaptures {
  private readonly chunks = new Map<number, Buffer[]>();
  private readonly lengths = new Map<number, number>();
  private total = 0;
  /** Bytes dropped per fd once the cap was reached. */
  readonly dropped = new Map<number, number>();

  constructor(readonly maxBytes: number) {}

  push(fd: number, chunk: Buffer): void {
    const room = Math.max(0, this.maxBytes - this.total);
    const keep = chunk.length <= room ? chunk : chunk.subarray(0, room);
    if (keep.length < chunk.length) this.dropped.set(fd, (this.dropped.get(fd) ?? 0) + chunk.length - keep.length);
    if (keep.length === 0) return;
    let list = this.chunks.get(fd);
    if (!list) this.chunks.set(fd, (list = []));
    list.push(keep);
    this.lengths.set(fd, (this.lengths.get(fd) ?? 0) + keep.length);
    this.total += keep.length;
  }

  /** The bytes captured from `fd` so far (one buffer, joined once and kept joined). */
  bytes(fd: number): Buffer {
    const list = this.chunks.get(fd);
    if (!list || list.length === 0) return Buffer.alloc(0);
    if (list.length > 1) list.splice(0, list.length, Buffer.concat(list));
    return list[0];
  }

  length(fd: number): number {
    return this.lengths.get(fd) ?? 0;
  }
}
