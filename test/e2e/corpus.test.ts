// The bad-input corpus: well over 100 hostile or broken inputs thrown at one agent, running as
// its own OS process with a token. Each must get a 4xx JSON error naming the problem, or show
// the problem in its process's `errors`. After all of them: the agent is still up, nothing was
// written outside its state directory, and a bystander process started before the corpus is
// still running with an unbroken stream of output.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { WebSocket } from 'ws';
import { TOKEN_SUBPROTOCOL_PREFIX } from '../../lib/http/auth.js';
import { readProc } from '../../lib/os/proc.js';
import { ArchiveServer } from '../helpers/archives.js';
import { api, attach } from '../helpers/agent.js';
import { descendants, spawnAgent } from '../helpers/agent-process.js';
import { centralHeader, paxHeader, rawTar, renameInZip, tgz, zipOf, type TarEntry } from '../helpers/hostile.js';
import { waitFor } from '../helpers/wait.js';

const TOKEN = 'corpus-token-0123456789abcdef';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const MiB = 1024 * 1024;
const LIMITS = { unpackMaxBytes: 24 * MiB, unpackMaxEntries: 1000, downloadMaxBytes: 2 * MiB, timeoutMs: 5000 };

interface Outcome {
  status: number;
  type: string | null;
  body: any;
}

/** Sends raw bytes on a fresh connection and parses the answer (status line, JSON body). */
function rawRequest(port: number, bytes: string | Buffer): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const head = text.slice(0, text.indexOf('\r\n\r\n'));
      let body = text.slice(text.indexOf('\r\n\r\n') + 4);
      if (/transfer-encoding: chunked/i.test(head)) {
        let decoded = '';
        for (let rest = body; ;) {
          const size = parseInt(rest, 16);
          if (!(size > 0)) break;
          const start = rest.indexOf('\r\n') + 2;
          decoded += rest.slice(start, start + size);
          rest = rest.slice(start + size + 2);
        }
        body = decoded;
      }
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
        type: /content-type: ([^\r]*)/i.exec(head)?.[1] ?? null,
        body: json,
      });
    });
    socket.end(bytes);
  });
}

async function viaFetch(url: string, init: RequestInit): Promise<Outcome> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, type: res.headers.get('content-type'), body };
}

/** An upgrade request with full control over its headers; the refusal is parsed like any answer. */
function upgradeRequest(port: number, path: string, headers: Record<string, string>, method = 'GET'): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      method,
      headers: { connection: 'Upgrade', upgrade: 'websocket', ...headers },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode!, type: null, body: undefined });
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'] ?? null, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Every path under `root`, depth first, without following symlinks. */
function walk(root: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(root)) {
    const p = join(root, name);
    out.push(p);
    const st = lstatSync(p);
    if (st.isDirectory()) out.push(...walk(p));
  }
  return out;
}

