import t from 'tap';
import type { Test } from 'tap';
import { request } from 'node:http';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { agentWithArchives, api, attach, testAgent } from '../helpers/agent.js';
import { sse } from '../helpers/sse.js';
import { waitFor } from '../helpers/wait.js';
import { STATES } from '../../lib/process/machine.js';

async function setup(t: Test) {
  const { agent, serveApp } = await agentWithArchives(t, { backoffInitialMs: 100, backoffMaxMs: 200 });
  const create = async (node: string, sourceUrl: string) => {
    const r = await api('POST', `${agent.url}/create-process`, { app: 'app', node, process_type: 'web', source_url: sourceUrl });
    if (r.status !== 201) throw new Error(`create failed: ${r.status} ${r.text}`);
    return r.json;
  };
  return { agent, serveApp, create };
}

type Frame = { type: string; [k: string]: any };
const transitions = (frames: Frame[], slug: string) => frames.filter((f) => f.type === 'transition' && f.slug === slug);

t.test('the index links the inspector, the machine and the dashboard; /machine describes the machine', async (t) => {
  const { agent } = await setup(t);
  const host = agent.url.replace('http://', '');
  const index = await api('GET', agent.url);
  t.equal(index.json.inspect, `http://${host}/inspect`);
  t.equal(index.json.machine, `http://${host}/machine`);
  t.equal(index.json.ui, `http://${host}/ui`);
  const machine = await api('GET', index.json.machine);
  t.equal(machine.status, 200);
  t.equal(machine.json.initial, 'pending');
  t.same(
    machine.json.states.map((s: any) => s.name),
    [...STATES],
  );
  t.ok(machine.json.transitions.some((tr: any) => tr.source === 'exited' && tr.target === 'restarting'));
  t.equal(machine.json.definition.id, 'process');
});

t.test('WebSocket: a snapshot, then every transition of every process, through crashes to deleted', async (t) => {
  const { agent, serveApp, create } = await setup(t);
  const ws = await attach(`${agent.url.replace('http', 'ws')}/inspect`);
  t.teardown(() => ws.ws.close());
  const frames = () => ws.lines.map((l) => JSON.parse(l) as Frame);
  await waitFor(() => ws.lines.length >= 1, 'the snapshot');
  t.same(frames()[0].processes, [], 'nothing runs yet');
  t.equal(frames()[0].type, 'snapshot');

  const crashy = await create('web.0', await serveApp('crashy', 'web: echo boom; exit 3\n'));
  const steady = await create('web.1', await serveApp('steady', 'web: sleep 600\n'));
  await waitFor(
    () => transitions(frames(), crashy.slug).filter((r) => r.to === 'restarting').length >= 2,
    'two restarts of the crashing process',
  );
  await waitFor(() => transitions(frames(), steady.slug).some((r) => r.to === 'running' && r.pid), 'the steady process running with a pid');

  const c = transitions(frames(), crashy.slug);
  const states = c.map((r) => r.to);
  t.same(
    states.slice(0, 7),
    ['pending', 'downloading', 'building', 'running', 'running', 'exited', 'restarting'],
    'the first pass, with the pid update and the 0 ms `exited`',
  );
  t.equal(c[0].from, null);
  for (let i = 1; i < c.length; i++) t.equal(c[i].from, c[i - 1].to, `record ${i} starts where ${i - 1} ended`);
  const exited = c.find((r) => r.to === 'exited')!;
  t.equal(exited.last_error, 'process exited with code 3');
  t.equal(exited.pid, null);
  t.ok(
    c
      .filter((r) => r.to === 'restarting')
      .map((r) => r.restarts)
      .join()
      .startsWith('1,2'),
    'restarts count up',
  );

  const status = await api('GET', steady.status);
  const last = transitions(frames(), steady.slug).at(-1)!;
  t.equal(last.pid, status.json.pid, 'the pid in the record is the status document pid');

  // A watcher arriving now starts with where everything is.
  const late = await attach(`${agent.url.replace('http', 'ws')}/inspect`);
  await waitFor(() => late.lines.length >= 1, 'snapshot for a late watcher');
  const snap = JSON.parse(late.lines[0]);
  t.equal(snap.type, 'snapshot');
  t.same(snap.processes.map((p: any) => p.slug).sort(), [crashy.slug, steady.slug]);
  const s = snap.processes.find((p: any) => p.slug === steady.slug);
  t.match(s, { state: 'running', pid: status.json.pid, restarts: 0, last_error: null, since: String });
  late.ws.close();

  t.equal((await api('POST', steady.delete, {})).status, 200);
  await waitFor(() => transitions(frames(), steady.slug).some((r) => r.to === 'deleted'), 'deleted seen');
  const d = transitions(frames(), steady.slug).at(-1)!;
  t.match(d, { from: 'running', to: 'deleted', event: 'CHILD.EXITED', pid: null });
});

