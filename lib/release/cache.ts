// Release cache under the agent's state dir. N processes created from one
// source_url share one download and one build:
//   dir/archives/<sha>.archive   downloaded archives (written to a temp name, then renamed)
//   dir/releases/<sha>/          unpacked + built app
//   dir/releases/<sha>.json      completion marker, written last; a release dir
//                                without it is a crash leftover and is rebuilt
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RunAs } from '../os/identity.js';
import { pathToFileURL } from 'node:url';
import type { GroupMeter } from '../os/meter.js';
import type { RunUsage } from '../os/usage.js';
import { runBuild } from './build.js';
import { download, type DownloadOptions } from './download.js';
import { abortReason } from './errors.js';
import { chownTree } from './owner.js';
import { unpack, type UnpackOptions } from './unpack.js';

export interface Archive {
  sha256: string;
  file: string;
  bytes: number;
}

export interface Release {
  /** The archive's sha256. */
  id: string;
  /** The app root (where the Procfile is). */
  root: string;
  /** What the build steps used (kept in the completion marker); null when none ran or none was measured. */
  usage: RunUsage | null;
}

export interface ReleaseCacheOptions {
  dir: string;
  download?: Omit<DownloadOptions, 'signal' | 'onProgress'>;
  unpack?: Omit<UnpackOptions, 'signal'>;
  /** Builds run as this user, who owns the unpacked app (--user). */
  runAs?: RunAs;
  /** A local file holding exactly what `url` serves (the agent's own blobs), read instead of fetching. */
  localSource?: (url: string) => Promise<string | null>;
  /** Told about each build process group (so a crashed agent's successor can sweep them). */
  track?: (pgid: number) => () => void;
}

export interface FetchOptions {
  signal?: AbortSignal;
  onProgress?: (bytes: number, total: number | null) => void;
}

export interface CacheBuildOptions {
  signal?: AbortSignal;
  /** Only the env of the waiter that starts a build is used; joiners share its result. */
  env: Record<string, string>;
  onLine: (line: string) => void;
  /** Like env, only the starting waiter's meter measures the build steps. */
  meter?: GroupMeter;
}

export class ReleaseCache {
  private readonly downloads = new Map<string, SharedTask<Archive, [bytes: number, total: number | null]>>();
  private readonly builds = new Map<string, SharedTask<Release, [line: string]>>();
  /** Per sha, the last build task's settlement: a new build waits for an aborted one to clean up. */
  private readonly buildTails = new Map<string, Promise<unknown>>();
  private readonly archivesDir: string;
  private readonly releasesDir: string;

  constructor(private readonly opts: ReleaseCacheOptions) {
    this.archivesDir = path.join(opts.dir, 'archives');
    this.releasesDir = path.join(opts.dir, 'releases');
  }

  fetch(url: string, opts: FetchOptions = {}): Promise<Archive> {
    let task = this.downloads.get(url);
    if (!task) {
      const t = new SharedTask<Archive, [number, number | null]>(
        (signal, notify) => this.doFetch(url, signal, notify),
        () => {
          if (this.downloads.get(url) === t) this.downloads.delete(url);
        },
      );
      task = t;
      this.downloads.set(url, t);
    }
    return task.join(opts.signal, opts.onProgress);
  }

  build(archive: Archive, opts: CacheBuildOptions): Promise<Release> {
    const sha = archive.sha256;
    let task = this.builds.get(sha);
    if (!task) {
      const previous = this.buildTails.get(sha) ?? Promise.resolve();
      const t = new SharedTask<Release, [string]>(
        async (signal, notify) => {
          await previous;
          return this.doBuild(archive, opts.env, signal, notify, opts.meter);
        },
        () => {
          if (this.builds.get(sha) === t) this.builds.delete(sha);
        },
      );
      task = t;
      this.builds.set(sha, t);
      const tail = t.settled.then(() => {
        if (this.buildTails.get(sha) === tail) this.buildTails.delete(sha);
      });
      this.buildTails.set(sha, tail);
    }
    return task.join(opts.signal, opts.onLine);
  }

  /**
   * The archive with this sha256 if the cache still holds it, or its finished build, without
   * any download: a restored process runs the release it ran before, even when its source is
   * unreachable or has changed since.
   */
  async cached(sha256: string): Promise<Archive | null> {
    if (!/^[0-9a-f]{64}$/.test(sha256)) return null;
    const file = path.join(this.archivesDir, `${sha256}.archive`);
    try {
      const st = await stat(file);
      if (st.isFile()) return { sha256, file, bytes: st.size };
    } catch {
      // not kept: a finished build is enough
    }
    const dir = path.join(this.releasesDir, sha256);
    return (await readMarker(`${dir}.json`, dir)) ? { sha256, file, bytes: 0 } : null;
  }

