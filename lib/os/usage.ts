/**
 * Where a figure came from, best first:
 * - `cgroup-v2` / `cgroup-v1`: the run's own cgroup; exact for the whole tree, orphans included.
 *   Memory is the group's peak charge (anonymous memory plus the page cache it brought in).
 * - `wait4`: the exit helper's RUSAGE_CHILDREN; exact CPU for the command and every descendant
 *   that was waited for; memory is the largest single process's peak RSS, not a sum.
 * - `proc`: /proc sampling at the sampler's interval; misses what happened between samples.
 */
export type UsageMethod = 'cgroup-v2' | 'cgroup-v1' | 'wait4' | 'proc';

/**
 * The totals of one run (or one build step): CPU seconds and peak memory in bytes. A figure
 * no method could give (a run that ended before the first /proc sample, without cgroups or
 * the exit helper) is null, with a null method: unknown, never a made-up zero.
 */
export interface RunUsage {
  utime: number | null;
  stime: number | null;
  maxrss: number | null;
  method: { cpu: UsageMethod | null; maxrss: UsageMethod | null };
}

/** Live usage of a running process tree, from one /proc pass. */
export interface LiveUsage {
  at: number;
  /** Percent of one core since the previous sample (or since the start, for the first one). */
  cpuPercent: number;
  rss: number;
  processes: number;
  /** CPU seconds so far, as /proc counts them (members alive or waited for). */
  utime: number;
  stime: number;
}

/**
 * Totals of several runs (build steps, every run so far): CPU adds up, memory peaks do not
 * (the largest counts). Unknown figures are left out of the sum.
 */
export function addUsage(a: RunUsage | null, b: RunUsage | null): RunUsage | null {
  if (!a) return b;
  if (!b) return a;
  return {
    utime: add(a.utime, b.utime),
    stime: add(a.stime, b.stime),
    maxrss: a.maxrss === null ? b.maxrss : b.maxrss === null ? a.maxrss : Math.max(a.maxrss, b.maxrss),
    method: { cpu: worse(a.method.cpu, b.method.cpu), maxrss: worse(a.method.maxrss, b.method.maxrss) },
  };
}

function add(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : a + b;
}

const rank: (UsageMethod | null)[] = ['cgroup-v2', 'cgroup-v1', 'wait4', 'proc'];

/** A sum is only as exact as its least exact part. */
function worse(a: UsageMethod | null, b: UsageMethod | null): UsageMethod | null {
  if (a === null) return b;
  if (b === null) return a;
  return rank.indexOf(a) >= rank.indexOf(b) ? a : b;
}

/** Rounds for the API: microseconds for CPU, whole bytes. */
export function usageDocument(u: RunUsage | null | undefined) {
  if (!u) return null;
  return {
    utime: u.utime === null ? null : round6(u.utime),
    stime: u.stime === null ? null : round6(u.stime),
    maxrss: u.maxrss === null ? null : Math.round(u.maxrss),
    method: u.method,
  };
}

export function round6(n: number): number {
  return Math.round(n * 1e6) / 1e6;
}
