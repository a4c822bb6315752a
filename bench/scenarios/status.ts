import { startAgent, type AgentProcess } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { createMany, listProcesses, untilRunning } from '../lib/drover.js';
import { request } from '../lib/http.js';
import { cpuSeconds } from '../lib/procfs.js';
import type { Row } from '../lib/row.js';
import { median, percentile, summarize } from '../lib/stats.js';
import { sleep } from '../lib/wait.js';

const TOTAL = 1000;
const CRASHING = 100;
const STATUS_REQUESTS = 2000;
const LIST_REQUESTS = 30;
/** Kept short so the crash-looping processes really keep crashing while we measure (~100 exits/s). */
const BACKOFF_MAX_MS = 1000;
/** How long the agent's CPU is watched with nothing but the crash loops running. */
const QUIET_MS = 3000;

/**
 * Read latency under load: 1000 processes, 100 of them crash-looping (`false`, restarted with the
 * backoff capped at 1 s). Sequential keep-alive requests from one client, timed from send to
 * last byte: GET on random status links, then GET on the listing link.
 */
export async function statusScenario(ctx: BenchContext): Promise<Row[]> {
  const p50: number[] = [];
  const p99: number[] = [];
  const list: number[] = [];
  const rates: number[] = [];
  const perRestart: number[] = [];
  for (let run = 0; run < ctx.runs; run++) {
    const agent = await startAgent(ctx, { 'backoff-initial-ms': 100, 'backoff-max-ms': BACKOFF_MAX_MS });
    try {
      const bodies = Array.from({ length: TOTAL }, (_, i) => {
        const crash = i % (TOTAL / CRASHING) === 0;
        return {
          app: 'status',
          node: `${crash ? 'crash' : 'sleep'}.${i}`,
          process_type: crash ? 'crash' : 'sleep',
          source_url: ctx.app.url,
        };
      });
      const docs = await createMany(agent, bodies);
      await untilRunning(agent, TOTAL - CRASHING);
      await sleep(2000); // let the crash loops reach their steady pace
      // What each restart costs the agent, with nobody asking anything: steadier than a tail.
      const quiet0 = await totalRestarts(agent);
      const cpu0 = cpuSeconds(agent.pid);
      await sleep(QUIET_MS);
      const cpu1 = cpuSeconds(agent.pid);
      const restarts0 = await totalRestarts(agent);
      perRestart.push(((cpu1 - cpu0) * 1000) / Math.max(1, restarts0 - quiet0));
      const w0 = performance.now();
      const statusMs: number[] = [];
      for (let i = 0; i < STATUS_REQUESTS; i++) {
        const doc = docs[Math.floor(Math.random() * docs.length)];
        const res = await request('GET', doc.status);
        if (res.status !== 200) throw new Error(`GET ${doc.status}: HTTP ${res.status}`);
        statusMs.push(res.ms);
      }
      const listMs: number[] = [];
      for (let i = 0; i < LIST_REQUESTS; i++) {
        const res = await request('GET', agent.links.list);
        if (res.status !== 200) throw new Error(`GET ${agent.links.list}: HTTP ${res.status}`);
        const n = (JSON.parse(res.text) as { processes: unknown[] }).processes.length;
        if (n !== TOTAL) throw new Error(`listing has ${n} processes, expected ${TOTAL}`);
        listMs.push(res.ms);
      }
      // How hard the crash loops were working while we measured.
      rates.push(((await totalRestarts(agent)) - restarts0) / ((performance.now() - w0) / 1000));
      p50.push(percentile(statusMs, 50));
      p99.push(percentile(statusMs, 99));
      list.push(median(listMs));
      ctx.log(
        `  run ${run + 1}: status p50 ${p50.at(-1)!.toFixed(2)} ms, p99 ${p99.at(-1)!.toFixed(2)} ms, list median ${list.at(-1)!.toFixed(2)} ms; ${rates.at(-1)!.toFixed(0)} restarts/s meanwhile; agent CPU per restart ${perRestart.at(-1)!.toFixed(2)} ms`,
      );
    } finally {
      await agent.stop();
    }
  }
  const load = `${TOTAL} processes, ${CRASHING} crash-looping (backoff capped at ${BACKOFF_MAX_MS} ms: ${median(rates).toFixed(0)} restarts/s while measuring)`;
  return [
    {
      id: 'status-p50',
      label: 'GET /process-status p50',
      unit: 'ms',
      figure: summarize(p50),
      peers: [],
      notes: [`${STATUS_REQUESTS} sequential requests per run; ${load}`],
    },
    {
      id: 'restart-cpu',
      label: 'agent CPU per crash-loop restart',
      unit: 'ms',
      figure: summarize(perRestart),
      peers: [],
      notes: [`agent CPU seconds (all its threads) over ${QUIET_MS / 1000} s of the crash loops alone, per restart`],
    },
    {
      id: 'status-p99',
      label: 'GET /process-status p99',
      unit: 'ms',
      figure: summarize(p99),
      target: { max: 5, text: '<= 5 ms' },
      peers: [],
      notes: [],
    },
    {
      id: 'list',
      label: 'GET /list-processes (median)',
      unit: 'ms',
      figure: summarize(list),
      target: { max: 50, text: '<= 50 ms' },
      peers: [],
      notes: [`${LIST_REQUESTS} sequential requests per run`],
    },
  ];
}

async function totalRestarts(agent: AgentProcess): Promise<number> {
  return (await listProcesses(agent)).reduce((sum, p) => sum + p.restarts, 0);
}
