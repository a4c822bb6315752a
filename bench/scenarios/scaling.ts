import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { createMany, untilRunning } from '../lib/drover.js';
import { measureIdle } from '../lib/fleet.js';
import { cpuSeconds } from '../lib/procfs.js';
import type { Row } from '../lib/row.js';
import { summarize } from '../lib/stats.js';

/** How cost grows with work: the fleet's figures at these sizes (BENCH_SCALE=100,1000 to change them). */
const SIZES = (process.env.BENCH_SCALE ?? '100,1000,5000').split(',').map(Number);

/**
 * The fleet scenario's start, RSS and idle CPU at several sizes, one fresh agent each, with
 * the agent's default settings (the spawn helper when built): per-process costs show as the
 * slope between sizes, fixed costs as the intercept.
 */
export async function scalingScenario(ctx: BenchContext): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of SIZES) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_SCALE: ${n} is not a size`);
    const start: number[] = [];
    const cpu: number[] = [];
    const rss: number[] = [];
    const idle: number[] = [];
    for (let run = 0; run < ctx.runs; run++) {
      const agent = await startAgent(ctx);
      try {
        const bodies = Array.from({ length: n }, (_, i) => ({
          app: 'scale',
          node: `sleep.${i}`,
          process_type: 'sleep',
          source_url: ctx.app.url,
        }));
        const c0 = cpuSeconds(agent.pid);
        const t0 = performance.now();
        const docs = await createMany(agent, bodies);
        await untilRunning(agent, n, docs.at(-1), 600_000);
        start.push((performance.now() - t0) / 1000);
        cpu.push(cpuSeconds(agent.pid) - c0);
        const m = await measureIdle(agent.pid);
        rss.push(m.rssMB);
        idle.push(m.idleCpuPct);
        ctx.log(
          `  ${n}: start ${start.at(-1)!.toFixed(2)} s (agent CPU ${cpu.at(-1)!.toFixed(2)} s), RSS ${m.rssMB.toFixed(1)} MB, idle CPU ${m.idleCpuPct.toFixed(2)}%`,
        );
      } catch (err) {
        // What the agent said about it (a 500 is logged with its cause), for the report.
        const said = agent
          .stderrTail()
          .split('\n')
          .filter((l) => / failed: /.test(l))
          .slice(-3);
        throw new Error(`${(err as Error).message}${said.length ? `\n  agent: ${said.join('\n  agent: ')}` : ''}`);
      } finally {
        await agent.stop();
      }
    }
    const note = [`fresh agent per run, default settings; agent CPU while starting: ${summarize(cpu).median.toFixed(2)} s (median)`];
    rows.push(
      { id: `scale-${n}-start`, label: `scaling: start ${n}`, unit: 's', figure: summarize(start), peers: [], notes: note },
      { id: `scale-${n}-rss`, label: `scaling: agent RSS, ${n} running`, unit: 'MB', figure: summarize(rss), peers: [], notes: [] },
      {
        id: `scale-${n}-idle`,
        label: `scaling: agent idle CPU, ${n} running`,
        unit: '%',
        figure: summarize(idle),
        peers: [],
        notes: [],
      },
    );
  }
  return rows;
}
