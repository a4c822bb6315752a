import { readdirSync, readFileSync } from 'node:fs';

/** One live process as /proc describes it. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  /** Start time in clock ticks since boot: with the pid, it identifies a process across pid reuse. */
  starttime: number;
}

/** Parses /proc/PID/stat; the command name may hold spaces and parentheses, so split after the last ")". */
export function parseStat(text: string): ProcEntry | null {
  const close = text.lastIndexOf(')');
  if (close === -1) return null;
  const pid = Number(text.slice(0, text.indexOf(' ')));
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state); field N is f[N - 3].
  return { pid, state: f[0], ppid: Number(f[1]), pgid: Number(f[2]), starttime: Number(f[19]) };
}

export function readProc(pid: number): ProcEntry | null {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null; // gone between listing and reading
  }
}

/** Every process on the host, in one synchronous pass over /proc. */
export function listProcesses(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync('/proc')) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const e = readProc(Number(name));
    if (e) out.push(e);
  }
  return out;
}

/**
 * Live (non-zombie) members of a process group. kill(-pgid, 0) is not enough: it succeeds
 * while unreaped zombies remain, and zombies adopted by a non-reaping init may never go.
 */
export function liveGroupMembers(pgid: number, all: ProcEntry[] = listProcesses()): number[] {
  return all.filter((p) => p.pgid === pgid && p.state !== 'Z' && p.state !== 'X').map((p) => p.pid);
}

/** Sends a signal to a whole process group; a group that is already gone is not an error. */
export function signalGroup(pgid: number, signal: NodeJS.Signals | number): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}
