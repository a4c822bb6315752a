import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onCleanup } from '../lib/cleanup.js';
import type { BenchContext } from '../lib/context.js';
import { exec, have } from '../lib/exec.js';
import { FLEET_SIZE, measureIdle, type FleetDriver, type FleetRun } from '../lib/fleet.js';
import { descendants, stillAlive } from '../lib/procfs.js';
import { until } from '../lib/wait.js';

const VERSION = '7';

/**
 * PM2, installed with npm into the bench's temp dir (never globally), with its own PM2_HOME per
 * run. One app of FLEET_SIZE fork-mode instances of `sleep 3600`; the clock runs from
 * `pm2 start` until PM2 reports all of them online. The daemon ("God") is started before.
 */
export function pm2Fleet(ctx: BenchContext): FleetDriver {
  const dir = join(ctx.workDir, 'pm2');
  const bin = join(dir, 'node_modules', '.bin', 'pm2');
  let run = 0;
  return {
    name: `PM2`,
    async prepare() {
      if (!(await have('npm'))) return 'npm not found';
      mkdirSync(dir, { recursive: true });
      ctx.log(`  installing pm2@${VERSION} into ${dir} ...`);
      try {
        await exec('npm', ['install', '--prefix', dir, `pm2@${VERSION}`, '--no-audit', '--no-fund', '--loglevel=error'], {
          timeoutMs: 300_000,
        });
      } catch (err) {
        return `npm install pm2 failed: ${(err as Error).message.split('\n')[0]}`;
      }
      const version = JSON.parse(readFileSync(join(dir, 'node_modules', 'pm2', 'package.json'), 'utf8')).version as string;
      this.name = `PM2 ${version}`;
      return null;
    },
    async run(): Promise<FleetRun> {
      const home = join(dir, `home-${run++}`);
      const env = { ...process.env, PM2_HOME: home };
      const pm2 = (...args: string[]) => exec(bin, args, { env, timeoutMs: 300_000 });
      await pm2('ping'); // spawns the daemon, untimed: drover's agent is also up before its clock starts
      const god = Number(readFileSync(join(home, 'pm2.pid'), 'utf8'));
      const unregister = onCleanup(() => execFileSync(bin, ['kill'], { env, stdio: 'ignore' }));
      try {
        const eco = join(home, 'ecosystem.json');
        writeFileSync(
          eco,
          JSON.stringify({
            apps: [
              {
                name: 'sleep',
                script: 'sleep',
                args: '3600',
                interpreter: 'none',
                exec_mode: 'fork',
                instances: FLEET_SIZE,
                autorestart: true,
              },
            ],
          }),
        );
        const t0 = performance.now();
        await pm2('start', eco);
        const returned = performance.now();
        // All online when `start` returned: that is the time. Otherwise, when PM2 first said so.
        let checks = 0;
        await until(
          async () => {
            checks++;
            const procs = JSON.parse(await pm2('jlist')) as { pm2_env: { status: string } }[];
            return procs.filter((p) => p.pm2_env.status === 'online').length >= FLEET_SIZE;
          },
          `PM2 to report ${FLEET_SIZE} online`,
          120_000,
          20,
        );
        const t1 = checks === 1 ? returned : performance.now();
        const startS = (t1 - t0) / 1000;
        const idle = await measureIdle(god);
        return { startS, ...idle };
      } finally {
        const children = descendants(god);
        await pm2('kill');
        unregister();
        await until(() => stillAlive(children).length === 0, 'PM2 processes to be gone', 60_000, 50);
      }
    },
    dispose: async () => {},
  };
}
