// The smartmob-agent reference's wire behaviour, sent the way its old aiohttp clients send it
// (JSON as application/octet-stream, a GET with a body, a delete with `{}`), and the release
// pipeline cases real apps hit: `node .`, a failing build, a loop of clean exits, the app's pid.
import t from 'tap';
import { request } from 'node:http';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentWithArchives, api, waitForState } from '../helpers/agent.js';
import { pack, writeApp } from '../helpers/archives.js';
import { readEvents } from '../helpers/events.js';
import { waitFor } from '../helpers/wait.js';
import { runCli } from '../helpers/cli.js';
import { ReleaseCache } from '../../lib/release/cache.js';

/** One request exactly as given: any method with any body and headers (fetch refuses a GET body). */
function raw(method: string, url: string, body: string | null, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; json: any; text: string }>(
    (resolve, reject) => {
      const u = new URL(url);
      const req = request(
        {
          method,
          host: u.hostname,
          port: u.port,
          path: u.pathname + u.search,
          headers: { ...headers, ...(body !== null ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
        },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            let json: any;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode!, headers: res.headers, json, text });
          });
        },
      );
      req.on('error', reject);
      req.end(body ?? undefined);
    },
  );
}

const OCTET = { 'content-type': 'application/octet-stream' };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function eventsOf(url: string, enough: (events: any[]) => boolean) {
  return waitFor(async () => {
    const { events } = await readEvents(url, enough);
    return enough(events) ? events : null;
  }, `events at ${url}`);
}

t.test('the walkthrough as an old aiohttp client sends it, with one request id traced end to end', async (t) => {
  const { agent, archives, serveApp } = await agentWithArchives(t);
  const real = await serveApp('walk', 'web: exec node -e "setInterval(() => {}, 1000)"\n');
  const source = archives.redirect('walk-moved.tgz', real);

  const root = await raw('GET', `${agent.url}/`, '', OCTET);
  t.equal(root.status, 200, 'a GET with a (empty) body');
  t.match(root.headers['x-request-id'], UUID, 'a new id when the request had none');
  const rootWithBody = await raw('GET', `${agent.url}/`, '{}', OCTET);
  t.equal(rootWithBody.status, 200, 'a GET with a JSON body');
  t.ok(rootWithBody.json.create);

  const body = JSON.stringify({ app: 'walk', node: 'web.0', process_type: 'web', source_url: source, env: {} });
  const created = await raw('POST', root.json.create, body, { ...OCTET, 'x-request-id': 'trace-42' });
  t.equal(created.status, 201, created.text);
  t.equal(created.headers['x-request-id'], 'trace-42', 'echoed');
  const status = created.headers.location as string;

  await waitForState(status, 'running');
  const running = await raw('GET', status, '{}', OCTET);
  t.equal(running.status, 200);
  t.equal(running.json.state, 'running');
  const listed = await raw('GET', root.json.list, '{}', OCTET);
  t.equal(listed.json.processes.length, 1);

  const gets = archives.requests.filter((r) => r.path === '/walk-moved.tgz' || r.path === '/walk.tgz');
  t.same(
    gets.map((r) => [r.path, r.headers['x-request-id']]),
    [
      ['/walk-moved.tgz', 'trace-42'],
      ['/walk.tgz', 'trace-42'],
    ],
    'the create id goes with the archive GET and its redirect',
  );
  const events = await eventsOf(running.json.events, (es) => es.some((e) => e.type === 'build_finished'));
  t.match(events[0], { type: 'state', to: 'pending', why: 'created', request_id: 'trace-42' }, 'the created event');
  t.ok(
    events.filter((e) => e.type === 'download').every((e) => e.request_id === 'trace-42'),
    'download events carry it',
  );
  t.match(
    events.filter((e) => e.type.startsWith('build_')),
    [
      { type: 'build_started', request_id: 'trace-42' },
      { type: 'build_finished', request_id: 'trace-42' },
    ],
  );

  const deleted = await raw('POST', running.json.delete, '{}', OCTET);
  t.equal(deleted.status, 200);
  t.equal(deleted.text, '{}', 'the reference answers {}');
  t.match(deleted.headers['x-request-id'], UUID);
  t.notOk(deleted.headers['preference-applied']);
  t.equal((await raw('GET', status, '{}', OCTET)).status, 404);
});

