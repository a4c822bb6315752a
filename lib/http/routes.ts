import { H3, getRouterParam, type H3Event } from 'h3';
import type { Config } from '../agent/config.js';
import type { ManagedProcess, Supervisor } from '../agent/supervisor.js';
import type { BlobStore } from '../store/blobs.js';
import { StoreWriteError } from '../store/desired.js';
import { baseFromHost, type Base } from '../api/base.js';
import { errorBody } from '../api/errors.js';
import { rootDocument } from '../api/root.js';
import { processView, statusDocument, statusUrl } from '../api/status.js';
import { readJson, readObject } from './body.js';
import { registerDataRoutes } from './data.js';
import { registerPleiadesRoutes } from './pleiades.js';
import type { JobBoard } from '../agent/pleiades.js';
import { registerControlRoutes } from './control.js';
import { ApiError, conflictsAs409, jsonResponse } from './errors.js';
import { eventsRoute } from './events.js';
import { registerInspect } from './inspect.js';
import { validateCreate } from './validate.js';
import { MAX_REQUEST_ID } from './request-id.js';
import { registerUi } from './ui.js';
import { registerProcstarRoutes } from './procstar.js';
import { registerRunRoutes } from './runs.js';
import type { Runs } from '../agent/runs.js';

export interface RoutesOptions {
  supervisor: Supervisor;
  runs: Runs;
  config: Config;
  log: (line: string) => void;
  blobs: BlobStore;
  /** The Pleiades worker API's jobs (/api/v0.5/). */
  board?: JobBoard;
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
export function createRoutes({ supervisor, runs, config, log, blobs, board }: RoutesOptions): H3 {
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

  app.get('/', (event) => rootDocument(base(event)));
  registerInspect(app, supervisor.inspection);
  registerUi(app);

  app.get('/list-processes', async (event) => {
    const b = base(event);
    const procs = supervisor.list();
    await Promise.all(procs.map((p) => p.pidSettled()));
    return { processes: procs.map((p) => status(b, p)) };
  });

  app.post('/create-process', async (event) => {
    const req = validateCreate(await readJson(event, MAX_BODY), { allowFileUrls: config.allowFileUrls, sourceHosts: config.sourceHosts });
    const proc = await conflictsAs409('node', () => supervisor.create(req, { requestId: requestId(event) }));
    const b = base(event);
    await proc.pidSettled();
    event.res.status = 201;
    event.res.headers.set('location', statusUrl(b, proc.slug));
    return status(b, proc);
  });

  app.get('/process-status/:slug', async (event) => {
    const proc = findProcess(event);
    await proc.pidSettled();
    return status(base(event), proc);
  });

  app.get('/process-events/:slug', eventsRoute(supervisor));

  app.post('/delete-process/:slug', async (event) => {
    const proc = findProcess(event);
    // The delete request document is empty for now; an absent body is fine, a malformed one is not.
    await readObject(event, MAX_BODY, { optional: true });
    await supervisor.delete(proc.slug);
    event.res.headers.set('vary', 'Prefer');
    // The reference answers `{}`; the final status document only when asked for (RFC 7240).
    if (!prefersRepresentation(event.req.headers.get('prefer'))) return {};
    event.res.headers.set('preference-applied', 'return=representation');
    return status(base(event), proc);
  });

  registerDataRoutes(app, { blobs, base });
  registerProcstarRoutes(app, {
    supervisor,
    log,
    maxBody: PROCS_MAX_BODY,
    spec: { canSwitchUser: process.getuid?.() === 0, agentUser: config.user || undefined },
  });
  if (board) registerPleiadesRoutes(app, { board, blobs, log });
  registerControlRoutes(app, { supervisor, base, findProcess, maxBody: MAX_BODY });
  registerRunRoutes(app, {
    runs,
    supervisor,
    blobs,
    base,
    maxBody: MAX_BODY,
    maxUpload: config.blobMaxBytes,
    validate: { allowFileUrls: config.allowFileUrls, sourceHosts: config.sourceHosts },
  });

  return app;
}
