import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { H3 } from 'h3';
import { WebSocketServer } from 'ws';
import type { InspectionHub, InspectionRecord } from '../process/inspection.js';
import { describeMachine, type MachineDocument } from '../process/machine-doc.js';
import { processMachine } from '../process/machine.js';
import { refuseUpgrade } from './attach.js';
import { ApiError } from './errors.js';

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
export function registerInspect(app: H3, hub: InspectionHub): void {
  let machine: MachineDocument | undefined;
  app.get('/machine', () => (machine ??= describeMachine(processMachine)));

  app.get(INSPECT_PATH, (event) => {
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
  });
}

/** The `upgrade` handler for `/inspect` as a WebSocket: one JSON text frame per record. */
export function createInspectUpgrade(hub: InspectionHub) {
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
      let killTimer: NodeJS.Timeout | undefined;
      const unsubscribe = hub.subscribe({
        slug,
        send(record) {
          ws.send(JSON.stringify(record));
          return ws.bufferedAmount;
        },
        overflow() {
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
