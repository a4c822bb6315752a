// Live usage where there is no /proc (macOS developer machines running `drover start`):
// pidusage asks `ps` for the group leader. Coarser than the /proc sampler (the leader only,
// not the whole group, one `ps` per process), so it is only the fallback.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { GroupSampler } from './child.js';
import { UsageSampler, type WatchOptions } from './sampler.js';
import type { LiveUsage } from './usage.js';

interface PidStat {
  cpu: number;
  memory: number;
  ctime: number;
  timestamp: number;
}
type Pidusage = ((pid: number) => Promise<PidStat>) & { clear(): void };

export class PidusageSampler implements GroupSampler {
  private readonly pidusage: Pidusage;

  constructor(
    readonly intervalMs: number,
    pidusage?: Pidusage,
  ) {
    // Loaded only here: Linux never needs it.
    this.pidusage = pidusage ?? (createRequire(import.meta.url)('pidusage') as Pidusage);
  }

  watch(pgid: number, _opts: WatchOptions, onSample: (u: LiveUsage) => void): () => void {
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    // A timeout chain, not an interval: one `ps` never overlaps the next.
    const tick = async () => {
      try {
        const s = await this.pidusage(pgid);
        // ctime is user + system in ms, not split: counted as user time.
        if (!stopped)
          onSample({
            at: s.timestamp,
            cpuPercent: Math.round(s.cpu * 10) / 10,
            rss: s.memory,
            processes: 1,
            utime: s.ctime / 1000,
            stime: 0,
          });
      } catch {
        // gone: its exit is reported elsewhere
      }
      if (!stopped) {
        timer = setTimeout(tick, this.intervalMs);
        timer.unref();
      }
    };
    timer = setTimeout(tick, this.intervalMs);
    timer.unref();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }
}

/** The /proc sampler where there is a /proc (Linux), pidusage elsewhere. */
export function portableSampler(intervalMs: number, hasProc: boolean = existsSync('/proc/self/stat')): GroupSampler {
  return hasProc ? new UsageSampler({ intervalMs }) : new PidusageSampler(intervalMs);
}
