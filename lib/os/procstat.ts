// A process's /proc/PID/stat and /proc/PID/statm as documents (Procstar's `proc_stat` and
// `proc_statm`): times in seconds, sizes in bytes, the start time as RFC 3339, signal masks
// as names. Parsing is pure; reading is one small synchronous read each.
import { readFileSync } from 'node:fs';
import { signalName } from './signals.js';

/** Clock ticks per second: 100 on every Linux that Node runs on (USER_HZ). */
const CLK_TCK = 100;

export interface HostFacts {
  /** Boot time, ms since the epoch. */
  bootTime: number;
  pageSize: number;
}

let facts: HostFacts | null = null;

/** Boot time from /proc/stat, page size from the agent's own statm and status; read once. */
export function hostFacts(): HostFacts {
  if (facts) return facts;
  let bootTime = 0;
  let pageSize = 4096;
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'latin1'));
    if (m) bootTime = Number(m[1]) * 1000;
    const resident = Number(readFileSync('/proc/self/statm', 'latin1').split(' ')[1]);
    const rssKb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1]);
    if (resident > 0 && rssKb > 0) pageSize = 2 ** Math.round(Math.log2((rssKb * 1024) / resident));
  } catch {
    // no /proc: the defaults
  }
  facts = { bootTime, pageSize };
  return facts;
}

function signals(mask: string): string[] {
  let bits = BigInt(mask);
  const out: string[] = [];
  for (let s = 1; bits > 0n && s <= 64; s++, bits >>= 1n) if (bits & 1n) out.push(signalName(s) ?? String(s));
  return out;
}

/** Parses /proc/PID/stat (proc(5)); null when it is not one. */
export function parseProcStat(text: string, host: HostFacts) {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open === -1 || close === -1) return null;
  const f = text
    .slice(close + 2)
    .trim()
    .split(' ');
  if (f.length < 20) return null;
  // f[0] is field 3 (state); field N is f[N - 3].
  const n = (field: number) => Number(f[field - 3] ?? 0);
  const sec = (field: number) => n(field) / CLK_TCK;
  const tty = n(7);
  const tpgid = n(8);
  const exitSignal = n(38);
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: f[0],
    ppid: n(4),
    pgrp: n(5),
    session: n(6),
    tty_nr: [(tty >> 8) & 0xff, (tty >> 20) | (tty & 0xff)],
    tpgid: tpgid === -1 ? null : tpgid,
    flags: n(9),
    minflt: n(10),
    cminflt: n(11),
    majflt: n(12),
    cmajflt: n(13),
    utime: sec(14),
    stime: sec(15),
    cutime: sec(16),
    cstime: sec(17),
    priority: n(18),
    nice: n(19),
    num_threads: n(20),
    starttime: new Date(host.bootTime + (n(22) * 1000) / CLK_TCK).toISOString(),
    vsize: n(23),
    rss: n(24) * host.pageSize,
    rsslim: n(25),
    signal: signals(f[31 - 3] ?? '0'),
    blocked: signals(f[32 - 3] ?? '0'),
    sigignore: signals(f[33 - 3] ?? '0'),
    sigcatch: signals(f[34 - 3] ?? '0'),
    wchan: n(35),
    exit_signal: exitSignal === 0 ? null : signalName(exitSignal),
    processor: n(39),
    rt_priority: n(40),
    policy: n(41),
    delayacct_blkio_ticks: sec(42),
    guest_time: sec(43),
    cguest_time: n(44),
    exit_code: n(52),
  };
}

/** Parses /proc/PID/statm into bytes; null when it is not one. */
export function parseProcStatm(text: string, host: HostFacts) {
  const f = text.trim().split(' ').map(Number);
  if (f.length < 6 || f.some((v) => !Number.isFinite(v))) return null;
  const b = (i: number) => f[i] * host.pageSize;
  return { size: b(0), resident: b(1), shared: b(2), text: b(3), data: b(5) };
}

function read(pid: number, file: string): string | null {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'latin1');
  } catch {
    return null;
  }
}

export function readProcStat(pid: number) {
  const text = read(pid, 'stat');
  return text === null ? null : parseProcStat(text, hostFacts());
}

export function readProcStatm(pid: number) {
  const text = read(pid, 'statm');
  return text === null ? null : parseProcStatm(text, hostFacts());
}
