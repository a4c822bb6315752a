// Content-addressed blob store (seed 002's data API):
//   dir/<sha256>          the bytes; the id is their sha256, so the same bytes get the same id
//   dir/.upload-<random>  an upload in progress, renamed into place once complete
// A blob's mtime is the last time it was uploaded or seen referenced; blobs no process
// refers to are removed once that is older than the retention time.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface BlobInfo {
  id: string;
  size: number;
  /** Last upload, or last time a process was seen referring to it. */
  usedAt: Date;
}

export interface BlobStoreOptions {
  dir: string;
  maxBytes: number;
  retentionMs: number;
  /** Ids of the blobs something still refers to; those are never removed. */
  referenced: () => Set<string>;
  log?: (line: string) => void;
}

export class BlobTooLargeError extends Error {
  override name = 'BlobTooLargeError';
  constructor(readonly maxBytes: number) {
    super(`upload is larger than the limit of ${maxBytes} bytes`);
  }
}

const ID = /^[0-9a-f]{64}$/;
const TEMP_PREFIX = '.upload-';

export function isBlobId(id: string): boolean {
  return ID.test(id);
}

/**
 * The blob id a URL names, if its path is a blob URL (`.../data/<id>/blob`). Ids are the
 * sha256 of the bytes, so such a URL names its content exactly, whichever host serves it.
 */
export function blobIdFromUrl(url: string): string | null {
  try {
    const m = /\/data\/([0-9a-f]{64})\/blob$/.exec(new URL(url).pathname);
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

export class BlobStore {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<string[]> | null = null;

  constructor(private readonly opts: BlobStoreOptions) {}

  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  /** Creates the directory and removes uploads a previous run left half-written. */
  async init(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    for (const name of await readdir(this.opts.dir)) {
      if (name.startsWith(TEMP_PREFIX)) await rm(path.join(this.opts.dir, name), { force: true });
    }
  }

  path(id: string): string {
    if (!isBlobId(id)) throw new TypeError(`not a blob id: ${id}`);
    return path.join(this.opts.dir, id);
  }

  /**
   * Streams `body` to disk, hashing as it goes; past maxBytes it stops with BlobTooLargeError
   * and keeps nothing. `created` is false when the same bytes were already stored.
   */
  async put(body: Readable, signal?: AbortSignal): Promise<{ info: BlobInfo; created: boolean }> {
    await mkdir(this.opts.dir, { recursive: true });
    const tmp = path.join(this.opts.dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    const max = this.opts.maxBytes;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > max) return cb(new BlobTooLargeError(max));
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    // pipeline() never settles for a source destroyed before it is attached: check after the await.
    if (body.destroyed) throw new Error('upload aborted');
    try {
      await pipeline(body, meter, createWriteStream(tmp), signal ? { signal } : {});
      const id = hash.digest('hex');
      const final = this.path(id);
      const existed = await exists(final);
      // Identical bytes by construction, so replacing is harmless and refreshes the mtime (last use).
      await rename(tmp, final);
      return { info: { id, size, usedAt: new Date() }, created: !existed };
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async get(id: string): Promise<BlobInfo | null> {
    if (!isBlobId(id)) return null;
    try {
      const st = await stat(this.path(id));
      return st.isFile() ? { id, size: st.size, usedAt: st.mtime } : null;
    } catch {
      return null;
    }
  }

  async list(): Promise<BlobInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.opts.dir);
    } catch {
      return [];
    }
    const infos = await Promise.all(
      names
        .filter(isBlobId)
        .sort()
        .map((id) => this.get(id)),
    );
    return infos.filter((i): i is BlobInfo => i !== null);
  }

  /** Removes unreferenced blobs unused for longer than the retention; marks referenced ones used. */
  sweep(now = Date.now()): Promise<string[]> {
    this.sweeping ??= this.doSweep(now).finally(() => {
      this.sweeping = null;
    });
    return this.sweeping;
  }

  private async doSweep(now: number): Promise<string[]> {
    const referenced = this.opts.referenced();
    const removed: string[] = [];
    for (const blob of await this.list()) {
      const age = now - blob.usedAt.getTime();
      if (referenced.has(blob.id)) {
        // Refresh now and then, so the retention counts from when the last reference went away,
        // also across agent restarts.
        if (age > this.opts.retentionMs / 2) await utimes(this.path(blob.id), new Date(now), new Date(now)).catch(() => {});
      } else if (age > this.opts.retentionMs) {
        await rm(this.path(blob.id), { force: true });
        removed.push(blob.id);
      }
    }
    if (removed.length > 0) this.opts.log?.(`drover: removed ${removed.length} unreferenced blob(s) after the retention time`);
    return removed;
  }

  /** Sweeps periodically until close(). */
  startSweeping(): void {
    const every = Math.min(Math.max(this.opts.retentionMs / 4, 100), 60_000);
    this.timer = setInterval(() => {
      this.sweep().catch((err) => this.opts.log?.(`drover: blob sweep failed: ${(err as Error).message}`));
    }, every);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping?.catch(() => {});
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
