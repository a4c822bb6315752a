// Usage figures as the API shows them: snake_case, dates as ISO strings. The run totals'
// own shape (usageDocument) stays in os/usage.ts: process/exit.ts's exitDetail, which the
// event log records, uses it too, and the process layer may not import this one.
import { usageDocument, type LiveUsage, type RunUsage } from '../os/usage.js';

/** A live sample: the status document's `usage` and the metrics document's `current`. */
export function liveDetail(u: LiveUsage | null) {
  if (!u) return null;
  return {
    cpu_percent: u.cpuPercent,
    rss: u.rss,
    processes: u.processes,
    sampled_at: new Date(u.at).toISOString(),
    method: 'proc' as const,
  };
}

/** One of the recent samples in the metrics document. */
export function sampleDocument(u: LiveUsage) {
  return { at: new Date(u.at).toISOString(), cpu_percent: u.cpuPercent, rss: u.rss, processes: u.processes };
}

/** The totals of one stage (build or run), as process/metrics.ts's StageTotals counts them. */
export interface StageFigures {
  runs: number;
  measured: number;
  total: RunUsage | null;
  last: RunUsage | null;
}

export function stageDocument(s: StageFigures) {
  return { runs: s.runs, measured: s.measured, total: usageDocument(s.total), last: usageDocument(s.last) };
}