t.test('delete with Prefer: return=representation answers the final status document', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t);
  const src = await serveApp('rep', 'web: exec node -e "setInterval(() => {}, 1000)"\n');
  const c = await api('POST', `${agent.url}/create-process`, { app: 'rep', node: 'web.0', process_type: 'web', source_url: src });
  await waitForState(c.json.status, 'running');
  const r = await api('POST', c.json.delete, {}, { prefer: 'respond-async, return=representation' });
  t.equal(r.status, 200);
  t.equal(r.headers.get('preference-applied'), 'return=representation');
  t.match(r.json, { slug: 'rep.web.0', state: 'deleted', pid: null, last_exit: { signal: 'SIGTERM' } });
  t.ok(r.json.last_exit.usage === null || typeof r.json.last_exit.usage === 'object', 'the run totals');
  const minimal = await api('POST', `${agent.url}/delete-process/nope.web.0`, {}, { prefer: 'return=representation' });
  t.equal(minimal.status, 404);
});

t.test('JSON bodies whatever the Content-Type, except forms', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t);
  const src = await serveApp('types', 'web: exec node -e "setInterval(() => {}, 1000)"\n');
  const create = `${agent.url}/create-process`;
  const doc = (node: string) => JSON.stringify({ app: 'types', node, process_type: 'web', source_url: src });
  t.equal((await raw('POST', create, doc('web.0'), {})).status, 201, 'no Content-Type');
  t.equal((await raw('POST', create, doc('web.1'), { 'content-type': 'text/plain; charset=utf-8' })).status, 201, 'text/plain');
  t.equal((await raw('POST', create, doc('web.2'), { 'content-type': 'application/xml' })).status, 201, 'another type');
  for (const type of ['multipart/form-data; boundary=x', 'application/x-www-form-urlencoded']) {
    const r = await raw('POST', create, doc('web.3'), { 'content-type': type });
    t.equal(r.status, 415, type);
    t.match(r.json.errors[0].detail, type.split(';')[0]);
  }
  const bad = await raw('POST', create, '{"app":', OCTET);
  t.equal(bad.status, 400);
  t.match(bad.json.errors[0].detail, /not valid JSON/);
  await waitForState(`${agent.url}/process-status/types.web.0`, 'running');
  const sig = await raw('POST', `${agent.url}/signal-process/types.web.0`, '{"signal":"SIGCONT"}', OCTET);
  t.equal(sig.status, 200, 'control routes too');
  const form = await raw('POST', `${agent.url}/stop-process/types.web.0`, 'a=b', { 'content-type': 'application/x-www-form-urlencoded' });
  t.equal(form.status, 415);
  const del = await raw('POST', `${agent.url}/delete-process/types.web.1`, 'x=1', { 'content-type': 'application/x-www-form-urlencoded' });
  t.equal(del.status, 415, 'delete too');
});

t.test('a missing Procfile or unknown type is reported before any build step runs', async (t) => {
  const { agent, archives, dir } = await agentWithArchives(t);
  const marker = join(dir, 'built');
  const build = `#!/bin/sh\necho building >> ${marker}\n`;
  const typed = archives.serve(
    'typed.tgz',
    await pack(writeApp(join(dir, 'typed'), { Procfile: 'web: true\n', 'bin/build': build }), join(dir, 'typed.tgz')),
  );
  const bare = archives.serve('bare.tgz', await pack(writeApp(join(dir, 'bare'), { 'bin/build': build }), join(dir, 'bare.tgz')));
  const a = await api('POST', `${agent.url}/create-process`, { app: 't', node: 'worker.0', process_type: 'worker', source_url: typed });
  const b = await api('POST', `${agent.url}/create-process`, { app: 'b', node: 'web.0', process_type: 'web', source_url: bare });
  const da = await waitForState(a.json.status, (d) => d.errors.length > 0);
  const db = await waitForState(b.json.status, (d) => d.errors.length > 0);
  t.match(da.errors[0], /unknown process type "worker"; the Procfile has: web/);
  t.match(db.errors[0], /no Procfile/);
  t.notOk(existsSync(marker), 'no build step ran');
});

