// The optional exit helper (native/drover-wait.c, built by `npm ci` when a C compiler exists):
// where it is, whether it works here, and what its report line says.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** What the helper saw: the raw wait status and wait4's usage of everything it reaped. */
export interface HelperReport {
  status: number;
  utime: number;
  stime: number;
  /** Bytes: the largest resident set among the reaped processes (not their sum). */
  maxrss: number;
  /** The rest of wait4's rusage (absent from a helper built from an older source). */
  rusage?: { minflt: number; majflt: number; nswap: number; inblock: number; oublock: number; nvcsw: number; nivcsw: number };
}

export function packageRoot(): string | null {
  for (let dir = import.meta.dirname; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return null;
  }
}

let found: string | null | undefined;

/**
 * The path of a working helper, or null. Checked once: it must exist, be executable and
 * report a real exit (a copy built for another machine fails here, not at the first run).
 */
export function findWaitHelper(): string | null {
  if (found !== undefined) return found;
  found = null;
  const root = packageRoot();
  const path = root && join(root, 'native', 'build', 'drover-wait');
  if (!path) return found;
  try {
    accessSync(path, constants.X_OK);
  } catch {
    return found;
  }
  const r = spawnSync(path, ['/bin/sh', '-c', 'exit 7'], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'], timeout: 10_000 });
  // `pid N` first (the command's pid), then the exit report. A helper built from an older
  // source lacks the first; `npm ci` / `npm run build` rebuild it.
  const lines = String(r.output?.[3] ?? '')
    .trim()
    .split('\n');
  const report = parseHelperLine(lines.at(-1) ?? '');
  const pid = parsePidLine(lines[0] ?? '');
  if (r.status === 7 && report?.status === 7 << 8 && pid !== null && pid > 0) found = path;
  return found;
}

/** Parses `pid N` (the command's pid, reported right after the fork); null for anything else. */
export function parsePidLine(line: string): number | null {
  const m = /^pid (\d+)$/.exec(line);
  return m ? Number(m[1]) : null;
}

/** Parses `exit STATUS UTIME_US STIME_US MAXRSS_KB [MINFLT MAJFLT NSWAP INBLOCK OUBLOCK NVCSW NIVCSW]`; null for anything else. */
export function parseHelperLine(line: string): HelperReport | null {
  const m = /^exit (-?\d+) (\d+) (\d+) (\d+)((?: \d+){7})?$/.exec(line);
  if (!m) return null;
  const report: HelperReport = { status: Number(m[1]), utime: Number(m[2]) / 1e6, stime: Number(m[3]) / 1e6, maxrss: Number(m[4]) * 1024 };
  if (m[5]) {
    const [minflt, majflt, nswap, inblock, oublock, nvcsw, nivcsw] = m[5].trim().split(' ').map(Number);
    report.rusage = { minflt, majflt, nswap, inblock, oublock, nvcsw, nivcsw };
  }
  return report;
}
