// Cost of live usage sampling with many supervised processes: `node dist/bench/sampler.js [N]`.
// Starts N children the way the agent does (exit helper, watchdog), then times the sampler's
// one-pass-for-all over /proc, and prints the CPU it costs as a share of one core at the
// default interval. The target: under 1% of a core with 1000 processes.
import { readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { Child } from '../lib/os/child.js';
import { defaults } from '../lib/agent/config.js';
import { UsageSampler } from '../lib/os/sampler.js';
import { findWaitHelper } from '../lib/os/wait-helper.js';

const n = Number(process.argv[2] ?? 1000);
const passes = Number(process.argv[3] ?? 20);
const helper = findWaitHelper();
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const sampler = new UsageSampler({ intervalMs: 0 }); // passes are driven below, not by the timer

console.log(`starting ${n} children (${helper ? 'with' : 'without'} the exit helper) on ${cpus().length} cores`);
const children: Child[] = [];
let samples = 0;
for (let i = 0; i < n; i++) {
  children.push(new Child({ command: 'sleep 600', cwd: '/tmp', env, onLine: () => {}, helper, sampler, onSample: () => samples++ }));
  if (i % 100 === 99) await new Promise((r) => setTimeout(r, 10)); // let pipes and watchdog reports drain
}
await new Promise((r) => setTimeout(r, 3000));

const walls: number[] = [];
const cpuMs: number[] = [];
for (let i = 0; i < passes; i++) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  sampler.sample();
  walls.push(performance.now() - t0);
  const c = process.cpuUsage(c0);
  cpuMs.push((c.user + c.system) / 1000);
  await new Promise((r) => setTimeout(r, 50));
}
const procs = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).length;
console.log(`${procs} processes on the host; ${n} groups watched`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const perPass = median(cpuMs);
console.log(`samples delivered: ${samples} (${n} groups x ${passes} passes = ${n * passes})`);
console.log(
  `one pass: median ${perPass.toFixed(1)} ms CPU (min ${Math.min(...cpuMs).toFixed(1)}, max ${Math.max(...cpuMs).toFixed(1)}), ${median(walls).toFixed(1)} ms wall`,
);
for (const interval of [defaults.usageSampleMs, 2000, 1000]) {
  const share = (perPass / interval) * 100;
  console.log(
    `every ${interval} ms: ${share.toFixed(2)}% of one core${interval === defaults.usageSampleMs ? ' (the default)' : ''}${share < 1 ? '' : '  <- over the 1% target'}`,
  );
}

await Promise.all(children.map((c) => c.stop(5000)));
sampler.close();
