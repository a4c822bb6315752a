// The floor for the restart scenario: a bare Node supervisor that spawns the same script with
// pipes on stdout and stderr and, on 'exit', spawns it again at once. No process group, no
// watchdog, no state machine. Run as its own process, like the agent:
//   node bare-restart.js APP_DIR MARKS_DIR SAMPLES
// For each sample it lets `once.sh` crash once, restarts it, then kills the restarted one.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { restartGapMs } from '../lib/marks.js';

const [appDir, marks, samples] = process.argv.slice(2);

function start(slug: string) {
  const child = spawn('sh', ['./once.sh'], {
    cwd: appDir,
    env: { ...process.env, MARKS: marks, DROVER_SLUG: slug },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.resume();
  child.stderr!.resume();
  return child;
}

for (let i = 0; i < Number(samples); i++) {
  const slug = `bare.${i}`;
  const second = await new Promise<ReturnType<typeof start>>((resolve) => start(slug).once('exit', () => resolve(start(slug))));
  while ((await restartGapMs(join(marks, slug))) === null) await new Promise((r) => setTimeout(r, 5));
  second.kill('SIGKILL');
  await new Promise((r) => second.once('exit', r));
}