t.test('Server-Sent Events with ?slug: only that process, from before it exists to deleted', async (t) => {
  const { agent, serveApp, create } = await setup(t);
  const url = await serveApp('steady', 'web: sleep 600\n');
  const one = await sse(`${agent.url}/inspect?slug=app.web.7`);
  t.teardown(() => one.close());
  t.equal(one.res.status, 200);
  t.match(one.res.headers.get('content-type'), /^text\/event-stream/);
  await waitFor(() => one.events.length >= 1, 'snapshot event');
  t.same(one.events[0], { event: 'snapshot', data: { type: 'snapshot', time: one.events[0].data.time, processes: [] } });

  const other = await create('web.6', url);
  const mine = await create('web.7', url);
  await waitFor(() => one.events.some((e) => e.data.to === 'running' && e.data.pid), 'running with a pid');
  await api('POST', mine.delete, {});
  await waitFor(() => one.events.some((e) => e.data.to === 'deleted'), 'deleted');
  const seen = one.events.slice(1);
  t.ok(
    seen.every((e) => e.event === 'transition' && e.data.slug === mine.slug),
    `only ${mine.slug}`,
  );
  t.same(
    seen.map((e) => e.data.to),
    ['pending', 'downloading', 'building', 'running', 'running', 'deleted'],
  );
  t.ok(other.slug);

  const all = await sse(`${agent.url}/inspect`);
  t.teardown(() => all.close());
  await waitFor(() => all.events.length >= 1, 'snapshot');
  t.same(
    all.events[0].data.processes.map((p: any) => p.slug),
    [other.slug],
    'the deleted process is gone from the snapshot',
  );
});

t.test('bad ?slug is a 400 naming the field, over HTTP and WebSocket', async (t) => {
  const { agent } = await setup(t);
  for (const q of ['slug=', 'slug=..%2Fetc', 'slug=a.b&slug=c.d', `slug=${'x'.repeat(300)}`]) {
    const r = await api('GET', `${agent.url}/inspect?${q}`);
    t.equal(r.status, 400, q);
    t.equal(r.json.errors[0].field, 'slug');
  }
  const refused = await attach(`${agent.url.replace('http', 'ws')}/inspect?slug=%2F%2F`).then(
    () => null,
    (e: Error) => e.message,
  );
  t.match(refused, /400/);
  const unknown = await attach(`${agent.url.replace('http', 'ws')}/nowhere`).then(
    () => null,
    (e: Error) => e.message,
  );
  t.match(unknown, /404/, 'other paths still go to the attach handler, which refuses them');
});

