// Event-log benchmarks:
// - 1,000,000 lines from one child, delivered to an attached WebSocket client AND persisted
//   in the event log (readable at /process-events): seconds from "go" until both are true.
// - 10,000,000 lines with an attached client that never reads: the agent's peak RSS.
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { WebSocket } from 'ws';
import { stalledClient } from '../test/helpers/stalled-client.js';
import { appArchive, get, post, rss, startAgent, until } from './agent.js';

/** The child waits for a file to appear, then prints `lines` lines, then sleeps (no restart). */
const PROCFILE = (lines: number) => `web: while [ ! -e "$GO" ]; do sleep 0.01; done; seq 1 ${lines}; exec sleep 600\n`;

async function lastEventId(eventsUrl: string): Promise<number> {
  const text = await (await fetch(`${eventsUrl}?follow=false`)).text();
  const last = text.trimEnd().split('\n').at(-1)!;
  return (JSON.parse(last) as { id: number }).id;
}

export async function oneMillionLines(): Promise<{ seconds: number; deliveredSeconds: number; persistedSeconds: number }> {
  const lines = 1_000_000;
  // Default settings: the client (ws, in Node, sharing the two cores) must keep within the
  // agent's 4 MiB cap for slow clients, or it is dropped and the run fails.
  const agent = await startAgent();
  try {
    const go = join(agent.dir, 'go');
    const proc = await post(`${agent.url}/create-process`, {
      app: 'bench', node: 'web.0', process_type: 'web', source_url: await appArchive(agent.dir, PROCFILE(lines)), env: { GO: go },
    });
    await until(async () => (await get(proc.status)).state === 'running', 60_000, () => 'process never ran');
    const ws = new WebSocket(proc.attach);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    let received = 0;
    let delivered = 0;
    const done = new Promise<void>((resolve, reject) => {
      ws.on('message', () => {
        received++;
        if (received === lines) {
          delivered = performance.now();
          resolve();
        }
      });
      ws.on('close', (code, reason) => reject(new Error(`client closed (${code} ${reason}) after ${received} lines`)));
    });
    const base = await lastEventId(proc.events);
    const t0 = performance.now();
    writeFileSync(go, '');
    // Persisted: the last line is readable from the log (readers only see written events).
    let persisted = 0;
    const probe = `${proc.events}?since=${base + lines - 1}&follow=false`;
    const persistedDone = until(async () => {
      const text = await (await fetch(probe)).text();
      if (text.includes(`"text":"${lines}"`)) return (persisted = performance.now());
      return 0;
    }, 120_000, () => 'the last line never reached the event log');
    await Promise.all([done, persistedDone]);
    ws.removeAllListeners('close');
    ws.close();
    const s = (t: number) => (t - t0) / 1000;
    return { seconds: Math.max(s(delivered), s(persisted)), deliveredSeconds: s(delivered), persistedSeconds: s(persisted) };
  } finally {
    await agent.stop();
  }
}

export async function tenMillionLinesStalledClient(): Promise<{ peakRssMb: number; seconds: number }> {
  const lines = 10_000_000;
  const agent = await startAgent();
  try {
    const go = join(agent.dir, 'go');
    const proc = await post(`${agent.url}/create-process`, {
      app: 'bench', node: 'web.0', process_type: 'web', source_url: await appArchive(agent.dir, PROCFILE(lines)), env: { GO: go },
    });
    await until(async () => (await get(proc.status)).state === 'running', 60_000, () => 'process never ran');
    const stalled = await stalledClient(proc.attach);
    const base = await lastEventId(proc.events);
    const t0 = performance.now();
    writeFileSync(go, '');
    let peak = 0;
    const probe = `${proc.events}?since=${base + lines - 1}&follow=false`;
    await until(async () => {
      peak = Math.max(peak, rss(agent.proc.pid!).now);
      return (await (await fetch(probe)).text()).includes(`"text":"${lines}"`);
    }, 600_000, () => 'the last line never reached the event log');
    stalled.destroy();
    return { peakRssMb: Math.max(peak, rss(agent.proc.pid!).peak) / 1024 / 1024, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await agent.stop();
  }
}
