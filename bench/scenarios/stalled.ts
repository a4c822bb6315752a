import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stalledClient } from '../../test/helpers/stalled-client.js';
import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { createProcess, deleteProcess, features, untilState } from '../lib/drover.js';
import { lastEventId, untilLogged } from '../lib/events.js';
import { exec } from '../lib/exec.js';
import { rssBytes } from '../lib/procfs.js';
import type { Row } from '../lib/row.js';
import { median, summarize } from '../lib/stats.js';
import { sleep } from '../lib/wait.js';

const LINES = 10_000_000;

/**
 * Memory under a flood nobody reads: one child prints 10,000,000 lines while a WebSocket client
 * that never reads is attached. The figure is the agent's peak RSS (sampled VmRSS, and VmHWM at
 * the end) until the last line is readable from the event log; drover must neither buffer the
 * flood for the stalled client nor stall the child. Needs the event log (issue 3).
 */
export async function stalledScenario(ctx: BenchContext): Promise<Row[]> {
  const peaks: number[] = [];
  const seconds: number[] = [];
  for (let run = 0; run < ctx.runs; run++) {
    const agent = await startAgent(ctx);
    try {
      const gate = join(ctx.workDir, `stalled-gate-${run}`);
      await exec('mkfifo', [gate]);
      const doc = await createProcess(agent, {
        app: 'flood',
        node: `lines.${run}`,
        process_type: 'lines',
        source_url: ctx.app.url,
        env: { GATE: gate, LINES: String(LINES) },
      });
      await untilState(doc, 'running');
      if (!features(doc).eventLog) throw new Error('needs the event log (an `events` link in the status document)');
      const client = await stalledClient(doc.attach);
      try {
        const base = await lastEventId(doc.events!);
        let peak = rssBytes(agent.pid);
        let done = false;
        const sampler = (async () => {
          while (!done) {
            peak = Math.max(peak, rssBytes(agent.pid));
            await sleep(20);
          }
        })();
        const t0 = performance.now();
        await writeFile(gate, 'go\n');
        await untilLogged(doc.events!, base + LINES - 1, String(LINES), 300_000);
        seconds.push((performance.now() - t0) / 1000);
        done = true;
        await sampler;
        peaks.push(Math.max(peak, peakRss(agent.pid)) / 1e6);
        ctx.log(
          `  run ${run + 1}: peak RSS ${peaks.at(-1)!.toFixed(1)} MB; all ${LINES} lines in the log after ${seconds.at(-1)!.toFixed(1)} s`,
        );
      } finally {
        client.destroy();
        await deleteProcess(doc);
      }
    } finally {
      await agent.stop();
    }
  }
  return [
    {
      id: 'stalled-10m',
      label: '10M lines, attached client never reads: agent peak RSS',
      unit: 'MB',
      figure: summarize(peaks),
      peers: [],
      notes: [
        `all lines persisted after ${median(seconds).toFixed(1)} s (median); no target: bounded is what counts (the tests assert a bound)`,
      ],
    },
  ];
}

/** VmHWM: the highest RSS the process ever had. */
function peakRss(pid: number): number {
  return rssBytes(pid, 'VmHWM');
}
