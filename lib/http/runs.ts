// The runs API (run-to-completion jobs; yinyo's wire behaviour, drover's links). See
// agent/runs.ts for the lifecycle and api/runs.ts for the documents.
import { copyFile, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { H3Event } from 'h3';
import { errorAnswer, JSON_TYPE, type Param, type RouteTable, type Schema } from './route-table.js';
import { create as tarCreate } from 'tar';
import { openRunPath, RunPathError } from '../agent/run-files.js';
import { parsePriority, type Priority } from '../agent/run-queue.js';
import { MAX_RUN_TIME_S, RunError, type Run, type Runs, type StartOptions } from '../agent/runs.js';
import { parseSignal } from '../os/signals.js';
import type { Supervisor } from '../agent/supervisor.js';
import type { Base } from '../api/base.js';
import { exitDataDocument, runDocument, runEvent } from '../api/runs.js';
import { isBlobId, type BlobStore } from '../store/blobs.js';
import { followLog } from '../store/event-log/follow.js';
import { lineId } from '../store/event-log/line.js';
import { asObject, readJson, readObject } from './body.js';
import { requestStream } from './data.js';
import { ApiError, conflictsAs409 } from './errors.js';
import { eventId } from './events.js';
import { callbackSchema, validateCallback } from './callback.js';
import { validateEnv, validateFields, validateSourceUrl, type ValidateOptions } from './validate.js';

export interface RunRoutesOptions {
  runs: Runs;
  supervisor: Supervisor;
  blobs: BlobStore;
  base: (event: H3Event) => Base;
  maxBody: number;
  /** Largest app or cache archive accepted. */
  maxUpload: number;
  validate: ValidateOptions;
}

const KEEPALIVE_MS = 15_000;

/** A run's agent errors as API errors. */
async function asApi<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await conflictsAs409('id', work);
  } catch (err) {
    if (err instanceof RunError) throw new ApiError(err.status, err.message, err.field);
    if (err instanceof RunPathError) throw new ApiError(err.status, err.message, 'path');
    throw err;
  }
}

