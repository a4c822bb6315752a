import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { createMany, features, untilRunning, type StatusDoc } from '../lib/drover.js';
import { json, request } from '../lib/http.js';
import { median } from '../lib/stats.js';
import { FLEET_SIZE, measureIdle, type FleetDriver, type FleetRun } from '../lib/fleet.js';
import { cpuSeconds, rssBytes } from '../lib/procfs.js';
import { sleep } from '../lib/wait.js';

/**
 * drover spawning from the agent itself, as without a C compiler: beside the default (the
 * spawn helper) in the same run, so the helper's effect is measured, not remembered.
 */
export function droverDirectFleet(ctx: BenchContext): FleetDriver {
  return droverFleet(ctx, {}, { name: 'drover, direct spawn', settings: { 'spawn-helper': 'false' } });
}

/** What drover's runs saw besides the figures, for the rows' notes. */
export interface DroverFleetNotes {
  metrics?: boolean;
  /** With --long-idle: RSS watched after the idle window (first run only). */
  longIdle?: string;
}

const LONG_IDLE_MS = 90_000;

/**
 * drover's fleet run: FLEET_SIZE create requests (16 in flight) for `sleep` processes of one
 * app; the clock stops when the listing shows every one `running`. Then, with nobody asking
 * anything, the agent's own idle CPU and RSS; then a graceful stop of everything.
 */
export function droverFleet(
  ctx: BenchContext,
  notes: DroverFleetNotes,
  variant: { name: string; settings: Record<string, string> } = { name: 'drover', settings: {} },
): FleetDriver {
  return {
    name: variant.name,
    prepare: async () => null,
    async run(): Promise<FleetRun> {
      const agent = await startAgent(ctx, variant.settings);
      try {
        const bodies = Array.from({ length: FLEET_SIZE }, (_, i) => ({
          app: 'fleet',
          node: `sleep.${i}`,
          process_type: 'sleep',
          source_url: ctx.app.url,
        }));
        const c0 = cpuSeconds(agent.pid);
        const t0 = performance.now();
        const docs = await createMany(agent, bodies);
        await untilRunning(agent, FLEET_SIZE, docs.at(-1));
        const startS = (performance.now() - t0) / 1000;
        const startCpuS = cpuSeconds(agent.pid) - c0;
        const idle = await measureIdle(agent.pid);
        const { cold: scrapeColdMs, steady: scrapeMs } = await scrape(agent.url);
        notes.metrics = features(await json<StatusDoc>('GET', docs[0].status)).metrics;
        if (ctx.longIdle && !notes.longIdle) notes.longIdle = await longIdleRss(agent.pid, idle.rssMB);
        const stopS = (await agent.stop()) / 1000;
        ctx.log(
          `  ${variant.name}: agent CPU while starting ${startCpuS.toFixed(2)} s; graceful stop of ${FLEET_SIZE} processes took ${stopS.toFixed(2)} s`,
        );
        return { startS, startCpuS, stopS, scrapeMs, scrapeColdMs, ...idle };
      } catch (err) {
        await agent.stop().catch(() => {});
        throw err;
      }
    },
    dispose: async () => {},
  };
}

/**
 * GET /metrics with every process running, in ms: the first (cold) scrape, and the median of 20
 * after 5 more. A Prometheus scrapes every 15 s for as long as the agent runs, so the steady
 * state is the figure; the cold one is reported beside it.
 */
async function scrape(url: string): Promise<{ cold: number; steady: number }> {
  const times: number[] = [];
  for (let i = 0; i < 26; i++) {
    const r = await request('GET', `${url}/metrics`);
    if (r.status !== 200) throw new Error(`GET /metrics answered ${r.status}`);
    times.push(r.ms);
  }
  return { cold: times[0], steady: median(times.slice(6)) };
}

/**
 * RSS right after a burst of creates holds garbage and a grown young generation, which V8
 * gives back only once the process has been idle a while: watch it LONG_IDLE_MS longer.
 */
async function longIdleRss(pid: number, atEndOfIdle: number): Promise<string> {
  let lowest = atEndOfIdle;
  let at = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < LONG_IDLE_MS) {
    await sleep(1000);
    const mb = rssBytes(pid) / 1e6;
    if (mb < lowest) [lowest, at] = [mb, (performance.now() - t0) / 1000];
  }
  const when = at ? `${at.toFixed(0)} s after the idle window` : `(no drop in ${LONG_IDLE_MS / 1000} s)`;
  return `--long-idle, first run: ${atEndOfIdle.toFixed(1)} MB at the end of the idle window, lowest ${lowest.toFixed(1)} MB ${when}`;
}
