// Issue 20: one bad env string must not kill the agent, no archive may freeze it, and pages in
// a browser on the same machine cannot drive it (cross-site requests, DNS rebinding).
import t from 'tap';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { agentWithArchives, api, testAgent, waitForState } from '../helpers/agent.js';
import { spawnAgent } from '../helpers/agent-process.js';
import { ArchiveServer } from '../helpers/archives.js';
import { rawTar, tgz } from '../helpers/hostile.js';
import { readProc } from '../../lib/os/proc.js';
import { findWaitHelper } from '../../lib/os/wait-helper.js';
import { waitFor } from '../helpers/wait.js';

const MiB = 1024 * 1024;

/** GETs `url` every 50 ms until stopped; returns the slowest answer seen, in ms. */
function latencyProbe(url: string) {
  let worst = 0;
  let count = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = Date.now();
      const r = await fetch(url);
      await r.arrayBuffer();
      worst = Math.max(worst, Date.now() - t0);
      count++;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { worst, count };
    },
  };
}

/** Raw bytes on a fresh connection: the status code and the body of the answer. */
function raw(port: number, bytes: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (c) => (text += c));
    socket.on('error', reject);
    socket.on('close', () =>
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf('\r\n\r\n') + 4) }),
    );
    socket.write(bytes);
  });
}

function upgrade(port: number, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        ...headers,
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode!);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('env strings past the kernel limit: 400 on request, a process error from .env, and a restart survives them', async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const serve = (name: string, bytes: Buffer) => {
    const file = join(dir, name);
    appendFileSync(file, bytes);
    return archives.serve(name, file);
  };
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-security-'));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const agent = await spawnAgent(['--backoff-initial-ms', '200', '--backoff-max-ms', '1000'], { stateDir });
  t.teardown(() => agent.proc.kill('SIGKILL'));
  const ok = { app: 'big', process_type: 'web', source_url: serve('ok.tgz', tgz([{ path: 'Procfile', body: 'web: exec sleep 600\n' }])) };

  // Request env: 131072 bytes is the kernel's cap for "NAME=value" and its NUL.
  const tooBig = await api('POST', `${agent.url}/create-process`, { ...ok, node: 'web.0', env: { BIG: 'v'.repeat(200_000) } });
  t.equal(tooBig.status, 400);
  t.equal(tooBig.json.errors[0].field, 'env');
  t.match(tooBig.json.errors[0].detail, /BIG is 200005 bytes .* over 131072 bytes/);
  const justOver = await api('POST', `${agent.url}/create-process`, { ...ok, node: 'web.0', env: { BIG: 'v'.repeat(131072 - 4) } });
  t.equal(justOver.status, 400, 'one byte over');
  const atCap = await api('POST', `${agent.url}/create-process`, { ...ok, node: 'web.0', env: { BIG: 'v'.repeat(131072 - 5) } });
  t.equal(atCap.status, 201, 'exactly at the cap is fine');
  await waitForState(atCap.json.status, 'running');

  // .env in the archive: no token needed to make one, so it must end as the process's error.
  const dotenv = serve(
    'dotenv.tgz',
    tgz([
      { path: 'Procfile', body: 'web: exec sleep 600\n' },
      { path: '.env', body: `OK=1\nBIG=${'x'.repeat(140_000)}\n` },
    ]),
  );
  const r = await api('POST', `${agent.url}/create-process`, { ...ok, node: 'web.1', source_url: dotenv });
  t.equal(r.status, 201);
  const failed = await waitForState(r.json.status, (d) => d.errors.length >= 2, 60_000);
  t.match(failed.errors[0], /environment variable BIG is 140005 bytes .* \(from the \.env env\)/);
  t.equal(failed.pid, null);
  t.equal((await api('GET', agent.url)).status, 200, 'the agent keeps answering');
  t.equal((await api('GET', atCap.json.status)).json.state, 'running', 'and its other process keeps running');

  // The state directory now holds it; add a record an older agent let through (request env over the cap).
  agent.proc.kill('SIGTERM');
  t.same(await agent.exit, { code: 0, signal: null });
  const record = {
    slug: 'big.web.2',
    app: 'big',
    node: 'web.2',
    processType: 'web',
    sourceUrl: ok.source_url,
    env: { HUGE: 'h'.repeat(200_000) },
    port: 47_123,
    createdAt: new Date().toISOString(),
  };
  appendFileSync(join(agent.stateDir, 'desired.journal'), `${JSON.stringify({ op: 'put', process: record })}\n`);
  const again = await spawnAgent(['--backoff-initial-ms', '200', '--backoff-max-ms', '1000'], { stateDir: agent.stateDir });
  t.teardown(() => again.proc.kill('SIGKILL'));
  const restored = await waitForState(`${again.url}/process-status/big.web.2`, (d) => d.errors.length >= 1, 60_000);
  t.match(restored.errors[0], /environment variable HUGE is 200006 bytes/);
  await waitForState(`${again.url}/process-status/big.web.1`, (d) => d.errors.length >= 1, 60_000);
  await waitForState(`${again.url}/process-status/big.web.0`, 'running', 60_000);
  t.equal(again.proc.exitCode, null, 'the restarted agent came up and stays up');
  again.proc.kill('SIGTERM');
  t.same(await again.exit, { code: 0, signal: null });
});