t.test('`web: node .` runs the package main, not drover metadata; old caches are migrated', async (t) => {
  const { agent, archives, dir } = await agentWithArchives(t);
  const app = writeApp(join(dir, 'dot'), {
    Procfile: 'web: node .\n',
    'package.json': JSON.stringify({ name: 'dot', version: '1.0.0', main: 'server.js' }),
    'server.js': "console.log('main started'); setInterval(() => {}, 1000);\n",
  });
  const src = archives.serve('dot.tgz', await pack(app, join(dir, 'dot.tgz')));
  const c = await api('POST', `${agent.url}/create-process`, { app: 'dot', node: 'web.0', process_type: 'web', source_url: src });
  await eventsOf(c.json.events, (es) => es.some((e) => e.type === 'output' && e.text === 'main started'));
  const doc = (await api('GET', c.json.status)).json;
  t.match(doc, { state: 'running', restarts: 0, errors: [] });
  const releases = readdirSync(join(agent.stateDir, 'releases'));
  t.same(
    releases.filter((n) => !/^[0-9a-f]{64}$/.test(n)),
    [],
    'only release directories in releases/',
  );

  // An older agent's marker beside the release directory moves to release-meta/.
  const state = join(dir, 'old-state');
  const sha = 'a'.repeat(64);
  mkdirSync(join(state, 'releases', sha), { recursive: true });
  writeFileSync(join(state, 'releases', `${sha}.json`), JSON.stringify({ root: '', usage: null }));
  writeFileSync(join(state, 'releases', `${sha}.json.0123456789abcdef`), '{');
  const cache = new ReleaseCache({ dir: state });
  await cache.init();
  t.same(readdirSync(join(state, 'releases')), [sha]);
  t.same(readdirSync(join(state, 'release-meta')), [`${sha}.json`]);
  t.ok(await cache.cached(sha), 'the migrated release is still a finished build');
});

t.test('a failing build is remembered per archive, reported again without rebuilding', async (t) => {
  const { agent, archives, dir } = await agentWithArchives(t);
  const count = join(dir, 'builds');
  const failing = writeApp(join(dir, 'fail'), {
    Procfile: 'web: exec node -e "setInterval(() => {}, 1000)"\n',
    'bin/build': `#!/bin/sh\necho "build ran" >> ${count}\necho "compiler says no" >&2\nexit 3\n`,
  });
  const src = archives.serve('fail.tgz', await pack(failing, join(dir, 'fail.tgz')));
  const c = await api('POST', `${agent.url}/create-process`, { app: 'f', node: 'web.0', process_type: 'web', source_url: src });
  const doc = await waitForState(c.json.status, (d) => d.errors.length >= 3, 60_000);
  t.match(doc.errors[0], /build step "bin\/build" exited with code 3/);
  t.match(doc.errors.at(-1), /exited with code 3 \(remembered from .*not rebuilt/);
  const builds = () => readFileSync(count, 'utf8').trim().split('\n').length;
  t.equal(builds(), 1, 'built once');
  const events = await eventsOf(c.json.events, (es) => es.some((e) => e.type === 'build_finished' && e.remembered));
  const remembered = events.find((e) => e.type === 'build_finished' && e.remembered);
  t.match(remembered, { exit_code: 3, remembered: true });
  t.ok(remembered.log.includes('compiler says no'), 'with the failed build log');

  // A restart forces one rebuild.
  // 409 while a (remembered) attempt is under way; the process spends most of its time in the backoff.
  const r = await waitFor(async () => {
    const res = await api('POST', c.json.restart, {});
    return res.status === 409 ? null : res;
  }, 'a restart accepted');
  t.equal(r.status, 200, r.text);
  await waitFor(() => builds() === 2, 'a forced rebuild');
  await waitForState(c.json.status, (d) => d.errors.length >= doc.errors.length + 2 || d.restarts > doc.restarts + 2, 60_000);
  t.equal(builds(), 2, 'then remembered again');

  // New bytes at the source build again.
  writeFileSync(join(failing, 'bin/build'), `#!/bin/sh\necho "build ran" >> ${count}\n`, { mode: 0o755 });
  archives.serve('fail.tgz', await pack(failing, join(dir, 'fail2.tgz')));
  await waitForState(c.json.status, 'running', 60_000);
  t.equal(builds(), 3);
});

t.test('clean exits sooner than the minimum uptime are errors', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t);
  const src = await serveApp('quick', 'web: true\nlong: exec node -e "setTimeout(() => {}, 1500)"\n');
  const c = await api('POST', `${agent.url}/create-process`, { app: 'q', node: 'web.0', process_type: 'web', source_url: src });
  const doc = await waitForState(c.json.status, (d) => d.errors.length >= 2);
  t.match(doc.errors[0], /^process exited after [\d.]+ s \(code 0\)$/);
  t.match(doc.last_exit, { exit_code: 0 });
  const status = await runCli(['status', 'q.web.0'], { url: agent.url });
  t.match(status.stdout, /exited after [\d.]+ s \(code 0\)/, 'the CLI shows it');

  // Settable: a process that runs longer than the setting exits 0 without an error.
  const long = await api('POST', `${agent.url}/create-process`, { app: 'q', node: 'long.0', process_type: 'long', source_url: src });
  const after = await waitForState(long.json.status, (d) => d.restarts >= 1 && d.last_exit);
  t.same(after.errors, [], 'ran past the default 1 s');
});