t.test('closing the agent ends every inspection stream, and the last records say deleted', async (t) => {
  const agent = await testAgent();
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const url = archives.serve('s.tgz', await pack(writeApp(join(dir, 's'), { Procfile: 'web: sleep 600\n' }), join(dir, 's.tgz')));
  const r = await api('POST', `${agent.url}/create-process`, { app: 'app', node: 'web.0', process_type: 'web', source_url: url });
  const events = await sse(`${agent.url}/inspect`);
  const ws = await attach(`${agent.url.replace('http', 'ws')}/inspect`);
  await waitFor(() => events.events.some((e) => e.data.pid), 'running');
  await agent.close();
  await events.done;
  const closed = await ws.closed;
  t.equal(closed.code, 1001, 'WebSocket closed as going away');
  t.equal(events.events.at(-1)!.data.to, 'deleted', 'SSE saw the process deleted before the stream ended');
  t.equal(JSON.parse(ws.lines.at(-1)!).to, 'deleted', 'so did the WebSocket');
  t.equal(r.status, 201);
});

t.test(
  'with a token: /inspect and /machine need it (header, or ?token= for SSE and WebSocket); only the dashboard files do not',
  async (t) => {
    const TOKEN = 'inspect-s3cret';
    const agent = await testAgent({ token: TOKEN });
    t.teardown(() => agent.close());
    const ws = agent.url.replace('http', 'ws');
    t.equal((await api('GET', `${agent.url}/machine`)).status, 401);
    t.equal((await api('GET', `${agent.url}/machine`, undefined, { authorization: `Bearer ${TOKEN}` })).status, 200);
    t.equal((await api('GET', `${agent.url}/inspect`)).status, 401);
    t.match(
      await attach(`${ws}/inspect`).then(
        () => null,
        (e: Error) => e.message,
      ),
      /401/,
    );
    t.match(
      await attach(`${ws}/inspect?token=nope`).then(
        () => null,
        (e: Error) => e.message,
      ),
      /401/,
    );
    const sock = await attach(`${ws}/inspect?token=${TOKEN}`);
    await waitFor(() => sock.lines.length >= 1, 'snapshot over an authorised WebSocket');
    t.equal(JSON.parse(sock.lines[0]).type, 'snapshot');
    sock.ws.close();
    const events = await sse(`${agent.url}/inspect?token=${TOKEN}`);
    t.equal(events.res.status, 200, 'EventSource style: token in the query');
    await waitFor(() => events.events.length >= 1, 'snapshot over SSE');
    events.close();

    for (const path of ['/ui', '/ui/app.js', '/ui/style.css', '/ui/index.html']) {
      const r = await fetch(`${agent.url}${path}`);
      t.equal(r.status, 200, `${path} is public`);
      await r.arrayBuffer();
    }
    // Raw paths, as sent (fetch would normalise the dot segments away before sending).
    const raw = (path: string) =>
      new Promise<number>((resolve, reject) => {
        request(`${agent.url}${path}`, { path }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
    for (const path of [
      '/',
      '/list-processes',
      '/ui/../list-processes',
      '/ui/%2e%2e/list-processes',
      '/ui/..%2flist-processes',
      '/ui/app.js/x',
      '/uix',
      '/ui/.hidden.js',
      '//ui/app.js',
    ]) {
      t.equal(await raw(path), 401, `${path} is not`);
    }
    t.equal((await fetch(`${agent.url}/ui/nope.js`)).status, 404, 'an unknown dashboard file is a plain 404');
  },
);

t.test('the dashboard files: served with their types, nothing else from the directory', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const page = await fetch(`${agent.url}/ui`);
  t.match(page.headers.get('content-type'), /^text\/html/);
  const html = await page.text();
  for (const [, src] of html.matchAll(/(?:src|href)="(\/ui\/[^"]+)"/g)) {
    const r = await fetch(`${agent.url}${src}`);
    t.equal(r.status, 200, src);
    t.match(r.headers.get('content-type'), src.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
    await r.arrayBuffer();
  }
  const missing = await api('GET', `${agent.url}/ui/secret.txt`);
  t.equal(missing.status, 404);
  t.match(missing.json.errors[0].detail, /no dashboard file/);
});
