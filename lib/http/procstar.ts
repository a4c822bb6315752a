// Procstar's HTTP API (its src/http.rs at v0.7.5) on drover's port, at the root: /procs…
// Its clients compare the Content-Type string, so every JSON answer carries exactly
// `application/json`, and errors are Procstar's envelope, not drover's.
import type { H3, H3Event } from 'h3';
import type { Answer, Param, RouteTable, Schema } from './route-table.js';
import { getRouterParam } from 'h3';
import { STATUS_CODES } from 'node:http';
import type { ManagedProcess, Supervisor } from '../agent/supervisor.js';
import { ConflictError } from '../agent/supervisor.js';
import { procResult, procstarData, procstarError, procView } from '../api/procstar.js';
import { parseFdName } from '../os/fds.js';
import { signalProcess } from '../os/proc.js';
import { parseSignal } from '../os/signals.js';
import { StoreWriteError } from '../store/desired.js';
import { parseProcsBody, SpecError, type SpecOptions } from './procstar-spec.js';

/** A refused request, answered in Procstar's envelope. */
export class ProcstarError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string | null,
  ) {
    super(detail ?? String(status));
  }
}

const JSON_TYPE = 'application/json';

export function procstarJson(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, statusText: STATUS_CODES[status], headers: { 'content-type': JSON_TYPE } });
}

const envelope: Schema = { type: 'object', properties: { data: { type: 'object' } }, required: ['data'] };
const errorEnvelope: Schema = { type: 'object', properties: { errors: { type: 'object' } }, required: ['errors'] };
const data = (description: string): Answer => ({ description, content: { [JSON_TYPE]: envelope } });
const procstarAnswer = (description: string): Answer => ({ description, content: { [JSON_TYPE]: errorEnvelope } });
const NO_PROC = procstarAnswer('No such proc');
const ID_PARAM: Param = { name: 'id', in: 'path', description: 'The proc id (URL-encoded)', schema: { type: 'string' } };

export interface ProcstarOptions {
  supervisor: Supervisor;
  spec: SpecOptions;
  maxBody: number;
  log: (line: string) => void;
}

// What /procs serves, for telling a wrong method (405) from a wrong path (404).
const PATTERNS: [RegExp, string][] = [
  [/^\/procs\/?$/, 'GET, POST'],
  [/^\/procs\/[^/]+\/?$/, 'GET, DELETE'],
  [/^\/procs\/[^/]+\/signals\/[^/]+\/?$/, 'POST'],
  [/^\/procs\/[^/]+\/output\/[^/]+\/data\/?$/, 'GET'],
];

