import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { createMany, features, untilRunning } from '../lib/drover.js';
import { FLEET_SIZE, measureIdle, type FleetDriver, type FleetRun } from '../lib/fleet.js';
import type { PeerFigure, Row } from '../lib/row.js';
import { summarize } from '../lib/stats.js';

/**
 * drover's fleet run: FLEET_SIZE create requests (16 in flight) for `sleep` processes of one
 * app; the clock stops when the listing shows every one `running`. Then, with nobody asking
 * anything, the agent's own idle CPU and RSS.
 */
export function droverFleet(ctx: BenchContext, notes: string[]): FleetDriver {
  return {
    name: 'drover',
    prepare: async () => null,
    async run(): Promise<FleetRun> {
      const agent = await startAgent(ctx.workDir);
      try {
        const bodies = Array.from({ length: FLEET_SIZE }, (_, i) => ({
          app: 'fleet',
          node: `sleep.${i}`,
          process_type: 'sleep',
          source_url: ctx.app.url,
        }));
        const t0 = performance.now();
        const docs = await createMany(agent, bodies);
        await untilRunning(agent, FLEET_SIZE);
        const startS = (performance.now() - t0) / 1000;
        const f = features(docs[0]);
        noteOnce(notes, `metrics sampling ${f.metrics ? 'on (status has usage/metrics)' : 'not on main yet'}`);
        const idle = await measureIdle(agent.pid);
        const stopS = (await agent.stop()) / 1000;
        ctx.log(`  drover: graceful stop of ${FLEET_SIZE} processes took ${stopS.toFixed(2)} s`);
        return { startS, ...idle };
      } catch (err) {
        await agent.stop().catch(() => {});
        throw err;
      }
    },
    dispose: async () => {},
  };
}

function noteOnce(notes: string[], note: string): void {
  if (!notes.includes(note)) notes.push(note);
}

/** Runs every available manager `ctx.runs` times and turns the runs into three rows. */
export async function fleetScenario(ctx: BenchContext, peers: FleetDriver[]): Promise<Row[]> {
  const notes: string[] = [];
  const drover = droverFleet(ctx, notes);
  const results = new Map<string, FleetRun[] | string>();
  for (const driver of [drover, ...peers]) {
    const missing = await driver.prepare();
    if (missing) {
      ctx.log(`  ${driver.name}: not measured: ${missing}`);
      results.set(driver.name, missing);
      continue;
    }
    const runs: FleetRun[] = [];
    try {
      for (let i = 0; i < ctx.runs; i++) {
        const r = await driver.run();
        ctx.log(`  ${driver.name} run ${i + 1}: start ${r.startS.toFixed(3)} s, RSS ${r.rssMB.toFixed(1)} MB, idle CPU ${r.idleCpuPct.toFixed(2)}%`);
        runs.push(r);
      }
      results.set(driver.name, runs);
    } catch (err) {
      if (driver === drover) throw err;
      ctx.log(`  ${driver.name}: failed: ${(err as Error).message}`);
      results.set(driver.name, `failed: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      await driver.dispose();
    }
  }
  const mine = results.get('drover') as FleetRun[];
  const peerFigures = (pick: (r: FleetRun) => number): PeerFigure[] =>
    peers.map((p) => {
      const r = results.get(p.name);
      return typeof r === 'string' || !r ? { name: p.name, figure: null, note: r ?? 'not run' } : { name: p.name, figure: summarize(r.map(pick)) };
    });
  return [
    {
      id: 'fleet-start',
      label: `start ${FLEET_SIZE} sleep processes`,
      unit: 's',
      figure: summarize(mine.map((r) => r.startS)),
      target: { max: 1.5, text: '<= 1.5 s' },
      peers: peerFigures((r) => r.startS),
      notes: ['drover: create requests 16 at a time, until the listing shows all running'],
    },
    {
      id: 'fleet-rss',
      label: `agent RSS, ${FLEET_SIZE} running`,
      unit: 'MB',
      figure: summarize(mine.map((r) => r.rssMB)),
      target: { max: 80, text: '<= 80 MB' },
      peers: peerFigures((r) => r.rssMB),
      notes: [],
    },
    {
      id: 'fleet-idle-cpu',
      label: `agent idle CPU, ${FLEET_SIZE} running, 10 s`,
      unit: '%',
      figure: summarize(mine.map((r) => r.idleCpuPct)),
      target: { max: 1, text: '<= 1% of a core' },
      peers: peerFigures((r) => r.idleCpuPct),
      notes,
    },
  ];
}
