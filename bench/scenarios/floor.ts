import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { pool, request } from '../lib/http.js';
import { cpuSeconds, rssBytes } from '../lib/procfs.js';
import { percentile } from '../lib/stats.js';
import type { Row } from '../lib/row.js';
import { summarize } from '../lib/stats.js';
import { sleep } from '../lib/wait.js';

const N = 1000;
const CRASH_LOOPS = 100;
const STATUS_REQUESTS = 2000;
const floorJs = join(import.meta.dirname, '..', 'peers', 'floor.js');

/**
 * Where the floor of the fleet's targets is (issue 18): the parts of a start that drover cannot
 * do without, each measured alone in its own process (bench/peers/floor.ts): the HTTP stack
 * answering 1000 create requests as the fleet sends them, 1000 of drover's process actors from
 * pending to running with no I/O, the spawn helper starting 1000 `sleep` with their streams;
 * and for RSS, the packages an agent must load, before any process exists.
 */
export async function floorScenario(ctx: BenchContext): Promise<Row[]> {
  const http: number[] = [];
  const httpCpu: number[] = [];
  const actors: number[] = [];
  const spawnWall: number[] = [];
  const spawnCpu: number[] = [];
  const modules: number[] = [];
  const idleAgent: number[] = [];
  const statusP99: number[] = [];
  for (let run = 0; run < ctx.runs; run++) {
    const h = await httpFloor(ctx);
    http.push(h.wallS);
    httpCpu.push(h.cpuS);
    actors.push((await once<{ cpuS: number }>(['actors', String(N)])).cpuS);
    const s = await once<{ wallS: number; cpuS: number; missing?: string }>(['spawn', String(N)]);
    if (s.missing) throw new Error(s.missing);
    spawnWall.push(s.wallS);
    spawnCpu.push(s.cpuS);
    modules.push((await once<{ rssMB: number }>(['modules'])).rssMB);
    statusP99.push(await statusFloor());
    const agent = await startAgent(ctx);
    try {
      await sleep(2000); // as the fleet's RSS is taken after a settle
      idleAgent.push(rssBytes(agent.pid) / 1e6);
    } finally {
      await agent.stop();
    }
    ctx.log(
      `  run ${run + 1}: HTTP ${h.wallS.toFixed(3)} s (server CPU ${h.cpuS.toFixed(2)} s), actors CPU ${actors.at(-1)!.toFixed(2)} s, ` +
        `spawn helper ${s.wallS.toFixed(2)} s (CPU ${s.cpuS.toFixed(2)} s), status p99 beside crash loops ${statusP99.at(-1)!.toFixed(2)} ms, modules ${modules.at(-1)!.toFixed(1)} MB, idle agent ${idleAgent.at(-1)!.toFixed(1)} MB`,
    );
  }
  const sum = http.map((_, i) => httpCpu[i] + actors[i] + spawnCpu[i]);
  return [
    row('floor-http', `floor: ${N} creates to a bare h3 app, 16 in flight`, 's', http, [
      `server CPU ${summarize(httpCpu).median.toFixed(2)} s (median): parse, route, read the JSON body, answer drover's status document`,
    ]),
    row('floor-actors', `floor: ${N} process actors to running, CPU`, 's', actors, ["drover's process machine on XState v5, no I/O"]),
    row('floor-spawn', `floor: ${N} sleep by the spawn helper`, 's', spawnWall, [
      `agent-side CPU ${summarize(spawnCpu).median.toFixed(2)} s; the rest is the helper's forks and the kernel's execs`,
    ]),
    row('floor-start-cpu', `floor: event-loop CPU for ${N} starts (sum)`, 's', sum, [
      'HTTP server + actors + spawn requests, each measured alone: one event loop must do all three; drover adds its event logs, durable saves, ports, release lookups',
    ]),
    row('floor-status-p99', `floor: GET status p99 of a bare h3 app beside ${CRASH_LOOPS} crash loops`, 'ms', statusP99, [
      `${STATUS_REQUESTS} sequential keep-alive GETs answering drover's status document, while ${CRASH_LOOPS} shell loops run \`sh -c false\` once a second each (the status scenario's churn, without drover)`,
    ]),
    row('floor-modules-rss', 'floor: RSS of node with the packages an agent loads', 'MB', modules, [
      'h3, listhen, ws, xstate, yaml, dotenv, tar, yauzl; nothing running',
    ]),
    row('floor-idle-agent-rss', 'floor: idle agent RSS, no process', 'MB', idleAgent, ['drover serve, 2 s after it listens']),
  ];
}

function row(id: string, label: string, unit: Row['unit'], values: number[], notes: string[]): Row {
  return { id, label, unit, figure: summarize(values), peers: [], notes };
}

/** Runs floor.js in its own process and returns the JSON line it prints. */
function once<T>(args: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [floorJs, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    p.once('error', reject);
    p.once('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`floor.js ${args.join(' ')} exited with ${code}`);
        resolve(JSON.parse(out.trim().split('\n')[0]) as T);
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** The URL the bare h3 app (floor.js http) prints once it listens. */
function listening(server: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    server.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve((JSON.parse(out.slice(0, nl)) as { url: string }).url);
    });
    server.once('exit', (code) => reject(new Error(`floor.js http exited with ${code}`)));
  });
}

/** The bare h3 app in its own process, sent N creates the way the fleet scenario sends them. */
async function httpFloor(ctx: BenchContext): Promise<{ wallS: number; cpuS: number }> {
  const p = spawn(process.execPath, [floorJs, 'http'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await listening(p);
    const c0 = cpuSeconds(p.pid!);
    const t0 = performance.now();
    await pool(N, 16, async (i) => {
      const r = await request('POST', `${url}/create-process`, {
        app: 'fleet',
        node: `sleep.${i}`,
        process_type: 'sleep',
        source_url: ctx.app.url,
      });
      if (r.status !== 201) throw new Error(`bare h3 app answered ${r.status}: ${r.text.slice(0, 200)}`);
    });
    return { wallS: (performance.now() - t0) / 1000, cpuS: cpuSeconds(p.pid!) - c0 };
  } finally {
    p.kill('SIGKILL');
  }
}

/**
 * The status scenario's tail without drover: the bare h3 app answering GETs one after another
 * while 100 shell loops each start a failing command once a second, as the scenario's crash
 * loops make the machine fork and exec ~100 times a second. Whatever this p99 is, the machine
 * gives it to any server.
 */
async function statusFloor(): Promise<number> {
  const server = spawn(process.execPath, [floorJs, 'http'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const loops = spawn('sh', ['-c', `for i in $(seq ${CRASH_LOOPS}); do (while :; do sh -c false; sleep 1; done) & done; wait`], {
    stdio: 'ignore',
    detached: true, // its own group: killed as one at the end
  });
  try {
    const url = await listening(server);
    await sleep(2000); // as the scenario lets its crash loops reach their pace
    const ms: number[] = [];
    for (let i = 0; i < STATUS_REQUESTS; i++) {
      const r = await request('GET', `${url}/process-status/status.sleep.${i % N}`);
      if (r.status !== 200) throw new Error(`bare h3 app answered ${r.status}`);
      ms.push(r.ms);
    }
    return percentile(ms, 99);
  } finally {
    process.kill(-loops.pid!, 'SIGKILL');
    server.kill('SIGKILL');
  }
}
