import t from 'tap';
import { createServer, type IncomingMessage } from 'node:http';
import { request } from 'node:http';
import { WebSocket } from 'ws';
import { createGate, isLoopback, SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX } from '../../lib/http/auth.js';
import { api, testAgent } from '../helpers/agent.js';

const TOKEN = 'correct-horse-battery-staple-0123';
const bearer = { authorization: `Bearer ${TOKEN}` };
const asProtocol = (token: string) => TOKEN_SUBPROTOCOL_PREFIX + Buffer.from(token).toString('base64url');

/** Opens a WebSocket; resolves with the open socket or the refusal (status and JSON body). */
function upgrade(url: string, opts: { headers?: Record<string, string>; protocols?: string[] } = {}) {
  return new Promise<{ ws?: WebSocket; status?: number; body?: any; headers?: IncomingMessage['headers'] }>((resolve, reject) => {
    const ws = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text), headers: res.headers }));
    });
    ws.once('error', reject);
  });
}

t.test('with a token, every HTTP route and unknown path answers 401 JSON without it', async (t) => {
  const agent = await testAgent({ token: TOKEN });
  t.teardown(() => agent.close());
  const routes: [string, string, unknown?][] = [
    ['GET', '/'],
    ['GET', '/list-processes'],
    ['POST', '/create-process', { app: 'a', node: 'web.0', process_type: 'web', source_url: 'http://127.0.0.1:9/a.tgz' }],
    ['GET', '/process-status/a.web.0'],
    ['POST', '/delete-process/a.web.0', {}],
    ['GET', '/a-route-added-later'],
    ['PUT', '/create-process', {}],
  ];
  for (const [method, path, body] of routes) {
    const none = await api(method, agent.url + path, body);
    t.equal(none.status, 401, `${method} ${path} without a token`);
    t.same(none.json, { errors: [{ status: 401, detail: 'authentication required: send Authorization: Bearer <token>' }] });
    t.equal(none.headers.get('www-authenticate'), 'Bearer realm="drover"');
    const wrong = await api(method, agent.url + path, body, { authorization: 'Bearer not-the-token-at-all' });
    t.equal(wrong.status, 401, `${method} ${path} with a wrong token`);
    t.equal(wrong.json.errors[0].detail, 'invalid token');
    t.equal(wrong.headers.get('www-authenticate'), 'Bearer realm="drover", error="invalid_token"');
  }
  t.equal(agent.supervisor.list().length, 0, 'the unauthenticated create did nothing');

  const variants: [Record<string, string>, number, RegExp?][] = [
    [bearer, 200],
    [{ authorization: `bearer ${TOKEN}` }, 200], // the scheme is case-insensitive (RFC 7235)
    [{ authorization: `Bearer  ${TOKEN} ` }, 200],
    [{ authorization: `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}` }, 401, /must be "Bearer <token>"/],
    [{ authorization: 'Bearer' }, 401, /must be "Bearer <token>"/],
    [{ authorization: `Bearer ${TOKEN}x` }, 401, /invalid token/],
    [{ authorization: `Bearer ${TOKEN.slice(0, -1)}` }, 401, /invalid token/],
    [{ authorization: `Bearer ${TOKEN} extra` }, 401, /must be "Bearer <token>"/],
  ];
  for (const [headers, status, detail] of variants) {
    const r = await api('GET', `${agent.url}/list-processes`, undefined, headers);
    t.equal(r.status, status, headers.authorization);
    if (detail) t.match(r.json.errors[0].detail, detail);
  }

  // A token in the URL leaks into logs and history: not accepted on ordinary requests...
  const inQuery = await api('GET', `${agent.url}/list-processes?token=${TOKEN}`);
  t.equal(inQuery.status, 401);
  t.match(inQuery.json.errors[0].detail, /only accepted on WebSocket and event-stream requests/);
  // ...but an EventSource cannot send headers: on the event-stream routes it may. A 404 for an
  // unknown process shows auth passed.
  const sse = await api('GET', `${agent.url}/process-events/nope.web.0?token=${TOKEN}`, undefined, { accept: 'text/event-stream' });
  t.equal(sse.status, 404);
  t.match(sse.json.errors[0].detail, /nope\.web\.0/);
  const sseWrong = await api('GET', `${agent.url}/process-events/nope.web.0?token=nope`, undefined, { accept: 'text/event-stream' });
  t.equal(sseWrong.status, 401);
  // Any other GET asking for an event stream is an ordinary request: no token in its URL.
  for (const path of ['/events-someday', '/list-processes', '/process-status/nope.web.0', '/data']) {
    const other = await api('GET', `${agent.url}${path}?token=${TOKEN}`, undefined, { accept: 'text/event-stream' });
    t.equal(other.status, 401, `?token= refused on ${path}`);
    t.match(other.json.errors[0].detail, /only accepted on WebSocket and event-stream requests/);
  }
  // Every credential presented must be right.
  const mixed = await api('GET', `${agent.url}/x?token=wrong-token-here`, undefined, { ...bearer, accept: 'text/event-stream' });
  t.equal(mixed.status, 401);

  const withId = await api('GET', agent.url, undefined, { 'x-request-id': 'rid-7' });
  t.equal(withId.status, 401);
  t.equal(withId.headers.get('x-request-id'), 'rid-7', 'the request id is echoed on 401 too');
});

