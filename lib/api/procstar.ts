// Procstar's documents (its src/res.rs and src/http.rs): the RESULT of a proc, with its keys
// in Procstar's order, and the envelopes `{"data": …}` and `{"errors": {"status", "detail"}}`.
// Pure functions of a ProcView; `procView` is the only code that knows a ManagedProcess.
import { STATUS_CODES } from 'node:http';
import type { ManagedProcess } from '../agent/supervisor.js';
import type { ExitInfo } from '../os/child.js';
import type { FdSpec } from '../os/fds.js';
import { readProcStat, readProcStatm } from '../os/procstat.js';

export type ProcState = 'running' | 'terminated' | 'error';

export interface ProcFdView {
  name: string;
  spec: FdSpec;
  /** The captured bytes (null when the fd is not captured or not attached). */
  bytes: Buffer | null;
  length: number;
}

export interface ProcView {
  /** Not over yet: from the create until the exit is known and every captured byte is in. */
  running: boolean;
  errors: readonly string[];
  pid: number | null;
  procStat: unknown;
  procStatm: unknown;
  /** ms since the epoch. */
  start: number | null;
  stop: number | null;
  now: number;
  exit: ExitInfo | null;
  fds: ProcFdView[];
}

/** `running` until it ends; then `error` when anything kept it from running as asked, else `terminated`. */
export function procState(v: Pick<ProcView, 'running' | 'errors'>): ProcState {
  if (v.running) return 'running';
  return v.errors.length > 0 ? 'error' : 'terminated';
}

/** Procstar's `status`: the raw wait status and what it says; null while running or when it never ran. */
export function procStatus(exit: ExitInfo | null) {
  if (!exit || exit.error) return null;
  if (exit.code !== null) return { status: exit.code << 8, exit_code: exit.code, signum: null, signal: null, core_dump: false };
  const signum = exit.signum ?? null;
  if (signum === null) return null;
  return { status: signum | (exit.coreDump ? 0x80 : 0), exit_code: null, signum, signal: exit.signal, core_dump: exit.coreDump === true };
}

/** Procstar's `rusage`: CPU seconds, maxrss in bytes, the rest of wait4's figures where the exit helper gave them (else null). */
export function procRusage(exit: ExitInfo | null) {
  if (!exit || exit.error) return null;
  const r = exit.rusage;
  return {
    utime: exit.usage?.utime ?? null,
    stime: exit.usage?.stime ?? null,
    maxrss: exit.usage?.maxrss ?? null,
    minflt: r?.minflt ?? null,
    majflt: r?.majflt ?? null,
    nswap: r?.nswap ?? null,
    inblock: r?.inblock ?? null,
    oublock: r?.oublock ?? null,
    nvcsw: r?.nvcsw ?? null,
    nivcsw: r?.nivcsw ?? null,
  };
}

/** drover's cgroup totals of the run, when a cgroup measured it; else null. */
export function cgroupAccounting(exit: ExitInfo | null) {
  const u = exit?.usage;
  if (!u) return null;
  const cpu = u.method.cpu?.startsWith('cgroup') ? { method: u.method.cpu, utime: u.utime, stime: u.stime } : null;
  const memory = u.method.maxrss?.startsWith('cgroup') ? { method: u.method.maxrss, peak: u.maxrss } : null;
  return cpu || memory ? { cpu, memory } : null;
}

/** One fd of `fds`: null when not captured; text, base64 data, or detached (length only). */
export function fdResult(fd: ProcFdView) {
  const s = fd.spec;
  if (s.type !== 'capture') return null;
  if (!s.attached) return { type: 'detached', length: fd.length, encoding: s.encoding };
  const bytes = fd.bytes ?? Buffer.alloc(0);
  if (s.encoding === 'utf-8') return { type: 'text', text: bytes.toString('utf8'), encoding: 'utf-8' };
  return { type: 'data', data: bytes.toString('base64'), encoding: 'base64' };
}

const iso = (ms: number) => new Date(ms).toISOString();

/** The RESULT document, keys in Procstar's order. */
export function procResult(v: ProcView) {
  const end = v.running ? v.now : (v.stop ?? v.now);
  return {
    state: procState(v),
    errors: [...v.errors],
    pid: v.pid,
    proc_stat: v.running ? v.procStat : null,
    proc_statm: v.running ? v.procStatm : null,
    cgroup_accounting: v.running ? null : cgroupAccounting(v.exit),
    times: {
      start: v.start === null ? null : iso(v.start),
      now: iso(v.now),
      stop: v.running || v.stop === null ? null : iso(v.stop),
      elapsed: v.start === null ? null : Math.max(0, end - v.start) / 1000,
    },
    status: v.running ? null : procStatus(v.exit),
    rusage: v.running ? null : procRusage(v.exit),
    fds: Object.fromEntries(v.fds.map((fd) => [fd.name, fdResult(fd)])),
  };
}

/** What the RESULT of a proc shows, read now. */
export async function procView(proc: ManagedProcess, now = Date.now()): Promise<ProcView> {
  const rt = proc.proc!;
  const snap = proc.actor.getSnapshot();
  // `exited` is entered only once the exit is known and the pipes are drained (child.ts).
  const running = !rt.restored && snap.value !== 'exited' && snap.value !== 'deleted';
  const pid = snap.context.pid ?? rt.pid;
  const exit = rt.exit ?? snap.context.lastExit;
  const live = running && snap.context.pid !== null;
  const fds: ProcFdView[] = [];
  for (const e of rt.fds) {
    const attached = e.spec.type === 'capture' && e.spec.attached;
    fds.push({
      name: e.name,
      spec: e.spec,
      bytes: attached ? await rt.output(e.fd) : null,
      length: e.spec.type === 'capture' && !attached ? await rt.outputLength(e.fd) : 0,
    });
  }
  return {
    running,
    errors: rt.errors,
    pid,
    procStat: live ? readProcStat(pid!) : null,
    procStatm: live ? readProcStatm(pid!) : null,
    start: rt.startedAt ?? (exit ? exit.startedAt : null),
    stop: exit ? exit.endedAt : null,
    now,
    exit,
    fds,
  };
}

/** `{"data": …}` */
export function procstarData(data: unknown) {
  return { data };
}

/** `{"errors": {"status": "404 Not Found", "detail": …}}`: one object, the status line's text. */
export function procstarError(status: number, detail: string | null) {
  return { errors: { status: `${status} ${STATUS_CODES[status] ?? 'Error'}`, detail } };
}
