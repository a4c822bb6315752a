import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../lib/context.js';
import { exec, have } from '../lib/exec.js';
import { FLEET_SIZE, measureIdle, type FleetDriver, type FleetRun } from '../lib/fleet.js';
import { descendants, stillAlive } from '../lib/procfs.js';
import { until } from '../lib/wait.js';
import { onCleanup } from '../lib/cleanup.js';

/** One program of FLEET_SIZE `sleep` processes, started on request (like drover's creates), not at boot. */
function config(dir: string): string {
  return `[unix_http_server]
file=${dir}/supervisor.sock

[supervisord]
logfile=${dir}/supervisord.log
pidfile=${dir}/supervisord.pid
childlogdir=${dir}/logs
minfds=8192

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://${dir}/supervisor.sock

[program:sleep]
command=sleep 3600
process_name=%(program_name)s_%(process_num)04d
numprocs=${FLEET_SIZE}
autostart=false
autorestart=true
; RUNNING as soon as it is spawned, as drover's "running" (the default waits 1 s)
startsecs=0
`;
}

/**
 * Debian's supervisord, when installed. supervisord is started first (untimed); the clock runs
 * from `supervisorctl start sleep:*` until it returns, with every process RUNNING.
 */
export function supervisordFleet(ctx: BenchContext): FleetDriver {
  let run = 0;
  return {
    name: 'supervisord',
    async prepare() {
      if (!(await have('supervisord')) || !(await have('supervisorctl'))) return 'not installed (apt-get install supervisor)';
      const version = (await exec('supervisord', ['--version'])).trim();
      this.name = `supervisord ${version}`;
      return null;
    },
    async run(): Promise<FleetRun> {
      const dir = join(ctx.workDir, `supervisord-${run++}`);
      mkdirSync(join(dir, 'logs'), { recursive: true });
      const conf = join(dir, 'supervisord.conf');
      writeFileSync(conf, config(dir));
      const daemon = spawn('supervisord', ['-n', '-c', conf], { stdio: 'ignore' });
      const exited = new Promise<void>((r) => daemon.once('exit', () => r()));
      const unregister = onCleanup(() => daemon.kill('SIGKILL'));
      const ctl = (...args: string[]) => exec('supervisorctl', ['-c', conf, ...args], { timeoutMs: 300_000 });
      try {
        await until(
          () =>
            ctl('pid').then(
              (out) => /^\d+$/.test(out.trim()),
              () => false,
            ),
          'supervisord to answer',
          30_000,
          50,
        );
        const t0 = performance.now();
        await ctl('start', 'sleep:*');
        const startS = (performance.now() - t0) / 1000;
        // `status` exits non-zero unless every process is RUNNING; count them anyway to be sure.
        const running = (await ctl('status')).split('\n').filter((l) => /\sRUNNING\s/.test(l)).length;
        if (running !== FLEET_SIZE) throw new Error(`supervisord reports ${running} of ${FLEET_SIZE} RUNNING`);
        const idle = await measureIdle(daemon.pid!);
        return { startS, ...idle };
      } finally {
        const children = descendants(daemon.pid!);
        daemon.kill('SIGTERM');
        await exited;
        unregister();
        await until(() => stillAlive(children).length === 0, 'supervisord processes to be gone', 60_000, 50);
      }
    },
    dispose: async () => {},
  };
}
