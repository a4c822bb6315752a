// The data API of seed 002: upload a blob, read its metadata, download its bytes.
// Uploads are streamed to disk whatever their type: application/octet-stream as is, and
// multipart/form-data through busboy (web Request.formData() would buffer the whole body).
import { createReadStream } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { PassThrough, Readable } from 'node:stream';
import type { BusboyInstance } from '@fastify/busboy';
import { getRouterParam, type H3Event } from 'h3';
import { errorAnswer, JSON_TYPE, type Param, type RouteTable } from './route-table.js';
import { schemaRef } from '../api/schemas.js';
import { BlobTooLargeError, isBlobId, type BlobInfo, type BlobStore } from '../store/blobs.js';
import { ApiError } from './errors.js';
import type { Base } from '../api/base.js';
import { blobDocument } from '../api/data.js';

export interface DataRoutesOptions {
  blobs: BlobStore;
  base: (event: H3Event) => Base;
}

// Multipart framing around the file is small; anything past this margin is the file's own bytes.
const MULTIPART_OVERHEAD = 64 * 1024;

const ID_PARAM: Param = { name: 'id', in: 'path', description: 'The blob id: the sha256 of its bytes', schema: { type: 'string' } };
const NO_BLOB = errorAnswer('No such blob');

export function registerDataRoutes(table: RouteTable, { blobs, base }: DataRoutesOptions): void {
  const find = async (event: H3Event): Promise<BlobInfo> => {
    const id = getRouterParam(event, 'id') ?? '';
    const info = isBlobId(id) ? await blobs.get(id) : null;
    if (!info) throw new ApiError(404, `no data object "${id.slice(0, 80)}"`, 'id');
    return info;
  };

  table.route({
    method: 'POST',
    path: '/data',
    operationId: 'uploadData',
    tag: 'data',
    summary: 'Store a blob (streamed to disk); its id is the sha256 of its bytes',
    body: {
      required: true,
      content: {
        'application/octet-stream': { type: 'string', contentMediaType: 'application/octet-stream', description: 'the blob' },
        'multipart/form-data': {
          type: 'object',
          description: 'exactly one file part (the blob); other fields are ignored',
          properties: { file: { type: 'string', contentMediaType: 'application/octet-stream' } },
        },
      },
    },
    responses: {
      201: {
        description: 'Stored (`reused` when the same bytes were already held)',
        content: { [JSON_TYPE]: schemaRef('BlobUpload') },
        headers: { Location: { description: "The blob's metadata URL" } },
      },
      400: errorAnswer('Malformed multipart body, no file part, or more than one'),
      413: errorAnswer('Larger than --blob-max-bytes; nothing is kept'),
      415: errorAnswer('Neither application/octet-stream nor multipart/form-data'),
    },
    handler: async (event) => {
      const result = await receiveUpload(event, blobs);
      const doc = blobDocument(base(event), result.info);
      event.res.status = 201;
      event.res.headers.set('location', doc.self);
      return { ...doc, reused: !result.created };
    },
  });

  table.route({
    method: 'GET',
    path: '/data',
    operationId: 'listData',
    tag: 'data',
    summary: 'The blobs held',
    responses: { 200: { description: 'Their metadata', content: { [JSON_TYPE]: schemaRef('BlobList') } } },
    handler: async (event) => {
      const b = base(event);
      return { data: (await blobs.list()).map((i) => blobDocument(b, i)) };
    },
  });

  table.route({
    method: 'GET',
    path: '/data/:id',
    operationId: 'dataInfo',
    tag: 'data',
    summary: "One blob's metadata",
    params: [ID_PARAM],
    responses: { 200: { description: 'The metadata', content: { [JSON_TYPE]: schemaRef('Blob') } }, 404: NO_BLOB },
    handler: async (event) => blobDocument(base(event), await find(event)),
  });

  table.route({
    method: 'GET',
    path: '/data/:id/blob',
    operationId: 'dataBlob',
    tag: 'data',
    summary: "One blob's bytes (immutable: ETag is the id, If-None-Match gets 304)",
    params: [ID_PARAM, { name: 'If-None-Match', in: 'header', description: 'The ETag held', schema: { type: 'string' } }],
    responses: {
      200: {
        description: 'The bytes',
        content: { 'application/octet-stream': null },
        headers: { ETag: { description: 'The id, quoted' }, 'Content-Length': { description: 'The size', schema: { type: 'integer' } } },
      },
      304: { description: 'Not modified' },
      404: NO_BLOB,
    },
    handler: async (event) => {
      const info = await find(event);
      const etag = `"${info.id}"`;
      const headers = { etag, 'cache-control': 'public, max-age=31536000, immutable' }; // content-addressed
      if (
        event.req.headers
          .get('if-none-match')
          ?.split(/\s*,\s*/)
          .includes(etag)
      )
        return new Response(null, { status: 304, headers });
      const stream = createReadStream(blobs.path(info.id));
      return new Response(Readable.toWeb(stream) as ReadableStream, {
        headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(info.size) },
      });
    },
  });
}

