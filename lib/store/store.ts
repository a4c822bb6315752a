// Everything the agent keeps under its state directory, besides releases:
//   agent.lock, desired.json + desired.journal, groups.json, events/<slug>/
import { mkdir, statfs } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { DesiredState } from './desired.js';
import { EventLogs } from './event-log/registry.js';
import { GroupRecords, type GroupRecord } from './groups.js';
import { acquireLock, LockError } from './lock.js';

export interface StoreOptions {
  dir: string;
  eventsMaxBytes: number;
  eventsRetentionMs: number;
  warn: (message: string) => void;
}

/** Less free space than this at start is "disk full": the agent would lose its state at once. */
const MIN_FREE_BYTES = 8 * 1024 * 1024;

export class StoreOpenError extends Error {
  override name = 'StoreOpenError';
}

export class Store {
  private constructor(
    readonly desired: DesiredState,
    readonly events: EventLogs,
    readonly groups: GroupRecords,
    /** Groups recorded by the previous agent: to sweep before restoring. */
    readonly previousGroups: GroupRecord[],
    private readonly unlock: () => Promise<void>,
  ) {}

  static async open(opts: StoreOptions): Promise<Store> {
    const { dir } = opts;
    const problem = (err: unknown) => new StoreOpenError(`state directory ${dir} is not usable: ${describe(err)}`);
    try {
      await makeDirs(join(dir, 'events'));
    } catch (err) {
      throw problem(err);
    }
    try {
      const fs = await statfs(dir);
      const free = fs.bavail * fs.bsize;
      if (free < MIN_FREE_BYTES) throw new StoreOpenError(`state directory ${dir} is on a full disk (${free} bytes free)`);
    } catch (err) {
      if (err instanceof StoreOpenError) throw err;
      throw problem(err);
    }
    let unlock: () => Promise<void>;
    try {
      unlock = await acquireLock(dir);
    } catch (err) {
      if (err instanceof LockError) throw new StoreOpenError(err.message);
      throw problem(err);
    }
    try {
      const groupsFile = join(dir, 'groups.json');
      const previousGroups = await GroupRecords.readPrevious(groupsFile, opts.warn);
      const desired = await DesiredState.open(dir, opts.warn);
      const events = new EventLogs(join(dir, 'events'), {
        maxBytes: opts.eventsMaxBytes,
        retentionMs: opts.eventsRetentionMs,
        warn: opts.warn,
      });
      return new Store(desired, events, new GroupRecords(groupsFile, opts.warn), previousGroups, unlock);
    } catch (err) {
      await unlock();
      throw problem(err);
    }
  }

  async close(): Promise<void> {
    await this.events.close();
    await this.desired.close();
    await this.groups.flush();
    await this.unlock();
  }
}

/**
 * mkdir -p, one component at a time. Node 20's recursive mkdir loops forever when mkdir fails
 * with ENOENT although the parent exists (as on /proc): the agent would hang instead of saying
 * the directory is unusable.
 */
async function makeDirs(dir: string): Promise<void> {
  const parts = resolve(dir).split(sep).filter(Boolean);
  let path: string = sep;
  for (const part of parts) {
    path = join(path, part);
    try {
      await mkdir(path, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const reasons: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on device',
    ENOTDIR: 'a path component is not a directory',
    EEXIST: 'exists and is not a directory',
  };
  return e?.code ? `${reasons[e.code] ?? e.message} (${e.code})` : String((err as Error)?.message ?? err);
}
