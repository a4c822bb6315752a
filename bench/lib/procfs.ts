import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let clkTck: number | undefined;

/** Kernel clock ticks per second, the unit of utime/stime in /proc/PID/stat. */
function ticksPerSecond(): number {
  clkTck ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return clkTck;
}

/** Resident set size of one process in bytes (VmRSS), as the kernel counts it; or its peak (VmHWM). */
export function rssBytes(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** CPU time (user + system) one process has used so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): f[0] is field 3; utime is 14, stime 15.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / ticksPerSecond();
}

/** Share of one core a process used over `ms` of wall time, in percent. */
export async function cpuPercentOver(pid: number, ms: number): Promise<number> {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const c1 = cpuSeconds(pid);
  const wall = (performance.now() - t0) / 1000;
  return ((c1 - c0) / wall) * 100;
}

interface ProcEntry {
  pid: number;
  ppid: number;
  state: string;
  /** Clock ticks after boot: with the pid, it tells a process from a later one that reused its pid. */
  starttime: number;
}

function readEntry(pid: number): ProcEntry | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null; // gone while we looked
  }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { pid, state: f[0], ppid: Number(f[1]), starttime: Number(f[19]) };
}

/** Every live (non-zombie) descendant of `root`, from one pass over /proc. */
export function descendants(root: number): ProcEntry[] {
  const byParent = new Map<number, ProcEntry[]>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const e = readEntry(pid);
    if (!e || e.state === 'Z') continue;
    const siblings = byParent.get(e.ppid);
    if (siblings) siblings.push(e);
    else byParent.set(e.ppid, [e]);
  }
  const out: ProcEntry[] = [];
  const walk = (pid: number): void => {
    for (const c of byParent.get(pid) ?? []) {
      out.push(c);
      walk(c.pid);
    }
  };
  walk(root);
  return out;
}

/** Those of `procs` still running (same pid and start time, not a zombie). */
export function stillAlive(procs: ProcEntry[]): ProcEntry[] {
  return procs.filter((p) => {
    const now = readEntry(p.pid);
    return now !== null && now.starttime === p.starttime && now.state !== 'Z';
  });
}