t.test('the bad-input corpus', async (t) => {
  const parent = mkdtempSync(join(tmpdir(), 'drover-corpus-'));
  const stateDir = join(parent, 'state');
  mkdirSync(stateDir);
  t.teardown(() => rmSync(parent, { recursive: true, force: true }));
  const canary = `drover-canary-${randomBytes(6).toString('hex')}`;
  const fixtures = t.testdir();

  // Archives are served over HTTP, like real releases; a second server misbehaves on purpose.
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const hostile = http.createServer((req, res) => {
    switch (req.url) {
      case '/500':
        res.writeHead(500);
        return res.end('oops');
      case '/loop':
        res.writeHead(302, { location: '/loop' });
        return res.end();
      case '/to-file':
        res.writeHead(302, { location: 'file:///etc/passwd' });
        return res.end();
      case '/to-other-host':
        res.writeHead(301, { location: `http://localhost:${(hostile.address() as { port: number }).port}/x.tgz` });
        return res.end();
      case '/huge':
        res.writeHead(200, { 'content-length': 3 * MiB });
        return res.end(Buffer.alloc(3 * MiB));
      case '/huge-chunked': {
        res.writeHead(200);
        let sent = 0;
        const pump = (): void => {
          while (sent < 3 * MiB) {
            sent += 64 * 1024;
            if (!res.write(Buffer.alloc(64 * 1024))) return void res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      case '/hang':
        return; // never answers
      case '/stall':
        res.writeHead(200, { 'content-length': 100_000 });
        return void res.write(Buffer.alloc(1000)); // and then nothing
      case '/short':
        res.writeHead(200, { 'content-length': 10_000 });
        res.write('only this');
        return res.socket?.destroy();
      default:
        res.writeHead(404);
        res.end();
    }
  });
  await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    hostile.closeAllConnections();
    hostile.close();
  });
  const hostileUrl = `http://127.0.0.1:${(hostile.address() as { port: number }).port}`;
  const closed = http.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const refusedUrl = `http://127.0.0.1:${(closed.address() as { port: number }).port}/a.tgz`;
  await new Promise<void>((r) => closed.close(() => r()));

  const agent = await spawnAgent(
    [
      '--source-hosts',
      '127.0.0.1',
      '--unpack-max-bytes',
      String(LIMITS.unpackMaxBytes),
      '--unpack-max-entries',
      String(LIMITS.unpackMaxEntries),
      '--download-max-bytes',
      String(LIMITS.downloadMaxBytes),
      '--download-connect-timeout-ms',
      String(LIMITS.timeoutMs),
      '--download-read-timeout-ms',
      String(LIMITS.timeoutMs),
      // Failing processes retry at once, then wait: they must not spin through the corpus.
      '--backoff-initial-ms',
      '600000',
      '--backoff-max-ms',
      '600000',
      '--stop-grace-ms',
      '2000',
    ],
    {
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DROVER_'))), DROVER_TOKEN: TOKEN },
      stateDir,
    },
  );
  t.teardown(() => agent.proc.kill('SIGKILL'));
  const port = Number(new URL(agent.url).port);
  const base = agent.url;

  let served = 0;
  const serve = (bytes: Buffer | string): string => {
    const name = `a${served++}.bin`;
    writeFileSync(join(fixtures, name), bytes);
    return archives.serve(name, join(fixtures, name));
  };
  let nodes = 0;
  const create = (sourceUrl: string, extra: Record<string, unknown> = {}) =>
    api(
      'POST',
      `${base}/create-process`,
      { app: 'corpus', node: `web.${nodes++}`, process_type: 'web', source_url: sourceUrl, ...extra },
      AUTH,
    );

  // ---- the bystander -------------------------------------------------------------------
  const tickApp = tgz([{ path: 'Procfile', body: 'web: i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.05; done\n' }]);
  const by = await api(
    'POST',
    `${base}/create-process`,
    { app: 'bystander', node: 'web.0', process_type: 'web', source_url: serve(tickApp) },
    AUTH,
  );
  t.equal(by.status, 201);
  const byStream = await attach(`${by.json.attach}?token=${TOKEN}`);
  await waitFor(() => byStream.lines.length >= 3, 'the bystander ticking');
  const byStatus = async () => (await api('GET', by.json.status, undefined, AUTH)).json;
  const byBefore = await byStatus();
  t.equal(byBefore.state, 'running');

  // ---- the agent keeps answering throughout: GET / every 100 ms, the slowest answer kept ----
  let watching = true;
  let slowest = 0;
  let probes = 0;
  const watcher = (async () => {
    while (watching) {
      const t0 = Date.now();
      const r = await fetch(base, { headers: AUTH });
      await r.arrayBuffer();
      slowest = Math.max(slowest, Date.now() - t0);
      probes++;
      await new Promise((r) => setTimeout(r, 100));
    }
  })();

  let count = 0;
  const expectError = async (t: Test, name: string, outcome: Outcome, status: number, detail: RegExp, field?: string) => {
    count++;
    t.equal(outcome.status, status, `${name}: status`);
    t.match(outcome.type ?? '', /^application\/json/, `${name}: JSON`);
    t.equal(outcome.body?.errors?.[0]?.status, status, `${name}: error status`);
    t.match(outcome.body?.errors?.[0]?.detail, detail, `${name}: detail`);
    if (field !== undefined) t.equal(outcome.body.errors[0].field, field, `${name}: field`);
  };

  // ---- HTTP requests -------------------------------------------------------------------
  const ok = { app: 'corpus', node: 'ok.0', process_type: 'web', source_url: `${hostileUrl}/404.tgz` };
  const post = (body: unknown, headers: Record<string, string> = {}) =>
    viaFetch(`${base}/create-process`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...AUTH, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  await t.test('HTTP: authentication', async (t) => {
    await expectError(t, 'no token', await viaFetch(base, {}), 401, /authentication required/);
    await expectError(
      t,
      'wrong token',
      await viaFetch(base, { headers: { authorization: 'Bearer wrong-token-0123456789' } }),
      401,
      /invalid token/,
    );
    await expectError(
      t,
      'token prefix',
      await viaFetch(base, { headers: { authorization: `Bearer ${TOKEN.slice(0, 10)}` } }),
      401,
      /invalid token/,
    );
    await expectError(
      t,
      'Basic scheme',
      await viaFetch(base, { headers: { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` } }),
      401,
      /must be "Bearer <token>"/,
    );
    await expectError(t, 'empty bearer', await viaFetch(base, { headers: { authorization: 'Bearer ' } }), 401, /must be "Bearer <token>"/);
    await expectError(
      t,
      'token in the query of a POST',
      await viaFetch(`${base}/create-process?token=${TOKEN}`, { method: 'POST', body: JSON.stringify(ok) }),
      401,
      /only accepted on WebSocket and event-stream/,
    );
    await expectError(
      t,
      'no token on create',
      await viaFetch(`${base}/create-process`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(ok),
      }),
      401,
      /authentication required/,
    );
    await expectError(
      t,
      'no token on delete',
      await viaFetch(`${base}/delete-process/bystander.web.0`, { method: 'POST', body: '{}' }),
      401,
      /authentication required/,
    );
    await expectError(
      t,
      'non-latin1 token',
      await rawRequest(
        port,
        Buffer.concat([
          Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer '),
          Buffer.from('tökén-ünicode-0123456789', 'utf8'),
          Buffer.from('\r\n\r\n'),
        ]),
      ),
      401,
      /invalid token/,
    );
  });

  await t.test('HTTP: bodies', async (t) => {
    await expectError(t, 'truncated JSON', await post('{"app": '), 400, /not valid JSON/);
    await expectError(t, 'single quotes', await post("{'app': 'x'}"), 400, /not valid JSON/);
    await expectError(t, 'NaN', await post('NaN'), 400, /not valid JSON/);
    await expectError(t, 'trailing garbage', await post('{"app":"x"} {}'), 400, /not valid JSON/);
    await expectError(t, 'empty body', await post(''), 400, /must be a JSON object/);
    await expectError(t, 'whitespace body', await post(' \n\t '), 400, /must be a JSON object/);
    await expectError(t, 'array body', await post([ok]), 400, /must be a JSON object/);
    await expectError(t, 'string body', await post('"create"'), 400, /must be a JSON object/);
    await expectError(t, 'number body', await post('42'), 400, /must be a JSON object/);
    await expectError(t, 'null body', await post('null'), 400, /must be a JSON object/);
    await expectError(
      t,
      'deeply nested',
      await post('['.repeat(200_000) + ']'.repeat(200_000)),
      400,
      /must be a JSON object|not valid JSON/,
    );
    await expectError(t, 'over 1 MiB', await post(JSON.stringify({ ...ok, pad: 'x'.repeat(MiB) })), 413, /larger than 1048576 bytes/);
    const chunk = 'x'.repeat(MiB + 10);
    await expectError(
      t,
      'over 1 MiB, chunked, no length',
      await rawRequest(
        port,
        `POST /create-process HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
      ),
      413,
      /larger than 1048576 bytes/,
    );
    // A client that leaves in the middle of its body: nothing is created, and the agent answers on.
    // The client stops sending (FIN) with most of the body missing; the agent closes its side.
    await new Promise<void>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.end(
          `POST /create-process HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"app": "cut", "node": "x.0", `,
        );
      });
      sock.resume();
      sock.on('error', () => {}); // a reset instead of a clean close is the agent's choice too
      sock.on('close', () => resolve());
    });
    t.equal((await api('GET', `${base}/`, undefined, AUTH)).status, 200, 'alive after a body cut short');
    t.equal((await api('GET', `${base}/process-status/cut.x.0`, undefined, AUTH)).status, 404, 'and nothing was created');
    await expectError(
      t,
      'form body',
      await post('app=x', { 'content-type': 'application/x-www-form-urlencoded' }),
      415,
      /must be application\/json, got application\/x-www-form-urlencoded/,
    );
    await expectError(
      t,
      'multipart body',
      await post('--b\r\n', { 'content-type': 'multipart/form-data; boundary=b' }),
      415,
      /got multipart\/form-data/,
    );
    // Like the smartmob-agent reference, any other type is read as JSON: these do not parse.
    await expectError(t, 'xml body', await post('<app/>', { 'content-type': 'application/xml' }), 400, /not valid JSON/);
    await expectError(t, 'html body', await post('<p>', { 'content-type': 'text/html' }), 400, /not valid JSON/);
  });

  await t.test('HTTP: fields', async (t) => {
    const field = async (name: string, patch: Record<string, unknown>, f: string, detail: RegExp) =>
      expectError(t, name, await post({ ...ok, ...patch }), 400, detail, f);
    const without = (f: string) => Object.fromEntries(Object.entries(ok).filter(([k]) => k !== f));
    for (const f of ['app', 'node', 'process_type', 'source_url'])
      await expectError(t, `missing ${f}`, await post(without(f)), 400, /is required/, f);
    await field('app number', { app: 7 }, 'app', /must be a string, got number/);
    await field('node object', { node: { a: 1 } }, 'node', /must be a string, got object/);
    await field('process_type array', { process_type: ['web'] }, 'process_type', /got array/);
    await field('source_url bool', { source_url: true }, 'source_url', /got boolean/);
    await field('empty app', { app: '' }, 'app', /must not be empty/);
    for (const [name, app] of [
      ['app ..', '../etc'],
      ['app slash', 'a/b'],
      ['app NUL', 'a\u0000b'],
      ['app newline', 'a\nb'],
      ['app dotfile', '.hidden'],
      ['app dash', '-rf'],
      ['app 65 chars', 'a'.repeat(65)],
      ['app unicode', 'ünï'],
      ['app a..b', 'a..b'],
      ['app space', 'a b'],
      ['app backslash', 'a\\b'],
    ]) {
      await field(name, { app }, 'app', /must be 1-64 letters/);
    }
    for (const [name, node] of [
      ['node ..', '..'],
      ['node slash', 'web/0'],
      ['node percent', 'web%2F0'],
      ['node tab', 'web\t0'],
    ])
      await field(name, { node }, 'node', /must be 1-64 letters/);
    for (const [name, type] of [
      ['type with dot', 'web.1'],
      ['type dash', '-web'],
      ['type 64 chars', 'w'.repeat(64)],
      ['type colon', 'web:'],
      ['type unicode', 'wéb'],
    ]) {
      await field(name, { process_type: type }, 'process_type', /must be 1-63 letters/);
    }
    await field('env array', { env: ['A=1'] }, 'env', /must be an object/);
    await field('env string', { env: 'A=1' }, 'env', /must be an object/);
    await field('env number value', { env: { A: 1 } }, 'env', /value of A must be a string, got number/);
    await field('env null value', { env: { A: null } }, 'env', /value of A must be a string, got null/);
    await field('env object value', { env: { A: { b: 1 } } }, 'env', /value of A must be a string, got object/);
    for (const name of ['1A', 'A-B', 'A=B', '', 'A B', 'Ä'])
      await field(`env name ${JSON.stringify(name)}`, { env: { [name]: 'x' } }, 'env', /is not a valid environment variable name/);
    await field('env NUL value', { env: { A: 'x\u0000y' } }, 'env', /must not contain NUL/);
    await field(
      'env too many',
      { env: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`V${i}`, ''])) },
      'env',
      /more than 1000 variables/,
    );
    await field(
      'env too big',
      { env: { A: 'x'.repeat(130_000), B: 'y'.repeat(130_000), C: 'z'.repeat(10_000) } },
      'env',
      /larger than 262144 bytes/,
    );
    // Linux refuses any one "NAME=value" over 131072 bytes: refused here, never a crash at spawn.
    await field(
      'env string over the kernel limit',
      { env: { OK: '1', BIG: 'v'.repeat(200_000) } },
      'env',
      /BIG is 200005 bytes as "BIG=value"; Linux refuses any environment string over 131072 bytes/,
    );
    for (const [name, url, detail] of [
      ['ftp url', 'ftp://127.0.0.1/a.tgz', /must use http or https, got "ftp"/],
      ['file url', 'file:///etc/passwd', /must use http or https, got "file"/],
      ['javascript url', 'javascript:alert(1)', /must use http or https/],
      ['data url', 'data:application/gzip;base64,H4sI', /must use http or https/],
      ['relative url', '/a.tgz', /not a valid absolute URL/],
      ['broken url', 'http://[::1', /not a valid absolute URL/],
      ['huge url', `http://127.0.0.1/${'a'.repeat(9000)}`, /longer than 8192 characters/],
      ['host not allowed', 'http://localhost/a.tgz', /host "localhost" is not in the allowed source hosts/],
      [
        'host not allowed (userinfo trick)',
        'http://127.0.0.1@evil.example/a.tgz',
        /host "evil.example" is not in the allowed source hosts/,
      ],
    ] as const) {
      await field(name, { source_url: url }, 'source_url', detail);
    }
    await expectError(
      t,
      'duplicate slug',
      await post({ ...ok, app: 'bystander', node: 'web.0' }),
      409,
      /process "bystander.web.0" already exists/,
      'node',
    );
  });

  await t.test('HTTP: routes and malformed requests', async (t) => {
    const get = (p: string) => viaFetch(base + p, { headers: AUTH });
    await expectError(t, 'malformed percent-encoding', await get('/process-status/%E0%A4%A'), 400, /malformed URL/);
    await expectError(t, 'unknown process', await get('/process-status/nope.web.0'), 404, /no process "nope.web.0"/, 'slug');
    await expectError(t, 'NUL in slug', await get('/process-status/a%00b'), 404, /no process/, 'slug');
    await expectError(t, 'unknown route', await get('/admin'), 404, /no route for GET \/admin/);
    await expectError(
      t,
      'wrong method',
      await viaFetch(`${base}/create-process`, { method: 'PUT', headers: AUTH, body: '{}' }),
      404,
      /no route for PUT/,
    );
    await expectError(
      t,
      'delete unknown',
      await viaFetch(`${base}/delete-process/nope.web.0`, { method: 'POST', headers: AUTH, body: '{}' }),
      404,
      /no process/,
    );
    await expectError(
      t,
      'delete with bad JSON',
      await viaFetch(`${base}/delete-process/bystander.web.0`, {
        method: 'POST',
        headers: { ...AUTH, 'content-type': 'application/json' },
        body: '{',
      }),
      400,
      /not valid JSON/,
    );
    await expectError(
      t,
      'delete with array body',
      await viaFetch(`${base}/delete-process/bystander.web.0`, {
        method: 'POST',
        headers: { ...AUTH, 'content-type': 'application/json' },
        body: '[]',
      }),
      400,
      /must be a JSON object/,
    );
    await expectError(
      t,
      'delete with xml',
      await viaFetch(`${base}/delete-process/bystander.web.0`, {
        method: 'POST',
        headers: { ...AUTH, 'content-type': 'application/xml' },
        body: '<x/>',
      }),
      400,
      /not valid JSON/,
    );
    await expectError(
      t,
      'header overflow',
      await rawRequest(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
      431,
      /request headers are too large/,
    );
    await expectError(t, 'garbage request line', await rawRequest(port, 'GARBAGE\r\n\r\n'), 400, /malformed HTTP request/);
    await expectError(
      t,
      'CONNECT',
      await rawRequest(port, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'),
      405,
      /CONNECT is not allowed/,
    );
    await expectError(
      t,
      'token in the URL of an ordinary GET asking for an event stream',
      await viaFetch(`${base}/list-processes?token=${TOKEN}`, { headers: { accept: 'text/event-stream' } }),
      401,
      /only accepted on WebSocket and event-stream requests/,
    );
    // Cross-site: a page's POST needs no preflight with text/plain; the token does not help it,
    // and the Origin check holds whatever the Content-Type.
    for (const [name, headers] of [
      ['cross-origin create', { origin: 'http://evil.example', 'content-type': 'text/plain' }],
      ['cross-origin create, JSON', { origin: 'http://evil.example', 'content-type': 'application/json' }],
      ['opaque origin', { origin: 'null' }],
      ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ] as const) {
      await expectError(
        t,
        name,
        await viaFetch(`${base}/create-process`, { method: 'POST', headers: { ...AUTH, ...headers }, body: JSON.stringify(ok) }),
        403,
        /cross-(origin|site) request refused/,
      );
    }
    await expectError(t, 'bad header syntax', await rawRequest(port, 'GET / HTTP/1.1\r\nHost x\r\n\r\n'), 400, /malformed HTTP request/);
    await expectError(
      t,
      'conflicting lengths',
      await rawRequest(
        port,
        `POST /create-process HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      ),
      400,
      /malformed HTTP request/,
    );
  });

  // ---- WebSocket upgrades ---------------------------------------------------------------
  await t.test('WebSocket upgrades', async (t) => {
    const key = { 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' };
    const attachPath = '/attach-console/bystander.web.0';
    const up = (p: string, headers: Record<string, string>, method?: string) => upgradeRequest(port, p, headers, method);
    const proto = (tok: string) => TOKEN_SUBPROTOCOL_PREFIX + Buffer.from(tok).toString('base64url');
    await expectError(t, 'ws no token', await up(attachPath, key), 401, /authentication required/);
    await expectError(t, 'ws wrong query token', await up(`${attachPath}?token=wrong-token-xyz`, key), 401, /invalid token/);
    await expectError(
      t,
      'ws wrong header token',
      await up(attachPath, { ...key, authorization: 'Bearer wrong-token-xyz' }),
      401,
      /invalid token/,
    );
    await expectError(
      t,
      'ws wrong subprotocol token',
      await up(attachPath, { ...key, 'sec-websocket-protocol': `drover, ${proto('wrong-token-xyz')}` }),
      401,
      /invalid token/,
    );
    await expectError(
      t,
      'ws token subprotocol alone',
      await up(attachPath, { ...key, 'sec-websocket-protocol': proto(TOKEN) }),
      400,
      /also offer "drover"/,
    );
    await expectError(t, 'ws no token, other path', await up('/inspect', key), 401, /authentication required/);
    await expectError(
      t,
      'ws unknown path',
      await up('/no-such-socket', { ...key, ...AUTH }),
      404,
      /no WebSocket endpoint at \/no-such-socket/,
    );
    await expectError(t, 'ws unknown process', await up('/attach-console/nope.web.0', { ...key, ...AUTH }), 404, /no process "nope.web.0"/);
    await expectError(t, 'ws malformed slug', await up('/attach-console/%E0%A4%A', { ...key, ...AUTH }), 400, /malformed process slug/);
    await expectError(
      t,
      'ws bad version',
      await up(attachPath, { ...key, ...AUTH, 'sec-websocket-version': '7' }),
      400,
      /Sec-WebSocket-Version/,
    );
    await expectError(t, 'ws missing key', await up(attachPath, { 'sec-websocket-version': '13', ...AUTH }), 400, /Sec-WebSocket-Key/);
    await expectError(t, 'ws bad key', await up(attachPath, { ...key, ...AUTH, 'sec-websocket-key': 'short' }), 400, /Sec-WebSocket-Key/);
    await expectError(t, 'ws POST', await up(attachPath, { ...key, ...AUTH }, 'POST'), 405, /Invalid HTTP method/);
    await expectError(t, 'ws not websocket', await up(attachPath, { ...key, ...AUTH, upgrade: 'h2c' }), 400, /Invalid Upgrade header/);
    await expectError(
      t,
      'ws bad subprotocol syntax',
      await up(attachPath, { ...key, ...AUTH, 'sec-websocket-protocol': 'a,,b' }),
      400,
      /Sec-WebSocket-Protocol/,
    );
    // A page on another site may open a WebSocket (no same-origin policy for them): not to the agent.
    await expectError(
      t,
      'ws from another origin',
      await up(attachPath, { ...key, ...AUTH, origin: 'http://evil.example' }),
      403,
      /cross-origin request refused/,
    );

    // An attached client that sends an oversized frame is cut off; nothing else is affected.
    count++;
    const ws = new WebSocket(`ws://127.0.0.1:${port}${attachPath}`, { headers: AUTH });
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const closedWith = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.send(Buffer.alloc(200 * 1024));
    t.equal(await closedWith, 1009, 'ws oversized frame: closed with 1009 (message too big)');
  });

  // ---- archives, Procfiles and .env files, through real processes ----------------------
  const procfile: TarEntry = { path: 'Procfile', body: 'web: exec sleep 600\n' };
  const tarOf = (...entries: TarEntry[]) => tgz([procfile, ...entries]);
  const zipNamed = async (placeholder: string, name: string, extra: { mode?: number; body?: string } = {}) =>
    renameInZip(
      await zipOf([
        { name: 'Procfile', body: 'web: exec sleep 600\n' },
        { name: placeholder, body: extra.body ?? 'x', mode: extra.mode },
      ]),
      placeholder,
      name,
    );
  const goodZip = await zipOf([
    { name: 'Procfile', body: 'web: exec sleep 600\n' },
    { name: 'data', body: 'a'.repeat(5000) },
  ]);
  const goodTar = rawTar([procfile, { path: 'data', body: 'b'.repeat(3000) }]);
  const zeros = Buffer.alloc(20 * MiB);

  const corruptGzip = (() => {
    const gz = Buffer.from(tgz([procfile, { path: 'data', body: randomBytes(4000) }]));
    gz[Math.floor(gz.length / 2)] ^= 0xff;
    return gz;
  })();
  const badCrc = (() => {
    const gz = Buffer.from(tgz([procfile]));
    gz[gz.length - 6] ^= 0xff; // the CRC32 in the gzip trailer
    return gz;
  })();
  const badChecksumTar = (() => {
    const tar = Buffer.from(goodTar);
    tar[1024 + 10] ^= 0x20; // inside the second header's name (after Procfile's header and body): its checksum no longer adds up
    return tar;
  })();
  const zipTooManyClaimed = (() => {
    const zip = Buffer.from(goodZip);
    const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    zip.writeUInt16LE(65535, eocd + 8);
    zip.writeUInt16LE(65535, eocd + 10);
    return zip;
  })();
  const zipEncrypted = (() => {
    const zip = Buffer.from(goodZip);
    zip.writeUInt16LE(zip.readUInt16LE(6) | 1, 6); // local header flags: encrypted
    const cd = centralHeader(zip);
    zip.writeUInt16LE(zip.readUInt16LE(cd + 8) | 1, cd + 8);
    return zip;
  })();
  const zipUnderstated = (() => {
    const zip = Buffer.from(goodZip);
    const cd = centralHeader(zip);
    zip.writeUInt32LE(10, cd + 24); // Procfile's uncompressed size
    return zip;
  })();
  const zipCorruptData = await (async () => {
    const zip = Buffer.from(await zipOf([{ name: 'Procfile', body: 'web: exec sleep 600\n'.repeat(200) }]));
    for (let i = 60; i < 90; i++) zip[i] ^= 0x55; // inside the deflate stream
    return zip;
  })();

  type Case = [name: string, source: string, error: RegExp];
  const bad = (name: string, bytes: Buffer | string, error: RegExp): Case => [name, serve(bytes), error];
  const escapes = /escapes the release directory/;
  const cases: Case[] = [
    // Wrong formats
    bad('empty file', '', /not a supported archive/),
    bad('HTML page', '<!doctype html><title>Not Found</title>', /not a supported archive/),
    bad('PNG', Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(600)]), /not a supported archive/),
    bad('bzip2', Buffer.concat([Buffer.from('BZh91AY&SY'), randomBytes(600)]), /not a supported archive/),
    bad('xz', Buffer.concat([Buffer.from('fd377a585a00', 'hex'), randomBytes(600)]), /not a supported archive/),
    bad('7z', Buffer.concat([Buffer.from('377abcaf271c', 'hex'), randomBytes(600)]), /not a supported archive/),
    bad('random bytes', Buffer.concat([Buffer.from('R'), randomBytes(4096)]), /not a supported archive/),
    bad('a block of zeros', Buffer.alloc(1024), /not a supported archive/),
    bad('gzip of text', gzipSync('just some text, not a tar archive\n'.repeat(40)), /cannot unpack/),
    bad('gzip of gzip', gzipSync(tgz([procfile])), /cannot unpack/),
    // Truncated and corrupt
    bad('truncated tar.gz', tgz([procfile, { path: 'data', body: randomBytes(20_000) }]).subarray(0, 3000), /cannot unpack/),
    bad('corrupt deflate data', corruptGzip, /cannot unpack/),
    bad('bad gzip CRC', badCrc, /cannot unpack/),
    bad('truncated tar', rawTar([procfile, { path: 'data', body: randomBytes(5000) }]).subarray(0, 1800), /cannot unpack/),
    bad('tar header checksum', badChecksumTar, /cannot unpack/),
    bad('truncated zip', goodZip.subarray(0, Math.floor(goodZip.length * 0.6)), /cannot unpack zip archive/),
    bad('zip with corrupt data', zipCorruptData, /cannot unpack zip archive/),
    bad('zip understating a size', zipUnderstated, /cannot unpack zip archive/),
    bad('zip claiming 65535 entries', zipTooManyClaimed, /archive has more than 1000 entries|cannot unpack zip archive/),
    bad('encrypted zip', zipEncrypted, /^archive has encrypted entries; encrypted zips are not supported$/),
    // Bombs
    bad(
      'tar.gz ratio bomb',
      gzipSync(rawTar([procfile, { path: 'zeros', body: zeros }]), { level: 9 }),
      /refusing a likely decompression bomb/,
    ),
    bad(
      'zip ratio bomb',
      await zipOf([
        { name: 'Procfile', body: 'web: x\n' },
        { name: 'zeros', body: zeros },
      ]),
      /refusing a likely decompression bomb/,
    ),
    bad(
      'declared size bomb',
      rawTar([procfile, { path: 'big', declaredSize: 30 * MiB }], { end: false }),
      /archive exceeds 25165824 bytes uncompressed/,
    ),
    bad(
      'tar.gz entry-count bomb',
      tgz([procfile, ...Array.from({ length: 1000 }, (_, i) => ({ path: `f${i}`, body: '' }))]),
      /archive has more than 1000 entries/,
    ),
    bad(
      'zip entry-count bomb',
      await zipOf(Array.from({ length: 1001 }, (_, i) => ({ name: `f${i}`, body: '' }))),
      /archive has more than 1000 entries/,
    ),
    // Tar slip
    bad('tar ../', tarOf({ path: `../${canary}`, body: 'x' }), escapes),
    bad('tar deep ../', tarOf({ path: `../../../${canary}`, body: 'x' }), escapes),
    bad('tar a/../../', tarOf({ path: `a/../../../${canary}`, body: 'x' }), escapes),
    bad('tar name forging log lines', tarOf({ path: `../\x1b[31m${canary}\ndrover: forged line`, body: 'x' }), escapes),
    bad('tar absolute', tarOf({ path: `/tmp/${canary}-abs`, body: 'x' }), /has an absolute path/),
    bad('tar drive letter', tarOf({ path: `C:/${canary}`, body: 'x' }), /has an absolute path/),
    bad('tar pax path override', tgz([procfile, paxHeader({ path: `../../../${canary}-pax` }), { path: 'innocent', body: 'x' }]), escapes),
    bad('tar symlink absolute', tarOf({ path: 'etc', type: 'SymbolicLink', linkpath: '/etc' }), /symlink "etc" -> "\/etc" escapes/),
    bad('tar symlink ../', tarOf({ path: 'up', type: 'SymbolicLink', linkpath: '../../..' }), /symlink "up" .* escapes/),
    bad(
      'tar symlink then write through it',
      tarOf({ path: 'sub/', type: 'Directory' }, { path: 'l', type: 'SymbolicLink', linkpath: 'sub' }, { path: 'l/x', body: 'x' }),
      /is inside symlink "l"/,
    ),
    bad(
      'tar symlink chain',
      tarOf({ path: 'a', type: 'SymbolicLink', linkpath: 'b/..' }, { path: 'b', type: 'SymbolicLink', linkpath: '..' }),
      escapes,
    ),
    bad(
      'tar symlink loop',
      tarOf({ path: 'a', type: 'SymbolicLink', linkpath: 'b/c' }, { path: 'b', type: 'SymbolicLink', linkpath: 'a/c' }),
      /escapes the release directory|symbolic link/,
    ),
    bad('tar hard link ../', tarOf({ path: 'h', type: 'Link', linkpath: '../../../etc/passwd' }), /hard link "h" .* escapes/),
    bad('tar hard link absolute', tarOf({ path: 'h', type: 'Link', linkpath: '/etc/passwd' }), /hard link "h" .* escapes/),
    bad(
      'tar hard link to a symlink',
      tarOf({ path: 's', type: 'SymbolicLink', linkpath: 'Procfile' }, { path: 'h', type: 'Link', linkpath: 's' }),
      /hard link "h" -> "s" is not allowed/,
    ),
    // Zip slip
    bad('zip ../', await zipNamed(`AAA${canary}`, `../${canary}`), escapes),
    bad('zip absolute', await zipNamed(`Xtmp/${canary}`, `/tmp/${canary}`), escapes),
    bad('zip backslashes', await zipNamed(`AA/${canary}`, `..\\${canary}`), /cannot unpack zip archive|escapes/),
    bad(
      'zip symlink ../',
      await zipOf([
        { name: 'Procfile', body: 'web: x\n' },
        { name: 'up', body: '../../..', mode: 0o120777 },
      ]),
      /symlink "up" .* escapes/,
    ),
    bad(
      'zip symlink absolute',
      await zipOf([
        { name: 'Procfile', body: 'web: x\n' },
        { name: 'etc', body: '/etc', mode: 0o120777 },
      ]),
      /symlink "etc" -> "\/etc" escapes/,
    ),
    bad(
      'zip write through a symlink',
      await zipOf([
        { name: 'sub/', dir: true },
        { name: 'l', body: 'sub', mode: 0o120777 },
        { name: 'l/x', body: 'x' },
      ]),
      /is inside symlink "l"/,
    ),
    bad('zip oversized symlink target', await zipOf([{ name: 'l', body: 'a/'.repeat(3000), mode: 0o120777 }]), /oversized target/),
    // Procfiles
    bad('no Procfile', tgz([{ path: 'README.md', body: 'hi\n' }]), /no Procfile at its root/),
    bad('empty Procfile', tgz([{ path: 'Procfile', body: '' }]), /no process types defined/),
    bad('Procfile of comments', tgz([{ path: 'Procfile', body: '# web: x\n\n' }]), /no process types defined/),
    bad('binary Procfile', tgz([{ path: 'Procfile', body: Buffer.from('web: x\0\x01\x02\n') }]), /NUL byte/),
    bad(
      'Procfile not UTF-8',
      tgz([{ path: 'Procfile', body: Buffer.from([0x77, 0x65, 0x62, 0x3a, 0x20, 0xff, 0xfe, 0x0a]) }]),
      /not valid UTF-8/,
    ),
    bad('Procfile with BOM', tgz([{ path: 'Procfile', body: '\ufeffweb: x\n' }]), /byte order mark/),
    bad(
      'huge Procfile',
      tgz([{ path: 'Procfile', body: `web: x\n${'#'.repeat(70_000)}\n` }]),
      /Procfile: file is larger than the limit of 65536 bytes/,
    ),
    bad('unknown process type', tgz([{ path: 'Procfile', body: 'worker: x\n' }]), /unknown process type "web"; the Procfile has: worker/),
    bad('invalid process type', tgz([{ path: 'Procfile', body: 'we b: x\n' }]), /invalid process type/),
    bad('CR line endings', tgz([{ path: 'Procfile', body: 'web: x\rworker: y\r' }]), /carriage return/),
    bad('duplicate type', tgz([{ path: 'Procfile', body: 'web: a\nweb: b\n' }]), /duplicate process type "web"/),
    bad('continuation at EOF', tgz([{ path: 'Procfile', body: 'web: x \\' }]), /continuation/),
    bad('control character', tgz([{ path: 'Procfile', body: 'web: echo \x1b[31mred\n' }]), /control character U\+001B/),
    bad('only assignments', tgz([{ path: 'Procfile', body: 'web: A=1 B=2\n' }]), /only variable assignments/),
    bad('unterminated quote', tgz([{ path: 'Procfile', body: "web: A='x echo\n" }]), /unterminated quote/),
    bad(
      'Procfile is a directory',
      tgz([
        { path: 'README', body: 'x' },
        { path: 'Procfile/', type: 'Directory' },
        { path: 'Procfile/x', body: 'x' },
      ]),
      /Procfile: not a regular file/,
    ),
    bad(
      'Procfile is a symlink',
      tgz([
        { path: 'real', body: 'web: x\n' },
        { path: 'Procfile', type: 'SymbolicLink', linkpath: 'real' },
      ]),
      /Procfile: is a symbolic link/,
    ),
    // .env files
    bad('huge .env', tarOf({ path: '.env', body: `A=${'x'.repeat(300_000)}\n` }), /\.env: file is larger than the limit of 262144 bytes/),
    bad('binary .env', tarOf({ path: '.env', body: Buffer.from('A=1\0\0\0\n') }), /\.env: contains NUL bytes/),
    bad('.env not UTF-8', tarOf({ path: '.env', body: Buffer.from([0x41, 0x3d, 0xc3, 0x28, 0x0a]) }), /\.env: not valid UTF-8/),
    bad('.env is a directory', tarOf({ path: '.env/', type: 'Directory' }), /\.env: not a regular file/),
    bad(
      '.env is a symlink',
      tarOf({ path: 'vars', body: 'A=1\n' }, { path: '.env', type: 'SymbolicLink', linkpath: 'vars' }),
      /\.env: is a symbolic link/,
    ),
    // Downloads
    ['HTTP 404', `${hostileUrl}/missing.tgz`, /HTTP 404 Not Found/],
    ['HTTP 500', `${hostileUrl}/500`, /HTTP 500/],
    ['redirect loop', `${hostileUrl}/loop`, /more than 5 redirects/],
    ['redirect to file:', `${hostileUrl}/to-file`, /redirect to scheme "file:"/],
    ['redirect to a host not allowed', `${hostileUrl}/to-other-host`, /host localhost is not in the allowed source hosts/],
    ['download too large', `${hostileUrl}/huge`, /download exceeds 2097152 bytes/],
    ['download too large, chunked', `${hostileUrl}/huge-chunked`, /download exceeds 2097152 bytes/],
    ['server never answers', `${hostileUrl}/hang`, /no response within 5000 ms/],
    ['server stalls mid-body', `${hostileUrl}/stall`, /no data for 5000 ms/],
    ['connection cut short', `${hostileUrl}/short`, /download failed/],
    ['connection refused', refusedUrl, /^download failed: http:\/\/127\.0\.0\.1:\d+\/a\.tgz is unreachable$/],
    // Issue 20
    bad(
      'tar.gz with 32 MiB of zeros after the end marker',
      gzipSync(Buffer.concat([rawTar([procfile]), Buffer.alloc(32 * MiB)]), { level: 9 }),
      /archive has more than 1048576 bytes of data after its end-of-archive marker/,
    ),
    bad(
      '.env string over the kernel limit',
      tarOf({ path: '.env', body: `OK=1\nBIG=${'x'.repeat(140_000)}\n` }),
      /environment variable BIG is 140005 bytes .*131072/,
    ),
    bad(
      'Procfile with 4000 types',
      tgz([{ path: 'Procfile', body: Array.from({ length: 4000 }, (_, i) => `t${i}: x\n`).join('') }]),
      /^unknown process type "web"; the Procfile has: .*… \(\d+ more characters\)$/,
    ),
  ];

  await t.test('archives, Procfiles, .env files and downloads show in the process errors', async (t) => {
    const run = async ([name, source, error]: Case) => {
      const r = await create(source);
      t.equal(r.status, 201, `${name}: created`);
      const doc = await waitFor(
        async () => {
          const s = await api('GET', r.json.status, undefined, AUTH);
          return s.json?.errors?.length > 0 ? s.json : null;
        },
        `${name}: an error`,
        60_000,
      );
      t.match(doc.errors[0], error, `${name}: ${doc.errors[0].slice(0, 160)}`);
      t.ok(doc.errors[0].length <= 1024, `${name}: the error entry is at most 1 KiB`);
      t.not(doc.state, 'running', `${name}: never ran`);
      const del = await api('POST', r.json.delete, {}, AUTH);
      t.equal(del.status, 200, `${name}: deleted`);
      count++;
    };
    for (let i = 0; i < cases.length; i += 6) await Promise.all(cases.slice(i, i + 6).map(run));
  });

  await t.test('special entries are skipped and modes sanitized; the app still runs', async (t) => {
    const check =
      'for f in dev blk fifo; do test -e $f && echo "exists $f"; done; echo "modes $(stat -c %a suid) $(stat -c %a open)"; echo checked; exec sleep 600';
    const skipped: [string, Buffer][] = [
      [
        'character device',
        tgz([
          { path: 'Procfile', body: `web: ${check}\n` },
          { path: 'dev', type: 'CharacterDevice' },
          { path: 'suid', body: 'x', mode: 0o4755 },
          { path: 'open', body: 'x', mode: 0o777 },
        ]),
      ],
      [
        'block device',
        tgz([
          { path: 'Procfile', body: `web: ${check}\n` },
          { path: 'blk', type: 'BlockDevice' },
          { path: 'suid', body: 'x', mode: 0o6755 },
          { path: 'open', body: 'x', mode: 0o666 },
        ]),
      ],
      [
        'FIFO',
        tgz([
          { path: 'Procfile', body: `web: ${check}\n` },
          { path: 'fifo', type: 'FIFO' },
          { path: 'suid', body: 'x', mode: 0o2755 },
          { path: 'open', body: 'x', mode: 0o777 },
        ]),
      ],
    ];
    for (const [name, bytes] of skipped) {
      const r = await create(serve(bytes));
      t.equal(r.status, 201);
      const stream = await attach(`${r.json.attach}?token=${TOKEN}`);
      await waitFor(() => stream.lines.includes('checked'), `${name}: the app checked its files`);
      t.notOk(
        stream.lines.some((l) => l.startsWith('exists')),
        `${name}: not extracted`,
      );
      t.ok(
        stream.lines.some((l) => /^modes 755 (755|644)$/.test(l)),
        `${name}: no setuid/setgid, no world write`,
      );
      t.equal((await api('POST', r.json.delete, {}, AUTH)).status, 200);
      stream.ws.close();
      count++;
    }
  });

  // ---- after the whole corpus -----------------------------------------------------------
  t.ok(count >= 100, `the corpus has ${count} bad inputs`);
  watching = false;
  await watcher;
  t.ok(probes > 10 && slowest < 1000, `the agent answered GET / within a second throughout (${probes} requests, slowest ${slowest} ms)`);

  t.equal(agent.proc.exitCode, null, 'the agent process is still running');
  t.equal((await api('GET', base, undefined, AUTH)).status, 200, 'and answering');
  const list = await api('GET', `${base}/list-processes`, undefined, AUTH);
  t.same(
    list.json.processes.map((p: any) => p.slug),
    ['bystander.web.0'],
    'only the bystander is left',
  );

  const byAfter = await byStatus();
  t.equal(byAfter.state, 'running', 'the bystander is still running');
  t.equal(byAfter.pid, byBefore.pid, 'the same child, never restarted');
  t.equal(byAfter.restarts, 0);
  const seenBefore = byStream.lines.length;
  await waitFor(() => byStream.lines.length > seenBefore, 'the bystander still producing output');
  const ticks = byStream.lines.map((l) => Number(/^tick (\d+)$/.exec(l)?.[1]));
  t.ok(ticks.every(Number.isInteger), 'every line is a tick line, none mangled');
  t.ok(
    ticks.every((n, i) => i === 0 || n === ticks[i - 1] + 1),
    `ticks ${ticks[0]}..${ticks.at(-1)} arrived in order with none lost`,
  );
  byStream.ws.close();

  // drover's own spawn helper and its keepers (one per run) have a group of their own, with
  // nothing of an app in it: an orphan adopted by them keeps its own group and shows below.
  const comm = (pid: number) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  const left = descendants(agent.proc.pid!);
  const helperGroups = new Set(left.filter((p) => comm(p.pid) === 'drover-spawn').map((p) => readProc(p.pid)?.pgid));
  for (const p of left.filter((p) => helperGroups.has(readProc(p.pid)?.pgid)))
    t.match(comm(p.pid), /^drover-(spawn|run \d+)$/, "only the helper and its keepers in the helper's group");
  const groups = new Set(left.map((p) => readProc(p.pid)?.pgid).filter((g) => !helperGroups.has(g)));
  t.same([...groups], [byAfter.pgid], "every process left is in the bystander's group: no orphans");

  t.same(readdirSync(parent), ['state'], 'nothing was written next to the state directory');
  t.notOk(existsSync(join(tmpdir(), `${canary}-abs`)) || existsSync(`/tmp/${canary}`), 'nothing at the absolute paths');
  const everything = walk(stateDir);
  t.same(
    everything.filter((p) => p.includes(canary)),
    [],
    'no slip target anywhere in the state directory',
  );
  for (const p of everything) {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) {
      const target = path.resolve(path.dirname(p), readlinkSync(p));
      t.ok(target.startsWith(stateDir + path.sep), `symlink ${p} stays inside`);
    }
    t.ok(st.isFile() || st.isDirectory() || st.isSymbolicLink(), `${p} is no device, FIFO or socket`);
    t.notOk(st.mode & 0o7022 && !st.isSymbolicLink(), `${p} has no setuid/setgid/sticky bit and no group/world write`);
  }

  const logLines = agent
    .stderr()
    .split('\n')
    .filter((l) => l !== '');
  t.ok(logLines.length > cases.length, 'the errors were logged');
  t.same(
    logLines.filter((l) => !/^drover: /.test(l) || (l.includes('forged line') && !l.includes('\\x0adrover: forged line'))),
    [],
    'no input could forge a log line',
  );
  t.notOk(agent.stderr().includes('\x1b'), 'nor put an escape sequence on the terminal');
  t.notOk(agent.stderr().includes(TOKEN), 'and the token is nowhere in the log');

  agent.proc.kill('SIGTERM');
  t.same(await agent.exit, { code: 0, signal: null }, 'and it still shuts down cleanly');
});
