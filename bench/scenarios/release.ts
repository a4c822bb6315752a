import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startAgent } from '../lib/agent.js';
import { writeBigApp } from '../lib/apps.js';
import type { BenchContext } from '../lib/context.js';
import { createProcess, untilState } from '../lib/drover.js';
import { exec } from '../lib/exec.js';
import { serveFile } from '../lib/file-server.js';
import type { Row } from '../lib/row.js';
import { summarize } from '../lib/stats.js';

const ARCHIVE_BYTES = 100 * 1000 * 1000;

/**
 * Download + unpack + start of a ~100 MB tar.gz app served over HTTP on loopback, timed from the
 * create request until the status link says `running` (fresh agent each run, so nothing is
 * cached). Baseline: `curl URL | tar xz` of the same archive into an empty dir. Dirty pages are
 * flushed (`sync`) before each timed step so one step's writeback doesn't land in the next.
 */
export async function releaseScenario(ctx: BenchContext): Promise<Row[]> {
  ctx.log('  generating the archive ...');
  const big = await writeBigApp(ctx.workDir, ARCHIVE_BYTES);
  ctx.log(`  ${(big.bytes / 1e6).toFixed(1)} MB, ${big.files} files`);
  const server = await serveFile(big.archive);
  const mine: number[] = [];
  const curl: number[] = [];
  try {
    for (let run = 0; run < ctx.runs; run++) {
      // Alternate the order, so neither always runs on a cache the other warmed.
      const order = run % 2 === 0 ? [droverRun, curlRun] : [curlRun, droverRun];
      const times = new Map<unknown, number>();
      for (const step of order) {
        await exec('sync', []);
        times.set(step, await step(ctx, server.url));
      }
      mine.push(times.get(droverRun)!);
      curl.push(times.get(curlRun)!);
      ctx.log(`  run ${run + 1}: drover ${mine.at(-1)!.toFixed(3)} s, curl | tar xz ${curl.at(-1)!.toFixed(3)} s`);
    }
  } finally {
    await server.close();
  }
  return [
    {
      id: 'release-100mb',
      label: `download+unpack+start ${(big.bytes / 1e6).toFixed(0)} MB tar.gz`,
      unit: 's',
      figure: summarize(mine),
      target: { max: 1.3, text: '<= 1.3x curl | tar xz', on: summarize(mine.map((m, i) => m / curl[i])) },
      peers: [{ name: 'curl | tar xz', figure: summarize(curl) }],
      notes: [`${big.files} files, half random bytes, half base64 text; target checked on the per-run ratio`],
    },
  ];
}

async function droverRun(ctx: BenchContext, url: string): Promise<number> {
  const agent = await startAgent(ctx);
  try {
    const t0 = performance.now();
    const doc = await createProcess(agent, { app: 'big', node: 'web.0', process_type: 'web', source_url: url });
    await untilState(doc, 'running', 120_000, 10);
    return (performance.now() - t0) / 1000;
  } finally {
    await agent.stop();
  }
}

async function curlRun(ctx: BenchContext, url: string): Promise<number> {
  const dir = mkdtempSync(join(ctx.workDir, 'curl-'));
  try {
    const t0 = performance.now();
    await exec('sh', ['-c', 'curl -sSf "$1" | tar xzf - -C "$2"', 'sh', url, dir]);
    return (performance.now() - t0) / 1000;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
