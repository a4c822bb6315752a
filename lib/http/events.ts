import { getRouterParam, type H3Event } from 'h3';
import type { Supervisor } from '../agent/supervisor.js';
import { followLog } from '../store/event-log/follow.js';
import { lineId, lineJson } from '../store/event-log/line.js';
import { ApiError } from './errors.js';
import { errorAnswer, NO_PROCESS, SLUG_PARAM, type RouteSpec } from './route-table.js';
import { schemaRef } from '../api/schemas.js';

/** SSE comment sent when nothing happened for this long, so proxies keep the stream open. */
const KEEPALIVE_MS = 15_000;

/** A query or header value that must be an event id (a non-negative integer), if present. */
export function eventId(value: string | null | undefined, field: string): number | undefined {
  if (value === null || value === undefined) return undefined;
  if (!/^\s*\d{1,15}\s*$/.test(value))
    throw new ApiError(400, `${field}: must be an event id (a non-negative integer), got ${JSON.stringify(value.slice(0, 40))}`, field);
  return Number(value);
}

function bool(value: string | null, field: string): boolean | undefined {
  if (value === null) return undefined;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new ApiError(400, `${field}: must be true or false, got ${JSON.stringify(value.slice(0, 40))}`, field);
}

function toSse(lines: string[]): string {
  let out = '';
  for (const line of lines) out += `id: ${lineId(line)}\ndata: ${lineJson(line)}\n\n`;
  return out;
}

/**
 * GET /process-events/SLUG[?since=ID][&follow=false]: the process's events after `since` as
 * NDJSON, or as Server-Sent Events (with `id:` fields, honouring Last-Event-ID) when the
 * client accepts text/event-stream. Follows until the process is deleted unless follow=false.
 * The `First-Event-Id` header tells the first event still kept.
 */
export function eventsRoute(supervisor: Supervisor): RouteSpec {
  return {
    method: 'GET',
    path: '/process-events/:slug',
    operationId: 'processEvents',
    tag: 'processes',
    summary: "The process's event log: NDJSON, or Server-Sent Events when the client accepts text/event-stream",
    description:
      'Events after `since` (or `Last-Event-ID` with SSE), then follows new ones until the process is deleted unless `follow=false`. ' +
      "A deleted process's events stay readable for --events-retention-ms. SSE events carry `id:`; a `: keep-alive` comment comes every 15 s.",
    params: [
      SLUG_PARAM,
      {
        name: 'since',
        in: 'query',
        description: 'Only events with a larger id',
        schema: { type: 'string', pattern: '^\\s*\\d{1,15}\\s*$' },
      },
      {
        name: 'follow',
        in: 'query',
        description: 'Keep the stream open for new events (default true)',
        schema: { enum: ['true', 'false', '1', '0'] },
      },
      { name: 'Last-Event-ID', in: 'header', description: 'With SSE: resume after this id', schema: { type: 'string' } },
      { name: 'token', in: 'query', description: 'The token, for an EventSource (which cannot send headers)', schema: { type: 'string' } },
    ],
    responses: {
      200: {
        description: 'The events, one JSON object each (`{"id", "time", "type", ...}`)',
        headers: { 'First-Event-Id': { description: 'The first event still kept', schema: { type: 'integer' } } },
        content: { 'application/x-ndjson': { type: 'string' }, 'text/event-stream': { type: 'string' } },
        items: schemaRef('Event'),
      },
      400: errorAnswer('`since`, `follow` or `Last-Event-ID` is malformed (named in `field`)'),
      404: NO_PROCESS,
    },
    handler: (event: H3Event): Response => {
      const slug = decodeURIComponent(getRouterParam(event, 'slug') ?? '');
      const log = supervisor.eventLog(slug);
      if (!log) throw new ApiError(404, `no process "${slug}" (nor a deleted one whose events are still kept)`, 'slug');
      const query = event.url.searchParams;
      const sse = /(^|,)\s*text\/event-stream\s*(;|,|$)/i.test(event.req.headers.get('accept') ?? '');
      const since =
        (sse ? eventId(event.req.headers.get('last-event-id'), 'Last-Event-ID') : undefined) ?? eventId(query.get('since'), 'since') ?? 0;
      const follow = bool(query.get('follow'), 'follow') ?? true;

      const ac = new AbortController();
      const events = followLog(log, since, { follow, signal: ac.signal, keepaliveMs: sse ? KEEPALIVE_MS : 0 });
      const encoder = new TextEncoder();
      const body = new ReadableStream<Uint8Array>(
        {
          start(controller) {
            // Reconnect after a second rather than the default three: the agent may just have restarted.
            if (sse) controller.enqueue(encoder.encode('retry: 1000\n\n'));
          },
          async pull(controller) {
            const r = await events.next();
            if (r.done) return controller.close();
            controller.enqueue(encoder.encode(r.value === null ? ': keep-alive\n\n' : sse ? toSse(r.value) : r.value.join('')));
          },
          async cancel() {
            ac.abort(); // the client went away
            await events.return(undefined);
          },
        },
        { highWaterMark: 0 }, // read the log only as fast as the client takes it
      );
      return new Response(body, {
        headers: {
          'content-type': sse ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
          'cache-control': 'no-store',
          'x-accel-buffering': 'no',
          'first-event-id': String(log.firstId),
        },
      });
    },
  };
}
