import t from 'tap';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { extract as tarExtract } from 'tar';
import { pack, writeApp } from '../helpers/archives.js';
import { api, testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

// A scraper-like app: a build step that keeps a counter in $CACHE_DIR, then a scraper that
// fetches pages through the run's proxy (as HTTP clients that honour http_proxy do), prints on
// stdout and stderr, and leaves a data.sqlite, a folder, a link out and a FIFO behind.
const SCRAPER = `
const http = require('http');
const fs = require('fs');
const proxy = new URL(process.env.http_proxy);
function get(url) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const r = http.get({ host: proxy.hostname, port: proxy.port, path: url, headers: { host: u.host } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    r.on('error', reject);
  });
}
(async () => {
  for (const p of ['/page/1', '/page/2']) {
    const r = await get(process.env.TARGET + p);
    console.log('scraped ' + p + ' ' + r.status + ' ' + r.body);
  }
  console.error('a line on stderr');
  fs.writeFileSync('data.sqlite', 'SQLite format 3\\u0000 two rows');
  fs.mkdirSync('out/sub', { recursive: true });
  fs.writeFileSync('out/a.txt', 'A');
  fs.writeFileSync('out/sub/b.txt', 'B');
  fs.symlinkSync('/etc/hostname', 'link-out');
  require('child_process').execFileSync('mkfifo', ['fifo']);
})();
`;

const BUILD = `#!/bin/sh
n=$(cat "$CACHE_DIR/count" 2>/dev/null || echo 0)
echo "cache count $n"
echo $((n + 1)) > "$CACHE_DIR/count"
echo "building done"
`;

type T = { teardown(fn: () => unknown): void; testdir(): string };

async function pages(t: T): Promise<string> {
  const server: Server = createServer((req, res) => res.end(`body of ${req.url}`));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

async function scraperArchive(t: T, files: Record<string, string> = {}): Promise<Buffer> {
  const dir = t.testdir();
  writeApp(join(dir, 'app'), { Procfile: 'run: node scraper.js\n', 'scraper.js': SCRAPER, 'bin/build': BUILD, ...files });
  return readFileSync(await pack(join(dir, 'app'), join(dir, 'app.tgz')));
}

async function put(url: string, body: Buffer | string, type = 'application/gzip') {
  const res = await fetch(url, {
    method: 'PUT',
    body: typeof body === 'string' ? body : new Uint8Array(body),
    headers: { 'content-type': type },
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

/** Reads the events stream to its end (or until `stopAfter` events, or one `until` matches, then cuts the connection). */
async function readEvents(url: string, stopAfter = Infinity, until?: (e: any) => boolean): Promise<any[]> {
  const ac = new AbortController();
  const res = await fetch(url, { signal: ac.signal });
  if (res.status !== 200) throw new Error(`events: ${res.status} ${await res.text()}`);
  const out: any[] = [];
  let buf = '';
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return out;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      out.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
      if (out.length >= stopAfter || until?.(out.at(-1))) {
        ac.abort();
        return out;
      }
    }
  }
}

async function newRun(base: string, app?: Buffer) {
  const created = await api('POST', `${base}/runs`, {});
  if (created.status !== 201) throw new Error(`create: ${created.status} ${created.text}`);
  const self = created.json.links.self as string;
  if (app) {
    const up = await put(`${self}/app`, app);
    if (up.status !== 200) throw new Error(`app: ${up.status} ${JSON.stringify(up.json)}`);
  }
  return { id: created.json.id as string, self, created };
}

t.test('a scraper runs start to last: events, exit data, output, files, network', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const target = await pages(t);
  const app = await scraperArchive(t);

  const index = await api('GET', agent.url);
  t.equal(index.json.runs, `${agent.url}/runs`);

  const { id, self, created } = await newRun(agent.url);
  t.match(id, /^[0-9a-f]{32}$/, '128-bit id');
  t.equal(created.headers.get('location'), self);
  const early = await api('POST', `${self}/start`, {});
  t.equal(early.status, 400);
  t.equal(early.json.error, 'app needs to be uploaded before starting a run');

  const bad = await put(`${self}/app`, 'not an archive at all');
  t.equal(bad.status, 400, 'a bad archive is refused');
  t.equal((await put(`${self}/app`, app)).status, 200);
  const back = await fetch(`${self}/app`);
  t.same(Buffer.from(await back.arrayBuffer()), app, 'GET app gives it back');

  const started = await api('POST', `${self}/start`, {
    output: 'data.sqlite',
    env: [{ name: 'TARGET', value: target }],
    callback: { url: 'http://127.0.0.1:1/callback' },
  });
  t.equal(started.status, 200, started.text);
  t.equal((await api('POST', `${self}/start`, {})).status, 409, 'starting twice');

  const events = await readEvents(`${self}/events`);
  const kinds = events.map((e) => (e.type === 'start' || e.type === 'finish' ? `${e.type}:${e.data.stage}` : e.type));
  t.equal(kinds[0], 'first');
  t.equal(kinds.at(-1), 'last');
  // Callback deliveries are events too, placed wherever their POST happened to land.
  const order = kinds.filter((k) => k !== 'log' && k !== 'network' && k !== 'callback_attempt');
  t.same(order, ['first', 'queued', 'start:build', 'finish:build', 'start:execute', 'finish:execute', 'last']);
  for (const e of events) {
    t.equal(e.run_id, id);
    t.type(e.id, 'string');
    t.ok(!Number.isNaN(Date.parse(e.time)));
  }
  const ids = events.map((e) => Number(e.id));
  t.same(
    ids,
    [...ids].sort((a, b) => a - b),
    'ids increase',
  );
  const logs = events.filter((e) => e.type === 'log');
  t.ok(logs.some((e) => e.data.stage === 'build' && e.data.text === 'cache count 0'));
  t.ok(logs.some((e) => e.data.stage === 'execute' && e.data.stream === 'stdout' && e.data.text === 'scraped /page/1 200 body of /page/1'));
  t.ok(logs.some((e) => e.data.stage === 'execute' && e.data.stream === 'stderr' && e.data.text === 'a line on stderr'));
  const net = events.filter((e) => e.type === 'network');
  t.same(
    net.map((e) => [e.data.stage, e.data.method, e.data.url, e.data.status]),
    [
      ['execute', 'GET', `${target}/page/1`, 200],
      ['execute', 'GET', `${target}/page/2`, 200],
    ],
  );

  const exit = await api('GET', `${self}/exit-data`);
  t.equal(exit.json.finished, true);
  t.equal(exit.json.build.exit_code, 0);
  t.equal(exit.json.execute.exit_code, 0);
  t.equal(exit.json.build.usage.network_in, 0);
  t.ok(exit.json.execute.usage.network_in > 30, 'bytes in counted for execute');
  t.ok(exit.json.execute.usage.network_out > 0);
  t.hasStrict(Object.keys(exit.json.execute.usage).sort(), ['max_rss', 'network_in', 'network_out', 'stime', 'utime']);

  const output = await fetch(`${self}/output`);
  t.equal(output.status, 200);
  t.equal(await output.text(), 'SQLite format 3\u0000 two rows');
  t.equal(await (await fetch(`${self}/files/out/a.txt`)).text(), 'A');

  const folder = await fetch(`${self}/files/out?format=tar.gz`);
  t.equal(folder.status, 200);
  const x = mkdtempSync(join(tmpdir(), 'drover-runs-'));
  t.teardown(() => void import('node:fs').then((fs) => fs.rmSync(x, { recursive: true, force: true })));
  writeFileSync(join(x, 'out.tgz'), Buffer.from(await folder.arrayBuffer()));
  await tarExtract({ file: join(x, 'out.tgz'), cwd: x });
  t.equal(readFileSync(join(x, 'sub', 'b.txt'), 'utf8'), 'B', 'the folder as tar.gz');

  for (const [path, why] of [
    ['..%2F..%2Fetc%2Fpasswd', '..'],
    ['%2Fetc%2Fpasswd', 'relative'],
    ['link-out', 'link out'],
    ['fifo', 'not a regular file'],
  ]) {
    const r = await api('GET', `${self}/files/${path}`);
    t.equal(r.status, 400, `${path} refused`);
    t.match(r.json.errors[0].detail, why);
  }
  t.equal((await api('GET', `${self}/files/out`)).status, 400, 'a folder needs format=tar.gz');
  t.equal((await api('GET', `${self}/files/nothing-here`)).status, 404);

  const listed = await api('GET', `${agent.url}/runs`);
  t.same(
    listed.json.runs.map((r: any) => [r.id, r.state]),
    [[id, 'finished']],
  );
  t.same((await api('GET', `${agent.url}/list-processes`)).json.processes, [], 'runs are not listed as processes');

  const del = await api('DELETE', self);
  t.equal(del.status, 200);
  t.notOk(existsSync(join(agent.stateDir, 'runs', id)), 'its directory is gone');
  t.equal((await api('GET', `${self}/output`)).status, 404);
  const after = await readEvents(`${self}/events`);
  t.equal(after.length, events.length, 'its events stay readable after finalise');
  t.equal((await api('GET', `${agent.url}/runs/${'0'.repeat(32)}/exit-data`)).status, 404, 'unknown run');
});

t.test('a reader cut mid-stream resumes with last_id and gets every event exactly once', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const target = await pages(t);
  const { self } = await newRun(agent.url, await scraperArchive(t));
  t.equal((await api('POST', `${self}/start`, { env: { TARGET: target }, output: ['data.sqlite'] })).status, 200);
  const first = await readEvents(`${self}/events`, 3);
  t.equal(first.length, 3);
  const rest = await readEvents(`${self}/events?last_id=${first.at(-1).id}`);
  const all = await readEvents(`${self}/events`);
  t.same([...first, ...rest], all, 'no gap, no duplicate');
  t.equal(all.at(-1).type, 'last');
  t.same(await readEvents(`${self}/events?last_id=${all.at(-1).id}`), [], 'nothing after last');
});

t.test('the cache round trip, and a failed build skips execute', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const target = await pages(t);
  const app = await scraperArchive(t);
  const one = await newRun(agent.url, app);
  t.equal((await api('GET', `${one.self}/cache`)).status, 404, 'no cache yet');
  await api('POST', `${one.self}/start`, { env: { TARGET: target } });
  await readEvents(`${one.self}/events`);
  const cache = Buffer.from(await (await fetch(`${one.self}/cache`)).arrayBuffer());
  t.ok(cache.length > 0, 'the build left a cache');

  const two = await newRun(agent.url, app);
  t.equal((await put(`${two.self}/cache`, cache)).status, 200);
  await api('POST', `${two.self}/start`, { env: { TARGET: target } });
  const events = await readEvents(`${two.self}/events`);
  t.ok(
    events.some((e) => e.type === 'log' && e.data.text === 'cache count 1'),
    'the second build saw the first one’s cache',
  );

  const failing = await newRun(agent.url, await scraperArchive(t, { 'bin/build': '#!/bin/sh\necho broken; exit 3\n' }));
  await api('POST', `${failing.self}/start`, {});
  const fe = await readEvents(`${failing.self}/events`);
  t.same(
    fe.filter((e) => e.type !== 'log').map((e) => e.type + (e.data.stage ? ':' + e.data.stage : '')),
    ['first', 'queued', 'start:build', 'finish:build', 'last'],
  );
  const exit = await api('GET', `${failing.self}/exit-data`);
  t.equal(exit.json.build.exit_code, 3);
  t.notOk('execute' in exit.json);
  t.equal(exit.json.finished, true);
});

