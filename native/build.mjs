// Builds the optional exit helper, native/drover-wait.c, into native/build/. It never fails the
// install: without a C compiler drover runs commands without it, reports `core_dump` as null
// where it cannot be inferred, and measures usage with cgroups or /proc instead of wait4.
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('./drover-wait.c', import.meta.url));
const dir = fileURLToPath(new URL('./build/', import.meta.url));
const out = `${dir}drover-wait`;

const mtime = (p) => {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
};

if (process.platform !== 'linux') {
  console.warn('drover: not on Linux, skipping the exit helper (native/drover-wait.c)');
} else if (mtime(out) < mtime(src)) {
  mkdirSync(dir, { recursive: true });
  const tmp = `${out}.${process.pid}`;
  const cc = process.env.CC || 'cc';
  const r = spawnSync(cc, ['-O2', '-Wall', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    console.warn(
      `drover: could not build the exit helper with ${cc} (${r.error?.message ?? `exit ${r.status}`}); ` +
        'core dumps will be reported as unknown and usage measured without wait4',
    );
  } else {
    renameSync(tmp, out);
  }
}
