import { H3, getRouterParam, type H3Event } from 'h3';
import type { Config } from '../agent/config.js';
import { ReplaceError, type ManagedProcess, type Supervisor } from '../agent/supervisor.js';
import type { BlobStore } from '../store/blobs.js';
import { StoreWriteError } from '../store/desired.js';
import { baseFromHost, type Base } from '../api/base.js';
import { errorBody } from '../api/errors.js';
import { rootDocument } from '../api/root.js';
import { processView, statusDocument, statusJson, statusUrl } from '../api/status.js';
import { readJson, readObject } from './body.js';
import { registerDataRoutes } from './data.js';
import { registerPleiadesRoutes } from './pleiades.js';
import type { JobBoard } from '../agent/pleiades.js';
import { registerControlRoutes } from './control.js';
import { ApiError, conflictsAs409, jsonResponse } from './errors.js';
import { eventsRoute } from './events.js';
import { registerInspect } from './inspect.js';
import { createRequestSchema, replaceRequestSchema, validateCreate, validateReplace } from './validate.js';
import { errorAnswer, JSON_TYPE, jsonText, NO_PROCESS, RouteTable, SLUG_PARAM } from './route-table.js';
import { schemaRef } from '../api/schemas.js';
import { version } from '../release/version.js';
import { MAX_REQUEST_ID } from './request-id.js';
import { registerUi } from './ui.js';
import { registerProcstarRoutes } from './procstar.js';
import { registerRunRoutes } from './runs.js';
import type { Runs } from '../agent/runs.js';
import type { ClientMeter } from './metrics.js';
import { registerExperimentRoutes } from './experiments.js';
import { Experiments } from '../agent/experiments.js';

export interface RoutesOptions {
  supervisor: Supervisor;
  runs: Runs;
  config: Config;
  log: (line: string) => void;
  blobs: BlobStore;
  /** The Pleiades worker API's jobs (/api/v0.5/). */
  board?: JobBoard;
  /** Declares more routes (metrics, health, WebSockets) before the table is registered. */
  extra?: (table: RouteTable) => void;
  clients?: ClientMeter;
}

const MAX_BODY = 1024 * 1024;
/** POST /procs may carry many specs at once. */
const PROCS_MAX_BODY = 16 * 1024 * 1024;

/** Whether a Prefer header (RFC 7240: comma-separated preferences, each with optional parameters) asks for return=representation. */
export function prefersRepresentation(header: string | null): boolean {
  if (!header) return false;
  return header.split(',').some((pref) => {
    const [name, value] = pref
      .split(';')[0]
      .split('=')
      .map((s) => s.trim().replace(/^"(.*)"$/, '$1'));
    return name.toLowerCase() === 'return' && value?.toLowerCase() === 'representation';
  });
}

