// The one list of what the agent serves. Each HTTP route and each WebSocket endpoint is declared
// once, with its method, path, parameters, body schema and answers next to its handler; the h3
// router is filled from it (`register`), the `upgrade` event dispatches from it (`upgrade`),
// GET /openapi.json is generated from it (`openApi`), and /metrics labels requests by its
// paths (`match`). Adding a documented route is one `table.route({...})` call.
import type { H3, H3Event } from 'h3';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { schemas as documentSchemas, type Schema } from '../api/schemas.js';

export type { Schema };
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/**
 * Who may call a route: `token` when the agent has one (the default), `public` for the dashboard's
 * files, `health`, `metrics`, and `password` for a route that checks a credential of its own
 * instead of the token (POST /experiments: its clients send the experiment runner's password).
 */
export type Access = 'token' | 'public' | 'health' | 'metrics' | 'password';

export interface Param {
  name: string;
  in: 'path' | 'query' | 'header';
  description: string;
  required?: boolean;
  schema: Schema;
}

export interface Answer {
  description: string;
  /** Media type → schema of the body (null: any bytes). */
  content?: Record<string, Schema | null>;
  headers?: Record<string, { description: string; schema?: Schema }>;
  /** For streams: the schema of each NDJSON line, SSE `data:` or WebSocket text frame. */
  items?: Schema;
}

interface Described {
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  access?: Access;
  params?: Param[];
  responses: Record<string, Answer>;
}

export interface RouteSpec extends Described {
  method: Method;
  body?: { required: boolean; description?: string; content: Record<string, Schema | null> };
  handler: (event: H3Event) => unknown;
}

/** A WebSocket endpoint: GET with `Upgrade: websocket`, answered 101 by `handle`. */
export interface UpgradeSpec extends Described {
  handle: UpgradeHandler;
}

export const JSON_TYPE = 'application/json';

/** Answers with JSON already serialised (h3 sends a returned string as it is, with the headers set here). */
export function jsonText(event: H3Event, text: string): string {
  event.res.headers.set('content-type', 'application/json;charset=UTF-8');
  return text;
}
export const errorAnswer = (description: string): Answer => ({
  description,
  content: { [JSON_TYPE]: { $ref: '#/components/schemas/Error' } },
});
export const SLUG_PARAM: Param = {
  name: 'slug',
  in: 'path',
  description: 'The process slug, APP.NODE (URL-encoded)',
  schema: { type: 'string' },
};
export const NO_PROCESS = errorAnswer('No such process');

/** h3's `/process-status/:slug` as OpenAPI's `/process-status/{slug}`; a rest-of-path `/**:name` (or `/**`) as `/{name}` (`/{path}`). */
export const openApiPath = (path: string) =>
  path
    .replace(/\/\*\*(?::([A-Za-z_][A-Za-z0-9_]*))?$/, (_s, name?: string) => `/{${name ?? 'path'}}`)
    .replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');

