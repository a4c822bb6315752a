// The Pleiades worker API under /api/v0.5/: what workers behind NAT poll for jobs, and what
// requesters create jobs with. Replies are Pleiades-shaped (`code`, `status`, `message`) with a
// Content-Type of exactly application/json; blobs are exactly application/octet-stream (a
// public client rejects anything else). Data shares the bytes of drover's blob store.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { getRouterParam, type H3Event } from 'h3';
import { JSON_TYPE, type Answer, type Param, type RouteTable, type Schema } from './route-table.js';
import { BoardError, type JobBoard } from '../agent/pleiades.js';
import { API_PREFIX, CODE, dataDocument, jobDocument, lambdaDocument, ok, pleiadesError, workerDocument } from '../api/pleiades.js';
import { isBlobId, type BlobStore } from '../store/blobs.js';
import { StoreWriteError } from '../store/desired.js';
import type { LambdaRecord } from '../store/pleiades.js';
import { asObject, readJson } from './body.js';
import { receiveUpload } from './data.js';
import { ApiError } from './errors.js';

export interface PleiadesRoutesOptions {
  board: JobBoard;
  blobs: BlobStore;
  log: (line: string) => void;
}

const MAX_BODY = 64 * 1024;
const NO_BLOB = 'BLOB data object is not exist';

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

/** Runs a handler; its expected failures become Pleiades error replies naming the field. */
function handle(fn: (event: H3Event) => Promise<Response | object>) {
  return async (event: H3Event): Promise<Response> => {
    try {
      const out = await fn(event);
      return out instanceof Response ? out : json(200, out);
    } catch (err) {
      if (err instanceof BoardError) return json(err.status, pleiadesError(err.message, err.field));
      if (err instanceof ApiError) {
        const res = json(err.status, pleiadesError(err.message, err.field));
        for (const [k, v] of Object.entries(err.headers)) res.headers.set(k, v);
        return res;
      }
      if (err instanceof StoreWriteError) return json(507, pleiadesError(err.message));
      throw err;
    }
  };
}

async function body(event: H3Event): Promise<Record<string, unknown>> {
  return asObject(await readJson(event, MAX_BODY));
}

function str(o: Record<string, unknown>, field: string, opts: { optional?: boolean } = {}): string | undefined {
  const v = o[field];
  if (v === undefined || v === null) {
    if (opts.optional) return undefined;
    throw new ApiError(400, `"${field}" is required (a string)`, field);
  }
  if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v); // an id sent as a number
  if (typeof v !== 'string' || v === '') throw new ApiError(400, `"${field}" must be a non-empty string`, field);
  if (v.length > 1024) throw new ApiError(400, `"${field}" is longer than 1024 characters`, field);
  return v;
}

/** A list of strings; absent or null (as pypleiades sends an unset list) is empty. */
function strings(o: Record<string, unknown>, field: string, opts: { nonEmpty?: boolean } = {}): string[] {
  const v = o[field] ?? [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '' || x.length > 256) || v.length > 256)
    throw new ApiError(400, `"${field}" must be a list of non-empty strings`, field);
  if (opts.nonEmpty && v.length === 0) throw new ApiError(400, `"${field}" must name at least one runtime`, field);
  return v as string[];
}

/** A timeout in seconds (a number >= 0), in milliseconds. */
function seconds(v: unknown, field: string, fallback: number): number {
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw new ApiError(400, `"${field}" must be a number of seconds >= 0`, field);
  return Math.round(n * 1000);
}

const ENVELOPE: Schema = { type: 'object', properties: { code: {}, status: { type: 'string' } } };
const FAILED: Answer = { description: 'Refused, in the Pleiades envelope', content: { [JSON_TYPE]: ENVELOPE } };
const ID: Param = { name: 'id', in: 'path', description: 'The id', schema: { type: 'string' } };
const JB = { required: true, content: { [JSON_TYPE]: { type: 'object' } } };

