// Process groups the agent has started (children and builds), with each leader's start time,
// in DIR/groups.json. After an agent dies hard, the next one kills whatever of them is left.
// Written with temp file + rename but no fsync: surviving SIGKILL of the agent only needs the
// page cache, and a power loss ends the groups anyway.
import { open, readFile, rename } from 'node:fs/promises';
import { liveGroupMembers, listProcesses, readProc, signalGroup, type ProcEntry } from '../os/proc.js';

/** Least time between two writes of the file during a burst. */
const SAVE_GAP_MS = 25;

export interface GroupRecord {
  pgid: number;
  /** The leader's start time (clock ticks since boot): tells it apart from a later process with the same pid. */
  starttime: number;
  slug: string;
  kind: 'child' | 'build';
}

export class GroupRecords {
  /** Each group's record as JSON, made once: the file is rewritten whole on every change. */
  private readonly records = new Map<number, Buffer>();
  private saving: Promise<void> | null = null;
  private dirty = false;
  private failed = false;
  private lastSave = -Infinity;

  constructor(
    private readonly file: string,
    private readonly warn: (message: string) => void,
  ) {}

  /** What a previous agent left in the file; damage means there is nothing to trust in it. */
  static async readPrevious(file: string, warn: (message: string) => void): Promise<GroupRecord[]> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    try {
      const list = JSON.parse(text) as unknown;
      if (!Array.isArray(list)) throw new Error('not a list');
      return list.filter(
        (g): g is GroupRecord => Number.isInteger(g?.pgid) && g.pgid > 1 && Number.isInteger(g?.starttime) && typeof g?.slug === 'string',
      );
    } catch {
      warn(`drover: ${file} is damaged; no leftover process groups can be swept`);
      return [];
    }
  }

  /** Records a group just started; its leader's start time is read from /proc now unless given. */
  add(pgid: number, slug: string, kind: GroupRecord['kind'], knownStarttime?: number): void {
    const starttime = knownStarttime ?? readProc(pgid)?.starttime;
    if (starttime === undefined) return; // already gone
    // Encoded once, with the comma that separates it from the record before it.
    this.records.set(pgid, Buffer.from(`,${JSON.stringify({ pgid, starttime, slug, kind } satisfies GroupRecord)}`));
    this.schedule();
  }

  remove(pgid: number): void {
    if (this.records.delete(pgid)) this.schedule();
  }

  /** Resolves once the file reflects every change so far. */
  async flush(): Promise<void> {
    while (this.saving) await this.saving;
  }

  private schedule(): void {
    this.dirty = true;
    // Coalesced: a burst of starts and exits costs one small write.
    this.saving ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.save());
  }

  private async save(): Promise<void> {
    try {
      while (this.dirty) {
        // While starts keep coming, one write per SAVE_GAP_MS: each write is the whole list, so
        // writing back to back through a burst of 1000 starts costs O(n²) and nothing more safe.
        const wait = this.lastSave + SAVE_GAP_MS - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        this.lastSave = performance.now();
        this.dirty = false;
        const tmp = `${this.file}.tmp`;
        try {
          await writeList(tmp, this.records);
          await rename(tmp, this.file);
          this.failed = false;
        } catch (err) {
          if (!this.failed)
            this.warn(`drover: cannot record process groups in ${this.file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
          this.failed = true;
        }
      }
    } finally {
      this.saving = null;
    }
  }
}

/** Whether a recorded group still has processes that belong to it. */
export function isStale(g: GroupRecord, all: ProcEntry[]): boolean {
  const leader = all.find((p) => p.pid === g.pgid && p.state !== 'Z' && p.state !== 'X');
  if (leader) return leader.starttime === g.starttime && leader.pgid === g.pgid;
  // The leader is gone but members may remain: a pgid cannot be handed out again while its group
  // has members, and every member of the group started after its leader.
  return all.some((p) => p.pgid === g.pgid && p.state !== 'Z' && p.state !== 'X' && p.starttime >= g.starttime);
}

/**
 * Kills the groups a dead agent left behind and waits (up to `timeoutMs`) until they are gone,
 * so restored children find their ports free. Returns the groups that were killed.
 */
export async function sweepStaleGroups(records: GroupRecord[], timeoutMs = 10_000): Promise<GroupRecord[]> {
  const all = listProcesses();
  const stale = records.filter((g) => isStale(g, all));
  for (const g of stale) signalGroup(g.pgid, 'SIGKILL');
  const deadline = Date.now() + timeoutMs;
  while (stale.length && Date.now() < deadline) {
    const now = listProcesses();
    if (stale.every((g) => liveGroupMembers(g.pgid, now).length === 0)) break;
    for (const g of stale) signalGroup(g.pgid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 25));
  }
  return stale;
}

const OPEN = Buffer.from('[');
const CLOSE = Buffer.from(']');

/**
 * Writes the records as one JSON array from their encoded pieces, with no string or buffer of
 * the whole file in between: while processes crash-loop the file is rewritten every 25 ms,
 * and joining it anew each time (80 KB at 1000 processes, then encoded again) was the agent's
 * largest source of garbage, and so of its young-generation collections.
 */
async function writeList(file: string, records: Map<number, Buffer>): Promise<void> {
  const pieces = new Array<Buffer>(records.size + 2);
  let i = 0;
  let bytes = 2;
  pieces[i++] = OPEN;
  for (const r of records.values()) {
    pieces[i] = i === 1 ? r.subarray(1) : r; // the first has no comma before it
    bytes += pieces[i++].length;
  }
  pieces[i] = CLOSE;
  const fh = await open(file, 'w', 0o600);
  try {
    const { bytesWritten } = await fh.writev(pieces);
    if (bytesWritten !== bytes) throw new Error(`short write (${bytesWritten} of ${bytes} bytes)`);
  } finally {
    await fh.close();
  }
}
