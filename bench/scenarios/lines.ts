import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startAgent, type AgentProcess } from '../lib/agent.js';
import { onCleanup } from '../lib/cleanup.js';
import type { BenchContext } from '../lib/context.js';
import { createProcess, deleteProcess, features, untilState } from '../lib/drover.js';
import { exec } from '../lib/exec.js';
import { lastEventId, untilLogged } from '../lib/events.js';
import type { Row } from '../lib/row.js';
import { cpuSeconds } from '../lib/procfs.js';
import { median, summarize } from '../lib/stats.js';
import { until } from '../lib/wait.js';
import { LineCounter } from '../lib/ws-count.js';

const LINES = 1_000_000;

/**
 * One child prints 1,000,000 lines (`seq`); a WebSocket client attached through the status
 * document's `attach` link must receive every one, in order. The child waits on a FIFO until the
 * client is attached; the clock runs from opening that gate to the 1,000,000th frame and, with
 * the event log, to the last line being readable from the `events` link.
 * Baseline: a bare `ws` server doing the same with the same `seq` (bench/peers/bare-ws.ts).
 */
export async function linesScenario(ctx: BenchContext): Promise<Row[]> {
  const notes: string[] = [];
  const mine: number[] = [];
  const bare: number[] = [];
  const cpu: number[] = [];
  const bareCpu: number[] = [];
  // Default settings: a client that falls more than 4 MiB behind is dropped (close code 1008),
  // and the run fails; the bare server has no such cap.
  const agent = await startAgent(ctx);
  try {
    for (let i = 0; i < ctx.runs; i++) {
      const s = await droverRun(ctx, agent, i, notes);
      const b = await bareRun(ctx);
      const delivered = s.deliveredS === undefined ? '' : `, delivered at ${s.deliveredS.toFixed(3)} s`;
      ctx.log(
        `  run ${i + 1}: drover ${s.wallS.toFixed(3)} s${delivered} (agent CPU ${s.cpuS.toFixed(2)} s), bare ws ${b.wallS.toFixed(3)} s (CPU ${b.cpuS.toFixed(2)} s)`,
      );
      mine.push(s.wallS);
      bare.push(b.wallS);
      cpu.push(s.cpuS);
      bareCpu.push(b.cpuS);
    }
  } finally {
    await agent.stop();
  }
  return [
    {
      id: 'lines-1m',
      label: '1M lines child -> WebSocket client (+ event log)',
      unit: 's',
      figure: summarize(mine),
      target: { max: 1.5, text: '<= 1.5 s' },
      peers: [{ name: 'bare ws server', figure: summarize(bare) }],
      notes: [...notes, `agent CPU ${median(cpu).toFixed(2)} s, bare server CPU ${median(bareCpu).toFixed(2)} s (medians)`],
    },
  ];
}

/** Wall time until the last frame arrived, and CPU the serving process used meanwhile, in seconds. */
interface LinesRun {
  wallS: number;
  /** Until the client had the last line (drover with an event log: before it was persisted). */
  deliveredS?: number;
  cpuS: number;
}

async function droverRun(ctx: BenchContext, agent: AgentProcess, run: number, notes: string[]): Promise<LinesRun> {
  const gate = join(ctx.workDir, `gate-${run}`);
  await exec('mkfifo', [gate]);
  const doc = await createProcess(agent, {
    app: 'lines',
    node: `lines.${run}`,
    process_type: 'lines',
    source_url: ctx.app.url,
    env: { GATE: gate, LINES: String(LINES) },
  });
  const client = new LineCounter(doc.attach, LINES);
  try {
    await client.opened;
    await untilState(doc, 'running');
    const eventLog = features(doc).eventLog;
    const base = eventLog ? await lastEventId(doc.events!) : 0;
    const c0 = cpuSeconds(agent.pid);
    const t0 = performance.now();
    await writeFile(gate, 'go\n'); // the child's `read` returns and it execs seq
    const delivered = await client.done;
    // With the event log on main, the same lines are persisted too: the clock stops once the
    // last one is also readable from the `events` link (its id is base + LINES at the latest).
    if (eventLog) await untilLogged(doc.events!, base + LINES - 1, String(LINES), 60_000);
    const t1 = performance.now();
    note(
      notes,
      eventLog
        ? 'includes the event log: the clock stops once the last line is also readable from the events link'
        : 'no event log on main: delivery to the client only',
    );
    return { wallS: (t1 - t0) / 1000, deliveredS: eventLog ? (delivered - t0) / 1000 : undefined, cpuS: cpuSeconds(agent.pid) - c0 };
  } finally {
    client.close();
    await deleteProcess(doc);
  }
}

async function bareRun(ctx: BenchContext): Promise<LinesRun> {
  const server = spawn(process.execPath, [join(import.meta.dirname, '..', 'peers', 'bare-ws.js'), String(LINES)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const unregister = onCleanup(() => server.kill('SIGKILL'));
  try {
    let out = '';
    server.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    const url = await until(() => /ws:\S+/.exec(out)?.[0], 'the bare ws server', 10_000);
    const client = new LineCounter(url, LINES);
    try {
      await client.opened;
      const c0 = cpuSeconds(server.pid!);
      const t0 = performance.now();
      const t1 = await client.done;
      return { wallS: (t1 - t0) / 1000, cpuS: cpuSeconds(server.pid!) - c0 };
    } finally {
      client.close();
    }
  } finally {
    server.kill('SIGTERM');
    unregister();
  }
}

function note(notes: string[], text: string): void {
  if (!notes.includes(text)) notes.push(text);
}