/**
 * Stores an upload: an application/octet-stream body as it is, or the one file part of a
 * multipart/form-data body, streamed; 413 past the store's limit, 415 for other types.
 */
export async function receiveUpload(event: H3Event, blobs: BlobStore): Promise<{ info: BlobInfo; created: boolean }> {
  const type = event.req.headers.get('content-type') ?? 'application/octet-stream';
  const media = type.split(';')[0].trim().toLowerCase();
  const declared = Number(event.req.headers.get('content-length') ?? 0);
  const max = blobs.maxBytes;
  const tooLarge = () => new ApiError(413, `upload is larger than the limit of ${max} bytes`, 'file', { connection: 'close' });
  const body = requestStream(event);
  try {
    if (media === 'application/octet-stream') {
      if (declared > max) throw tooLarge();
      return await blobs.put(body, event.req.signal);
    }
    if (media === 'multipart/form-data') {
      if (declared > max + MULTIPART_OVERHEAD) throw tooLarge();
      return await putMultipart(body, type, blobs, event.req.signal);
    }
    throw new ApiError(415, `upload must be application/octet-stream or multipart/form-data, got ${media}`);
  } catch (err) {
    if (err instanceof BlobTooLargeError) throw tooLarge();
    throw err;
  }
}

/**
 * The request body as a Node stream. It is piped through rather than handed over, so that
 * giving up early (413) leaves the request itself intact and the error response can still
 * be written (with `Connection: close`) instead of the socket being torn down.
 */
export function requestStream(event: H3Event): Readable {
  const node = event.runtime?.node?.req as Readable | undefined;
  const src = node ?? (event.req.body ? Readable.fromWeb(event.req.body as import('node:stream/web').ReadableStream) : Readable.from([]));
  const out = new PassThrough();
  src.pipe(out);
  out.on('close', () => src.unpipe(out));
  return out;
}

/** Stores the one file part of a multipart/form-data body, streamed. */
async function putMultipart(body: Readable, type: string, blobs: BlobStore, signal: AbortSignal) {
  const { Busboy } = await import('@fastify/busboy'); // form uploads are the rare case
  return new Promise<{ info: BlobInfo; created: boolean }>((resolve, reject) => {
    let bb: BusboyInstance;
    try {
      bb = new Busboy({
        headers: { 'content-type': type } as IncomingHttpHeaders & { 'content-type': string },
        limits: { files: 1, fileSize: blobs.maxBytes, fields: 100, fieldSize: 64 * 1024, parts: 101 },
      });
    } catch (err) {
      reject(new ApiError(400, `malformed multipart/form-data: ${(err as Error).message}`));
      return;
    }
    let upload: Promise<{ info: BlobInfo; created: boolean }> | null = null;
    let file: Readable | null = null;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      body.unpipe(bb);
      body.destroy();
      // Stop a file still being written, and answer only once its temp file is gone.
      if (file && !file.destroyed) file.destroy();
      void (upload ?? Promise.resolve()).catch(() => {}).then(() => reject(err));
    };
    bb.on('file', (_field, stream) => {
      file = stream;
      stream.on('error', () => {}); // reported through put()'s pipeline; an error after it finished must not crash
      // Busboy stops feeding a file at the limit and flags it: make that an error, not a short blob.
      stream.on('limit', () => stream.destroy(new BlobTooLargeError(blobs.maxBytes)));
      upload = blobs.put(stream, signal);
      upload.catch(fail);
    });
    bb.on('filesLimit', () => fail(new ApiError(400, 'only one file may be uploaded per request', 'file')));
    bb.on('error', (err: Error) => fail(new ApiError(400, `malformed multipart/form-data: ${err.message}`)));
    bb.on('finish', () => {
      if (!upload) return fail(new ApiError(400, 'the multipart/form-data body has no file part', 'file'));
      upload.then((r) => {
        if (settled) return;
        settled = true;
        resolve(r);
      }, fail);
    });
    body.pipe(bb);
  });
}
