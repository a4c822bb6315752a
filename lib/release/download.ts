// Fetch a release archive to disk: streamed (never buffered whole), hashed on the
// fly, size-capped and cancellable. http(s) via global fetch; file: for local use.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { abortReason, ReleaseError } from './errors.js';

export interface DownloadOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  maxBytes?: number;
  onProgress?: (bytes: number, total: number | null) => void;
}

export interface DownloadResult {
  bytes: number;
  sha256: string;
}

const PROGRESS_BYTES = 64 * 1024;
const PROGRESS_MS = 100;

export async function download(url: string, destFile: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ReleaseError(`invalid source URL: ${url}`);
  }
  if (!['http:', 'https:', 'file:'].includes(parsed.protocol)) {
    throw new ReleaseError(`unsupported URL scheme "${parsed.protocol}" in ${url} (expected http:, https: or file:)`);
  }
  opts.signal?.throwIfAborted();

  const timeout = opts.timeoutMs != null ? AbortSignal.timeout(opts.timeoutMs) : undefined;
  const signal = AbortSignal.any([opts.signal, timeout].filter((s): s is AbortSignal => s != null));
  const maxBytes = opts.maxBytes ?? Infinity;

  try {
    const { body, total } = parsed.protocol === 'file:' ? await openFile(parsed) : await openHttp(url, signal);
    if (total != null && total > maxBytes) {
      body.destroy();
      throw new ReleaseError(`download exceeds ${maxBytes} bytes (size ${total}) from ${url}`);
    }
    const meter = new Meter(maxBytes, url, total, opts.onProgress);
    await pipeline(body, meter, createWriteStream(destFile), { signal });
    meter.report(true);
    return { bytes: meter.bytes, sha256: meter.hash.digest('hex') };
  } catch (err) {
    await rm(destFile, { force: true });
    // The caller's abort wins over everything else; our own timeout becomes a ReleaseError.
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    if (timeout?.aborted) throw new ReleaseError(`download timed out after ${opts.timeoutMs} ms from ${url}`);
    if (err instanceof ReleaseError) throw err;
    throw new ReleaseError(`download failed: ${describe(err)} from ${url}`);
  }
}

async function openHttp(url: string, signal: AbortSignal): Promise<{ body: Readable; total: number | null }> {
  const res = await fetch(url, { signal, redirect: 'follow' });
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => {});
    const status = res.statusText ? `${res.status} ${res.statusText}` : String(res.status);
    throw new ReleaseError(`download failed: HTTP ${status} from ${url}`);
  }
  const len = res.headers.get('content-length');
  const total = len != null && /^\d+$/.test(len) ? Number(len) : null;
  // The web/Node stream type mismatch is only nominal (DOM vs node:stream/web typings).
  return { body: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), total };
}

async function openFile(url: URL): Promise<{ body: Readable; total: number | null }> {
  const path = fileURLToPath(url);
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new ReleaseError(`download failed: ${path} is not a regular file`);
    size = st.size;
  } catch (err) {
    if (err instanceof ReleaseError) throw err;
    throw new ReleaseError(`download failed: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? describe(err)})`);
  }
  return { body: createReadStream(path), total: size };
}

/** Counts, hashes and caps bytes as they pass; reports throttled progress. */
class Meter extends Transform {
  bytes = 0;
  readonly hash = createHash('sha256');
  private lastBytes = 0;
  private lastTime = Date.now();

  constructor(
    private readonly maxBytes: number,
    private readonly url: string,
    private readonly total: number | null,
    private readonly onProgress?: (bytes: number, total: number | null) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) {
      cb(new ReleaseError(`download exceeds ${this.maxBytes} bytes from ${this.url}`));
      return;
    }
    this.hash.update(chunk);
    this.report(false);
    cb(null, chunk);
  }

  report(final: boolean): void {
    if (!this.onProgress) return;
    const now = Date.now();
    if (!final && this.bytes - this.lastBytes < PROGRESS_BYTES && now - this.lastTime < PROGRESS_MS) return;
    if (final && this.bytes === this.lastBytes && this.lastBytes !== 0) return;
    this.lastBytes = this.bytes;
    this.lastTime = now;
    this.onProgress(this.bytes, this.total);
  }
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // undici hides the useful part ("connect ECONNREFUSED ...") in `cause`.
  const cause = (err as Error & { cause?: unknown }).cause;
  return cause instanceof Error ? cause.message : err.message;
}
