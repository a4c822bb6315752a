// The route table (one declaration per route, the OpenAPI document generated from it) and the
// request body schemas against the validators the server runs: both must say yes and no to the same bodies.
import t from 'tap';
import { defaults } from '../../lib/agent/config.js';
import { RouteTable, openApiPath } from '../../lib/http/route-table.js';
import {
  createRequestSchema,
  signalRequestSchema,
  stopRequestSchema,
  validateCreate,
  validateSignal,
  validateStop,
} from '../../lib/http/validate.js';
import { openApiChecker } from '../helpers/openapi.js';
import { schemas } from '../../lib/api/schemas.js';

const doc = { paths: {}, components: { schemas } };
const checker = openApiChecker(doc);

function agree(
  t: { equal: (a: unknown, b: unknown, m: string) => unknown },
  name: string,
  schema: unknown,
  validate: (b: any) => unknown,
  bodies: unknown[],
) {
  const v = checker.compile(schema);
  for (const body of bodies) {
    let accepted = true;
    try {
      validate(body);
    } catch {
      accepted = false;
    }
    t.equal(v(body), accepted, `${name} ${JSON.stringify(body).slice(0, 120)}: schema and validator ${accepted ? 'accept' : 'refuse'} it`);
  }
}

const ok = { app: 'shop', node: 'web.0', process_type: 'web', source_url: 'https://example.com/a.tgz' };

t.test('the create body schema accepts exactly what validateCreate does', async (t) => {
  agree(t, 'create', createRequestSchema, (b) => validateCreate(b, { allowFileUrls: defaults.allowFileUrls }), [
    ok,
    { ...ok, env: { A: '1', _B: '' } },
    { ...ok, env: null },
    { ...ok, restart: { policy: 'on-failure', delay_ms: 0, reset_after_ms: 5 } },
    { ...ok, extra: 'ignored, as smartmob-agent does' },
    { ...ok, app: '' },
    { ...ok, app: '.hidden' },
    { ...ok, app: 'a..b' },
    { ...ok, app: 'x'.repeat(65) },
    { ...ok, node: 7 },
    { ...ok, process_type: '-web' },
    { ...ok, process_type: 'we.b' },
    { ...ok, source_url: '' },
    { ...ok, source_url: `https://example.com/${'a'.repeat(8200)}` },
    { ...ok, env: { '1A': 'x' } },
    { ...ok, env: { A: 1 } },
    { ...ok, env: [] },
    { ...ok, restart: { policy: 'sometimes' } },
    { ...ok, restart: { delay_ms: -1 } },
    { ...ok, restart: { delay_ms: 1.5 } },
    { ...ok, restart: { retries: 3 } },
    { app: 'shop', node: 'web.0', process_type: 'web' },
    [],
    'text',
    null,
  ]);
});

t.test('the signal and stop body schemas accept exactly what the validators do', async (t) => {
  agree(t, 'signal', signalRequestSchema, validateSignal, [
    { signal: 'SIGHUP' },
    { signal: 'hup' },
    { signal: ' term ' },
    { signal: 'SIGRTMIN+3' },
    { signal: 'SIGRTMIN+31' },
    { signal: 9 },
    { signal: 34 },
    { signal: 32 },
    { signal: 0 },
    { signal: 65 },
    { signal: 'SIGNOPE' },
    { signal: null },
    {},
    { signal: 'HUP', extra: 1 },
  ]);
  agree(t, 'stop', stopRequestSchema, validateStop, [
    {},
    { signal: 'SIGUSR1' },
    { grace_ms: 0 },
    { grace_ms: 3_600_000 },
    { grace_ms: 3_600_001 },
    { grace_ms: '5' },
    { grace_ms: 1.5 },
    { signal: 'SIGUSR1', grace_ms: 10 },
    { force: true },
  ]);
});

t.test('the route table: one declaration, one operation, labels by template', async (t) => {
  const table = new RouteTable();
  table.route({
    method: 'GET',
    path: '/things/:id',
    operationId: 'thing',
    tag: 't',
    summary: 'A thing',
    params: [{ name: 'id', in: 'path', description: 'its id', schema: { type: 'string' } }],
    responses: { 200: { description: 'it', content: { 'application/json': { type: 'object' } } } },
    handler: () => ({}),
  });
  table.websocket({
    path: '/things/:id/live',
    operationId: 'live',
    tag: 't',
    summary: 'Live',
    responses: { 101: { description: 'upgraded' } },
    handle: () => {},
  });
  t.throws(() => table.route({ ...table.routes[0] }), /declared twice/);
  t.equal(openApiPath('/a/:b/c/:d'), '/a/{b}/c/{d}');
  t.equal(table.match('GET', '/things/42'), '/things/:id');
  t.equal(table.match('HEAD', '/things/42'), '/things/:id');
  t.equal(table.match('POST', '/things/42'), null);
  t.equal(table.match('GET', '/things/42/live', true), '/things/:id/live');
  t.equal(table.match('GET', '/things/4/2'), null);
  t.equal(table.access('GET', '/things/42'), 'token');
  t.equal(openApiPath('/runs/:id/files/**:path'), '/runs/{id}/files/{path}', 'a rest-of-path parameter');
  t.equal(openApiPath('/procs/**'), '/procs/{path}');
  table.route({
    method: 'GET',
    path: '/things/:id/files/**:path',
    operationId: 'thingFile',
    tag: 't',
    summary: 'A file',
    responses: { 200: { description: 'it' } },
    handler: () => ({}),
  });
  t.equal(table.match('GET', '/things/4/files/a/b.txt'), '/things/:id/files/**:path', 'the rest of the path may hold slashes');
  t.equal(table.match('GET', '/things/4/files/'), null, 'but not be empty');
  const api = table.openApi({ version: '1.2.3' }) as any;
  t.equal(api.openapi, '3.1.0');
  const op = api.paths['/things/{id}'].get;
  t.equal(op.operationId, 'thing');
  t.ok(op.responses['401'] && op.responses.default, 'auth and default errors are added to every operation');
  t.equal(op.parameters[0].required, true, 'path parameters are required');
  t.ok(api.paths['/things/{id}/live'].get.responses['101'], 'a WebSocket is a GET answering 101');
  t.equal(api.paths['/things/{id}/live'].get['x-websocket'], true);
});
