// Release cache under the agent's state dir. N processes created from one
// source_url share one download and one build:
//   dir/archives/<sha>.archive          downloaded archives (written to a temp name, then renamed)
//   dir/releases/<sha>/                 unpacked + built app
//   dir/releases/.unpack-<random>/      a tar(.gz) unpacked while it downloaded, until a build of
//                                       its sha takes it (renamed to releases/<sha>/)
//   dir/release-meta/<sha>.json         completion marker, written last; a release dir
//                                       without it is a crash leftover and is rebuilt
//   dir/release-meta/<sha>.failed-<k>.json  a failed build of these bytes with build inputs k
// Nothing of ours sits beside a release directory: Node resolves `node .` in releases/<sha>
// to releases/<sha>.json (or .js, .node) before the directory's own package.json, so a marker
// there would be run instead of the app. Markers of older agents are moved on init().
import { createHash, randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RunAs } from '../os/identity.js';
import { pathToFileURL } from 'node:url';
import type { GroupMeter } from '../os/meter.js';
import type { RunUsage } from '../os/usage.js';
import { runBuild } from './build.js';
import { download, type DownloadOptions } from './download.js';
import { abortReason, ReleaseError } from './errors.js';
import { chownTree } from './owner.js';
import { StreamUnpack, unpack, type UnpackOptions } from './unpack.js';
import { version as droverVersion } from './version.js';

/** How much of a failed build's output is remembered with it. */
const FAILURE_LOG_LINES = 200;
const FAILURE_LOG_LINE_CHARS = 1000;

/** A build of these bytes with these inputs failed before; it is reported again, not rerun. */
export class RememberedBuildFailure extends ReleaseError {
  override name = 'RememberedBuildFailure';
  constructor(
    message: string,
    readonly failedAt: string,
    /** The last lines of the failed build's output. */
    readonly log: string[],
    exitCode: number | undefined,
  ) {
    super(message);
    if (exitCode !== undefined) this.exitCode = exitCode;
  }
}

/** What a build step produced for its waiters: an output line, or the unpacked app root (before any step runs). */
type BuildNotice = { line: string; unpacked?: undefined } | { unpacked: string; line?: undefined };

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
  /** Told how each real download and build (not one served from the cache) ended, and how long it took. */
  observe?: (stage: 'download' | 'build', outcome: 'ok' | 'failed' | 'aborted', seconds: number) => void;
}

export interface FetchOptions {
  signal?: AbortSignal;
  /** X-Request-Id for the GET (the create's); joiners of a download under way share the starter's. */
  requestId?: string;
  /** Sent as Authorization to the URL's origin (the experiment runner's `Token <signature>`). */
  authorization?: string;
  onProgress?: (bytes: number, total: number | null) => void;
  /**
   * A build() of the archive follows: unpack it (tar, tar.gz) while it downloads, in the same
   * pass. Only the option of the caller that starts the download counts.
   */
  unpack?: boolean;
}

/** An archive unpacked while it downloaded, not yet taken by a build. */
interface Unpacked {
  dir: string;
  /** The app root, relative to dir. */
  root: string;
}

export interface CacheBuildOptions {
  signal?: AbortSignal;
  /** Only the env of the waiter that starts a build is used; joiners share its result. */
  env: Record<string, string>;
  onLine: (line: string) => void;
  /** Like env, only the starting waiter's meter measures the build steps. */
  meter?: GroupMeter;
  /**
   * Run on the unpacked app root before any build step (e.g. "has a Procfile entry of my type").
   * If it throws, this waiter leaves with that error; the build goes on for the others, if any.
   */
  check?: (root: string) => Promise<void>;
  /** Build even when this archive's build with these inputs is remembered as failing (a restart request). */
  force?: boolean;
}

export class ReleaseCache {
  private readonly downloads = new Map<string, SharedTask<Archive, [bytes: number, total: number | null]>>();
  private readonly builds = new Map<string, SharedTask<Release, [notice: BuildNotice]>>();
  /** Per sha, the last build task's settlement: a new build waits for an aborted one to clean up. */
  private readonly buildTails = new Map<string, Promise<unknown>>();
  /** Per sha, the archive unpacked while it downloaded, for the next build of it to take. */
  private readonly unpacked = new Map<string, Unpacked>();
  private readonly archivesDir: string;
  private readonly releasesDir: string;
  private readonly metaDir: string;
  /**
   * Completed builds this agent has read or written, by sha: every process created from a
   * release asks for it again, and the marker does not change while the agent holds it.
   */
  private readonly completed = new Map<string, { root: string; usage: RunUsage | null }>();
  /**
   * The shas that may have a remembered failure (from release-meta/ at init, and each failure
   * since), or null before init: a build of any other sha skips the lookup and its hashing.
   */
  private mayHaveFailed: Set<string> | null = null;
  /** Per sha, the last remembered-failure lookup of a build() call (see build). */
  private readonly failureLookups = new Map<string, Promise<void>>();