/** The smartmob-agent hypermedia API. */
export function createRoutes({ supervisor, runs, config, log, blobs, board, extra, clients }: RoutesOptions): {
  app: H3;
  table: RouteTable;
} {
  const base = (event: H3Event) => baseFromHost(event.req.headers.get('host'), `${config.host}:${config.port}`);
  // Set on every request by withRequestIds (request-id.ts); read here for the create and the errors.
  const requestId = (event: H3Event) => event.req.headers.get('x-request-id')?.slice(0, MAX_REQUEST_ID);
  const findProcess = (event: H3Event) => {
    const slug = decodeURIComponent(getRouterParam(event, 'slug') ?? '');
    const proc = supervisor.get(slug);
    if (!proc) throw new ApiError(404, `no process "${slug}"`, 'slug');
    return proc;
  };
  const status = (b: Base, proc: ManagedProcess) => statusDocument(b, processView(proc));

  const app = new H3({
    silent: true,
    onRequest(event) {
      const id = requestId(event);
      if (id) event.res.headers.set('x-request-id', id);
    },
    onError(error, event) {
      // StoreWriteError: the desired state could not be saved; nothing changed, the caller may retry.
      const cause =
        error.cause instanceof ApiError
          ? error.cause
          : error.cause instanceof StoreWriteError
            ? new ApiError(507, error.cause.message)
            : null;
      const id = requestId(event);
      const headers: Record<string, string> = { ...(cause?.headers ?? {}), ...(id ? { 'x-request-id': id } : {}) };
      // The runs API also says it yinyo's way ({"error": "…"}), for clients written for it.
      const yinyo = (detail: string) => (event.url.pathname.startsWith('/runs') ? { error: detail } : {});
      if (cause)
        return jsonResponse(cause.status, { ...yinyo(cause.message), ...errorBody(cause.status, cause.message, cause.field) }, headers);
      if (error.status >= 500) {
        log(`drover: ${event.req.method} ${event.url.pathname}${id ? ` [${id}]` : ''} failed: ${String(error.cause ?? error.message)}`);
        return jsonResponse(500, errorBody(500, 'internal error'), headers);
      }
      const detail =
        error.status === 404
          ? `no route for ${event.req.method} ${event.url.pathname}`
          : error.status === 400 && error.message === 'Bad Request'
            ? 'malformed URL (invalid percent-encoding)' // h3's own check
            : error.message;
      return jsonResponse(error.status, { ...yinyo(detail), ...errorBody(error.status, detail) }, headers);
    },
  });

  const table = new RouteTable();
  table.route({
    method: 'GET',
    path: '/',
    operationId: 'index',
    tag: 'processes',
    summary: 'The index: links to everything else',
    description: "The one address a client knows; links are absolute, built from the request's Host.",
    responses: { 200: { description: 'The links', content: { [JSON_TYPE]: schemaRef('Root') } } },
    handler: (event) => rootDocument(base(event)),
  });
  registerInspect(table, supervisor.inspection, clients);
  registerUi(table);

  table.route({
    method: 'GET',
    path: '/list-processes',
    operationId: 'listProcesses',
    tag: 'processes',
    summary: 'Every process, as status documents',
    responses: { 200: { description: 'The processes', content: { [JSON_TYPE]: schemaRef('ProcessList') } } },
    handler: async (event) => {
      const b = base(event);
      const procs = supervisor.list();
      const starting = procs.filter((p) => !p.pidKnown);
      if (starting.length) await Promise.all(starting.map((p) => p.pidSettled()));
      // The same text as JSON.stringify({processes: [...]}), from each document's remembered JSON.
      return jsonText(event, `{"processes":[${procs.map((p) => statusJson(b, processView(p), p)).join(',')}]}`);
    },
  });

  table.route({
    method: 'POST',
    path: '/create-process',
    operationId: 'createProcess',
    tag: 'processes',
    summary: 'Run process NODE of APP from a source archive',
    description:
      'The body is read as JSON whatever its Content-Type, except forms (415). The X-Request-Id is sent with the archive download and recorded in the events.',
    body: { required: true, content: { [JSON_TYPE]: createRequestSchema } },
    responses: {
      201: {
        description: 'Created: the status document',
        content: { [JSON_TYPE]: schemaRef('Status') },
        headers: { Location: { description: 'The status URL' } },
      },
      400: errorAnswer('A field is missing or invalid (named in `field`), or the body is not a JSON object'),
      409: errorAnswer('A process APP.NODE exists'),
      413: errorAnswer('The body is over 1 MiB'),
      415: errorAnswer('The body is a form'),
      507: errorAnswer('The desired state could not be saved; nothing changed'),
    },
    handler: async (event) => {
      const req = validateCreate(await readJson(event, MAX_BODY), { allowFileUrls: config.allowFileUrls, sourceHosts: config.sourceHosts });
      if (req.envFrom !== undefined && !supervisor.get(req.envFrom))
        throw new ApiError(400, `no process "${req.envFrom}" to take the env from`, 'env_from');
      const proc = await conflictsAs409('node', () => supervisor.create(req, { requestId: requestId(event) }));
      const b = base(event);
      await proc.pidSettled();
      event.res.status = 201;
      event.res.headers.set('location', statusUrl(b, proc.slug));
      return status(b, proc);
    },
  });

  table.route({
    method: 'POST',
    path: '/replace-process/:slug',
    operationId: 'replaceProcess',
    tag: 'control',
    summary: 'Swap the process to a new release (source and/or env), built while the old child keeps running',
    description:
      'The new release is downloaded and built first; a failure leaves the old child untouched (422). `stop-first` (default) stops the old child and starts the new one on the same $PORT; `start-first` starts the new child on a new port, waits until it is ready, then stops the old one. Same slug, same actor: ids and restarts continue.',
    params: [SLUG_PARAM],
    body: { required: false, content: { [JSON_TYPE]: replaceRequestSchema } },
    responses: {
      200: { description: 'Replaced: the status document with what was done', content: { [JSON_TYPE]: schemaRef('ReplacedStatus') } },
      400: errorAnswer('A field is invalid (named in `field`), or the body is not a JSON object'),
      404: NO_PROCESS,
      409: errorAnswer('The process is being deleted or another replace is under way'),
      422: errorAnswer('The new release could not be downloaded, built or started; the old child runs on'),
    },
    handler: async (event) => {
      const proc = findProcess(event);
      const req = validateReplace(await readObject(event, MAX_BODY, { optional: true }), {
        allowFileUrls: config.allowFileUrls,
        sourceHosts: config.sourceHosts,
      });
      const outcome = await conflictsAs409('slug', async () => {
        try {
          return await supervisor.replace(proc.slug, { ...req, requestId: requestId(event) });
        } catch (err) {
          // The old child runs on; the answer says why the new release did not take over.
          if (err instanceof ReplaceError) throw new ApiError(422, err.message, req.sourceUrl !== undefined ? 'source_url' : 'slug');
          throw err;
        }
      });
      await proc.pidSettled();
      return {
        ...status(base(event), proc),
        replaced: {
          strategy: outcome.strategy,
          changed: outcome.changed,
          from_port: outcome.fromPort,
          to_port: outcome.toPort,
          down_ms: outcome.downMs,
        },
      };
    },
  });

  table.route({
    method: 'GET',
    path: '/process-status/:slug',
    operationId: 'processStatus',
    tag: 'processes',
    summary: "One process's status document",
    params: [SLUG_PARAM],
    responses: { 200: { description: 'The status document', content: { [JSON_TYPE]: schemaRef('Status') } }, 404: NO_PROCESS },
    handler: async (event) => {
      const proc = findProcess(event);
      if (!proc.pidKnown) await proc.pidSettled();
      return jsonText(event, statusJson(base(event), processView(proc), proc));
    },
  });

  table.route(eventsRoute(supervisor));

  table.route({
    method: 'POST',
    path: '/delete-process/:slug',
    operationId: 'deleteProcess',
    tag: 'processes',
    summary: 'Stop the process and its whole process group, and forget it',
    params: [
      SLUG_PARAM,
      {
        name: 'Prefer',
        in: 'header',
        description: '`return=representation` (RFC 7240): answer with the final status document instead of `{}`',
        schema: { type: 'string' },
      },
    ],
    body: { required: false, description: 'Empty, or `{}`', content: { [JSON_TYPE]: { type: 'object' } } },
    responses: {
      200: {
        description: '`{}` once the process is gone; with `Prefer: return=representation`, its final status document (`state: "deleted"`)',
        content: { [JSON_TYPE]: { oneOf: [schemaRef('Deleted'), schemaRef('Status')] } },
        headers: { 'Preference-Applied': { description: '`return=representation` when the status document is the answer' } },
      },
      404: NO_PROCESS,
    },
    handler: async (event) => {
      const proc = findProcess(event);
      // The delete request document is empty for now; an absent body is fine, a malformed one is not.
      await readObject(event, MAX_BODY, { optional: true });
      await supervisor.delete(proc.slug);
      event.res.headers.set('vary', 'Prefer');
      // The reference answers `{}`; the final status document only when asked for (RFC 7240).
      if (!prefersRepresentation(event.req.headers.get('prefer'))) return {};
      event.res.headers.set('preference-applied', 'return=representation');
      return status(base(event), proc);
    },
  });

  registerDataRoutes(table, { blobs, base });
  registerControlRoutes(table, { supervisor, base, findProcess, maxBody: MAX_BODY });
  registerExperimentRoutes(table, {
    experiments: new Experiments(runs, supervisor, { processType: config.experimentProcessType, log }),
    password: config.experimentsPassword,
    validate: { allowFileUrls: config.allowFileUrls, sourceHosts: config.sourceHosts },
    maxBody: MAX_BODY,
  });
  extra?.(table);

  table.route({
    method: 'GET',
    path: '/openapi.json',
    operationId: 'openApi',
    tag: 'meta',
    summary: 'This document: OpenAPI 3.1 of the whole API, generated from the route table the server uses',
    responses: { 200: { description: 'The OpenAPI document', content: { [JSON_TYPE]: { type: 'object' } } } },
    handler: () => (openApi ??= table.openApi({ version: version() })),
  });
  let openApi: Record<string, unknown> | undefined;

  registerProcstarRoutes(table, {
    supervisor,
    log,
    maxBody: PROCS_MAX_BODY,
    spec: { canSwitchUser: process.getuid?.() === 0, agentUser: config.user || undefined },
  });
  registerRunRoutes(table, {
    runs,
    supervisor,
    blobs,
    base,
    maxBody: MAX_BODY,
    maxUpload: config.blobMaxBytes,
    validate: { allowFileUrls: config.allowFileUrls, sourceHosts: config.sourceHosts },
  });
  if (board) registerPleiadesRoutes(table, { board, blobs, log });
  table.register(app);
  return { app, table };
}
