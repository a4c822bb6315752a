// Fetch a release archive to disk: streamed (never buffered whole), hashed on the
// fly, size-capped, time-limited and cancellable. http(s) via global fetch, following
// redirects ourselves so every hop is checked; file: for local use.
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { abortReason, ReleaseError } from './errors.js';

export interface DownloadOptions {
  signal?: AbortSignal;
  /** Sent as X-Request-Id on the GET and every redirect, so the source's logs trace the create that caused it. */
  requestId?: string;
  /** An Authorization header for the URL's own origin (never sent on to a redirect elsewhere). */
  authorization?: string;
  timeoutMs?: number;
  maxBytes?: number;
  onProgress?: (bytes: number, total: number | null) => void;
  /** Hosts the URL and every redirect may point at: exact names or "*.example.com"; empty or absent for any. */
  allowedHosts?: readonly string[];
  /** Redirects followed before giving up (default 5). */
  maxRedirects?: number;
  /** Longest wait for a response's headers, per request. */
  connectTimeoutMs?: number;
  /** Longest pause between two chunks of the body. */
  readTimeoutMs?: number;
  /**
   * Called once the body is about to be read, with its declared size; every byte of the body
   * is also written to what it returns (waiting for it when it is full), which is ended when the
   * body has been read whole and destroyed if the download fails. If it fails itself, the
   * download goes on without it.
   */
  tee?: (total: number | null) => Writable;
}

export interface DownloadResult {
  bytes: number;
  sha256: string;
}

// Progress every 64 KiB or 1% of the declared size, whichever is more, or every 100 ms: each
// report is an event in the process's log (64 KiB steps made ~1500 of them per 100 MB).
const PROGRESS_BYTES = 64 * 1024;
const PROGRESS_SHARE = 0.01;
const PROGRESS_MS = 100;
const DEFAULT_MAX_REDIRECTS = 5;

/** True if `hostname` is on the allow-list (an empty or absent list allows every host). */
export function hostAllowed(hostname: string, allowed: readonly string[] | undefined): boolean {
  if (!allowed || allowed.length === 0) return true;
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return allowed.some((a) => (a.startsWith('*.') ? h.endsWith(a.slice(1)) : h === a));
}

// Cloud metadata services: they hand out the host's credentials to whoever asks from inside.
const METADATA_NAMES = new Set(['metadata.google.internal', 'metadata.goog', 'metadata', 'instance-data', 'instance-data.ec2.internal']);

/** Link-local (169.254.0.0/16, fe80::/10, where the metadata services live) and the metadata IPv6 addresses. */
export function isLinkLocal(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.\d+\.\d+$/.exec(a);
  if (v4) return v4[1] === '169' && v4[2] === '254';
  if (isIP(a) !== 6) return false;
  // IPv4-mapped, as the URL parser writes it: ::ffff:a9fe:a9fe.
  const mapped = /^::ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(a);
  if (mapped) return Number.parseInt(mapped[1], 16) >> 8 === 169 && (Number.parseInt(mapped[1], 16) & 0xff) === 254;
  // fe80::/10, and AWS's IPv6 metadata address fd00:ec2::254.
  return /^fe[89ab][0-9a-f]:/.test(a) || a === 'fd00:ec2::254';
}

/**
 * Whether a download may go to `hostname`: link-local and metadata names and addresses (and
 * names resolving to them) only when the allow-list names them. Throws the one error a caller
 * gets for any unreachable source, so it learns nothing about the internal network.
 */
async function checkTarget(url: URL, allowed: readonly string[] | undefined): Promise<void> {
  const host = url.hostname
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/\.$/, '');
  if (allowed && allowed.length > 0 && hostAllowed(host, allowed)) return;
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else if (METADATA_NAMES.has(host)) addresses = ['169.254.169.254'];
  else {
    try {
      addresses = (await lookup(host, { all: true })).map((a) => a.address);
    } catch {
      throw unreachable(url);
    }
  }
  if (addresses.some(isLinkLocal)) throw unreachable(url);
}

const unreachable = (url: URL) => new ReleaseError(`download failed: ${redactUrl(url)} is unreachable`);

/**
 * A URL fit for messages that end up in status documents and logs: credentials and the
 * query string (signed URLs carry their secret there) are replaced.
 */
