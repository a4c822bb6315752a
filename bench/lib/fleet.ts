import { cpuPercentOver, rssBytes } from './procfs.js';
import { sleep } from './wait.js';

/** How many `sleep` processes the fleet scenarios start. */
export const FLEET_SIZE = 1000;
/** Quiet time after the last process is running, before idle is measured. */
const SETTLE_MS = 2000;
/** Idle CPU is measured over this much wall time. */
export const IDLE_MS = 10_000;

/** One run of the fleet scenario by one process manager. */
export interface FleetRun {
  /** From the first create request to all processes confirmed running, in seconds. */
  startS: number;
  /** The manager's own RSS (not its children's) at the end of the idle window, in MB. */
  rssMB: number;
  /** The manager's CPU use while its processes run and nobody asks anything, in % of a core. */
  idleCpuPct: number;
  /** CPU seconds the manager itself used while starting them (drover only: peers' work is split over CLI and daemon). */
  startCpuS?: number;
  /** How long a graceful stop of all of them took (drover only). */
  stopS?: number;
  /** Median round trip of GET /metrics with all of them running, in ms (drover only). */
  scrapeMs?: number;
  /** The first scrape of the run. */
  scrapeColdMs?: number;
}

/** The same thing done by drover, PM2 and supervisord. */
export interface FleetDriver {
  name: string;
  /** Null when ready; otherwise why this manager cannot be measured here. */
  prepare(): Promise<string | null>;
  /** Starts FLEET_SIZE sleeps, measures, and tears everything down again. */
  run(): Promise<FleetRun>;
  dispose(): Promise<void>;
}

/** Settles, then measures the manager's idle CPU over IDLE_MS and its RSS after it. */
export async function measureIdle(pid: number): Promise<{ rssMB: number; idleCpuPct: number }> {
  await sleep(SETTLE_MS);
  const idleCpuPct = await cpuPercentOver(pid, IDLE_MS);
  return { idleCpuPct, rssMB: rssBytes(pid) / 1e6 };
}
