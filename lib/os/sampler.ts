// Live CPU and memory of every running process tree, in one synchronous /proc pass per tick
// for all of them: the cost grows with the number of processes on the host, never with
// one `ps` (or one async read chain) per process.
import { spawnSync } from 'node:child_process';
import { scanGroups, scanGroupsSliced, type GroupStat } from './proc.js';
import type { LiveUsage } from './usage.js';

export interface WatchOptions {
  /** When the group started: the first sample's CPU % is measured from here. */
  startedAt: number;
  /** Pids not to read at all (drover's watchdog and exit helper). */
  skip?: () => Iterable<number>;
  /** Whether every process of the group is counted by the sampler's `activity` (it is in a run cgroup). */
  covered?: () => boolean;
}

export interface SamplerOptions {
  intervalMs: number;
  /** Injectable for tests: the /proc pass and the clock. */
  scan?: (pgids: ReadonlySet<number>, skip: ReadonlySet<number>) => Map<number, GroupStat>;
  now?: () => number;
  clockTicks?: number;
  pageSize?: number;
  /**
   * CPU used so far by every covered group together (the runs' parent cgroup), null if unknown.
   * While it stands still and no group came or went, nothing ran, and a pass would find what
   * the last one found: the pass is skipped and its figures are delivered again.
   */
  activity?: () => number | null;
}

/**
 * Passes skipped in a row at most: figures can change without CPU (the kernel reclaiming a
 * page), so an idle fleet is still read in full every so often (a minute at the default 5 s).
 */
const MAX_REUSED_PASSES = 11;

interface Watch extends WatchOptions {
  pgid: number;
  onSample: (u: LiveUsage) => void;
  prev: { at: number; ticks: number } | null;
}

let host: { clockTicks: number; pageSize: number } | undefined;

/** USER_HZ and the page size, asked once; the usual Linux values if getconf is missing. */
function hostConstants(): { clockTicks: number; pageSize: number } {
  if (host) return host;
  const ask = (name: string, fallback: number) => {
    const r = spawnSync('getconf', [name], { encoding: 'utf8', timeout: 5000 });
    const n = Number(r.stdout?.trim());
    return r.status === 0 && Number.isInteger(n) && n > 0 ? n : fallback;
  };
  host = { clockTicks: ask('CLK_TCK', 100), pageSize: ask('PAGESIZE', 4096) };
  return host;
}

export class UsageSampler {
  private readonly watches = new Set<Watch>();
  private timer: NodeJS.Timeout | null = null;
  private readonly scan;
  private readonly now;
  private readonly clockTicks: number;
  private readonly pageSize: number;
  /** The sampler's own cost, for the benchmark: passes made and milliseconds spent in them; passes skipped. */
  readonly cost = { passes: 0, ms: 0, reused: 0 };
  /** The last full pass: its figures, and `activity` as it was just before it. */
  private last: { stats: Map<number, GroupStat>; activity: number; generation: number } | null = null;
  /** Passes reused since the last full one. */
  private reusedInARow = 0;
  /** Counts groups coming and going. */
  private generation = 0;

  constructor(private readonly opts: SamplerOptions) {
    this.scan = opts.scan ?? scanGroups;
    this.now = opts.now ?? Date.now;
    const c = opts.clockTicks && opts.pageSize ? null : hostConstants();
    this.clockTicks = opts.clockTicks ?? c!.clockTicks;
    this.pageSize = opts.pageSize ?? c!.pageSize;
  }

  get intervalMs(): number {
    return this.opts.intervalMs;
  }

  get watching(): number {
    return this.watches.size;
  }

  /** Samples process group `pgid` every tick until the returned function is called. */
  watch(pgid: number, opts: WatchOptions, onSample: (u: LiveUsage) => void): () => void {
    const w: Watch = { ...opts, pgid, onSample, prev: null };
    this.watches.add(w);
    this.generation++;
    if (!this.timer && this.opts.intervalMs > 0) {
      this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
      this.timer.unref(); // sampling alone never keeps the agent alive
    }
    return () => {
      if (this.watches.delete(w)) this.generation++;
      if (this.watches.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = null;
      }
    };
  }

