import { addUsage, type LiveUsage, type RunUsage } from '../os/usage.js';

/** Totals of one stage (build or run) of a process: every run so far, and the last one. */
export class StageTotals {
  runs = 0;
  /** Runs that had figures at all (a run that could not start has none). */
  measured = 0;
  total: RunUsage | null = null;
  last: RunUsage | null = null;

  add(usage: RunUsage | null): void {
    this.runs++;
    this.last = usage;
    if (!usage) return;
    this.measured++;
    this.total = addUsage(this.total, usage);
  }
}

/** What a process used: per-stage totals and a bounded window of recent live samples. */
export class ProcessMetrics {
  readonly build = new StageTotals();
  readonly run = new StageTotals();
  /** The latest sample of the running child; null when none runs. */
  live: LiveUsage | null = null;
  private readonly window: LiveUsage[] = [];

  constructor(private readonly maxSamples: number) {}

  sample(u: LiveUsage): void {
    this.live = u;
    this.window.push(u);
    if (this.window.length > this.maxSamples) this.window.shift();
  }

  private buildOf: string | null = null;

  /** The build behind the release this process runs; counted once per release, however often it is reused. */
  releaseBuilt(releaseId: string, usage: RunUsage | null): void {
    if (releaseId === this.buildOf) return;
    this.buildOf = releaseId;
    this.build.add(usage);
  }

  runEnded(usage: RunUsage | null): void {
    this.live = null;
    this.run.add(usage);
  }

  get samples(): readonly LiveUsage[] {
    return this.window;
  }
}
