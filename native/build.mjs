// Builds the optional native helpers into native/build/. It never fails the install:
//   - drover-wait.c, the exit helper: without it drover runs commands directly, reports
//     `core_dump` as null where it cannot be inferred, and measures usage with cgroups or /proc.
//   - drover-spawn.c, the resident spawn helper: without it the agent spawns children itself
//     (slower with a large heap, and through a wrapper and a watchdog per child).
//   - drover-notify.c, systemd's notify protocol: without it `drover serve` falls back to
//     systemd-notify(1) where that exists.
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('./build/', import.meta.url));

const mtime = (p) => {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
};

const helpers = [
  {
    name: 'drover-wait',
    without: 'core dumps will be reported as unknown and usage measured without wait4',
  },
  {
    name: 'drover-spawn',
    without: 'children will be spawned by the agent itself',
  },
  {
    name: 'drover-notify',
    without: 'drover serve will use systemd-notify, where it exists, to tell systemd it is ready',
  },
];

if (process.platform !== 'linux') {
  console.warn('drover: not on Linux, skipping the native helpers (native/*.c)');
} else {
  for (const { name, without } of helpers) {
    const src = fileURLToPath(new URL(`./${name}.c`, import.meta.url));
    const out = `${dir}${name}`;
    // sweep.h is shared by the helpers that reap a run's leftovers.
    const header = fileURLToPath(new URL('./sweep.h', import.meta.url));
    if (mtime(out) >= Math.max(mtime(src), mtime(header))) continue;
    mkdirSync(dir, { recursive: true });
    const tmp = `${out}.${process.pid}`;
    const cc = process.env.CC || 'cc';
    const r = spawnSync(cc, ['-O2', '-Wall', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.error || r.status !== 0) {
      rmSync(tmp, { force: true });
      console.warn(`drover: could not build ${name} with ${cc} (${r.error?.message ?? `exit ${r.status}`}); ${without}`);
    } else {
      renameSync(tmp, out);
    }
  }
}
