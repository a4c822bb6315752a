import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startAgent } from '../lib/agent.js';
import type { BenchContext } from '../lib/context.js';
import { createProcess, deleteProcess } from '../lib/drover.js';
import { restartGapMs } from '../lib/marks.js';
import type { Row } from '../lib/row.js';
import { median, summarize } from '../lib/stats.js';
import { until } from '../lib/wait.js';

const SAMPLES = 10;

/**
 * First restart after a crash. `once.sh` logs when it starts and when it is about to exit, then
 * exits 1; restarted, it logs its start again. The gap between those two lines (exit -> the new
 * child running its first command) is measured for drover and for a bare Node spawn-on-exit
 * loop (bench/peers/bare-restart.ts); the row is drover's extra time, per run the difference
 * of the two medians over SAMPLES crashes each, one process at a time.
 */
export async function restartScenario(ctx: BenchContext): Promise<Row[]> {
  const overhead: number[] = [];
  const droverGaps: number[] = [];
  const bareGaps: number[] = [];
  const agent = await startAgent(ctx);
  try {
    for (let run = 0; run < ctx.runs; run++) {
      const marks = join(ctx.workDir, `marks-${run}`);
      mkdirSync(marks);
      const mine: number[] = [];
      for (let i = 0; i < SAMPLES; i++) {
        const doc = await createProcess(agent, {
          app: 'restart',
          node: `once.${run}-${i}`,
          process_type: 'once',
          source_url: ctx.app.url,
          env: { MARKS: marks },
        });
        mine.push(await until(() => restartGapMs(join(marks, doc.slug)), `${doc.slug} to restart`, 30_000, 5));
        await deleteProcess(doc);
      }
      const bare = await bareGapsMs(ctx, marks);
      const m = median(mine);
      const b = median(bare);
      ctx.log(`  run ${run + 1}: drover ${m.toFixed(2)} ms, bare spawn ${b.toFixed(2)} ms (medians of ${SAMPLES})`);
      droverGaps.push(m);
      bareGaps.push(b);
      overhead.push(m - b);
    }
  } finally {
    await agent.stop();
  }
  return [
    {
      id: 'restart-overhead',
      label: 'first restart after crash, over bare spawn',
      unit: 'ms',
      figure: summarize(overhead),
      target: { max: 10, text: '<= 10 ms over bare spawn' },
      peers: [],
      notes: [
        `exit -> restarted child running: drover ${summarize(droverGaps).median.toFixed(2)} ms, bare Node spawn-on-exit ${summarize(bareGaps).median.toFixed(2)} ms (medians)`,
      ],
    },
  ];
}

async function bareGapsMs(ctx: BenchContext, marks: string): Promise<number[]> {
  const script = join(import.meta.dirname, '..', 'peers', 'bare-restart.js');
  const proc = spawn(process.execPath, [script, ctx.app.dir, marks, String(SAMPLES)], { stdio: ['ignore', 'ignore', 'inherit'] });
  const code = await new Promise<number | null>((r) => proc.once('exit', r));
  if (code !== 0) throw new Error(`bare restart baseline exited with ${code}`);
  const gaps: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const gap = await restartGapMs(join(marks, `bare.${i}`));
    if (gap === null) throw new Error(`bare restart baseline left no gap for sample ${i}`);
    gaps.push(gap);
  }
  return gaps;
}
