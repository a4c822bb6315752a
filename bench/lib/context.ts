import type { BenchApp } from './apps.js';

export interface BenchContext {
  /** Temp dir for this bench run: agents' state, archives, peers' files. Removed at the end. */
  workDir: string;
  app: BenchApp;
  /** Runs per scenario; each figure is their median. */
  runs: number;
  /** Measure PM2 and supervisord too. */
  peers: boolean;
  /** Settings passed to every agent (`--agent-setting cgroups=false`), over the scenarios' own. */
  agentSettings: Record<string, string>;
  /** Watch drover's RSS for a while after the fleet's idle window (adds ~90 s). */
  longIdle: boolean;
  /** Progress for the person watching (stderr), never part of the results. */
  log(line: string): void;
}
