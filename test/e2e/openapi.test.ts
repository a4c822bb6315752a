// GET /openapi.json against what the server really serves: every h3 route and WebSocket
// endpoint is documented and nothing else is; real answers of an end-to-end run validate
// against the document's schemas; the README's API tables and `drover serve --help` name the
// same routes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { WebSocket } from 'ws';
import { openApiPath } from '../../lib/http/route-table.js';
import { serveUsage } from '../../lib/cli/serve.js';
import { agentWithArchives, api, waitForState } from '../helpers/agent.js';
import { openApiChecker } from '../helpers/openapi.js';
import { sse } from '../helpers/sse.js';

type Doc = Parameters<typeof openApiChecker>[0] & { openapi: string; paths: Record<string, Record<string, any>> };

/** Every operation of the document as "METHOD /path/{param}", WebSockets as "WS /path". */
function documented(doc: Doc): Set<string> {
  const out = new Set<string>();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      // An operation answering 101 is (also) a WebSocket endpoint; one answering only 101 is nothing else.
      if (op.responses['101']) out.add(`WS ${path}`);
      if (!op.responses['101'] || op.responses['200']) out.add(`${method.toUpperCase()} ${path}`);
    }
  }
  return out;
}

/** "| `GET /data/ID/blob` |" style mentions: SLUG, ID, FILE stand for path parameters. */
function mentioned(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/`(GET|POST|PUT|PATCH|DELETE) (\/[^`\s?]*)[^`]*`( \(WebSocket[^)]*\))?/g)) {
    const path = m[2].replace(/\/([A-Z][A-Z_]*)(?=\/|$)/g, (_s, name: string) => `/{${name === 'SLUG' ? 'slug' : name.toLowerCase()}}`);
    out.add(`${m[3] ? 'WS' : m[1]} ${path}`);
  }
  return out;
}

t.test('the document covers exactly the routes the server serves', async (t) => {
  const { agent } = await agentWithArchives(t);
  const res = await api('GET', `${agent.url}/openapi.json`);
  t.equal(res.status, 200);
  const doc = res.json as Doc;
  t.equal(doc.openapi, '3.1.0');
  const docs = documented(doc);

  // h3's own router: what it really dispatches.
  const served = new Set<string>();
  // An API's catch-all for its own 404/405 envelope (any method) is not an operation.
  const fallbacks = new Set(agent.routes!.fallbacks.flatMap((f) => [f.prefix, `${f.prefix}/**`]));
  for (const r of (agent.app as unknown as { '~routes': { method?: string; route?: string }[] })['~routes']) {
    if (!r.method && fallbacks.has(r.route ?? '')) continue;
    served.add(`${r.method} ${openApiPath(r.route ?? '')}`);
  }
  for (const u of agent.routes!.upgrades) served.add(`WS ${openApiPath(u.path)}`);
  t.ok(served.size >= 25, `the server serves ${served.size} routes`);
  t.same(
    [...served].filter((r) => !docs.has(r)),
    [],
    'every served route is documented',
  );
  t.same(
    [...docs].filter((r) => !served.has(r)),
    [],
    'every documented route is served',
  );

  // The WebSocket endpoints the document names really upgrade; another path does not.
  const create = await api('POST', `${agent.url}/create-process`, {
    app: 'oa',
    node: 'web.0',
    process_type: 'web',
    source_url: 'http://127.0.0.1:9/none.tgz',
  });
  t.equal(create.status, 201);
  for (const r of docs) {
    if (!r.startsWith('WS ')) continue;
    const path = r.slice(3).replace('{slug}', 'oa.web.0');
    const ws = new WebSocket(`${agent.url.replace('http', 'ws')}${path}`);
    const opened = await new Promise<boolean>((resolve) => {
      ws.once('open', () => resolve(true));
      ws.once('error', () => resolve(false));
    });
    t.ok(opened, `${path} upgrades`);
    ws.terminate();
  }
  const stray = new WebSocket(`${agent.url.replace('http', 'ws')}/not-an-endpoint`);
  const status = await new Promise<number>((resolve) => {
    stray.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    stray.once('error', () => resolve(-1));
  });
  t.equal(status, 404, 'an undocumented path does not upgrade');

  // The README's API tables and `drover serve --help` name the same routes as the document.
  const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
  // The API tables: rows that start with a request.
  const inReadme = mentioned(
    readme
      .split('\n')
      .filter((l) => /^\| `(GET|POST|PUT|PATCH|DELETE) /.test(l))
      .join('\n'),
  );
  t.same(
    [...docs].filter((r) => !inReadme.has(r)),
    [],
    'every documented route is in the README',
  );
  t.same(
    [...inReadme].filter((r) => !docs.has(r)),
    [],
    'every route the README names exists',
  );
  const inHelp = mentioned(
    serveUsage.replace(/^ {2}(GET|POST|PUT|PATCH|DELETE|WS) (\S+)/gm, (_s, m: string, p: string) =>
      m === 'WS' ? `\`GET ${p}\` (WebSocket)` : `\`${m} ${p}\``,
    ),
  );
  t.same(
    [...docs].filter((r) => !inHelp.has(r)),
    [],
    'every documented route is in drover serve --help',
  );
  t.same(
    [...inHelp].filter((r) => !docs.has(r)),
    [],
    'every route drover serve --help names exists',
  );
});

