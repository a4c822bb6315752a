// A small client of a Pleiades server's worker API (drover's /api/v0.5/ or another), speaking
// what its public clients speak: JSON bodies, ids as strings, `code` 0 ok / 1299 no job, data
// uploaded as multipart field `file`, blobs as application/octet-stream.
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';

/** The server could not be reached, or failed (5xx): worth retrying. */
export class UnreachableError extends Error {
  override name = 'UnreachableError';
}

/** The server refused the request (4xx, or an error code): retrying the same will not help. */
export class RefusedError extends Error {
  override name = 'RefusedError';
  constructor(
    message: string,
    readonly httpStatus: number,
    readonly code: number | null,
  ) {
    super(message);
  }
}

export interface JobInfo {
  id: string;
  state: string;
  lambda: { id: string; runtime: string; codex: string };
  input: { id: string };
  output?: { id: string } | null;
}

export interface ClientOptions {
  /** The API base, e.g. http://host:8080/api/v0.5 (a bare server URL gets /api/v0.5 added). */
  server: string;
  token?: string;
  /** Bound on one download (codex or input). */
  maxBytes?: number;
}

/** A server URL as given: a bare origin means drover's API path; a path is taken as the API base. */
export function apiBase(server: string): string {
  const u = new URL(server);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/api/v0.5';
  return u.href.replace(/\/+$/, '');
}

export class PleiadesClient {
  readonly base: string;

  constructor(private readonly opts: ClientOptions) {
    this.base = apiBase(opts.server);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}), ...extra };
  }

  private async send(method: string, path: string, body: BodyInit | undefined, type: string | undefined, signal?: AbortSignal) {
    try {
      return await fetch(`${this.base}${path}`, {
        method,
        headers: this.headers(type ? { 'content-type': type } : {}),
        body,
        signal,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new UnreachableError(`${method} ${this.base}${path}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
  }

  /** A JSON request; the reply's object, or an error that says whether to retry. */
  async call(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const res = await this.send(
      method,
      path,
      body === undefined ? undefined : JSON.stringify(body),
      body === undefined ? undefined : 'application/json',
      signal,
    );
    const text = await res.text().catch(() => '');
    let doc: Record<string, unknown> | null = null;
    try {
      const v = JSON.parse(text) as unknown;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) doc = v as Record<string, unknown>;
    } catch {
      // reported below
    }
    const what = `${method} ${path}`;
    if (res.status >= 500 || res.status === 429 || res.status === 408)
      throw new UnreachableError(`${what}: HTTP ${res.status}${doc?.message ? ` (${String(doc.message)})` : ''}`);
    if (!doc) throw new RefusedError(`${what}: HTTP ${res.status}, not a JSON reply`, res.status, null);
    const code = typeof doc.code === 'number' ? doc.code : null;
    if (res.status >= 400 || (code !== 0 && code !== 1299))
      throw new RefusedError(`${what}: ${String(doc.message ?? `HTTP ${res.status}`)}`, res.status, code);
    return doc;
  }

  async register(runtime: string[]): Promise<string> {
    return idOf(await this.call('POST', '/worker', { runtime }), 'id');
  }

  /** Whether the server still knows this worker. */
  async knowsWorker(id: string): Promise<boolean> {
    try {
      await this.call('GET', `/worker/${encodeURIComponent(id)}`);
      return true;
    } catch (err) {
      if (err instanceof RefusedError && err.httpStatus === 404) return false;
      throw err;
    }
  }

  /** Long-polls for a job: its id, or null when none came within `timeoutS`. */
  async contract(worker: string, tags: string[], timeoutS: number, signal?: AbortSignal): Promise<string | null> {
    const doc = await this.call('POST', `/worker/${encodeURIComponent(worker)}/contract`, { id: worker, tags, timeout: timeoutS }, signal);
    const job = doc.job;
    return typeof job === 'string' && job !== '' ? job : typeof job === 'number' ? String(job) : null;
  }

  async job(id: string): Promise<JobInfo> {
    const doc = await this.call('GET', `/job/${encodeURIComponent(id)}`);
    const lambda = doc.lambda as Record<string, unknown> | undefined;
    const input = doc.input as Record<string, unknown> | undefined;
    if (!lambda || !input) throw new RefusedError(`GET /job/${id}: the reply has no lambda or input`, 200, null);
    return {
      id: idOf(doc, 'id'),
      state: String(doc.state ?? ''),
      lambda: { id: idOf(lambda, 'id'), runtime: String(lambda.runtime ?? ''), codex: idOf(lambda, 'codex') },
      input: { id: idOf(input, 'id') },
    };
  }

  /** Streams a blob into `file` (bounded by maxBytes). */
  async download(dataId: string, file: string, signal?: AbortSignal): Promise<void> {
    const path = `/data/${encodeURIComponent(dataId)}/blob`;
    const res = await this.send('GET', path, undefined, undefined, signal);
    if (!res.ok || !res.body) {
      const text = await res.text().catch(() => '');
      let message = `HTTP ${res.status}`;
      try {
        message = String((JSON.parse(text) as { message?: string }).message ?? message);
      } catch {
        // keep the status
      }
      if (res.status >= 500) throw new UnreachableError(`GET ${path}: ${message}`);
      throw new RefusedError(`GET ${path}: ${message}`, res.status, null);
    }
    const max = this.opts.maxBytes ?? Infinity;
    let size = 0;
    const bound = new Transform({
      transform(chunk: Buffer, _e, cb) {
        size += chunk.length;
        cb(size > max ? new RefusedError(`GET ${path}: larger than ${max} bytes`, 413, null) : null, chunk);
      },
    });
    try {
      await pipeline(
        Readable.fromWeb(res.body as WebReadableStream),
        bound,
        createWriteStream(file, { mode: 0o600 }),
        signal ? { signal } : {},
      );
    } catch (err) {
      if (err instanceof RefusedError || signal?.aborted) throw err;
      throw new UnreachableError(`GET ${path}: ${(err as Error).message}`);
    }
  }

  /** Uploads a file as multipart field `file`; its data id. */
  async upload(file: string, signal?: AbortSignal): Promise<string> {
    const form = new FormData();
    // Read at once: a job's output is bounded by the server's upload limit anyway, and a
    // retried upload needs the bytes again.
    form.append('file', new Blob([await readFile(file)]), 'output');
    const res = await this.send('POST', '/data', form, undefined, signal);
    const text = await res.text().catch(() => '');
    let doc: Record<string, unknown> = {};
    try {
      doc = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // below
    }
    if (res.status >= 500) throw new UnreachableError(`POST /data: HTTP ${res.status}`);
    if (!res.ok || doc.code !== 0) throw new RefusedError(`POST /data: ${String(doc.message ?? `HTTP ${res.status}`)}`, res.status, null);
    return idOf(doc, 'id');
  }

  async report(job: string, status: 'running' | 'finished' | 'failed', fields: { output?: string; message?: string } = {}): Promise<void> {
    await this.call('POST', `/job/${encodeURIComponent(job)}`, { status, ...fields });
  }
}

function idOf(doc: Record<string, unknown>, field: string): string {
  const v = doc[field];
  if (typeof v === 'string' && v !== '') return v;
  if (typeof v === 'number') return String(v);
  throw new RefusedError(`the reply has no "${field}"`, 200, null);
}