t.test('--min-uptime-ms sets the minimum', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { minUptimeMs: 60_000 });
  const src = await serveApp('slow', 'web: exec node -e "setTimeout(() => {}, 300)"\n');
  const c = await api('POST', `${agent.url}/create-process`, { app: 's', node: 'web.0', process_type: 'web', source_url: src });
  const doc = await waitForState(c.json.status, (d) => d.errors.length >= 1);
  t.match(doc.errors[0], /^process exited after [\d.]+ s \(code 0\)$/);
});

t.test('pid is the app, pgid its group; kill -TERM PID ends the app and the process restarts', async (t) => {
  const { agent, archives, dir } = await agentWithArchives(t);
  const app = writeApp(join(dir, 'sig'), {
    Procfile: 'web: node app.js\n',
    'app.js': "console.log('up ' + process.pid); setInterval(() => {}, 1000);\n",
  });
  const src = archives.serve('sig.tgz', await pack(app, join(dir, 'sig.tgz')));
  const c = await api('POST', `${agent.url}/create-process`, { app: 'sig', node: 'web.0', process_type: 'web', source_url: src });
  const doc = await waitForState(c.json.status, (d) => d.state === 'running' && d.pid);
  // The same pid is the wrapper shell for a moment, until it execs the command.
  await waitFor(() => /node\0app\.js/.test(readFileSync(`/proc/${doc.pid}/cmdline`, 'utf8')), 'the shown pid to be node app.js');
  t.pass('pid is the app');
  t.type(doc.pgid, 'number');
  if (agent.supervisor.waitHelper && !agent.supervisor.spawner)
    t.not(doc.pid, doc.pgid, 'the exit helper leads the group (the spawn helper makes the app its leader)');
  else t.equal(doc.pid, doc.pgid);
  const ps = await runCli(['ps', '--json'], { url: agent.url });
  t.equal(JSON.parse(ps.stdout)[0].pid, doc.pid, 'drover ps shows it');

  process.kill(doc.pid, 'SIGTERM');
  const again = await waitForState(c.json.status, (d) => d.state === 'running' && d.restarts === 1 && d.pid && d.pid !== doc.pid);
  t.match(again.last_exit, { exit_code: null, signal: 'SIGTERM' });
  t.match(again.errors, [/killed by SIGTERM/]);
});