/** Checks POST /runs/ID/start's body (yinyo's fields, and drover's). */
export function validateStart(body: Record<string, unknown>): StartOptions {
  const b = validateFields(body, [
    'env',
    'output',
    'callback',
    'max_run_time',
    'memory',
    'process_type',
    'command',
    'priority',
    'user',
    'retry_on_restart',
  ]);
  const bad = (field: string, what: string): never => {
    throw new ApiError(400, `${field}: ${what}`, field);
  };
  // yinyo sends env as [{name, value}]; drover's create takes {name: value}. Both are accepted.
  let envObj: unknown = b.env;
  if (Array.isArray(b.env)) {
    const o: Record<string, unknown> = {};
    b.env.forEach((e, i) => {
      if (typeof e !== 'object' || e === null || typeof (e as { name?: unknown }).name !== 'string')
        bad('env', `entry ${i} must be {"name": string, "value": string}`);
      const { name, value } = e as { name: string; value?: unknown };
      o[name] = value ?? '';
    });
    envObj = o;
  }
  const env = validateEnv(envObj);
  let output: string[] = [];
  if (b.output !== undefined && b.output !== null && b.output !== '') {
    const list = typeof b.output === 'string' ? [b.output] : b.output;
    if (!Array.isArray(list) || list.length > 100 || list.some((p) => typeof p !== 'string' || p === '' || p.length > 4096))
      bad('output', 'must be a relative path or a list of up to 100 of them');
    output = list as string[];
    for (const p of output) {
      if (p.startsWith('/')) bad('output', `must be relative to the run's directory, got ${JSON.stringify(p.slice(0, 200))}`);
      if (p.split('/').includes('..')) bad('output', `must not contain "..", got ${JSON.stringify(p.slice(0, 200))}`);
      if (p.includes('\0')) bad('output', 'must not contain NUL');
    }
  }
  const callback = validateCallback(b.callback);
  let priority: Priority | undefined;
  if (b.priority !== undefined && b.priority !== null) {
    const p = parsePriority(b.priority);
    if (p === null) bad('priority', `must be "admin", "normal", "low" or a number, got ${JSON.stringify(b.priority).slice(0, 100)}`);
    priority = p!;
  }
  let user: string | undefined;
  if (b.user !== undefined && b.user !== null) {
    if (typeof b.user !== 'string' || b.user === '' || b.user.length > 200)
      bad('user', 'must be a non-empty string of at most 200 characters');
    user = b.user as string;
  }
  if (b.retry_on_restart !== undefined && b.retry_on_restart !== null && typeof b.retry_on_restart !== 'boolean')
    bad('retry_on_restart', `must be true or false, got ${JSON.stringify(b.retry_on_restart).slice(0, 60)}`);
  const retryOnRestart = b.retry_on_restart === true;
  const positive = (field: string, max: number): number | undefined => {
    const v = b[field];
    if (v === undefined || v === null || v === 0) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) bad(field, `must be a positive integer, got ${JSON.stringify(v)}`);
    if ((v as number) > max) bad(field, `should not be larger than ${max}`);
    return v as number;
  };
  const maxRunTime = positive('max_run_time', MAX_RUN_TIME_S);
  const memory = positive('memory', Number.MAX_SAFE_INTEGER);
  if (memory !== undefined && memory < 1024 * 1024) bad('memory', 'must be at least 1048576 bytes (1 MiB)');
  let processType: string | undefined;
  if (b.process_type !== undefined) {
    if (typeof b.process_type !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/.test(b.process_type))
      bad('process_type', 'must be a Procfile type: 1-63 letters, digits, "_" or "-"');
    processType = b.process_type as string;
  }
  let command: string | undefined;
  if (b.command !== undefined) {
    if (typeof b.command !== 'string' || b.command.trim() === '' || b.command.length > 64 * 1024)
      bad('command', 'must be a non-empty shell command');
    if (processType !== undefined) bad('command', 'give either command or process_type, not both');
    command = b.command as string;
  }
  return {
    env,
    output,
    ...(callback ? { callback } : {}),
    ...(priority !== undefined ? { priority } : {}),
    ...(user !== undefined ? { user } : {}),
    ...(maxRunTime !== undefined ? { maxRunTime } : {}),
    ...(memory !== undefined ? { memory } : {}),
    ...(processType !== undefined ? { processType } : {}),
    ...(command !== undefined ? { command } : {}),
    ...(retryOnRestart ? { retryOnRestart } : {}),
  };
}

export { validateCallback };

const ID_PARAM: Param = { name: 'id', in: 'path', description: 'The run id', schema: { type: 'string' } };
const RUN_SCHEMA: Schema = { type: 'object', properties: { id: { type: 'string' }, state: { type: 'string' } }, required: ['id', 'state'] };
const BAD = errorAnswer('A field or the body is invalid');
const NO_RUN = errorAnswer('No such run (or it is finalised)');
const CONFLICT = errorAnswer("The run's state does not allow it");
const TOO_LARGE = errorAnswer('The archive is larger than the limit');