  /** The groups to read and the pids to leave out, for one pass. */
  private targets(): { pgids: Set<number>; skip: Set<number> } {
    const pgids = new Set<number>();
    const skip = new Set<number>();
    for (const w of this.watches) {
      pgids.add(w.pgid);
      for (const p of w.skip?.() ?? []) skip.add(p);
    }
    return { pgids, skip };
  }

  /** One pass over /proc for every watched group, synchronously. */
  sample(): void {
    if (this.watches.size === 0) return;
    const t0 = performance.now();
    const activity = this.reuse();
    if (activity === undefined) return;
    const generation = this.generation;
    const { pgids, skip } = this.targets();
    const stats = this.scan(pgids, skip);
    this.remember(stats, activity, generation);
    this.deliver(stats);
    this.cost.passes++;
    this.cost.ms += performance.now() - t0;
  }

  /**
   * Delivers the last pass's figures again when nothing can have changed since (undefined is
   * returned); otherwise the activity reading a new pass is to remember (read before it, so
   * whatever runs during the pass shows in the next reading).
   */
  private reuse(): number | null | undefined {
    const activity = this.opts.activity?.() ?? null;
    const last = this.last;
    if (
      activity !== null &&
      last !== null &&
      this.generation === last.generation &&
      activity === last.activity &&
      this.reusedInARow < MAX_REUSED_PASSES &&
      [...this.watches].every((w) => w.covered?.() === true)
    ) {
      this.reusedInARow++;
      this.cost.reused++;
      this.deliver(last.stats);
      return undefined;
    }
    return activity;
  }

  /** A full pass's figures, with what was true when it began. */
  private remember(stats: Map<number, GroupStat>, activity: number | null, generation: number): void {
    this.last = activity === null ? null : { stats, activity, generation };
    this.reusedInARow = 0;
  }

  private ticking = false;

  /**
   * A timer's pass: the real /proc pass runs in slices (scanGroupsSliced), so a status request
   * never waits out a whole pass (~20 ms with 1000 processes); an injected scan runs as sample().
   */
  private async tick(): Promise<void> {
    if (this.opts.scan) return this.sample();
    if (this.watches.size === 0 || this.ticking) return;
    this.ticking = true;
    try {
      const activity = this.reuse();
      if (activity === undefined) return;
      const generation = this.generation;
      const { pgids, skip } = this.targets();
      const { stats, blockedMs } = await scanGroupsSliced(pgids, skip);
      const t0 = performance.now();
      this.remember(stats, activity, generation);
      this.deliver(stats);
      this.cost.passes++;
      this.cost.ms += blockedMs + performance.now() - t0;
    } finally {
      this.ticking = false;
    }
  }

  /** Turns one pass's figures into a sample for each watched group still there. */
  private deliver(stats: Map<number, GroupStat>): void {
    const at = this.now();
    for (const w of [...this.watches]) {
      if (!this.watches.has(w)) continue; // unwatched by an earlier sample's callback
      const g = stats.get(w.pgid);
      if (!g) continue; // gone: its exit is reported elsewhere
      const ticks = g.userTicks + g.systemTicks;
      const prev = w.prev ?? { at: w.startedAt, ticks: 0 };
      const seconds = (at - prev.at) / 1000;
      // A member reaped by a parent outside the group takes its ticks with it: never negative.
      const cpuPercent = seconds > 0 ? Math.max(0, ((ticks - prev.ticks) / this.clockTicks / seconds) * 100) : 0;
      w.prev = { at, ticks };
      w.onSample({
        at,
        cpuPercent: Math.round(cpuPercent * 10) / 10,
        rss: g.rssPages * this.pageSize,
        processes: g.processes,
        utime: g.userTicks / this.clockTicks,
        stime: g.systemTicks / this.clockTicks,
      });
    }
  }

  close(): void {
    this.watches.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
