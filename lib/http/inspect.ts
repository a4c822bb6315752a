import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { InspectionHub, InspectionRecord } from '../process/inspection.js';
import { describeMachine, type MachineDocument } from '../process/machine-doc.js';
import { processMachine } from '../process/machine.js';
import { refuseUpgrade } from './attach.js';
import { ApiError } from './errors.js';
import type { ClientMeter } from './metrics.js';
import { errorAnswer, JSON_TYPE, type Param, type RouteTable, type UpgradeHandler, type UpgradeSpec } from './route-table.js';
import { schemaRef } from '../api/schemas.js';

export const INSPECT_PATH = '/inspect';
/** SSE comment sent this often, so proxies and browsers don't drop an idle stream. */
const KEEPALIVE_MS = 25_000;
const SLUG = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$/;

/** The `?slug=` filter: absent means every process; a process not created yet is fine (watch, then create). */
export function slugFilter(url: URL): string | undefined {
  const all = url.searchParams.getAll('slug');
  if (all.length === 0) return undefined;
  if (all.length > 1) throw new ApiError(400, 'slug: give at most one slug', 'slug');
  if (!SLUG.test(all[0])) throw new ApiError(400, `slug: ${JSON.stringify(all[0].slice(0, 80))} is not a process slug (app.node)`, 'slug');
  return all[0];
}

function sseFrame(record: InspectionRecord): string {
  return `event: ${record.type}\ndata: ${JSON.stringify(record)}\n\n`;
}

/** `GET /inspect` as Server-Sent Events, and `GET /machine`. */
export function registerInspect(table: RouteTable, hub: InspectionHub, clients?: ClientMeter): void {
  let machine: MachineDocument | undefined;
  table.route({
    method: 'GET',
    path: '/machine',
    operationId: 'machine',
    tag: 'inspect',
    summary: 'The process state machine, for drawing: states, transitions (source "*": any state) and XState\'s definition',
    responses: { 200: { description: 'The machine', content: { [JSON_TYPE]: schemaRef('Machine') } } },
    handler: () => (machine ??= describeMachine(processMachine)),
  });

  table.route({
    method: 'GET',
    path: INSPECT_PATH,
    operationId: 'inspect',
    tag: 'inspect',
    summary: 'Transition records of every process (or one) as Server-Sent Events',
    description:
      'Starts with `event: snapshot` (every live process), then `event: transition` per state entered. A client more than 4 MiB behind is dropped.',
    params: [SLUG_PARAM_QUERY, TOKEN_QUERY],
    responses: {
      200: {
        description: 'The records (`event: snapshot` / `event: transition`, `data:` the record as JSON)',
        content: { 'text/event-stream': { type: 'string' } },
        items: schemaRef('InspectionRecord'),
      },
      400: errorAnswer('`slug` is not a process slug, or given twice'),
    },
    handler: (event) => {
      const slug = slugFilter(event.url);
      const encoder = new TextEncoder();
      let cleanup = () => {};
      // highWaterMark 0: desiredSize is minus the bytes the client has not taken yet.
      const body = new ReadableStream<Uint8Array>(
        {
          start(controller) {
            const keepalive = setInterval(() => controller.enqueue(encoder.encode(': keepalive\n\n')), KEEPALIVE_MS);
            const unsubscribe = hub.subscribe({
              slug,
              send(record) {
                controller.enqueue(encoder.encode(sseFrame(record)));
                return -(controller.desiredSize ?? 0);
              },
              overflow() {
                cleanup();
                // Erroring drops the queue and the connection; an EventSource reconnects and gets a fresh snapshot.
                controller.error(new Error('client too slow: inspection queue overflowed'));
              },
              close() {
                cleanup();
                controller.close();
              },
            });
            cleanup = () => {
              clearInterval(keepalive);
              unsubscribe();
            };
          },
          cancel() {
            cleanup();
          },
        },
        new ByteLengthQueuingStrategy({ highWaterMark: 0 }),
      );
      return new Response(body, {
        headers: {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          'x-accel-buffering': 'no',
        },
      });
    },
  });
}

const SLUG_PARAM_QUERY: Param = {
  name: 'slug',
  in: 'query',
  description: 'Only this process (it may not exist yet: watch, then create)',
  schema: { type: 'string', pattern: SLUG.source },
};
const TOKEN_QUERY: Param = {
  name: 'token',
  in: 'query',
  description: 'The token, for an EventSource or a browser WebSocket (which cannot send headers)',
  schema: { type: 'string' },
};

/** The WebSocket at /inspect, for the route table. */
export function inspectWebSocket(handle: UpgradeHandler): UpgradeSpec {
  return {
    path: INSPECT_PATH,
    operationId: 'inspectWebSocket',
    tag: 'inspect',
    summary: 'The same records as a WebSocket, one JSON text frame each',
    description: 'The same records, one JSON text frame each (close code 1008 for a client more than 4 MiB behind).',
    params: [SLUG_PARAM_QUERY, TOKEN_QUERY],
    responses: {
      101: { description: 'Switching to the WebSocket protocol; text frames of InspectionRecord', items: schemaRef('InspectionRecord') },
      400: errorAnswer('`slug` is malformed, or the handshake is'),
    },
    handle,
  };
}

/** The `upgrade` handler for `/inspect` as a WebSocket: one JSON text frame per record. */
export function createInspectUpgrade(hub: InspectionHub, clients?: ClientMeter) {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4 * 1024 });

  const handle = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    let slug: string | undefined;
    try {
      slug = slugFilter(new URL(req.url ?? '/', 'http://agent'));
    } catch (err) {
      return refuseUpgrade(socket, 400, 'Bad Request', (err as Error).message);
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      clients?.opened('inspect');
      ws.once('close', () => clients?.closed('inspect'));
      let killTimer: NodeJS.Timeout | undefined;
      const unsubscribe = hub.subscribe({
        slug,
        send(record) {
          ws.send(JSON.stringify(record));
          return ws.bufferedAmount;
        },
        overflow() {
          clients?.dropped('inspect');
          ws.close(1008, 'client too slow: inspection queue overflowed');
          // The close frame waits behind the queue a slow reader isn't draining: don't wait forever.
          killTimer = setTimeout(() => ws.terminate(), 2000);
        },
        close() {
          ws.close(1001, 'agent shutting down');
          killTimer = setTimeout(() => ws.terminate(), 2000);
        },
      });
      ws.on('close', () => {
        unsubscribe();
        clearTimeout(killTimer);
      });
      ws.on('error', () => ws.terminate());
    });
  };

  return {
    handle,
    close(): void {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