t.test('a small tar.gz of zeros after the end marker is refused while the agent keeps answering', async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const file = join(t.testdir(), 'zeros.tgz');
  appendFileSync(
    file,
    gzipSync(Buffer.concat([rawTar([{ path: 'Procfile', body: 'web: exec sleep 600\n' }]), Buffer.alloc(32 * MiB)]), { level: 9 }),
  );
  const agent = await spawnAgent(['--backoff-initial-ms', '600000', '--backoff-max-ms', '600000']);
  t.teardown(() => agent.proc.kill('SIGKILL'));
  const probe = latencyProbe(agent.url);
  const r = await api('POST', `${agent.url}/create-process`, {
    app: 'zeros',
    node: 'web.0',
    process_type: 'web',
    source_url: archives.serve('z.tgz', file),
  });
  t.equal(r.status, 201);
  const doc = await waitForState(r.json.status, (d) => d.errors.length >= 1, 60_000);
  const { worst, count } = await probe.stop();
  t.match(doc.errors[0], /after its end-of-archive marker/);
  t.ok(count > 0 && worst < 1000, `GET / answered within a second throughout (${count} requests, slowest ${worst} ms)`);
  agent.proc.kill('SIGTERM');
  await agent.exit;
});

t.test('cross-site requests are refused; clients without an Origin are not', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { allowedOrigins: ['https://dash.example.com'] });
  const port = agent.port;
  const source = await serveApp('app', 'web: exec sleep 600\n');
  let n = 0;
  const body = () => JSON.stringify({ app: 'x', node: `web.${n++}`, process_type: 'web', source_url: source });
  const post = (headers: Record<string, string>) =>
    api('POST', `${agent.url}/create-process`, body(), { 'content-type': 'text/plain', ...headers });

  const refusals: Record<string, string>[] = [
    { origin: 'http://evil.example' },
    { origin: 'null' },
    { origin: `http://localhost:${port + 1}` },
    { origin: 'https://dash.example.com.evil.example' },
    { 'sec-fetch-site': 'cross-site' },
    { origin: 'http://evil.example', 'content-type': 'application/json' },
  ];
  for (const headers of refusals) {
    const r = await post(headers);
    t.equal(r.status, 403, JSON.stringify(headers));
    t.match(r.json.errors[0].detail, /cross-(origin|site) request refused/);
  }
  const del = await api('POST', `${agent.url}/delete-process/x.web.0`, '{}', { origin: 'http://evil.example' });
  t.equal(del.status, 403, 'deletes too');
  t.equal(agent.supervisor.list().length, 0, 'nothing was created');

  t.equal((await post({})).status, 201, 'no Origin (curl, scripts): accepted');
  t.equal((await post({ origin: `http://127.0.0.1:${port}` })).status, 201, 'the agent’s own origin');
  t.equal((await post({ origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' })).status, 201);
  t.equal((await post({ origin: 'https://dash.example.com' })).status, 201, 'an --allowed-origins origin');
  t.equal(
    (await api('GET', `${agent.url}/list-processes`, undefined, { origin: 'http://evil.example' })).status,
    200,
    'reads are left to CORS',
  );

  // WebSockets are not bound by the same-origin policy: the upgrade checks the Origin itself.
  t.equal(await upgrade(port, '/attach-console/x.web.0', { origin: 'http://evil.example' }), 403);
  t.equal(await upgrade(port, '/inspect', { origin: 'http://evil.example' }), 403);
  t.equal(await upgrade(port, '/inspect', { origin: `http://127.0.0.1:${port}` }), 101);
  t.equal(await upgrade(port, '/inspect', {}), 101);
});

t.test('DNS rebinding: without a token only Hosts naming the agent are served', async (t) => {
  const agent = await testAgent({ allowedHosts: ['drover.lan', '*.agents.example'] });
  t.teardown(() => agent.close());
  const port = agent.port;
  const get = (host: string, path = '/list-processes') => raw(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);

  for (const host of [
    `rebind.evil.example:${port}`,
    'evil.example',
    `127.0.0.1.evil.example:${port}`,
    `localhost.evil.example:${port}`,
    'drover.lan.evil',
  ]) {
    const r = await get(host);
    t.equal(r.status, 421, host);
    t.match(JSON.parse(r.body).errors[0].detail, /Host header does not name this agent/);
    t.notOk(r.body.includes('evil'), 'the refused host is not echoed');
  }
  const root = await get(`rebind.evil.example:${port}`, '/');
  t.equal(root.status, 421, 'nor are links built from it');
  for (const host of [
    `127.0.0.1:${port}`,
    `localhost:${port}`,
    `[::1]:${port}`,
    `app.localhost:${port}`,
    `drover.lan:${port}`,
    'a.agents.example',
  ]) {
    t.equal((await get(host)).status, 200, host);
  }
  const links = JSON.parse((await get(`localhost:${port}`, '/')).body);
  t.equal(links.list, `http://localhost:${port}/list-processes`);
  t.equal(await upgrade(port, '/inspect', { host: `rebind.evil.example:${port}` }), 421, 'WebSocket upgrades too');

  // With a token a rebound page cannot authenticate: any Host is served to a caller holding it.
  const withToken = await testAgent({ token: 'rebind-token-0123456789' });
  t.teardown(() => withToken.close());
  const r = await raw(
    withToken.port,
    `GET /list-processes HTTP/1.1\r\nHost: agent.example.com\r\nAuthorization: Bearer rebind-token-0123456789\r\nConnection: close\r\n\r\n`,
  );
  t.equal(r.status, 200);
});

t.test('CONNECT gets a 405 JSON answer', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const r = await raw(agent.port, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
  t.equal(r.status, 405);
  t.match(JSON.parse(r.body).errors[0], { status: 405, detail: /CONNECT/ });
});

t.test(
  'without cgroups, a setsid double-forked daemon goes with its process',
  { skip: findWaitHelper() ? false : 'the exit helper is not built' },
  async (t) => {
    const { agent, serveApp, dir } = await agentWithArchives(t, { cgroups: false });
    const pidFile = join(dir, 'daemon.pid');
    // The daemon leaves the process group (setsid) and its parent exits: a group kill misses it.
    const source = await serveApp('daemon', `web: setsid sh -c 'sleep 600 & echo $! > ${pidFile}' ; exec sleep 600\n`);
    const r = await api('POST', `${agent.url}/create-process`, { app: 'd', node: 'web.0', process_type: 'web', source_url: source });
    t.equal(r.status, 201);
    await waitForState(r.json.status, 'running');
    const daemon = Number(await waitFor(() => readFileSync(pidFile, 'utf8').trim(), 'the daemon to start'));
    const before = readProc(daemon);
    t.ok(before && before.state !== 'Z', 'the daemon runs');
    t.not(before!.pgid, r.json.pid, 'outside the process group');
    t.equal((await api('POST', r.json.delete, {})).status, 200);
    const after = readProc(daemon);
    t.ok(after === null || after.starttime !== before!.starttime || after.state === 'Z', 'gone once the delete answered');
  },
);
