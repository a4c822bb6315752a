import type { Summary } from './stats.js';

export type Unit = 's' | 'ms' | 'MB' | '%' | 'req/s';

/** The same work done by something else in the same bench run. */
export interface PeerFigure {
  name: string;
  figure: Summary | null;
  /** Why there is no figure (peer missing, failed), or what the figure includes. */
  note?: string;
}

/** One printed line of the bench: a figure, its target, and the peers' figures. */
export interface Row {
  id: string;
  label: string;
  unit: Unit;
  figure: Summary;
  target?: {
    max: number;
    text: string;
    /** What the target is checked against when it is not the figure itself (e.g. per-run ratios). */
    on?: Summary;
  };
  peers: PeerFigure[];
  /** What this run of the row included (event log on, metrics on, ...). */
  notes: string[];
}

export function meetsTarget(row: Row): boolean | null {
  if (!row.target) return null;
  return (row.target.on ?? row.figure).median <= row.target.max;
}