function pathPattern(path: string): RegExp {
  const source = path
    .split(/(\*\*(?::[A-Za-z_][A-Za-z0-9_]*)?$|:[A-Za-z_][A-Za-z0-9_]*)/)
    .map((part) => (part.startsWith('**') ? '.+' : part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`);
}

export interface OpenApiInfo {
  version: string;
  /** Whether the agent asks for a token: every operation but the public ones then lists the bearer scheme. */
  description?: string;
}

export class RouteTable {
  readonly routes: RouteSpec[] = [];
  readonly upgrades: UpgradeSpec[] = [];
  readonly fallbacks: { prefix: string; handler: (event: H3Event) => unknown }[] = [];
  private readonly patterns: { method: string; path: string; re: RegExp }[] = [];

  route(spec: RouteSpec): this {
    if (this.routes.some((r) => r.method === spec.method && r.path === spec.path))
      throw new Error(`route ${spec.method} ${spec.path} is declared twice`);
    this.routes.push(spec);
    this.patterns.push({ method: spec.method, path: spec.path, re: pathPattern(spec.path) });
    return this;
  }

  websocket(spec: UpgradeSpec): this {
    if (this.upgrades.some((u) => u.path === spec.path)) throw new Error(`WebSocket ${spec.path} is declared twice`);
    this.upgrades.push(spec);
    this.patterns.push({ method: 'WS', path: spec.path, re: pathPattern(spec.path) });
    return this;
  }

  /**
   * A handler for requests under `prefix` that no declared route takes (any method): an API with
   * its own error envelope answers 404/405 there itself. Not an operation, so not in the document.
   */
  fallback(prefix: string, handler: (event: H3Event) => unknown): this {
    this.fallbacks.push({ prefix, handler });
    return this;
  }

  /** Adds every HTTP route to the h3 app, then the fallbacks (h3 prefers the more specific route anyway). */
  register(app: H3): void {
    for (const r of this.routes) app.on(r.method, r.path, r.handler);
    for (const f of this.fallbacks) {
      app.all(f.prefix, f.handler);
      app.all(`${f.prefix}/**`, f.handler);
    }
  }

  /** The server's one `upgrade` listener: the declared endpoint for the path, else `fallback`. */
  upgrade(fallback: UpgradeHandler): UpgradeHandler {
    const compiled = this.upgrades.map((u) => ({ re: pathPattern(u.path), handle: u.handle }));
    return (req, socket, head) => {
      const path = new URL(req.url ?? '/', 'http://agent').pathname;
      (compiled.find((c) => c.re.test(path))?.handle ?? fallback)(req, socket, head);
    };
  }

  /** The declared path a request is for (`/process-status/:slug`), for labels of bounded cardinality; null when none. */
  match(method: string, pathname: string, upgrade = false): string | null {
    for (const p of this.patterns) {
      if ((upgrade ? p.method === 'WS' : p.method === method || (method === 'HEAD' && p.method === 'GET')) && p.re.test(pathname))
        return p.path;
    }
    return null;
  }

  /** Who may call this request, by its declared route (unknown paths need the token). */
  access(method: string, pathname: string): Access {
    const path = this.match(method, pathname);
    const spec =
      path === null
        ? undefined
        : this.routes.find((r) => r.path === path && (r.method === method || (method === 'HEAD' && r.method === 'GET')));
    return spec?.access ?? 'token';
  }

  /** The OpenAPI 3.1 document of everything declared. */
  openApi(info: OpenApiInfo): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    const operation = (d: Described, extra: Record<string, unknown>) => {
      const responses: Record<string, unknown> = {};
      for (const [code, a] of Object.entries(d.responses)) responses[code] = answer(a);
      if (d.access !== 'public' && d.access !== 'password' && !responses['401'])
        responses['401'] = answer(errorAnswer('A token is required (the agent has one) and was missing or wrong.'));
      responses.default ??= answer(errorAnswer('Any other error: the same error document.'));
      return {
        operationId: d.operationId,
        summary: d.summary,
        ...(d.description ? { description: d.description } : {}),
        tags: [d.tag],
        ...(d.params?.length ? { parameters: d.params.map(param) } : {}),
        responses,
        ...(d.access === 'public' || d.access === 'password'
          ? { security: [] }
          : d.access === 'health'
            ? { security: [{}, { bearer: [] }] }
            : d.access === 'metrics'
              ? { security: [{ bearer: [] }, { metricsToken: [] }] }
              : {}),
        ...extra,
      };
    };
    for (const r of this.routes) {
      const p = (paths[openApiPath(r.path)] ??= {});
      p[r.method.toLowerCase()] = operation(r, {
        ...(r.body
          ? {
              requestBody: {
                required: r.body.required,
                ...(r.body.description ? { description: r.body.description } : {}),
                content: Object.fromEntries(Object.entries(r.body.content).map(([t, s]) => [t, s ? { schema: s } : {}])),
              },
            }
          : {}),
      });
    }
    for (const u of this.upgrades) {
      const p = (paths[openApiPath(u.path)] ??= {});
      const ws = operation(u, { 'x-websocket': true });
      const existing = p.get as { responses: Record<string, unknown>; description?: string; parameters?: Param[] } | undefined;
      if (existing) {
        // An HTTP route and a WebSocket at one path (GET /inspect): one operation, which also answers 101.
        existing.responses['101'] = (ws.responses as Record<string, unknown>)['101'];
        existing.description = `${existing.description ?? ''}\n\nWith \`Upgrade: websocket\`: ${u.description ?? u.summary}`.trim();
        (existing as Record<string, unknown>)['x-websocket'] = true;
      } else {
        p.get = ws;
      }
    }
    return {
      openapi: '3.1.0',
      info: {
        title: 'drover',
        version: info.version,
        description:
          info.description ??
          'A remote process agent for twelve-factor apps. Every error is `{"errors": [{status, detail, field?}]}`; every answer carries `X-Request-Id`.',
      },
      jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
      servers: [{ url: '/' }],
      security: [{ bearer: [] }],
      tags: [...new Set([...this.routes, ...this.upgrades].map((r) => r.tag))].map((name) => ({ name })),
      paths,
      components: {
        schemas: documentSchemas,
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description:
              'The agent token (DROVER_TOKEN or --token-file), when the agent has one. WebSocket and event-stream requests may pass it as ?token= or the subprotocol drover.token.<base64url(token)>.',
          },
          metricsToken: {
            type: 'http',
            scheme: 'bearer',
            description: 'The read-only metrics token (--metrics-token-file), accepted on GET /metrics only.',
          },
        },
      },
    };
  }
}

function answer(a: Answer): Record<string, unknown> {
  return {
    description: a.description,
    ...(a.headers
      ? {
          headers: Object.fromEntries(
            Object.entries(a.headers).map(([k, h]) => [k, { description: h.description, schema: h.schema ?? { type: 'string' } }]),
          ),
        }
      : {}),
    ...(a.content
      ? {
          content: Object.fromEntries(
            Object.entries(a.content).map(([t, s]) => [
              t,
              { ...(s ? { schema: s } : {}), ...(a.items ? { 'x-item-schema': a.items } : {}) },
            ]),
          ),
        }
      : a.items
        ? { 'x-item-schema': a.items } // a WebSocket's frames
        : {}),
  };
}

function param(p: Param): Record<string, unknown> {
  return { name: p.name, in: p.in, description: p.description, required: p.in === 'path' ? true : (p.required ?? false), schema: p.schema };
}
