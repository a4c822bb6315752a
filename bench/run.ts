// `npm run bench`: runs each scenario and prints one row per figure.
import { oneMillionLines, tenMillionLinesStalledClient } from './event-log.js';

const runs = Number(process.env.BENCH_RUNS ?? 3);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const million: number[] = [];
for (let i = 0; i < runs; i++) {
  const r = await oneMillionLines();
  million.push(r.seconds);
  console.log(`  run ${i + 1}: delivered ${r.deliveredSeconds.toFixed(3)} s, persisted ${r.persistedSeconds.toFixed(3)} s`);
}
console.log(`1M lines to a WebSocket client and the event log: ${median(million).toFixed(3)} s (min ${Math.min(...million).toFixed(3)}, max ${Math.max(...million).toFixed(3)}; target <= 1.5 s)`);

const mem = await tenMillionLinesStalledClient();
console.log(`10M lines, attached client never reads: agent peak RSS ${mem.peakRssMb.toFixed(1)} MB (${mem.seconds.toFixed(1)} s to persist them all)`);