async function readBody(event: H3Event, maxBytes: number): Promise<unknown> {
  const type = event.req.headers.get('content-type');
  // Procstar's check: the body must say it is JSON.
  if (!type || type.split(';')[0].trim().toLowerCase() !== JSON_TYPE) throw new ProcstarError(400, 'body not JSON');
  const declared = Number(event.req.headers.get('content-length') ?? 0);
  if (declared > maxBytes) throw new ProcstarError(413, `body is larger than ${maxBytes} bytes`);
  const body = event.req.body;
  if (!body) throw new ProcstarError(400, 'no body');
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      // As body.ts: stop reading (no cancel, which breaks listhen's shutdown hook).
      reader.releaseLock();
      throw new ProcstarError(413, `body is larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new ProcstarError(400, 'no body');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ProcstarError(400, `parsing body: ${(err as Error).message}`);
  }
}

/** Waits (bounded) until a proc that is starting has a pid, or has ended. */
function pidOrEnd(proc: ManagedProcess, ms = 5000): Promise<void> {
  const ready = () => {
    const s = proc.actor.getSnapshot();
    return s.context.pid !== null || s.value === 'exited' || s.value === 'deleted' || Boolean(proc.proc?.restored);
  };
  if (ready()) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    const sub = proc.actor.subscribe(() => ready() && done());
    function done() {
      clearTimeout(timer);
      sub.unsubscribe();
      resolve();
    }
  });
}

export function registerProcstarRoutes(table: RouteTable, opts: ProcstarOptions): void {
  const { supervisor } = opts;
  const handle = (fn: (event: H3Event) => Promise<Response>) => async (event: H3Event) => {
    try {
      return await fn(event);
    } catch (err) {
      if (err instanceof ProcstarError) return procstarJson(err.status, procstarError(err.status, err.detail));
      if (err instanceof StoreWriteError) return procstarJson(507, procstarError(507, err.message));
      opts.log(`drover: ${event.req.method} ${event.url.pathname} failed: ${String(err)}`);
      return procstarJson(500, procstarError(500, 'internal error'));
    }
  };
  const idOf = (event: H3Event) => {
    try {
      return decodeURIComponent(getRouterParam(event, 'id') ?? '');
    } catch {
      throw new ProcstarError(400, 'malformed proc id (invalid percent-encoding)');
    }
  };
  const find = (event: H3Event) => {
    const proc = supervisor.getProc(idOf(event));
    if (!proc) throw new ProcstarError(404, null);
    return proc;
  };
  const result = async (proc: ManagedProcess) => procResult(await procView(proc));

  table.route({
    method: 'GET',
    path: '/procs',
    operationId: 'listProcs',
    tag: 'procs',
    summary: 'Every proc with its result (Procstar)',
    responses: { 200: data('Every proc: {"data": {"procs": {ID: RESULT}}}') },
    handler: handle(async () => {
      const procs: Record<string, unknown> = {};
      for (const p of supervisor.listProcs()) procs[p.proc!.id] = await result(p);
      return procstarJson(200, procstarData({ procs }));
    }),
  });

  table.route({
    method: 'POST',
    path: '/procs',
    operationId: 'createProcs',
    tag: 'procs',
    summary: 'Start procs from their specs, all or none (Procstar)',
    body: { required: true, content: { [JSON_TYPE]: { type: 'object', properties: { specs: { type: 'object' } }, required: ['specs'] } } },
    responses: {
      200: data('Started: {"data": {}}'),
      400: procstarAnswer('Not JSON, no body, a bad spec or an id that exists'),
      413: procstarAnswer('The body is too large'),
      507: procstarAnswer('The desired state could not be saved'),
    },
    handler: handle(async (event) => {
      const body = await readBody(event, opts.maxBody);
      let specs;
      try {
        specs = parseProcsBody(body, opts.spec);
      } catch (err) {
        if (err instanceof SpecError) throw new ProcstarError(400, `parsing body: ${err.message}`);
        throw err;
      }
      // All or nothing: every id is checked before any proc starts.
      for (const id of specs.keys()) if (supervisor.getProc(id)) throw new ProcstarError(400, `duplicate proc id: ${id}`);
      try {
        await Promise.all([...specs].map(([id, spec]) => supervisor.createProc(id, spec)));
      } catch (err) {
        if (err instanceof ConflictError) throw new ProcstarError(400, err.message);
        throw err;
      }
      return procstarJson(200, procstarData({}));
    }),
  });

  table.route({
    method: 'GET',
    path: '/procs/:id',
    operationId: 'getProc',
    tag: 'procs',
    summary: 'One proc with its result (Procstar)',
    params: [ID_PARAM],
    responses: { 200: data('{"data": {"procs": {ID: RESULT}}}'), 404: NO_PROC },
    handler: handle(async (event) => {
      const proc = find(event);
      return procstarJson(200, procstarData({ procs: { [proc.proc!.id]: await result(proc) } }));
    }),
  });

  table.route({
    method: 'DELETE',
    path: '/procs/:id',
    operationId: 'deleteProc',
    tag: 'procs',
    summary: 'Delete a proc that is not running (Procstar)',
    params: [ID_PARAM],
    responses: { 200: data('Deleted: {"data": {}}'), 400: procstarAnswer('The process is running'), 404: NO_PROC },
    handler: handle(async (event) => {
      const proc = find(event);
      const view = await procView(proc);
      if (view.running) throw new ProcstarError(400, `process running: ${proc.proc!.id}`);
      await supervisor.delete(proc.slug);
      return procstarJson(200, procstarData({}));
    }),
  });

  table.route({
    method: 'POST',
    path: '/procs/:id/signals/:signum',
    operationId: 'signalProc',
    tag: 'procs',
    summary: "Send a signal to the proc's process itself (Procstar)",
    params: [ID_PARAM, { name: 'signum', in: 'path', description: 'A signal number or name (15, SIGTERM)', schema: { type: 'string' } }],
    responses: { 200: data('Sent: {"data": {}}'), 400: procstarAnswer('An unknown signal, or no process any more'), 404: NO_PROC },
    handler: handle(async (event) => {
      const proc = find(event);
      const raw = decodeURIComponent(getRouterParam(event, 'signum') ?? '');
      const sig = parseSignal(/^\d+$/.test(raw) ? Number(raw) : raw);
      if (!sig) throw new ProcstarError(400, `unknown signum: ${raw.slice(0, 64)}`);
      await pidOrEnd(proc);
      const snap = proc.actor.getSnapshot();
      const pid = snap.context.pid;
      // Procstar signals the process itself (kill(2)), not its group.
      if (pid === null || proc.proc!.restored || !signalProcess(pid, sig.number)) throw new ProcstarError(400, 'no process');
      return procstarJson(200, procstarData({}));
    }),
  });

  table.route({
    method: 'GET',
    path: '/procs/:id/output/:fd/data',
    operationId: 'procOutput',
    tag: 'procs',
    summary: 'The captured bytes of one fd (Procstar)',
    params: [ID_PARAM, { name: 'fd', in: 'path', description: 'stdin, stdout, stderr or a number', schema: { type: 'string' } }],
    responses: {
      200: {
        description: 'The captured bytes (text/plain for a utf-8 capture)',
        content: { 'text/plain; charset=utf-8': null, 'application/octet-stream': null },
      },
      400: procstarAnswer('A bad fd, or one not in the spec'),
      404: NO_PROC,
    },
    handler: handle(async (event) => {
      const proc = find(event);
      const rt = proc.proc!;
      const name = decodeURIComponent(getRouterParam(event, 'fd') ?? '');
      const fd = parseFdName(name);
      if (fd === null) throw new ProcstarError(400, `bad fd: ${name.slice(0, 64)}`);
      const entry = rt.entry(fd);
      if (!entry) throw new ProcstarError(400, `no fd: ${fd}`);
      const bytes = (await rt.output(fd)) ?? Buffer.alloc(0);
      const utf8 = entry.spec.type === 'capture' && entry.spec.encoding === 'utf-8';
      return new Response(bytes as unknown as BodyInit, {
        status: 200,
        statusText: 'OK',
        headers: { 'content-type': utf8 ? 'text/plain; charset=utf-8' : 'application/octet-stream' },
      });
    }),
  });

  // Anything else under /procs: 405 for a known path, 404 for the rest, in Procstar's envelope.
  const fallback = handle(async (event) => {
    const path = event.url.pathname;
    const allowed = PATTERNS.find(([re]) => re.test(path))?.[1];
    if (!allowed) throw new ProcstarError(404, null);
    const res = procstarJson(405, procstarError(405, null));
    res.headers.set('allow', allowed);
    return res;
  });
  table.fallback('/procs', fallback);
}