  constructor(private readonly opts: ReleaseCacheOptions) {
    this.archivesDir = path.join(opts.dir, 'archives');
    this.releasesDir = path.join(opts.dir, 'releases');
    this.metaDir = path.join(opts.dir, 'release-meta');
  }

  /**
   * Creates the directories and moves the completion markers an older agent kept beside the
   * release directories (releases/<sha>.json) to release-meta/, so its cache stays valid.
   */
  async init(): Promise<void> {
    await mkdir(this.releasesDir, { recursive: true });
    await mkdir(this.metaDir, { recursive: true });
    for (const name of await readdir(this.releasesDir)) {
      if (!/^[0-9a-f]{64}\.json/.test(name)) continue;
      const from = path.join(this.releasesDir, name);
      // A half-written marker (<sha>.json.<random>) is a crash leftover: the release is rebuilt.
      if (/^[0-9a-f]{64}\.json$/.test(name)) await rename(from, path.join(this.metaDir, name)).catch(() => {});
      await rm(from, { force: true });
    }
    this.mayHaveFailed = new Set();
    for (const name of await readdir(this.metaDir)) {
      const m = /^([0-9a-f]{64})\.failed-/.exec(name);
      if (m) this.mayHaveFailed.add(m[1]);
    }
    // Unpacked while downloading by an agent that stopped before building it.
    for (const name of await readdir(this.releasesDir)) {
      if (name.startsWith('.unpack-')) await rm(path.join(this.releasesDir, name), { recursive: true, force: true });
    }
  }

  private markerOf(sha: string): string {
    return path.join(this.metaDir, `${sha}.json`);
  }

