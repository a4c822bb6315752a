import type { BenchContext } from '../lib/context.js';
import { FLEET_SIZE, IDLE_MS, type FleetDriver, type FleetRun } from '../lib/fleet.js';
import type { PeerFigure, Row } from '../lib/row.js';
import { median, summarize } from '../lib/stats.js';
import { droverFleet, type DroverFleetNotes } from './fleet-drover.js';

/** Runs drover and every available peer `ctx.runs` times each and turns the runs into three rows. */
export async function fleetScenario(ctx: BenchContext, peers: FleetDriver[]): Promise<Row[]> {
  const seen: DroverFleetNotes = {};
  const drover = droverFleet(ctx, seen);
  const results = new Map<FleetDriver, FleetRun[] | string>();
  for (const driver of [drover, ...peers]) {
    const missing = await driver.prepare();
    if (missing) {
      ctx.log(`  ${driver.name}: not measured: ${missing}`);
      results.set(driver, missing);
      continue;
    }
    const runs: FleetRun[] = [];
    try {
      for (let i = 0; i < ctx.runs; i++) {
        const r = await driver.run();
        ctx.log(
          `  ${driver.name} run ${i + 1}: start ${r.startS.toFixed(3)} s, RSS ${r.rssMB.toFixed(1)} MB, idle CPU ${r.idleCpuPct.toFixed(2)}%`,
        );
        runs.push(r);
      }
      results.set(driver, runs);
    } catch (err) {
      if (driver === drover) throw err;
      const message = (err as Error).message.split('\n')[0];
      ctx.log(`  ${driver.name}: failed: ${message}`);
      results.set(driver, `failed: ${message}`);
    } finally {
      await driver.dispose();
    }
  }
  const mine = results.get(drover) as FleetRun[];
  const peerFigures = (pick: (r: FleetRun) => number): PeerFigure[] =>
    peers.map((p) => {
      const r = results.get(p);
      return typeof r === 'string' || !r
        ? { name: p.name, figure: null, note: r ?? 'not run' }
        : { name: p.name, figure: summarize(r.map(pick)) };
    });
  return [
    {
      id: 'fleet-start',
      label: `start ${FLEET_SIZE} sleep processes`,
      unit: 's',
      figure: summarize(mine.map((r) => r.startS)),
      target: { max: 1.5, text: '<= 1.5 s' },
      peers: peerFigures((r) => r.startS),
      notes: [
        'create requests 16 at a time, until the listing shows all running',
        `agent CPU while starting ${median(mine.map((r) => r.startCpuS!)).toFixed(2)} s; graceful stop of all ${median(mine.map((r) => r.stopS!)).toFixed(2)} s (medians)`,
      ],
    },
    {
      id: 'fleet-rss',
      label: `agent RSS, ${FLEET_SIZE} running`,
      unit: 'MB',
      figure: summarize(mine.map((r) => r.rssMB)),
      target: { max: 80, text: '<= 80 MB' },
      peers: peerFigures((r) => r.rssMB),
      notes: ['VmRSS at the end of the idle window', ...(seen.longIdle ? [seen.longIdle] : [])],
    },
    {
      id: 'fleet-idle-cpu',
      label: `agent idle CPU, ${FLEET_SIZE} running, ${IDLE_MS / 1000} s`,
      unit: '%',
      figure: summarize(mine.map((r) => r.idleCpuPct)),
      target: { max: 1, text: '<= 1% of a core' },
      peers: peerFigures((r) => r.idleCpuPct),
      notes: [
        seen.metrics
          ? 'metrics on: live usage in the status documents'
          : 'no live usage in the status documents (sampling off, or not on main)',
      ],
    },
    {
      id: 'fleet-metrics-scrape',
      label: `GET /metrics, ${FLEET_SIZE} running (steady)`,
      unit: 'ms',
      figure: summarize(mine.map((r) => r.scrapeMs!)),
      target: { max: 20, text: '<= 20 ms' },
      peers: [],
      notes: [
        `round trip over keep-alive, text format 0.0.4: median of 20 scrapes after 6; the first (cold) scrape took ${mine
          .map((r) => r.scrapeColdMs!.toFixed(1))
          .join(', ')} ms`,
      ],
    },
  ];
}
