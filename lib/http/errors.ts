import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ConflictError } from '../agent/supervisor.js';
import { errorBody } from '../api/errors.js';

/** An expected failure of a request: becomes `{"errors": [{status, detail, field?}]}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    detail: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }
}

/** Runs `work`; a request the process's state does not allow (ConflictError) becomes a 409 naming `field`. */
export async function conflictsAs409<T>(field: string, work: () => Promise<T> | T): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof ConflictError) throw new ApiError(409, err.message, field);
    throw err;
  }
}

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
  });
}

/** Answers on a raw socket (a refused WebSocket upgrade, a malformed request) with a JSON error, then closes it. */
export function refuseOnSocket(socket: Duplex, status: number, detail: string, headers: Record<string, string> = {}): void {
  if (!socket.writable) return void socket.destroy();
  const body = JSON.stringify(errorBody(status, detail));
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`,
  );
}

/** The server's `clientError` handler: a request Node could not parse still gets a JSON answer. */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
  if (err.code === 'HPE_HEADER_OVERFLOW') return refuseOnSocket(socket, 431, 'request headers are too large');
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return refuseOnSocket(socket, 408, 'request timed out');
  refuseOnSocket(socket, 400, `malformed HTTP request (${err.code ?? 'parse error'})`);
}
