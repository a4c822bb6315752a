import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Supervisor } from '../agent/supervisor.js';
import { parseReplay, replayOutput, type Replay } from './attach-replay.js';
import { refuseOnSocket } from './errors.js';
import { TextFrameWriter } from './frames.js';
import type { ClientMeter } from './metrics.js';
import { errorAnswer, NO_PROCESS, SLUG_PARAM, type UpgradeHandler, type UpgradeSpec } from './route-table.js';

export interface AttachOptions {
  supervisor: Supervisor;
  /** Bytes queued for one client before it is dropped as too slow. */
  maxBufferedBytes: number;
  /** Counts clients for /metrics. */
  clients?: ClientMeter;
}

const PATH = /^\/attach-console\/([^/?#]+)$/;

/** The attach WebSocket, for the route table. */
export function attachWebSocket(handle: UpgradeHandler): UpgradeSpec {
  return {
    path: '/attach-console/:slug',
    operationId: 'attachConsole',
    tag: 'processes',
    summary: "The process's output as a WebSocket: one text frame per line of stdout, stderr and build output",
    description:
      'Live from now on, or with `since`/`tail` from the event log first. Closes with 1000 when the process is deleted, 1008 when the client falls more than 4 MiB behind.',
    params: [
      SLUG_PARAM,
      { name: 'since', in: 'query', description: 'Replay output lines after this event id first', schema: { type: 'string' } },
      { name: 'tail', in: 'query', description: 'Replay the last N output lines first (not with since)', schema: { type: 'string' } },
      { name: 'token', in: 'query', description: 'The token, for a browser WebSocket', schema: { type: 'string' } },
    ],
    responses: {
      101: { description: 'Switching to the WebSocket protocol; one text frame per output line', items: { type: 'string' } },
      400: errorAnswer('Malformed slug, since or tail, or handshake'),
      404: NO_PROCESS,
    },
    handle,
  };
}

/** Refuses a WebSocket upgrade with a plain HTTP error, as JSON like every other error. */
export function refuseUpgrade(socket: Duplex, status: number, _reason: string, detail: string): void {
  refuseOnSocket(socket, status, detail);
}

/**
 * The `upgrade` handler for /attach-console/SLUG: one text frame per output line. A client
 * that reads slower than the process writes is disconnected once its queue passes the cap,
 * so it can neither stall the child nor grow the agent's memory.
 */
export function createAttachHandler({ supervisor, maxBufferedBytes, clients }: AttachOptions) {
  // No extensions: TextFrameWriter writes plain frames to the socket.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false });
  // A malformed handshake (bad key, version, method, subprotocol) gets a JSON error like everything else.
  wss.on('wsClientError', (err, socket) => {
    refuseOnSocket(socket, err.message === 'Invalid HTTP method' ? 405 : 400, `WebSocket handshake: ${err.message}`);
  });

  const handle = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {}); // a client vanishing mid-handshake is not the agent's problem
    const url = new URL(req.url ?? '/', 'http://agent');
    const path = url.pathname;
    const m = PATH.exec(path);
    if (!m) return refuseUpgrade(socket, 404, 'Not Found', `no WebSocket endpoint at ${path}`);
    let slug: string;
    try {
      slug = decodeURIComponent(m[1]);
    } catch {
      return refuseUpgrade(socket, 400, 'Bad Request', 'malformed process slug');
    }
    let replay: Replay | null;
    try {
      replay = parseReplay(url.searchParams);
    } catch (err) {
      return refuseUpgrade(socket, 400, 'Bad Request', (err as Error).message);
    }
    const proc = supervisor.get(slug);
    if (!proc) return refuseUpgrade(socket, 404, 'Not Found', `no process "${slug}"`);
    wss.handleUpgrade(req, socket, head, (ws) => {
      clients?.opened('attach');
      ws.once('close', () => clients?.closed('attach'));
      if (!replay) return stream(ws, proc.output.subscribe.bind(proc.output));
      // ?since / ?tail: from the event log, then live from it too.
      ws.on('error', () => ws.terminate());
      replayOutput(ws, proc.events, replay, maxBufferedBytes).catch(() => ws.terminate());
    });
  };

  const stream = (ws: WebSocket, subscribe: typeof import('../agent/output.js').OutputHub.prototype.subscribe) => {
    let killTimer: NodeJS.Timeout | undefined;
    // All the lines of one chunk of output go out in one socket write (see TextFrameWriter).
    const frames = new TextFrameWriter((ws as unknown as { _socket: Socket })._socket);
    const unsubscribe = subscribe(
      (_stream, line) => {
        if (ws.bufferedAmount > maxBufferedBytes) {
          unsubscribe();
          clients?.dropped('attach');
          frames.flush(); // frames must not follow the close frame
          ws.close(1008, 'client too slow: output queue overflowed');
          // The close frame waits behind the queue a slow reader isn't draining: don't wait forever.
          killTimer = setTimeout(() => ws.terminate(), 2000);
          return;
        }
        frames.send(line);
      },
      () => {
        frames.flush();
        ws.close(1000, 'process deleted');
      },
    );
    ws.on('close', () => {
      unsubscribe();
      clearTimeout(killTimer);
    });
    ws.on('error', () => ws.terminate());
  };

  return {
    handle,
    /** Closes every attached client (agent shutdown). */
    close(): void {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