t.test('real answers validate against the document', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { usageSampleMs: 200 });
  const doc = (await api('GET', `${agent.url}/openapi.json`)).json as Doc;
  const checker = openApiChecker(doc);
  const problems: string[] = [];
  let checked = 0;
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const r = await api(method, `${agent.url}${path}`, body, headers);
    const pathname = new URL(`${agent.url}${path}`).pathname;
    const json = (r.headers.get('content-type') ?? '').startsWith('application/json') ? r.json : r.text;
    problems.push(...checker.check(method, pathname, r.status, r.headers.get('content-type'), json));
    checked++;
    return r;
  };

  const source = await serveApp('app', 'web: echo started; sleep 600\n');
  await call('GET', '/');
  const created = await call('POST', '/create-process', {
    app: 'oa',
    node: 'web.0',
    process_type: 'web',
    source_url: source,
    env: { A: '1' },
  });
  t.equal(created.status, 201);
  await waitForState(`${agent.url}/process-status/oa.web.0`, (d) => d.state === 'running' && d.usage !== null);
  await call('GET', '/process-status/oa.web.0');
  await call('GET', '/list-processes');
  await call('GET', '/process-metrics/oa.web.0');
  await call('POST', '/signal-process/oa.web.0', { signal: 'SIGCONT' });
  await call('POST', '/stop-process/oa.web.0', { grace_ms: 2000 });
  await call('POST', '/start-process/oa.web.0', {});
  await waitForState(`${agent.url}/process-status/oa.web.0`, 'running');
  await call('POST', '/restart-process/oa.web.0', {});
  // A replace (env only, stop-first) of a worker: no readiness check, done once the new child runs.
  await call('POST', '/create-process', {
    app: 'oa',
    node: 'worker.0',
    process_type: 'web',
    source_url: source,
    readiness: { port: false },
  });
  await waitForState(`${agent.url}/process-status/oa.worker.0`, 'running');
  const replaced = await call('POST', '/replace-process/oa.worker.0', { env: { A: '2' }, strategy: 'stop-first' });
  t.equal(replaced.status, 200, 'replaced');
  t.same(replaced.json?.replaced?.changed, ['env A']);
  await call('POST', '/replace-process/oa.worker.0', { strategy: 'sideways' });
  await call('GET', '/machine');
  await call('GET', '/metrics');
  await call('GET', '/metrics', undefined, { accept: 'application/openmetrics-text; version=1.0.0' });
  await call('GET', '/healthz');
  await call('GET', '/readyz');
  await call('GET', '/openapi.json');
  await call('GET', '/ui');
  await call('GET', '/ui/app.js');
  // Errors are documented too.
  await call('GET', '/process-status/nope.web.0');
  await call('POST', '/create-process', { app: '', node: 'web.0' });
  await call('POST', '/create-process', { app: 'oa', node: 'web.0', process_type: 'web', source_url: source });
  await call('POST', '/signal-process/oa.web.0', { signal: 'SIGNOPE' });
  const stray = await api('GET', `${agent.url}/no-such-route`);
  t.equal(stray.status, 404);
  const errorSchema = checker.compile(doc.components.schemas.Error);
  t.ok(errorSchema(stray.json), 'an unknown route answers the documented error document');
  await call('GET', '/data/0000');
  // Data.
  const up = await fetch(`${agent.url}/data`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: 'blob bytes',
  });
  const upJson = await up.json();
  problems.push(...checker.check('POST', '/data', up.status, up.headers.get('content-type'), upJson));
  await call('GET', '/data');
  await call('GET', `/data/${upJson.id}`);
  await call('GET', `/data/${upJson.id}/blob`);

  // Streams: each NDJSON line and each SSE record against the document's item schema.
  const events = await call('GET', '/process-events/oa.web.0?follow=false');
  const eventSchema = checker.itemSchema('GET', '/process-events/oa.web.0', 200)!;
  const lines = events.text.split('\n').filter(Boolean);
  t.ok(lines.length > 3, `${lines.length} events`);
  for (const line of lines) if (!eventSchema(JSON.parse(line))) problems.push(`event ${line}: ${checker.errorsText(eventSchema)}`);
  const inspect = await sse(`${agent.url}/inspect`);
  const recordSchema = checker.itemSchema('GET', '/inspect', 200)!;
  await (async () => {
    for (let i = 0; i < 500 && inspect.events.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  })();
  inspect.close();
  t.ok(inspect.events.length > 0, 'a snapshot record');
  for (const e of inspect.events)
    if (!recordSchema(e.data)) problems.push(`inspect ${JSON.stringify(e.data)}: ${checker.errorsText(recordSchema)}`);

  await call('POST', '/delete-process/oa.worker.0', {});
  const deleted = await call('POST', '/delete-process/oa.web.0', {}, { prefer: 'return=representation' });
  t.equal(deleted.json?.state, 'deleted');
  t.ok(checked >= 25, `${checked} answers checked`);
  t.same(problems, [], 'every answer matches the document');
});