  /** Where a failed build of `sha` with these build inputs (env, drover version) is remembered. */
  private failureOf(sha: string, env: Record<string, string>): string {
    const inputs = JSON.stringify({ env: Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)), drover: droverVersion() });
    const key = createHash('sha256').update(inputs).digest('hex').slice(0, 16);
    return path.join(this.metaDir, `${sha}.failed-${key}.json`);
  }

  /** Writes the failure record (temp name, then rename); failing to write it only costs a rebuild later. */
  private async rememberFailure(sha: string, env: Record<string, string>, err: ReleaseError, log: string[]): Promise<void> {
    const file = this.failureOf(sha, env);
    const tmp = `${file}.${randomBytes(8).toString('hex')}`;
    this.mayHaveFailed?.add(sha);
    const rec = { error: err.message, exit_code: err.exitCode ?? null, failed_at: new Date().toISOString(), drover: droverVersion(), log };
    try {
      await writeFile(tmp, JSON.stringify(rec) + '\n');
      await rename(tmp, file);
    } catch {
      await rm(tmp, { force: true });
    }
  }

  /** The remembered failure of this build, as the error to report, or null. */
  private async rememberedFailure(sha: string, env: Record<string, string>): Promise<RememberedBuildFailure | null> {
    if (this.mayHaveFailed && !this.mayHaveFailed.has(sha)) return null;
    try {
      const rec = JSON.parse(await readFile(this.failureOf(sha, env), 'utf8')) as {
        error?: unknown;
        failed_at?: unknown;
        log?: unknown;
        exit_code?: unknown;
      };
      const failedAt = typeof rec.failed_at === 'string' ? rec.failed_at : 'unknown';
      const log = Array.isArray(rec.log) ? rec.log.filter((l): l is string => typeof l === 'string') : [];
      return new RememberedBuildFailure(
        `${typeof rec.error === 'string' ? rec.error : 'build failed'} (remembered from ${failedAt}: not rebuilt until the source serves new bytes or a restart is requested)`,
        failedAt,
        log,
        typeof rec.exit_code === 'number' ? rec.exit_code : undefined,
      );
    } catch {
      return null;
    }
  }

  fetch(url: string, opts: FetchOptions = {}): Promise<Archive> {
    let task = this.downloads.get(url);
    if (!task) {
      const t = new SharedTask<Archive, [number, number | null]>(
        (signal, notify) =>
          this.observed('download', signal, () =>
            this.doFetch(url, signal, (bytes, total) => void notify(bytes, total), opts.requestId, opts.authorization, opts.unpack),
          ),
        () => {
          if (this.downloads.get(url) === t) this.downloads.delete(url);
        },
      );
      task = t;
      this.downloads.set(url, t);
    }
    return task.join(opts.signal, opts.onProgress);
  }

  async build(archive: Archive, opts: CacheBuildOptions): Promise<Release> {
    const sha = archive.sha256;
    if (!opts.force && !this.builds.has(sha)) {
      // Looked up in call order: the first caller's env is the one a build starts with, so a
      // later caller must not get to start it because its lookup happened to finish first.
      const before = this.failureLookups.get(sha) ?? Promise.resolve();
      const lookup = before.then(() => this.rememberedFailure(sha, opts.env));
      const tail = lookup.then(
        () => {},
        () => {},
      );
      this.failureLookups.set(sha, tail);
      void tail.then(() => this.failureLookups.get(sha) === tail && this.failureLookups.delete(sha));
      const remembered = await lookup;
      if (remembered) {
        this.dropUnpacked(sha);
        throw remembered;
      }
    }
    let task = this.builds.get(sha);
    if (!task) {
      const previous = this.buildTails.get(sha) ?? Promise.resolve();
      const t = new SharedTask<Release, [BuildNotice]>(
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
    // This waiter's own way out: its check of the unpacked app failed.
    const own = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, own.signal]) : own.signal;
    return task.join(signal, (notice) => {
      if (notice.line !== undefined) return opts.onLine(notice.line);
      return opts.check?.(notice.unpacked).catch((err: unknown) => own.abort(err));
    });
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
    return (await readMarker(this.markerOf(sha256), dir)) ? { sha256, file, bytes: 0 } : null;
  }

  private async doFetch(
    url: string,
    signal: AbortSignal,
    onProgress: (bytes: number, total: number | null) => void,
    requestId: string | undefined,
    authorization: string | undefined,
    unpackToo: boolean | undefined,
  ): Promise<Archive> {
    await mkdir(this.archivesDir, { recursive: true });
    const tmp = path.join(this.archivesDir, `.download-${randomBytes(8).toString('hex')}`);
    const local = await this.opts.localSource?.(url);
    const from = local ? pathToFileURL(local).href : url;
    // Unpacked in the same pass as the download, into a directory of its own until the bytes'
    // sha256 (the release's name) is known; the archive file is still kept (zips, restores).
    const unpackDir = path.join(this.releasesDir, `.unpack-${randomBytes(8).toString('hex')}`);
    let streamed: StreamUnpack | undefined;
    const tee = unpackToo
      ? (total: number | null) => (streamed = new StreamUnpack(unpackDir, { ...this.opts.unpack, signal, archiveBytes: total }))
      : undefined;
    // Settles once the directory is complete, or removed; null if there is none.
    const unpacked = async (): Promise<string | null> => (streamed ? streamed.result.catch(() => null) : null);
    let result;
    try {
      result = await download(from, tmp, { ...this.opts.download, signal, onProgress, requestId, authorization, tee });
    } catch (err) {
      if (await unpacked()) await rm(unpackDir, { recursive: true, force: true });
      throw err;
    }
    const { bytes, sha256 } = result;
    const file = path.join(this.archivesDir, `${sha256}.archive`);
    try {
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      if (await unpacked()) await rm(unpackDir, { recursive: true, force: true });
      throw err;
    }
    const root = await unpacked();
    if (root !== null) {
      if (streamed?.bytes === bytes && !signal.aborted)
        await this.keepUnpacked(sha256, { dir: unpackDir, root: path.relative(unpackDir, root) });
      else await rm(unpackDir, { recursive: true, force: true });
    }
    return { sha256, file, bytes };
  }

  /** Keeps what was unpacked while downloading for the next build of `sha`, unless it is built already. */
  private async keepUnpacked(sha: string, u: Unpacked): Promise<void> {
    if (this.completed.has(sha) || (await readMarker(this.markerOf(sha), path.join(this.releasesDir, sha)))) {
      await rm(u.dir, { recursive: true, force: true });
      return;
    }
    this.dropUnpacked(sha);
    this.unpacked.set(sha, u);
  }

  /** Removes the unpacked-while-downloading directory of `sha` (in the background: nobody waits for it). */
  private dropUnpacked(sha: string): void {
    const u = this.unpacked.get(sha);
    if (!u) return;
    this.unpacked.delete(sha);
    void rm(u.dir, { recursive: true, force: true }).catch(() => {});
  }

  /** Moves what was unpacked while downloading to `dir`; its app root, or null (then it is unpacked again). */
  private async adopt(pre: Unpacked, dir: string): Promise<string | null> {
    try {
      await rename(pre.dir, dir);
      return path.join(dir, pre.root);
    } catch {
      await rm(pre.dir, { recursive: true, force: true });
      return null;
    }
  }

  /** Runs one real download or build, telling `observe` how it ended. */
  private async observed<T>(stage: 'download' | 'build', signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const r = await work();
      this.opts.observe?.(stage, 'ok', (performance.now() - started) / 1000);
      return r;
    } catch (err) {
      this.opts.observe?.(stage, signal.aborted ? 'aborted' : 'failed', (performance.now() - started) / 1000);
      throw err;
    }
  }

  private async doBuild(
    archive: Archive,
    env: Record<string, string>,
    signal: AbortSignal,
    notify: (notice: BuildNotice) => Promise<void>,
    meter: GroupMeter | undefined,
  ): Promise<Release> {
    signal.throwIfAborted(); // e.g. every waiter left while we waited for a previous build
    const id = archive.sha256;
    if (!/^[0-9a-f]{64}$/.test(id)) throw new TypeError(`not a sha256: ${id}`);
    const dir = path.join(this.releasesDir, id);
    const marker = this.markerOf(id);
    const known = this.completed.get(id);
    // The memory holds while the directory does (an operator may have removed it by hand).
    const done = known && statSync(known.root, { throwIfNoEntry: false })?.isDirectory() ? known : await readMarker(marker, dir);
    if (done) {
      this.completed.set(id, done);
      this.dropUnpacked(id);
      return { id, ...done };
    }

    return this.observed('build', signal, async () => {
      this.completed.delete(id);
      await rm(marker, { force: true });
      await rm(dir, { recursive: true, force: true });
      await mkdir(this.releasesDir, { recursive: true });
      await mkdir(this.metaDir, { recursive: true });
      const tail: string[] = [];
      const onLine = (line: string): void => {
        tail.push(line.length > FAILURE_LOG_LINE_CHARS ? line.slice(0, FAILURE_LOG_LINE_CHARS) : line);
        if (tail.length > FAILURE_LOG_LINES) tail.shift();
        void notify({ line });
      };
      // Taken and forgotten in one step, so no other build of this sha takes it too.
      const pre = this.unpacked.get(id);
      this.unpacked.delete(id);
      try {
        const root = (pre && (await this.adopt(pre, dir))) ?? (await unpack(archive.file, dir, { ...this.opts.unpack, signal }));
        // Each waiter checks the app can run for it; those that cannot leave before any step runs.
        await notify({ unpacked: root });
        signal.throwIfAborted();
        const runAs = this.opts.runAs;
        if (runAs) await chownTree(root, runAs.uid, runAs.gid);
        let usage: RunUsage | null;
        try {
          usage = await runBuild(root, { signal, env, onLine, runAs, meter, track: this.opts.track });
        } catch (err) {
          // A build step failed (not an abort): remember it for these bytes and inputs.
          if (!signal.aborted && err instanceof ReleaseError) await this.rememberFailure(id, env, err, tail);
          throw err;
        }
        signal.throwIfAborted();
        const tmp = `${marker}.${randomBytes(8).toString('hex')}`;
        await writeFile(tmp, JSON.stringify({ root: path.relative(dir, root), usage }) + '\n');
        await rename(tmp, marker);
        await rm(this.failureOf(id, env), { force: true });
        this.completed.set(id, { root, usage });
        return { id, root, usage };
      } catch (err) {
        // Leave nothing half-built behind, so a retry starts from scratch.
        await rm(dir, { recursive: true, force: true, maxRetries: 3 });
        throw err;
      }
    });
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
  private readonly listeners = new Set<(...args: A) => unknown>();
  private waiters = 0;
  private finished = false;
  private readonly promise: Promise<T>;
  /** Resolves once the work has settled, successfully or not (never rejects). */
  readonly settled: Promise<void>;

  constructor(
    work: (signal: AbortSignal, notify: (...args: A) => Promise<void>) => Promise<T>,
    private readonly onDone: () => void,
  ) {
    /** Tells every current waiter; resolves once the promises their listeners returned (if any) settled. */
    const notify = async (...args: A): Promise<void> => {
      const pending: Promise<unknown>[] = [];
      for (const l of [...this.listeners]) {
        try {
          const r = l(...args);
          if (r instanceof Promise) pending.push(r.catch(() => {}));
        } catch {
          // one waiter's broken callback must not fail the shared work
        }
      }
      if (pending.length) await Promise.all(pending);
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

  join(signal: AbortSignal | undefined, listener?: (...args: A) => unknown): Promise<T> {
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