export function redactUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return JSON.stringify(String(url).slice(0, 200));
  }
  const user = u.username ? `${u.username}${u.password ? ':***' : ''}@` : '';
  return `${u.protocol}//${user}${u.host}${u.pathname}${u.search ? '?<redacted>' : ''}`;
}

export async function download(url: string, destFile: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ReleaseError(`invalid source URL: ${redactUrl(url)}`);
  }
  const shown = redactUrl(parsed);
  if (!['http:', 'https:', 'file:'].includes(parsed.protocol)) {
    throw new ReleaseError(`unsupported URL scheme "${parsed.protocol}" in ${shown} (expected http:, https: or file:)`);
  }
  opts.signal?.throwIfAborted();

  const timeout = opts.timeoutMs != null ? AbortSignal.timeout(opts.timeoutMs) : undefined;
  const signal = AbortSignal.any([opts.signal, timeout].filter((s): s is AbortSignal => s != null));
  const maxBytes = opts.maxBytes ?? Infinity;

  let side: Writable | undefined;
  try {
    const { body, total } = parsed.protocol === 'file:' ? await openFile(parsed) : await openHttp(parsed, signal, opts);
    if (total != null && total > maxBytes) {
      body.destroy();
      throw new ReleaseError(`download exceeds ${maxBytes} bytes (size ${total}) from ${shown}`);
    }
    const meter = new Meter(maxBytes, shown, total, opts.onProgress);
    const stages: (Readable | Transform)[] = [body];
    if (parsed.protocol !== 'file:' && opts.readTimeoutMs != null) stages.push(new IdleTimeout(opts.readTimeoutMs, shown));
    stages.push(meter);
    side = opts.tee?.(total);
    if (side) stages.push(new Tee(side));
    await pipeline([...stages, createWriteStream(destFile)], { signal });
    meter.report(true);
    return { bytes: meter.bytes, sha256: meter.hash.digest('hex') };
  } catch (err) {
    if (side && !side.destroyed) side.destroy(err instanceof Error ? err : new Error(String(err)));
    await rm(destFile, { force: true });
    // The caller's abort wins over everything else; our own timeout becomes a ReleaseError.
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    if (timeout?.aborted) throw new ReleaseError(`download timed out after ${opts.timeoutMs} ms from ${shown}`);
    if (err instanceof ReleaseError) throw err;
    // Whatever the cause says, it must not repeat the URL's secrets.
    const cause = describe(err).replaceAll(parsed.href, shown).replaceAll(url, shown);
    throw new ReleaseError(`download failed: ${cause} from ${shown}`);
  }
}

/** GETs `start`, following up to maxRedirects redirects, each re-checked for scheme and host. */
async function openHttp(start: URL, signal: AbortSignal, opts: DownloadOptions): Promise<{ body: Readable; total: number | null }> {
  const maxRedirects = opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  // fetch() refuses URLs with credentials: send them as Basic auth, and only to the origin they were given for.
  const credentials = start.username || start.password ? basicAuth(start) : null;
  let url = withoutCredentials(start);
  for (let hops = 0; ; hops++) {
    if (!hostAllowed(url.hostname, opts.allowedHosts)) {
      throw new ReleaseError(
        `download refused: host ${url.hostname} is not in the allowed source hosts${hops > 0 ? ` (redirected from ${redactUrl(start)})` : ''}`,
      );
    }
    await checkTarget(url, opts.allowedHosts);
    const headers: Record<string, string> = credentials && url.origin === start.origin ? { authorization: credentials } : {};
    if (opts.requestId) headers['x-request-id'] = opts.requestId;
    if (opts.authorization && !credentials && url.origin === start.origin) headers.authorization = opts.authorization;
    let res: Response;
    try {
      res = await fetchHeaders(url, headers, signal, opts.connectTimeoutMs);
    } catch (err) {
      // Connection-level failures (refused, reset, no route, DNS, TLS) say "unreachable" and
      // nothing more: the error is readable by whoever created the process.
      if (err instanceof ReleaseError || signal.aborted) throw err;
      throw unreachable(url);
    }
    const location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
    if (location !== null) {
      await res.body?.cancel().catch(() => {});
      if (hops >= maxRedirects) throw new ReleaseError(`download failed: more than ${maxRedirects} redirects from ${redactUrl(start)}`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new ReleaseError(`download failed: malformed redirect location from ${redactUrl(url)}`);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new ReleaseError(`download refused: redirect to scheme "${next.protocol}" from ${redactUrl(url)} (only http: and https:)`);
      }
      if (url.protocol === 'https:' && next.protocol === 'http:') {
        throw new ReleaseError(`download refused: redirect from https to plain http (${redactUrl(next)}) from ${redactUrl(url)}`);
      }
      url = withoutCredentials(next);
      continue;
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      const status = res.statusText ? `${res.status} ${res.statusText}` : String(res.status);
      throw new ReleaseError(`download failed: HTTP ${status} from ${redactUrl(url)}`);
    }
    return { body: webBody(res), total: contentLength(res) };
  }
}

