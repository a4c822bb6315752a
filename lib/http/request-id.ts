// X-Request-Id on every response, as the smartmob-agent reference does: the caller's id when it
// sent one, else a new UUID. It is put on the request too, so the routes (and the gate's own
// refusals) see one id whichever way they read it.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

type NodeHandler = (req: IncomingMessage, res: ServerResponse) => unknown;

export const MAX_REQUEST_ID = 200;

/** The caller's id (trimmed, at most 200 characters), or a new UUID when it sent none. */
export function requestIdOf(header: string | string[] | undefined): string {
  const given = (Array.isArray(header) ? header[0] : header)?.trim().slice(0, MAX_REQUEST_ID);
  return given ? given : randomUUID();
}

export function withRequestIds(handler: NodeHandler): NodeHandler {
  return (req, res) => {
    const id = requestIdOf(req.headers['x-request-id']);
    req.headers['x-request-id'] = id;
    // Merged by Node into whatever head the handler writes later.
    res.setHeader('x-request-id', id);
    return handler(req, res);
  };
}