t.test('WebSocket upgrades: header, query parameter or subprotocol; refused with 401 JSON otherwise', async (t) => {
  const agent = await testAgent({ token: TOKEN });
  t.teardown(() => agent.close());
  const created = await api(
    'POST',
    `${agent.url}/create-process`,
    { app: 'a', node: 'web.0', process_type: 'web', source_url: 'http://127.0.0.1:9/a.tgz' },
    bearer,
  );
  t.equal(created.status, 201);
  const wsUrl = created.json.attach as string;

  const none = await upgrade(wsUrl);
  t.equal(none.status, 401);
  t.equal(none.body.errors[0].detail, 'authentication required: send Authorization: Bearer <token>');
  t.equal(none.headers!['www-authenticate'], 'Bearer realm="drover"');
  const otherPath = await upgrade(wsUrl.replace('/attach-console/a.web.0', '/inspect'));
  t.equal(otherPath.status, 401, 'an upgrade on any path is checked before routing');
  t.equal((await upgrade(`${wsUrl}?token=wrong-token-value`)).status, 401);
  t.equal((await upgrade(wsUrl, { headers: { authorization: 'Bearer wrong-token-value' } })).status, 401);
  t.equal((await upgrade(wsUrl, { protocols: [SUBPROTOCOL, asProtocol('wrong-token-value')] })).status, 401);

  const byHeader = await upgrade(wsUrl, { headers: bearer });
  t.ok(byHeader.ws, 'Authorization header accepted');
  byHeader.ws!.close();
  const byQuery = await upgrade(`${wsUrl}?token=${encodeURIComponent(TOKEN)}`);
  t.ok(byQuery.ws, 'token query parameter accepted');
  byQuery.ws!.close();
  const byProtocol = await upgrade(wsUrl, { protocols: [SUBPROTOCOL, asProtocol(TOKEN)] });
  t.ok(byProtocol.ws, 'token subprotocol accepted');
  t.equal(byProtocol.ws!.protocol, SUBPROTOCOL, 'the agent answers with "drover", never the token protocol');
  byProtocol.ws!.close();

  const alone = await upgrade(wsUrl, { protocols: [asProtocol(TOKEN)] });
  t.equal(alone.status, 400, 'a token subprotocol with nothing to answer with');
  t.match(alone.body.errors[0].detail, /also offer "drover"/);
});

t.test('the gate covers upgrade listeners added after it, and strips credentials before them', async (t) => {
  const gate = createGate(TOKEN);
  const server = createServer(gate.http((req, res) => res.end(JSON.stringify({ url: req.url, auth: req.headers.authorization ?? null }))));
  gate.install(server);
  const seen: IncomingMessage[] = [];
  // Registered after install, the way a later module would add its own WebSocket endpoint.
  server.on('upgrade', (req, socket) => {
    seen.push(req);
    socket.end('HTTP/1.1 418 Teapot\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  const raw = (path: string, headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      const req = request(`${base}${path}`, { headers: { connection: 'Upgrade', upgrade: 'websocket', ...headers } });
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
  t.equal(await raw('/anything', {}), 401);
  t.equal(await raw('/anything?token=bad-bad-bad', {}), 401);
  t.equal(seen.length, 0, 'the later listener never saw an unauthenticated upgrade');
  t.equal(await raw('/anything?token=' + TOKEN + '&x=1', { 'sec-websocket-protocol': `chat, ${asProtocol(TOKEN)}` }), 418);
  t.equal(seen.length, 1);
  t.equal(seen[0].url, '/anything?x=1', 'the token query parameter is gone');
  t.equal(seen[0].headers['sec-websocket-protocol'], 'chat', 'the token subprotocol is gone');
  t.equal(await raw('/h', bearer), 418);
  t.equal(seen[1].headers.authorization, undefined, 'the Authorization header is gone');

  const plain = await api('GET', `${base}/x`, undefined, bearer);
  t.same(plain.json, { url: '/x', auth: null }, 'HTTP handlers do not see the token either');
});

t.test('without a token the gate lets everything through (loopback use)', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  t.equal((await api('GET', agent.url)).status, 200);
});

t.test('loopback detection', async (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) t.equal(await isLoopback(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.1', 'no-such-host.invalid']) t.equal(await isLoopback(h), false, h);
});