t.test('stop, max_run_time, and the memory limit', async (t) => {
  const agent = await testAgent({ stopGraceMs: 2000 });
  t.teardown(() => agent.close());
  const app = await scraperArchive(t);

  const s = await newRun(agent.url, app);
  await api('POST', `${s.self}/start`, { command: 'echo sleeping; exec sleep 600' });
  await readEvents(`${s.self}/events`, Infinity, (e) => e.type === 'log' && e.data.text === 'sleeping');
  const stopped = await api('POST', `${s.self}/stop`, {});
  t.equal(stopped.status, 200);
  t.equal(stopped.json.was_running, true);
  const se = await readEvents(`${s.self}/events`);
  const fin = se.find((e) => e.type === 'finish' && e.data.stage === 'execute');
  t.equal(fin.data.exit_data.stopped, true);
  t.equal(fin.data.exit_data.signal, 'SIGTERM');
  t.equal((await api('POST', `${s.self}/stop`, {})).json.was_running, false, 'a finished run was not running');

  const m = await newRun(agent.url, app);
  await api('POST', `${m.self}/start`, { command: 'exec sleep 600', max_run_time: 1 });
  const me = await readEvents(`${m.self}/events`);
  const mf = me.find((e) => e.type === 'finish' && e.data.stage === 'execute');
  t.equal(mf.data.exit_data.timed_out, true);
  t.match(mf.data.exit_data.error, /max_run_time/);

  t.test('memory limit', { skip: agent.supervisor.cgroupMemoryLimits ? false : 'no cgroup memory controller here' }, async (t) => {
    const r = await newRun(agent.url, app);
    const hog = `node -e "const a=[]; for(;;) a.push(Buffer.alloc(8<<20, 1))"`;
    await api('POST', `${r.self}/start`, { command: hog, memory: 64 * 1024 * 1024 });
    const re = await readEvents(`${r.self}/events`);
    const rf = re.find((e) => e.type === 'finish' && e.data.stage === 'execute');
    t.equal(rf.data.exit_data.oom_killed, true, JSON.stringify(rf.data.exit_data));
    t.match(rf.data.exit_data.error, /out of memory/);
  });
});

