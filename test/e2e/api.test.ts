import t from 'tap';
import { join } from 'node:path';
import { ArchiveServer, pack } from '../helpers/archives.js';
import { api, attach, testAgent, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';
import { liveGroupMembers } from '../../lib/os/proc.js';

const examples = join(import.meta.dirname, '..', '..', 'examples');

t.test('the seed-001 walkthrough, step by step', async (t) => {
  const agent = await testAgent();
  const archives = await new ArchiveServer().start();
  t.teardown(async () => {
    await agent.close();
    await archives.close();
  });
  const dir = t.testdir();
  const sourceUrl = archives.serve('web.tar.gz', await pack(join(examples, 'web'), join(dir, 'web.tar.gz')));
  const host = agent.url.replace('http://', '');

  const index = await api('GET', agent.url);
  t.equal(index.status, 200);
  t.equal(index.json.create, `http://${host}/create-process`);
  t.equal(index.json.list, `http://${host}/list-processes`);

  const empty = await api('GET', index.json.list);
  t.same(empty.json, { processes: [] });

  const created = await api(
    'POST',
    index.json.create,
    {
      app: 'myapp',
      source_url: sourceUrl,
      process_type: 'web',
      node: 'web.0',
      env: { GREETING: 'hi there' },
    },
    { 'x-request-id': 'req-42' },
  );
  t.equal(created.status, 201);
  t.equal(created.headers.get('x-request-id'), 'req-42', 'request id echoed');
  const proc = created.json;
  t.match(proc, {
    app: 'myapp',
    node: 'web.0',
    process_type: 'web',
    slug: 'myapp.web.0',
    state: 'pending',
    attach: `ws://${host}/attach-console/myapp.web.0`,
    delete: `http://${host}/delete-process/myapp.web.0`,
    details: `http://${host}/process-status/myapp.web.0`,
    status: `http://${host}/process-status/myapp.web.0`,
    pid: null,
    restarts: 0,
    errors: [],
  });
  t.equal(created.headers.get('location'), proc.status);
  t.notOk('GREETING' in proc && proc.GREETING, 'env values are not echoed');
  t.same(proc.env_names, ['GREETING']);

  const listing = await api('GET', index.json.list);
  t.same(
    listing.json.processes.map((p: any) => p.slug),
    ['myapp.web.0'],
  );

  const stream = await attach(proc.attach);
  const running = await waitForState(proc.status, 'running');
  t.type(running.pid, 'number');
  await waitFor(() => stream.lines.some((l) => l.startsWith('listening on port')), 'listening line');
  const port = Number(
    stream.lines
      .find((l) => l.startsWith('listening on port'))!
      .split(' ')
      .pop(),
  );
  t.equal(port, running.port, 'the app listens on its $PORT');
  const page = await fetch(`http://127.0.0.1:${port}/`);
  t.equal(await page.text(), 'hi there (web.0)\n', 'request env applied, DYNO set');
  await waitFor(() => stream.lines.includes('GET /'), 'request log line over attach');

  const pgid = running.pgid;
  const deleted = await api('POST', proc.delete, {}, { prefer: 'return=representation' });
  t.equal(deleted.status, 200);
  t.equal(deleted.json.state, 'deleted');
  t.same(liveGroupMembers(pgid), [], 'no process of the group is left');
  t.equal((await stream.closed).code, 1000, 'attached clients are closed on delete');
  t.ok(stream.lines.includes('SIGTERM received, shutting down'), 'the app got SIGTERM and said so');
  t.same((await api('GET', index.json.list)).json, { processes: [] });
  t.equal((await api('GET', proc.status)).status, 404);
});

t.test('bad requests get 4xx JSON errors naming the field', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const create = `${agent.url}/create-process`;
  const ok = { app: 'a', node: 'web.0', process_type: 'web', source_url: 'http://127.0.0.1:9/x.tgz' };

  for (const field of ['app', 'node', 'process_type', 'source_url']) {
    const missing = { ...ok } as Record<string, unknown>;
    delete missing[field];
    const r = await api('POST', create, missing);
    t.equal(r.status, 400, `missing ${field}`);
    t.equal(r.json.errors[0].field, field);
    t.match(r.json.errors[0].detail, /required/);
    const wrong = await api('POST', create, { ...ok, [field]: 42 });
    t.equal(wrong.status, 400, `wrong type ${field}`);
    t.equal(wrong.json.errors[0].field, field);
    t.match(wrong.json.errors[0].detail, /must be a string/);
  }
  const cases: [unknown, string | undefined, RegExp][] = [
    [{ ...ok, env: { A: 1 } }, 'env', /value of A must be a string/],
    [{ ...ok, env: ['A=1'] }, 'env', /must be an object/],
    [{ ...ok, env: { 'BAD NAME': 'x' } }, 'env', /not a valid environment variable name/],
    [{ ...ok, app: '../etc' }, 'app', /must be/],
    [{ ...ok, node: 'a/b' }, 'node', /must be/],
    [{ ...ok, source_url: 'not a url' }, 'source_url', /not a valid absolute URL/],
    [{ ...ok, source_url: 'file:///etc/passwd' }, 'source_url', /must use http or https/],
    [[1, 2], undefined, /must be a JSON object/],
  ];
  for (const [body, field, detail] of cases) {
    const r = await api('POST', create, body);
    t.equal(r.status, 400, JSON.stringify(body));
    t.equal(r.json.errors[0].status, 400);
    t.equal(r.json.errors[0].field, field);
    t.match(r.json.errors[0].detail, detail);
  }
  const invalid = await api('POST', create, '{"app": ');
  t.equal(invalid.status, 400);
  t.match(invalid.json.errors[0].detail, /not valid JSON/);
  const form = await api('POST', create, 'a=b', { 'content-type': 'application/x-www-form-urlencoded' });
  t.equal(form.status, 415);

  const first = await api('POST', create, ok);
  t.equal(first.status, 201);
  const twin = await api('POST', create, { ...ok, process_type: 'other' });
  t.equal(twin.status, 409);
  t.match(twin.json.errors[0].detail, /already exists/);

  t.equal((await api('GET', `${agent.url}/process-status/nope.web.0`)).status, 404);
  const del404 = await api('POST', `${agent.url}/delete-process/nope.web.0`, {});
  t.equal(del404.status, 404);
  t.match(del404.json.errors[0].detail, /no process "nope.web.0"/);
  const noRoute = await api('GET', `${agent.url}/nowhere`);
  t.equal(noRoute.status, 404);
  t.ok(Array.isArray(noRoute.json.errors));

  const upgrade = await fetch(`${agent.url}/attach-console/nope.web.0`, {
    headers: {
      connection: 'Upgrade',
      upgrade: 'websocket',
      'sec-websocket-version': '13',
      'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
    },
  }).catch((e) => e);
  // fetch cannot upgrade; use a real WebSocket client for the refusal instead.
  t.ok(upgrade);
  const refused = await attach(`${agent.url.replace('http', 'ws')}/attach-console/nope.web.0`).then(
    () => null,
    (e: Error) => e.message,
  );
  t.match(refused, /404/);

  const del = await api('POST', first.json.delete, {});
  t.equal(del.status, 200);
});