export function registerPleiadesRoutes(table: RouteTable, { board, blobs }: PleiadesRoutesOptions): void {
  const p = (path: string) => `${API_PREFIX}${path}`;
  const param = (event: H3Event, name: string) => decodeURIComponent(getRouterParam(event, name) ?? '');
  const lambdaOf = (id: string): LambdaRecord | undefined => {
    try {
      return board.lambda(id);
    } catch {
      return undefined;
    }
  };

  table.route({
    method: 'GET',
    path: p('/ping'),
    operationId: 'pleiadesPing',
    tag: 'pleiades',
    summary: 'Ping (Pleiades)',
    responses: { 200: { description: 'pong', content: { [JSON_TYPE]: ENVELOPE } } },
    handler: handle(async () => ok({}, 'pong')),
  });

  table.route({
    method: 'POST',
    path: p('/worker'),
    operationId: 'pleiadesRegisterWorker',
    tag: 'pleiades',
    summary: 'Register a worker (Pleiades)',
    body: JB,
    responses: { 200: { description: 'The worker', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => workerDocument(await board.registerWorker(strings(await body(event), 'runtime', { nonEmpty: true })))),
  });

  table.route({
    method: 'GET',
    path: p('/worker/:id'),
    operationId: 'pleiadesGetWorker',
    tag: 'pleiades',
    summary: 'One worker (Pleiades)',
    params: [ID],
    responses: { 200: { description: 'The worker', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => workerDocument(board.worker(param(event, 'id')))),
  });

  table.route({
    method: 'POST',
    path: p('/worker/:id/contract'),
    operationId: 'pleiadesContract',
    tag: 'pleiades',
    summary: 'Contract a job, waiting up to timeout (Pleiades)',
    params: [ID],
    body: JB,
    responses: { 200: { description: 'The job contracted, or none', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      const id = param(event, 'id');
      const b = await body(event);
      const bodyId = str(b, 'id', { optional: true });
      if (bodyId !== undefined && bodyId !== id)
        throw new ApiError(400, `"id" (${bodyId.slice(0, 80)}) is not the worker in the path`, 'id');
      const tags = strings(b, 'tags');
      const wait = seconds(b.timeout, 'timeout', 0);
      const job = await board.contract(id, tags, wait, event.req.signal);
      if (!job) return { code: CODE.noJob, status: 'ok', message: 'no job', job: null };
      return ok({ job: job.id }, 'job contracted');
    }),
  });

  table.route({
    method: 'POST',
    path: p('/lambda'),
    operationId: 'pleiadesCreateLambda',
    tag: 'pleiades',
    summary: 'Create a lambda (Pleiades)',
    body: JB,
    responses: { 200: { description: 'The lambda', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      const b = await body(event);
      const l = await board.createLambda(str(b, 'codex')!, str(b, 'runtime')!);
      return lambdaDocument(l);
    }),
  });

  table.route({
    method: 'GET',
    path: p('/lambda/:id'),
    operationId: 'pleiadesGetLambda',
    tag: 'pleiades',
    summary: 'One lambda (Pleiades)',
    params: [ID],
    responses: { 200: { description: 'The lambda', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => lambdaDocument(board.lambda(param(event, 'id')))),
  });

  table.route({
    method: 'POST',
    path: p('/job'),
    operationId: 'pleiadesCreateJob',
    tag: 'pleiades',
    summary: 'Create a job (Pleiades)',
    body: JB,
    responses: { 200: { description: 'The job created', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      const b = await body(event);
      const lambda = str(b, 'lambda')!;
      const input = str(b, 'input')!;
      const job = await board.createJob(lambda, input, strings(b, 'tags'));
      return ok({ id: job.id, state: job.state }, 'job created');
    }),
  });

  table.route({
    method: 'GET',
    path: p('/job/:id'),
    operationId: 'pleiadesGetJob',
    tag: 'pleiades',
    summary: 'One job, optionally waiting until its state is not `except` (Pleiades)',
    params: [
      ID,
      { name: 'except', in: 'query', description: 'Wait while the job is in this state', schema: { type: 'string' } },
      { name: 'timeout', in: 'query', description: 'Seconds to wait', schema: { type: 'string' } },
    ],
    responses: { 200: { description: 'The job', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      const id = param(event, 'id');
      const q = event.url.searchParams;
      const until = q.get('except');
      const job =
        until !== null && until !== ''
          ? await board.waitFor(id, until, seconds(q.get('timeout'), 'timeout', 0), event.req.signal)
          : board.job(id);
      return jobDocument(job, lambdaOf(job.lambda));
    }),
  });

  table.route({
    method: 'POST',
    path: p('/job/:id'),
    operationId: 'pleiadesUpdateJob',
    tag: 'pleiades',
    summary: "Update a job's status and output (Pleiades)",
    params: [ID],
    body: JB,
    responses: { 200: { description: 'Updated', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      const b = await body(event);
      // pleiades-rs documents "state" in places; the clients send "status".
      const status = str(b, b.status === undefined && b.state !== undefined ? 'state' : 'status')!;
      const job = await board.update(
        param(event, 'id'),
        status,
        str(b, 'output', { optional: true }),
        str(b, 'message', { optional: true }),
      );
      return { code: CODE.ok, status: 'ok', message: `job ${job.id} is ${job.state}` };
    }),
  });

  table.route({
    method: 'POST',
    path: p('/data'),
    operationId: 'pleiadesUpload',
    tag: 'pleiades',
    summary: 'Upload a data object (Pleiades)',
    body: { required: true, content: { 'application/octet-stream': null } },
    responses: { 200: { description: 'The data object', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      const { info } = await receiveUpload(event, blobs);
      return dataDocument(info);
    }),
  });

  const findData = async (event: H3Event) => {
    const id = param(event, 'id');
    const info = isBlobId(id) ? await blobs.get(id) : null;
    if (!info) throw new BlobMissing();
    return info;
  };

  table.route({
    method: 'GET',
    path: p('/data/:id'),
    operationId: 'pleiadesGetData',
    tag: 'pleiades',
    summary: 'One data object (Pleiades)',
    params: [ID],
    responses: { 200: { description: 'The data object', content: { [JSON_TYPE]: ENVELOPE } }, 400: FAILED, 404: FAILED },
    handler: handle(async (event) => {
      try {
        return dataDocument(await findData(event));
      } catch (err) {
        if (err instanceof BlobMissing) return json(404, pleiadesError('data object is not exist', 'id', CODE.noBlob));
        throw err;
      }
    }),
  });

  table.route({
    method: 'GET',
    path: p('/data/:id/blob'),
    operationId: 'pleiadesGetBlob',
    tag: 'pleiades',
    summary: "A data object's bytes (Pleiades)",
    params: [ID],
    responses: { 200: { description: 'The bytes', content: { 'application/octet-stream': null } }, 404: FAILED },
    handler: handle(async (event) => {
      let info;
      try {
        info = await findData(event);
      } catch (err) {
        if (err instanceof BlobMissing) return json(404, pleiadesError(NO_BLOB, 'id', CODE.noBlob));
        throw err;
      }
      const stream = createReadStream(blobs.path(info.id));
      return new Response(Readable.toWeb(stream) as ReadableStream, {
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(info.size) },
      });
    }),
  });
}

class BlobMissing extends Error {}
