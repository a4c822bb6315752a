import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readProc } from '../os/proc.js';

export class LockError extends Error {
  override name = 'LockError';
}

/**
 * Makes the agent the only one using `dir`: two agents on one state directory would sweep
 * each other's children and interleave their logs. A lock left by a dead agent (checked by
 * pid and start time) is taken over. Returns the release function.
 */
export async function acquireLock(dir: string): Promise<() => Promise<void>> {
  const file = join(dir, 'agent.lock');
  const me = { pid: process.pid, starttime: readProc(process.pid)?.starttime ?? 0 };
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o600);
      await fh.writeFile(JSON.stringify(me)).finally(() => fh.close());
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
      const holder = await readHolder(file);
      const proc = holder ? readProc(holder.pid) : null;
      // A zombie is dead, even though /proc still shows it until its parent reaps it.
      if (holder && proc && proc.starttime === holder.starttime && proc.state !== 'Z' && proc.state !== 'X') {
        throw new LockError(`state directory ${dir} is in use by another drover agent (pid ${holder.pid})`);
      }
      await rm(file, { force: true }); // left by an agent that died
    }
  }
  return async () => {
    const holder = await readHolder(file);
    if (holder?.pid === me.pid) await rm(file, { force: true });
  };
}

async function readHolder(file: string): Promise<{ pid: number; starttime: number } | null> {
  try {
    const v = JSON.parse(await readFile(file, 'utf8')) as { pid?: unknown; starttime?: unknown };
    return Number.isInteger(v.pid) && Number.isInteger(v.starttime) ? { pid: v.pid as number, starttime: v.starttime as number } : null;
  } catch {
    return null;
  }
}
