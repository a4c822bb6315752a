import http from 'node:http';
import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import type { Row } from '../lib/row.js';
import { percentile, summarize } from '../lib/stats.js';
import { until } from '../lib/wait.js';

const PROCS = 100;
const POLL_MS = 5000;

/** One keep-alive connection, as a Procstar client's session holds. */
function oneConnection(): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: 1 });
}

function get(agent: http.Agent, url: string, body?: unknown): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: payload === undefined ? 'GET' : 'POST',
        agent,
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * A Procstar client's poll loop: PROCS procs started through POST /procs, then GET /procs/ID
 * of one of them after another, each sent when the last answer arrived, on one keep-alive
 * connection for POLL_MS: how many a client gets per second, and the p99 of each.
 */
export async function pollScenario(ctx: BenchContext): Promise<Row[]> {
  const rates: number[] = [];
  const p99: number[] = [];
  for (let run = 0; run < ctx.runs; run++) {
    const agent = await startAgent(ctx);
    const conn = oneConnection();
    try {
      const specs = Object.fromEntries(Array.from({ length: PROCS }, (_, i) => [`p${i}`, { argv: ['/bin/sleep', '3600'] }]));
      const created = await get(conn, `${agent.url}/procs`, { specs });
      if (created.status >= 300) throw new Error(`POST /procs: HTTP ${created.status}: ${created.text.slice(0, 300)}`);
      await until(
        async () => {
          const r = await get(conn, `${agent.url}/procs/p${PROCS - 1}`);
          return r.status === 200 && /"running"\s*:\s*true|"state"\s*:\s*"running"/.test(r.text);
        },
        'the procs to run',
        120_000,
      );
      const times: number[] = [];
      const t0 = performance.now();
      while (performance.now() - t0 < POLL_MS) {
        const s = performance.now();
        const r = await get(conn, `${agent.url}/procs/p${times.length % PROCS}`);
        if (r.status !== 200) throw new Error(`GET /procs/ID: HTTP ${r.status}`);
        times.push(performance.now() - s);
      }
      rates.push(times.length / ((performance.now() - t0) / 1000));
      p99.push(percentile(times, 99));
      ctx.log(`  run ${run + 1}: ${rates.at(-1)!.toFixed(0)} GET/s on one connection, p99 ${p99.at(-1)!.toFixed(2)} ms`);
    } finally {
      conn.destroy();
      await agent.stop();
    }
  }
  return [
    {
      id: 'poll-rate',
      label: 'Procstar poll loop: GET /procs/ID per second, one keep-alive connection',
      unit: 'req/s',
      figure: summarize(rates),
      peers: [],
      notes: [`${PROCS} procs running, sequential GETs for ${POLL_MS / 1000} s`],
    },
    { id: 'poll-p99', label: 'Procstar poll loop: p99 of one GET', unit: 'ms', figure: summarize(p99), peers: [], notes: [] },
  ];
}