export function registerRunRoutes(table: RouteTable, o: RunRoutesOptions): void {
  const { runs } = o;
  const idOf = (event: H3Event) => event.url.pathname.split('/')[2] ?? '';
  const find = (event: H3Event): Run => {
    const id = decodeURIComponent(idOf(event));
    const run = runs.get(id);
    if (!run) throw new ApiError(404, `run ${id.slice(0, 80)}: not found`, 'id');
    return run;
  };
  const live = (event: H3Event): Run => {
    const run = find(event);
    if (run.phase === 'finalised') throw new ApiError(404, `run ${run.id}: finalised (only its events are kept)`, 'id');
    return run;
  };

  table.route({
    method: 'POST',
    path: '/runs',
    operationId: 'createRun',
    tag: 'runs',
    summary: 'Create a run (yinyo): 201 with its document and Location',
    body: { required: false, content: { [JSON_TYPE]: { type: 'object', properties: { name: { type: 'string', maxLength: 200 } } } } },
    responses: {
      201: {
        description: 'Created: the run document',
        content: { [JSON_TYPE]: RUN_SCHEMA },
        headers: { location: { description: 'The run URL' } },
      },
      400: BAD,
    },
    handler: async (event) => {
      const b = validateFields(await readObject(event, o.maxBody, { optional: true, anyType: true }), ['name']);
      if (b.name !== undefined && (typeof b.name !== 'string' || b.name.length > 200))
        throw new ApiError(400, 'name: must be a string of at most 200 characters', 'name');
      const run = await asApi(() => runs.create(b.name as string | undefined));
      const doc = runDocument(o.base(event), run, runs.position(run.id));
      event.res.status = 201;
      event.res.headers.set('location', doc.links.self);
      return doc;
    },
  });

  table.route({
    method: 'GET',
    path: '/runs',
    operationId: 'listRuns',
    tag: 'runs',
    summary: 'Every run',
    responses: {
      200: {
        description: '{"runs": [RUN, …]}',
        content: { [JSON_TYPE]: { type: 'object', properties: { runs: { type: 'array', items: RUN_SCHEMA } }, required: ['runs'] } },
      },
    },
    handler: (event) => {
      const b = o.base(event);
      return { runs: runs.list().map((r) => runDocument(b, r, runs.position(r.id))) };
    },
  });

  table.route({
    method: 'GET',
    path: '/runs/:id',
    operationId: 'getRun',
    tag: 'runs',
    summary: 'One run',
    params: [ID_PARAM],
    responses: { 200: { description: 'The run document', content: { [JSON_TYPE]: RUN_SCHEMA } }, 404: NO_RUN },
    handler: (event) => {
      const r = find(event);
      return runDocument(o.base(event), r, runs.position(r.id));
    },
  });

  /** Stores a request's archive: streamed tar.gz (capped), or {"source_url"} / {"blob"} fetched like a create's source. */
  const receive = async (event: H3Event, run: Run): Promise<string> => {
    const file = runs.uploadPath(run);
    const type = (event.req.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
    try {
      if (type === 'application/json') {
        const b = validateFields(asObject(await readJson(event, o.maxBody)), ['source_url', 'blob']);
        if (b.blob !== undefined) {
          if (typeof b.blob !== 'string' || !isBlobId(b.blob) || !(await o.blobs.get(b.blob)))
            throw new ApiError(400, 'blob: must be the id of a data object this agent holds', 'blob');
          await copyFile(o.blobs.path(b.blob), file);
        } else {
          const url = validateSourceUrl(b, o.validate);
          let archive;
          try {
            archive = await o.supervisor.fetchArchive(url, event.req.signal);
          } catch (err) {
            throw new ApiError(400, `source_url: cannot be fetched: ${(err as Error).message}`, 'source_url');
          }
          await copyFile(archive.file, file);
        }
      } else {
        const declared = Number(event.req.headers.get('content-length') ?? 0);
        const tooLarge = () =>
          new ApiError(413, `archive is larger than the limit of ${o.maxUpload} bytes`, 'body', { connection: 'close' });
        if (declared > o.maxUpload) throw tooLarge();
        let n = 0;
        const cap = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            n += chunk.length;
            if (n > o.maxUpload) cb(tooLarge());
            else cb(null, chunk);
          },
        });
        await pipeline(requestStream(event), cap, createWriteStream(file));
      }
      return file;
    } catch (err) {
      await rm(file, { force: true });
      throw err;
    }
  };

  const sendArchive = (run: Run, which: 'app' | 'cache', file: string, present: boolean): Response => {
    if (!present) throw new ApiError(404, `run ${run.id}: no ${which} uploaded`, which);
    return new Response(Readable.toWeb(runs.readArchive(file)) as ReadableStream, {
      headers: { 'content-type': 'application/gzip', 'content-disposition': `attachment; filename="${which}.tar.gz"` },
    });
  };

  // The code and the build cache: the same upload and download, each with its own setter and file.
  const archives = [
    {
      kind: 'app',
      Kind: 'App',
      what: 'code',
      summary: 'an archive streamed',
      set: runs.setApp,
      file: (r: Run) => r.appArchive,
      has: (r: Run) => r.appRoot !== undefined,
    },
    {
      kind: 'cache',
      Kind: 'Cache',
      what: 'build cache',
      summary: 'tar.gz',
      set: runs.setCache,
      file: (r: Run) => r.cacheArchive,
      has: (r: Run) => r.hasCache,
    },
  ] as const;
  for (const a of archives) {
    table.route({
      method: 'PUT',
      path: `/runs/:id/${a.kind}`,
      operationId: `putRun${a.Kind}`,
      tag: 'runs',
      summary: `Upload the run's ${a.what}: ${a.summary}, or {source_url} / {blob} as JSON`,
      params: [ID_PARAM],
      body: {
        required: true,
        content: {
          'application/gzip': null,
          [JSON_TYPE]: { type: 'object', properties: { source_url: { type: 'string' }, blob: { type: 'string' } } },
        },
      },
      responses: {
        200: { description: 'The run document', content: { [JSON_TYPE]: RUN_SCHEMA } },
        400: BAD,
        404: NO_RUN,
        409: CONFLICT,
        413: TOO_LARGE,
      },
      handler: async (event) => {
        const run = live(event);
        if (run.phase !== 'created' && run.phase !== 'uploaded')
          throw new ApiError(409, `the ${a.kind} cannot change once the run has started`, a.kind);
        const file = await receive(event, run);
        await asApi(() => a.set.call(runs, run, file));
        return runDocument(o.base(event), run, runs.position(run.id));
      },
    });
    table.route({
      method: 'GET',
      path: `/runs/:id/${a.kind}`,
      operationId: `getRun${a.Kind}`,
      tag: 'runs',
      summary: `The run's ${a.what} archive`,
      params: [ID_PARAM],
      responses: { 200: { description: 'The archive', content: { 'application/gzip': null } }, 404: NO_RUN },
      handler: (event) => {
        const run = live(event);
        return sendArchive(run, a.kind, a.file(run), a.has(run));
      },
    });
  }

  table.route({
    method: 'POST',
    path: '/runs/:id/start',
    operationId: 'startRun',
    tag: 'runs',
    summary: 'Start the run: build, then run its process type or command',
    params: [ID_PARAM],
    body: {
      required: false,
      content: {
        [JSON_TYPE]: {
          type: 'object',
          properties: {
            output: {},
            env: {},
            callback: { ...callbackSchema, description: 'A URL, or {"url", "signature"?, "events"?, "format"?: "json" | "form"}' },
            retry_on_restart: { type: ['boolean', 'null'], description: 'queued again (not failed) when an agent restart interrupts it' },
            max_run_time: { type: 'number' },
            priority: { description: '"admin", "normal", "low" or a number' },
            user: { type: 'string', maxLength: 200 },
            memory: { type: 'integer' },
            process_type: { type: 'string' },
            command: { type: 'string' },
          },
        },
      },
    },
    responses: {
      200: { description: 'Started: the run document', content: { [JSON_TYPE]: RUN_SCHEMA } },
      400: BAD,
      404: NO_RUN,
      409: CONFLICT,
    },
    handler: async (event) => {
      const run = live(event);
      let body: Record<string, unknown>;
      try {
        body = await readObject(event, o.maxBody, { optional: true, anyType: true });
      } catch (err) {
        if (err instanceof ApiError && err.status === 400) throw new ApiError(400, `JSON in body not correctly formatted: ${err.message}`);
        throw err;
      }
      const options = validateStart(body);
      await asApi(() => runs.start(run, options));
      return runDocument(o.base(event), run, runs.position(run.id));
    },
  });

  table.route({
    method: 'GET',
    path: '/runs/:id/exit-data',
    operationId: 'runExitData',
    tag: 'runs',
    summary: 'Exit codes and usage of each finished stage',
    params: [ID_PARAM],
    responses: { 200: { description: '{"build", "execute", "finished"}', content: { [JSON_TYPE]: { type: 'object' } } }, 404: NO_RUN },
    handler: (event) => exitDataDocument(find(event)),
  });

  table.route({
    method: 'POST',
    path: '/runs/:id/stop',
    operationId: 'stopRun',
    tag: 'runs',
    summary: 'Stop the run (SIGTERM to the tree, SIGKILL after the grace)',
    params: [ID_PARAM],
    responses: {
      200: {
        description: 'Stopped: {"was_running", …the run document}',
        content: { [JSON_TYPE]: { type: 'object', properties: { was_running: { type: 'boolean' } }, required: ['was_running'] } },
      },
      400: BAD,
      404: NO_RUN,
      409: CONFLICT,
    },
    handler: async (event) => {
      const run = live(event);
      await readObject(event, o.maxBody, { optional: true, anyType: true });
      const wasRunning = await asApi(() => runs.stop(run));
      return { was_running: wasRunning, ...runDocument(o.base(event), run, runs.position(run.id)) };
    },
  });

  table.route({
    method: 'POST',
    path: '/runs/:id/cancel',
    operationId: 'cancelRun',
    tag: 'runs',
    summary:
      'Cancel the run: a queued run never starts; a building or running one gets the signal, then SIGTERM and SIGKILL after grace_ms',
    params: [ID_PARAM],
    body: {
      required: false,
      content: {
        [JSON_TYPE]: {
          type: 'object',
          properties: {
            signal: { description: 'A name like "SIGUSR1" or a number (default SIGTERM)' },
            grace_ms: { type: 'integer', minimum: 0, maximum: 3_600_000 },
          },
        },
      },
    },
    responses: {
      200: {
        description: 'Cancelled: {"cancelled", …the run document}',
        content: { [JSON_TYPE]: { type: 'object', properties: { cancelled: { type: 'boolean' } }, required: ['cancelled'] } },
      },
      400: BAD,
      404: NO_RUN,
      409: CONFLICT,
    },
    handler: async (event) => {
      const run = live(event);
      const b = validateFields(await readObject(event, o.maxBody, { optional: true, anyType: true }), ['signal', 'grace_ms']);
      let signal = null;
      if (b.signal !== undefined && b.signal !== null) {
        signal = parseSignal(b.signal);
        if (!signal)
          throw new ApiError(
            400,
            `signal: unknown signal ${JSON.stringify(b.signal).slice(0, 60)} (a name like "SIGUSR1" or a number)`,
            'signal',
          );
      }
      let graceMs = 5000;
      if (b.grace_ms !== undefined && b.grace_ms !== null) {
        if (typeof b.grace_ms !== 'number' || !Number.isInteger(b.grace_ms) || b.grace_ms < 0 || b.grace_ms > 3_600_000)
          throw new ApiError(400, 'grace_ms: must be an integer from 0 to 3600000', 'grace_ms');
        graceMs = b.grace_ms;
      }
      const wasActive = await asApi(() => runs.cancel(run, signal, graceMs));
      return { cancelled: wasActive, ...runDocument(o.base(event), run, runs.position(run.id)) };
    },
  });

  table.route({
    method: 'GET',
    path: '/queue',
    operationId: 'getQueue',
    tag: 'runs',
    summary: 'The run queue in the order it will be served, with per-user counts',
    responses: {
      200: {
        description:
          '{"running", "max_concurrent_runs", "admin_reserved_runs", "queued": [{position, id, user, priority, links}], "users"}',
        content: {
          [JSON_TYPE]: {
            type: 'object',
            properties: {
              running: { type: 'integer' },
              max_concurrent_runs: { type: 'integer' },
              admin_reserved_runs: { type: 'integer' },
              queued: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    position: { type: 'integer' },
                    id: { type: 'string' },
                    user: { type: 'string' },
                    priority: { type: ['string', 'number'] },
                    links: { type: 'object' },
                  },
                  required: ['position', 'id', 'user', 'priority'],
                },
              },
              users: { type: 'object', additionalProperties: { type: 'integer' } },
            },
            required: ['running', 'max_concurrent_runs', 'queued', 'users'],
          },
        },
      },
    },
    handler: (event) => {
      const q = runs.queueState();
      const base = o.base(event);
      return {
        ...q,
        queued: q.queued.map((e, i) => ({
          position: i + 1,
          id: e.id,
          user: e.user,
          priority: e.priority,
          links: { self: `${base.http}/runs/${e.id}` },
        })),
      };
    },
  });

  table.route({
    method: 'DELETE',
    path: '/runs/:id',
    operationId: 'finaliseRun',
    tag: 'runs',
    summary: 'Finalise the run: stop it if needed and remove its files (its events stay for a while)',
    params: [ID_PARAM],
    responses: { 200: { description: 'Finalised: {}', content: { [JSON_TYPE]: { type: 'object' } } }, 404: NO_RUN },
    handler: async (event) => {
      const run = find(event);
      await runs.finalise(run);
      return {};
    },
  });

  const serveFile = async (event: H3Event, run: Run, path: string, label: string): Promise<Response> => {
    if (!run.appRoot) throw new ApiError(404, `run ${run.id}: no app uploaded, so no files`, 'path');
    const opened = await asApi(() => openRunPath(run.appRoot!, path));
    if (opened.kind === 'directory') {
      const format = event.url.searchParams.get('format');
      if (format !== 'tar.gz')
        throw new ApiError(400, `${JSON.stringify(path.slice(0, 200))} is a directory: ask for ?format=tar.gz`, 'format');
      // Links are stored as links (never followed); devices, FIFOs and sockets are left out.
      const tar = tarCreate(
        {
          gzip: true,
          cwd: opened.path,
          portable: true,
          follow: false,
          filter: (_p, st) => {
            const s = st as { isFile?: () => boolean; isDirectory?: () => boolean; isSymbolicLink?: () => boolean };
            return Boolean(s.isFile?.() || s.isDirectory?.() || s.isSymbolicLink?.());
          },
        },
        ['.'],
      );
      // node-tar's stream is a minipass, not a Node Readable: adapt it through its async iterator.
      return new Response(Readable.toWeb(Readable.from(tar)) as ReadableStream, { headers: { 'content-type': 'application/gzip' } });
    }
    const stream = opened.handle!.createReadStream({ autoClose: true });
    return new Response(Readable.toWeb(stream) as ReadableStream, {
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(opened.size),
        'x-run-file': encodeURIComponent(label),
      },
    });
  };

  table.route({
    method: 'GET',
    path: '/runs/:id/output',
    operationId: 'runOutput',
    tag: 'runs',
    summary: "The first output file's bytes",
    params: [ID_PARAM],
    responses: {
      200: { description: 'The file', content: { 'application/octet-stream': null } },
      400: BAD,
      404: errorAnswer('No such run, or it did not produce its output'),
    },
    handler: async (event) => {
      const run = live(event);
      const first = run.options?.output[0];
      if (!first) throw new ApiError(404, `run ${run.id}: no output file was named when it started`, 'output');
      try {
        return await serveFile(event, run, first, first);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404)
          throw new ApiError(404, `run ${run.id} did not produce its output ${JSON.stringify(first)}`, 'output');
        throw err;
      }
    },
  });

  table.route({
    method: 'GET',
    path: '/runs/:id/files/**:path',
    operationId: 'runFile',
    tag: 'runs',
    summary: "A file under the run's app directory, or a directory as tar.gz",
    params: [
      ID_PARAM,
      { name: 'path', in: 'path', description: "A path under the run's app directory (may contain /)", schema: { type: 'string' } },
      { name: 'format', in: 'query', description: 'tar.gz for a directory', schema: { const: 'tar.gz' } },
    ],
    responses: {
      200: { description: 'The file, or the directory as tar.gz', content: { 'application/octet-stream': null, 'application/gzip': null } },
      400: BAD,
      404: NO_RUN,
    },
    handler: async (event) => {
      const run = live(event);
      const raw = event.url.pathname.split('/').slice(4).join('/');
      let path: string;
      try {
        path = decodeURIComponent(raw);
      } catch {
        throw new ApiError(400, 'path: invalid percent-encoding', 'path');
      }
      if (path === '') path = '.';
      return serveFile(event, run, path, path);
    },
  });

  table.route({
    method: 'GET',
    path: '/runs/:id/events',
    operationId: 'runEvents',
    tag: 'runs',
    summary: "The run's events as NDJSON (or SSE with Accept: text/event-stream), ending after `last`",
    params: [
      ID_PARAM,
      { name: 'last_id', in: 'query', description: 'Only the events after this id', schema: { type: 'string' } },
      { name: 'since', in: 'query', description: 'As last_id', schema: { type: 'string' } },
    ],
    responses: {
      200: {
        description: 'The event stream',
        content: { 'application/x-ndjson; charset=utf-8': null, 'text/event-stream; charset=utf-8': null },
        items: { type: 'object', properties: { type: { type: 'string' } }, required: ['type'] },
      },
      400: BAD,
      404: errorAnswer('No such run, or its events are no longer kept'),
    },
    handler: (event) => {
      const run = find(event);
      const log = o.supervisor.eventLog(run.slug);
      if (!log) throw new ApiError(404, `run ${run.id}: its events are no longer kept`, 'id');
      const query = event.url.searchParams;
      const sse = /(^|,)\s*text\/event-stream\s*(;|,|$)/i.test(event.req.headers.get('accept') ?? '');
      const since =
        (sse ? eventId(event.req.headers.get('last-event-id'), 'Last-Event-ID') : undefined) ??
        eventId(query.get('last_id'), 'last_id') ??
        eventId(query.get('since'), 'since') ??
        0;
      // Nothing follows the last event: a resume from it (or past it) ends at once.
      if (run.lastEventId !== undefined && since >= run.lastEventId)
        return new Response(sse ? 'retry: 1000\n\n' : '', {
          headers: { 'content-type': sse ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8' },
        });
      const ac = new AbortController();
      const lines = followLog(log, since, { follow: true, signal: ac.signal, keepaliveMs: sse ? KEEPALIVE_MS : 0 });
      const encoder = new TextEncoder();
      let done = false;
      const body = new ReadableStream<Uint8Array>(
        {
          start(controller) {
            if (sse) controller.enqueue(encoder.encode('retry: 1000\n\n'));
          },
          async pull(controller) {
            for (;;) {
              if (done) return controller.close();
              const r = await lines.next();
              if (r.done) return controller.close();
              if (r.value === null) return controller.enqueue(encoder.encode(': keep-alive\n\n'));
              let out = '';
              for (const line of r.value) {
                const e = runEvent(line, run.id);
                if (!e) continue;
                out += sse ? `id: ${lineId(line)}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n` : JSON.stringify(e) + '\n';
                // The stream ends after the run's last event: a client reads to the end.
                if (e.type === 'last') {
                  done = true;
                  ac.abort();
                  break;
                }
              }
              if (out) return controller.enqueue(encoder.encode(out));
            }
          },
          async cancel() {
            ac.abort();
            await lines.return(undefined);
          },
        },
        { highWaterMark: 0 },
      );
      return new Response(body, {
        headers: {
          'content-type': sse ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
          'cache-control': 'no-store',
          'x-accel-buffering': 'no',
        },
      });
    },
  });
}