/** fetch() that gives up when the response headers take longer than connectTimeoutMs. */
async function fetchHeaders(
  url: URL,
  headers: Record<string, string>,
  signal: AbortSignal,
  connectTimeoutMs: number | undefined,
): Promise<Response> {
  if (connectTimeoutMs == null) return fetch(url, { headers, signal, redirect: 'manual' });
  const slow = new AbortController();
  const timer = setTimeout(() => slow.abort(), connectTimeoutMs);
  try {
    return await fetch(url, { headers, signal: AbortSignal.any([signal, slow.signal]), redirect: 'manual' });
  } catch (err) {
    if (slow.signal.aborted && !signal.aborted)
      throw new ReleaseError(`download failed: no response within ${connectTimeoutMs} ms from ${redactUrl(url)}`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

function basicAuth(url: URL): string {
  const pair = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  return `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`;
}

function withoutCredentials(url: URL): URL {
  const u = new URL(url);
  u.username = '';
  u.password = '';
  return u;
}

function contentLength(res: Response): number | null {
  const len = res.headers.get('content-length');
  return len != null && /^\d+$/.test(len) ? Number(len) : null;
}

function webBody(res: Response): Readable {
  // The web/Node stream type mismatch is only nominal (DOM vs node:stream/web typings).
  return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
}

/** Fails the download when no chunk arrives for `ms` (a server that stalls mid-body). */
class IdleTimeout extends Transform {
  private timer: NodeJS.Timeout;

  constructor(
    private readonly ms: number,
    private readonly url: string,
  ) {
    super();
    this.timer = this.arm();
  }

  private arm(): NodeJS.Timeout {
    return setTimeout(() => this.destroy(new ReleaseError(`download stalled: no data for ${this.ms} ms from ${this.url}`)), this.ms);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    clearTimeout(this.timer);
    this.timer = this.arm();
    cb(null, chunk);
  }

  override _flush(cb: () => void): void {
    clearTimeout(this.timer);
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    clearTimeout(this.timer);
    cb(err);
  }
}

/**
 * Passes the body on and writes it to `side` as well, one pass for both, waiting for `side`
 * when it is full (so neither buffers the body). A side that fails is dropped.
 */
class Tee extends Transform {
  private side: Writable | null;
  private ended = false;

  constructor(side: Writable) {
    super();
    this.side = side;
    side.on('error', () => (this.side = null));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    const side = this.side;
    if (!side || side.destroyed || side.write(chunk)) return cb(null, chunk);
    const go = (): void => {
      side.off('drain', go);
      side.off('close', go);
      cb(null, chunk);
    };
    side.on('drain', go);
    side.on('close', go);
  }

  override _flush(cb: () => void): void {
    this.ended = true;
    this.side?.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    // The body did not arrive whole (or writing the file failed): the side must not take it for an archive.
    if ((err || !this.ended) && this.side && !this.side.destroyed) this.side.destroy(err ?? new Error('the download ended early'));
    cb(err);
  }
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
  private readonly step: number;

  constructor(
    private readonly maxBytes: number,
    private readonly url: string,
    private readonly total: number | null,
    private readonly onProgress?: (bytes: number, total: number | null) => void,
  ) {
    super();
    this.step = Math.max(PROGRESS_BYTES, Math.floor((total ?? 0) * PROGRESS_SHARE));
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
    if (!final && this.bytes - this.lastBytes < this.step && now - this.lastTime < PROGRESS_MS) return;
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