t.test('finalised by TTL after finishing, and when never started', async (t) => {
  // The unstarted TTL leaves room to upload and start `r` on a loaded machine.
  const agent = await testAgent({ runTtlMs: 300, runUnstartedTtlMs: 3000 });
  t.teardown(() => agent.close());
  const idle = await newRun(agent.url);
  const r = await newRun(agent.url, await scraperArchive(t));
  await api('POST', `${r.self}/start`, { command: 'echo hi' });
  await readEvents(`${r.self}/events`);
  for (const run of [idle, r]) {
    await waitFor(async () => (await api('GET', run.self)).json.state === 'finalised', `run ${run.id} to be finalised`);
    await waitFor(() => !existsSync(join(agent.stateDir, 'runs', run.id)), 'its directory to go');
    t.pass(`run ${run.id} finalised by its TTL`);
  }
});

t.test('bad start requests name the field', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const { self } = await newRun(agent.url, await scraperArchive(t));
  for (const [body, field] of [
    [{ max_run_time: 10 ** 9 }, 'max_run_time'],
    [{ memory: 'lots' }, 'memory'],
    [{ output: '../x' }, 'output'],
    [{ env: [{ value: 'x' }] }, 'env'],
    [{ process_type: 'nope' }, 'process_type'],
    [{ surprise: 1 }, 'surprise'],
  ] as const) {
    const res = await api('POST', `${self}/start`, body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.equal(res.json.errors[0].field, field, res.text);
  }
  t.equal((await api('GET', `${agent.url}/runs/nope/events`)).status, 404);
});

t.test('the forward proxy tunnels CONNECT (no interception) and reports host:port and bytes', async (t) => {
  const { startForwardProxy } = await import('../../lib/os/proxy.js');
  const { createServer: tcpServer, connect } = await import('node:net');
  const echo = tcpServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const port = (echo.address() as { port: number }).port;
  const seen: any[] = [];
  const proxy = await startForwardProxy((e) => seen.push(e));
  t.teardown(() => proxy.close());
  const sock = connect(Number(new URL(proxy.url).port), '127.0.0.1');
  sock.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n\r\n`);
  let got = '';
  sock.on('data', (c) => {
    got += c;
    if (got.includes('\r\n\r\n') && !got.includes('hello')) sock.write('hello');
    if (got.endsWith('hello')) sock.end();
  });
  await waitFor(() => seen.length === 1, 'the tunnel to be reported');
  t.match(got, /^HTTP\/1\.1 200/);
  t.same(seen[0], { method: 'CONNECT', url: `127.0.0.1:${port}`, status: 200, bytesIn: 5, bytesOut: 5 });
});