  private async doFetch(url: string, signal: AbortSignal, onProgress: (bytes: number, total: number | null) => void): Promise<Archive> {
    await mkdir(this.archivesDir, { recursive: true });
    const tmp = path.join(this.archivesDir, `.download-${randomBytes(8).toString('hex')}`);
    const local = await this.opts.localSource?.(url);
    const from = local ? pathToFileURL(local).href : url;
    const { bytes, sha256 } = await download(from, tmp, { ...this.opts.download, signal, onProgress });
    const file = path.join(this.archivesDir, `${sha256}.archive`);
    try {
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return { sha256, file, bytes };
  }

  private async doBuild(
    archive: Archive,
    env: Record<string, string>,
    signal: AbortSignal,
    onLine: (line: string) => void,
    meter: GroupMeter | undefined,
  ): Promise<Release> {
    signal.throwIfAborted(); // e.g. every waiter left while we waited for a previous build
    const id = archive.sha256;
    if (!/^[0-9a-f]{64}$/.test(id)) throw new TypeError(`not a sha256: ${id}`);
    const dir = path.join(this.releasesDir, id);
    const marker = `${dir}.json`;
    const done = await readMarker(marker, dir);
    if (done) return { id, ...done };

    await rm(marker, { force: true });
    await rm(dir, { recursive: true, force: true });
    await mkdir(this.releasesDir, { recursive: true });
    try {
      const root = await unpack(archive.file, dir, { ...this.opts.unpack, signal });
      const runAs = this.opts.runAs;
      if (runAs) await chownTree(root, runAs.uid, runAs.gid);
      const usage = await runBuild(root, { signal, env, onLine, runAs, meter, track: this.opts.track });
      signal.throwIfAborted();
      const tmp = `${marker}.${randomBytes(8).toString('hex')}`;
      await writeFile(tmp, JSON.stringify({ root: path.relative(dir, root), usage }) + '\n');
      await rename(tmp, marker);
      return { id, root, usage };
    } catch (err) {
      // Leave nothing half-built behind, so a retry starts from scratch.
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      throw err;
    }
  }
}

/** The app root (and build usage) recorded by a completed build, or null if there is none (or it is damaged). */
async function readMarker(marker: string, dir: string): Promise<{ root: string; usage: RunUsage | null } | null> {
  try {
    const { root, usage } = JSON.parse(await readFile(marker, 'utf8')) as { root: unknown; usage?: RunUsage | null };
    if (typeof root !== 'string' || root.startsWith('..') || path.isAbsolute(root)) return null;
    const abs = path.join(dir, root);
    return (await stat(abs)).isDirectory() ? { root: abs, usage: usage && typeof usage === 'object' ? usage : null } : null;
  } catch {
    return null;
  }
}

/**
 * Work shared by several waiters. It runs under its own AbortController, aborted
 * only when every waiter has given up; each waiter is released at once on its
 * own abort. Notifications (progress, build lines) go to all current waiters.
 */
class SharedTask<T, A extends unknown[]> {
  private readonly controller = new AbortController();
  private readonly listeners = new Set<(...args: A) => void>();
  private waiters = 0;
  private finished = false;
  private readonly promise: Promise<T>;
  /** Resolves once the work has settled, successfully or not (never rejects). */
  readonly settled: Promise<void>;

  constructor(
    work: (signal: AbortSignal, notify: (...args: A) => void) => Promise<T>,
    private readonly onDone: () => void,
  ) {
    const notify = (...args: A): void => {
      for (const l of [...this.listeners]) {
        try {
          l(...args);
        } catch {
          // one waiter's broken callback must not fail the shared work
        }
      }
    };
    this.promise = Promise.resolve().then(() => work(this.controller.signal, notify));
    this.settled = this.promise.then(
      () => {},
      () => {},
    );
    void this.settled.then(() => {
      this.finished = true;
      this.onDone();
    });
  }

  join(signal: AbortSignal | undefined, listener?: (...args: A) => void): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    this.waiters++;
    if (listener) this.listeners.add(listener);
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const leave = (): void => {
        if (left) return;
        left = true;
        signal?.removeEventListener('abort', onAbort);
        if (listener) this.listeners.delete(listener);
        this.waiters--;
      };
      const onAbort = (): void => {
        if (left) return;
        leave();
        reject(abortReason(signal!));
        if (this.waiters === 0 && !this.finished) {
          // Nobody wants the result any more: new callers must start afresh
          // rather than join work that is being torn down.
          this.onDone();
          this.controller.abort();
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.promise.then(
        (v) => {
          if (left) return;
          leave();
          resolve(v);
        },
        (err) => {
          if (left) return;
          leave();
          reject(err);
        },
      );
    });
  }
}
