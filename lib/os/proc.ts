import { closeSync, openSync, readdirSync, readSync } from 'node:fs';

/** One live process as /proc describes it. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  /** Start time in clock ticks since boot: with the pid, it identifies a process across pid reuse. */
  starttime: number;
  /** CPU time in clock ticks: its own, and that of the children it waited for. */
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
  /** Resident set size in pages. */
  rss: number;
}

/** Parses /proc/PID/stat; the command name may hold spaces and parentheses, so split after the last ")". */
export function parseStat(text: string): ProcEntry | null {
  const close = text.lastIndexOf(')');
  if (close === -1) return null;
  const pid = Number(text.slice(0, text.indexOf(' ')));
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state); field N is f[N - 3].
  return {
    pid,
    state: f[0],
    ppid: Number(f[1]),
    pgid: Number(f[2]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
    starttime: Number(f[19]),
    rss: Number(f[21]),
  };
}

// One buffer for every read: a stat line is a few hundred bytes.
const buf = Buffer.allocUnsafe(4096);

/** /proc/PID/stat as text, or null when the process is gone. open/read/close: fewer syscalls than readFileSync. */
function readStatText(pid: number | string): string | null {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/stat`, 'r');
  } catch {
    return null; // gone between listing and reading
  }
  try {
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.toString('latin1', 0, n);
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

export function readProc(pid: number): ProcEntry | null {
  const text = readStatText(pid);
  return text === null ? null : parseStat(text);
}

function isPid(name: string): boolean {
  const c = name.charCodeAt(0);
  return c >= 48 && c <= 57;
}

/** Every process on the host, in one synchronous pass over /proc. */
export function listProcesses(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync('/proc')) {
    if (!isPid(name)) continue;
    const text = readStatText(name);
    const e = text === null ? null : parseStat(text);
    if (e) out.push(e);
  }
  return out;
}

/** Field 5 of a stat line without splitting all 52: most processes on a host are not ours. */
function statPgid(text: string): number {
  let i = text.lastIndexOf(')') + 2; // state
  i = text.indexOf(' ', i) + 1; // ppid
  i = text.indexOf(' ', i) + 1; // pgrp
  return Number(text.slice(i, text.indexOf(' ', i)));
}

/** What one pass over /proc found for a process group. */
export interface GroupStat {
  /** utime + cutime, stime + cstime of its members, in clock ticks. */
  userTicks: number;
  systemTicks: number;
  /** Summed resident set size, in pages. */
  rssPages: number;
  /** Members counted (zombies included: they still hold their CPU times until reaped). */
  processes: number;
}

/**
 * Usage of several process groups in one synchronous pass over /proc: every pid's stat is
 * read at most once, whatever the number of groups. `skip` pids (drover's own watchdogs and
 * exit helpers) are not read at all: reading a stat file is most of the cost.
 */
export function scanGroups(pgids: ReadonlySet<number>, skip: ReadonlySet<number> = new Set()): Map<number, GroupStat> {
  const out = new Map<number, GroupStat>();
  if (pgids.size === 0) return out;
  for (const name of readdirSync('/proc')) {
    if (!isPid(name)) continue;
    const pid = Number(name);
    if (skip.has(pid)) continue;
    const text = readStatText(name);
    if (text !== null) countInGroup(out, pgids, text);
  }
  return out;
}

/** Adds one process (its stat line) to its group's figures, if its group is one of `pgids`. */
function countInGroup(out: Map<number, GroupStat>, pgids: ReadonlySet<number>, text: string): void {
  if (!pgids.has(statPgid(text))) return;
  const e = parseStat(text);
  if (!e) return;
  let g = out.get(e.pgid);
  if (!g) out.set(e.pgid, (g = { userTicks: 0, systemTicks: 0, rssPages: 0, processes: 0 }));
  g.userTicks += e.utime + e.cutime;
  g.systemTicks += e.stime + e.cstime;
  if (e.state !== 'Z') g.rssPages += e.rss;
  g.processes++;
}

/**
 * Longest stretch a /proc pass may hold the event loop before it yields: with 1000 processes
 * a whole pass is ~20 ms, which a request arriving meanwhile waited out (status p99).
 */
const SLICE_MS = 2;

/**
 * Visits every pid's stat line like the synchronous passes, but yields to the event loop
 * (setImmediate) whenever a slice has run SLICE_MS, so requests and timers are served between
 * slices. The pass then spans some wall time: processes may come and go meanwhile, which a
 * synchronous pass only hides. Resolves to the time it held the loop, in ms.
 */
async function forEachStatSliced(visit: (pid: number, text: string) => void, skip?: ReadonlySet<number>): Promise<number> {
  let blocked = 0;
  let start = performance.now();
  const names = readdirSync('/proc');
  for (let i = 0; i < names.length; i++) {
    if ((i & 15) === 0 && performance.now() - start > SLICE_MS) {
      blocked += performance.now() - start;
      await new Promise((r) => setImmediate(r));
      start = performance.now();
    }
    const name = names[i];
    if (!isPid(name)) continue;
    const pid = Number(name);
    if (skip?.has(pid)) continue;
    const text = readStatText(name);
    if (text !== null) visit(pid, text);
  }
  return blocked + performance.now() - start;
}

/** scanGroups in slices (see forEachStatSliced), with the time it held the event loop. */
export async function scanGroupsSliced(
  pgids: ReadonlySet<number>,
  skip: ReadonlySet<number> = new Set(),
): Promise<{ stats: Map<number, GroupStat>; blockedMs: number }> {
  const out = new Map<number, GroupStat>();
  if (pgids.size === 0) return { stats: out, blockedMs: 0 };
  const blockedMs = await forEachStatSliced((_pid, text) => countInGroup(out, pgids, text), skip);
  return { stats: out, blockedMs };
}

/** listProcesses in slices (see forEachStatSliced). */
async function listProcessesSliced(): Promise<{ all: ProcEntry[]; blockedMs: number }> {
  const all: ProcEntry[] = [];
  const blockedMs = await forEachStatSliced((_pid, text) => {
    const e = parseStat(text);
    if (e) all.push(e);
  });
  return { all, blockedMs };
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

/** Sends a signal to one process; one that is already gone is not an error. */
export function signalProcess(pid: number, signal: NodeJS.Signals | number): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

const SHARED_SCAN_MIN_GAP_MS = 2;
let scanWaiters: ((all: ProcEntry[]) => void)[] = [];
let scanScheduled = false;
let lastScanEnd = 0;
let lastScanCost = 0;

/**
 * A pass over /proc shared by everyone waiting for processes to go. It runs on the next turn
 * of the event loop and answers every caller that asked meanwhile; after a pass, the next
 * waits twice as long as that pass took, so scanning never takes more than a third of the
 * agent's time. With 1000 processes a pass costs ~20 ms: one per exiting or stopping child
 * (a crash loop, a shutdown) used to keep the agent blocked for seconds. It runs in slices of
 * a few ms (forEachStatSliced), so a request never waits for a whole pass. With few
 * processes passes are cheap and a dying process is seen gone within a few ms.
 */
export function sharedProcessList(): Promise<ProcEntry[]> {
  return new Promise((resolve) => {
    scanWaiters.push(resolve);
    if (scanScheduled) return;
    scanScheduled = true;
    const wait = lastScanEnd + Math.max(SHARED_SCAN_MIN_GAP_MS, 2 * lastScanCost) - performance.now();
    if (wait > 0) setTimeout(() => void runSharedScan(), wait);
    else setImmediate(() => void runSharedScan());
  });
}

async function runSharedScan(): Promise<void> {
  // Callers arriving while this pass runs wait for the next one: it starts after they asked.
  const waiters = scanWaiters;
  scanWaiters = [];
  const { all, blockedMs } = await listProcessesSliced();
  lastScanEnd = performance.now();
  lastScanCost = blockedMs;
  for (const resolve of waiters) resolve(all);
  scanScheduled = false;
  if (scanWaiters.length) {
    // Ask again for those who came meanwhile (scheduling with the usual gap).
    const waiting = scanWaiters;
    scanWaiters = [];
    for (const w of waiting) void sharedProcessList().then(w);
  }
}

/**
 * Whether a process group still has a live (non-zombie) member. kill(-pgid, 0) answers "no"
 * for free when not even a zombie is left; otherwise the shared /proc pass tells.
 */
export async function groupHasLiveMembers(pgid: number): Promise<boolean> {
  if (!signalGroup(pgid, 0)) return false;
  return liveGroupMembers(pgid, await sharedProcessList()).length > 0;
}
