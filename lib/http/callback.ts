// `callback` of a run's start or a process's create: where its events are POSTed (agent/callbacks.ts).
import type { Schema } from '../api/schemas.js';
import type { CallbackSpec } from '../store/outbox.js';
import { ApiError } from './errors.js';

/** Checks a `callback`: a URL string or {"url", "signature"?, "events"?, "format"?}. */
export function validateCallback(v: unknown): CallbackSpec | undefined {
  if (v === undefined || v === null) return undefined;
  const bad = (what: string): never => {
    throw new ApiError(400, `callback: ${what}`, 'callback');
  };
  const c = typeof v === 'string' ? { url: v } : v;
  if (typeof c !== 'object' || Array.isArray(c) || typeof (c as { url?: unknown }).url !== 'string')
    bad('must be {"url": "http(s)://…", "signature"?, "events"?, "format"?}');
  const o = c as Record<string, unknown>;
  const unknown = Object.keys(o).find((k) => !['url', 'signature', 'events', 'format'].includes(k));
  if (unknown) bad(`unknown field "${unknown.slice(0, 50)}" (url, signature, events, format)`);
  const url = o.url as string;
  if (url === '') return undefined;
  let u: URL | null = null;
  try {
    u = new URL(url);
  } catch {
    // below
  }
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) bad('url must be an absolute http(s) URL');
  if (o.signature !== undefined && (typeof o.signature !== 'string' || o.signature.length > 4096))
    bad('signature must be a string of at most 4096 characters');
  if (
    o.events !== undefined &&
    (!Array.isArray(o.events) || o.events.length > 50 || o.events.some((k) => typeof k !== 'string' || !/^[a-z_]{1,40}$/.test(k)))
  )
    bad('events must be a list of event kinds like ["queued", "running", "finished", "failed", "cancelled"]');
  if (o.format !== undefined && o.format !== 'json' && o.format !== 'form') bad('format must be "json" or "form"');
  return {
    url,
    ...(o.signature !== undefined ? { signature: o.signature as string } : {}),
    ...(o.events !== undefined ? { events: o.events as string[] } : {}),
    ...(o.format !== undefined ? { format: o.format as 'json' | 'form' } : {}),
  };
}

export const callbackSchema: Schema = {
  oneOf: [
    { type: 'string', description: 'the URL alone ("" for none)' },
    {
      type: 'object',
      required: ['url'],
      additionalProperties: false,
      properties: {
        url: { type: 'string', description: 'absolute http(s) URL; "" for none' },
        signature: { type: 'string', maxLength: 4096, description: 'echoed verbatim in every delivery' },
        events: { type: 'array', maxItems: 50, items: { type: 'string', pattern: '^[a-z_]{1,40}$' }, description: 'the kinds posted' },
        format: { enum: ['json', 'form'] },
      },
    },
    { type: 'null' },
  ],
};
