import type { ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { CgroupFigures, Cgroups } from './cgroup.js';
import { LineSplitter } from './lines.js';
import type { UsageSampler } from './sampler.js';
import type { LiveUsage, RunUsage, UsageMethod } from './usage.js';
import type { HelperReport } from './wait-helper.js';

/** Measures commands drover spawns itself (build steps), each in its own process group. */
export interface GroupMeter {
  /** How to spawn `command` so that it is measured from its first instruction. */
  spawn(command: string, args: string[]): MeteredSpawn;
}

export interface MeteredSpawn {
  command: string;
  args: string[];
  /** Whether fd 3 must be a pipe (the helper reports a failed exec and cgroup joins there). */
  report: boolean;
  /** Call right after spawn(). */
  started(child: ChildProcess): void;
  /** Call once the child closed: the errno name if the command could not be executed at all. */
  execError(): string | null;
  /** Call once the child closed: its totals. */
  end(): RunUsage | null;
}

/** Each figure from the best source that has it: cgroup, then wait4, then /proc samples. */
export function combineFigures(cg: CgroupFigures, report: HelperReport | null, sample: LiveUsage | null, peakRss: number): RunUsage | null {
  let cpu: { utime: number; stime: number; method: UsageMethod } | null = null;
  if (cg.cpu) cpu = { utime: cg.cpu.utime, stime: cg.cpu.stime, method: `cgroup-${cg.cpu.version}` };
  else if (report) cpu = { utime: report.utime, stime: report.stime, method: 'wait4' };
  else if (sample) cpu = { utime: sample.utime, stime: sample.stime, method: 'proc' };
  let mem: { maxrss: number; method: UsageMethod } | null = null;
  if (cg.memory) mem = { maxrss: cg.memory.peak, method: `cgroup-${cg.memory.version}` };
  else if (report) mem = { maxrss: report.maxrss, method: 'wait4' };
  else if (sample) mem = { maxrss: peakRss, method: 'proc' };
  if (!cpu && !mem) return null;
  return {
    utime: cpu?.utime ?? null,
    stime: cpu?.stime ?? null,
    maxrss: mem?.maxrss ?? null,
    method: { cpu: cpu?.method ?? null, maxrss: mem?.method ?? null },
  };
}

/** Keeps the sample with the most CPU (totals can drop when a member is reaped outside the group) and the peak RSS. */
export class SampleTracker {
  best: LiveUsage | null = null;
  peakRss = 0;

  add(u: LiveUsage): void {
    if (!this.best || u.utime + u.stime >= this.best.utime + this.best.stime) this.best = u;
    this.peakRss = Math.max(this.peakRss, u.rss);
  }
}

const errnoNames = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/**
 * A meter for build steps. With cgroups and the exit helper, the helper joins the step's fresh
 * cgroup and then execs the step (same pid, so the step still leads its process group), and
 * tells us if that exec failed. Without the helper a cgroup could only be joined after the
 * step started, by which time it may have started children we would miss: /proc samples of
 * its group are used instead, honestly labelled.
 */
export function groupMeter(cgroups: Cgroups | null, sampler: UsageSampler | null, helper: string | null): GroupMeter {
  return {
    spawn(command, args) {
      const cg = helper ? (cgroups?.create() ?? null) : null;
      const samples = new SampleTracker();
      let unwatch = () => {};
      let execError: string | null = null;
      let cgroupFailed = false;
      return {
        command: cg ? helper! : command,
        args: cg ? ['--exec', '--close-fd3', ...cg.procsFiles.flatMap((f) => ['--join', f]), command, ...args] : args,
        report: cg !== null,
        started(child) {
          const fd3 = child.stdio[3] as NodeJS.ReadableStream | null | undefined;
          if (fd3) {
            const lines = new LineSplitter((line) => {
              const m = /^exec-failed (\d+)$/.exec(line);
              if (m) execError = errnoNames.get(Number(m[1])) ?? `errno ${m[1]}`;
              if (line.startsWith('cgroup-failed ')) cgroupFailed = true;
            }, 4096);
            fd3.on('data', (c: Buffer) => lines.push(c));
            fd3.on('error', () => {});
          }
          if (child.pid !== undefined && sampler) unwatch = sampler.watch(child.pid, { startedAt: Date.now() }, (u) => samples.add(u));
        },
        execError: () => execError,
        end() {
          unwatch();
          const figures = cg && !cgroupFailed ? cg.read() : {};
          cg?.remove();
          return combineFigures(figures, null, samples.best, samples.peakRss);
        },
      };
    },
  };
}
