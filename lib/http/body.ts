import type { H3Event } from 'h3';
import type { IncomingMessage } from 'node:http';
import { ApiError } from './errors.js';

// The smartmob-agent reference parses the body whatever its Content-Type, and its clients (aiohttp
// with a string body) send application/octet-stream or text/plain. Only types that clearly are
// something else are refused: a form is never the JSON document, and parsing it would hide the mistake.
const notJsonTypes = /^(multipart\/form-data|application\/x-www-form-urlencoded)\s*(;|$)/i;

const notAnObject = () => new ApiError(400, 'request body must be a JSON object');

/** A parsed body as a JSON object: null, an array or a scalar is a 400 (the one place that says so). */
export function asObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw notAnObject();
  return body as Record<string, unknown>;
}

/** A JSON object body; an absent or empty one is `{}` where `optional` allows it. */
/** `anyType`: read JSON whatever the Content-Type, forms included (yinyo's server does; `curl -d` sends a form type). */
export interface ReadJsonOptions {
  optional?: boolean;
  anyType?: boolean;
}

export async function readObject(event: H3Event, maxBytes: number, opts: ReadJsonOptions = {}): Promise<Record<string, unknown>> {
  const body = await readJson(event, maxBytes, opts);
  return body === undefined ? {} : asObject(body);
}

/** Reads a JSON request body (any Content-Type but a form), bounded in size, with 413/415/400 for what is not acceptable. */
export async function readJson(event: H3Event, maxBytes: number, opts: ReadJsonOptions = {}): Promise<unknown> {
  const type = event.req.headers.get('content-type');
  if (type && !opts.anyType && notJsonTypes.test(type.trim()))
    throw new ApiError(415, `request body must be application/json, got ${type.split(';')[0]}`);
  const declared = Number(event.req.headers.get('content-length') ?? 0);
  if (declared > maxBytes) throw new ApiError(413, `request body is larger than ${maxBytes} bytes`);
  const node = event.runtime?.node?.req as IncomingMessage | undefined;
  // Read from Node's request itself when there is one: the web stream h3's `event.req.body` is
  // made from it cost more than the rest of a create's parsing (Readable.toWeb per request).
  const chunks = node ? await readNodeBody(node, maxBytes) : await readWebBody(event, maxBytes);
  if (chunks === null) {
    if (opts.optional) return undefined;
    throw notAnObject();
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') {
    if (opts.optional) return undefined;
    throw notAnObject();
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, `request body is not valid JSON: ${(err as Error).message}`);
  }
}

const tooLarge = (maxBytes: number) =>
  new ApiError(413, `request body is larger than ${maxBytes} bytes`, undefined, { connection: 'close' });

/** The body's chunks, or null when the request has none. */
function readNodeBody(req: IncomingMessage, maxBytes: number): Promise<Buffer[] | null> {
  // HTTP/1.1: a request with neither header has no body.
  if (req.headers['transfer-encoding'] === undefined && req.headers['content-length'] === undefined) return Promise.resolve(null);
  // Never the case in drover (nothing reads a body before its route); waiting would hang.
  if (req.readableEnded || req.destroyed) return Promise.reject(new Error('the request body was already read'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err: Error | null) => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (err) reject(err);
      else resolve(chunks);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      // Stop reading (not destroy: the answer still has to be written); the connection closes after it.
      if (size > maxBytes) return void (req.pause(), done(tooLarge(maxBytes)));
      chunks.push(chunk);
    };
    const onEnd = () => done(null);
    const onError = (err: Error) => done(err);
    const onClose = () => done(req.errored ?? new Error('the client went away before the body ended'));
    req.on('data', onData).once('end', onEnd).once('error', onError).once('close', onClose);
  });
}

async function readWebBody(event: H3Event, maxBytes: number): Promise<Uint8Array[] | null> {
  const body = event.req.body;
  if (!body) return null;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    size += value.byteLength;
    if (size > maxBytes) {
      // Not reader.cancel(): on a Node request that nulls req.socket, which listhen's shutdown
      // hook then dereferences when the response finishes, crashing the agent. Stop reading
      // instead; closing the connection after the answer discards the rest.
      reader.releaseLock();
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
}
