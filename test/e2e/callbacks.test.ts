// Run callbacks through the durable outbox: a receiver that fails, hangs and recovers gets every
// event exactly once per idempotency key, in order; 4xx is not retried; give-up after the last try.
import t from 'tap';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack, writeApp } from '../helpers/archives.js';
import { api, testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

type Hit = { path: string; delivery: string; signature: string; type: string; body: string };

async function receiver(t: { teardown(fn: () => unknown): void }, answer: (path: string, nth: number) => number | 'hang') {
  const hits: Hit[] = [];
  const seen = new Map<string, number>();
  const server: Server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const delivery = String(req.headers['x-drover-delivery']);
      const nth = (seen.get(delivery) ?? 0) + 1;
      seen.set(delivery, nth);
      const a = answer(req.url!, nth);
      hits.push({
        path: req.url!,
        delivery,
        signature: String(req.headers['x-drover-signature']),
        type: String(req.headers['content-type']),
        body: a === 'hang' ? '' : body,
      });
      if (a === 'hang') return; // never answers: the agent's timeout
      res.statusCode = a;
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, hits };
}

t.test('fails, hangs, recovers: each event once per key, in order, signed; 4xx not retried; give-up', async (t) => {
  const secret = 's3cret';
  const agent = await testAgent({ callbackSecret: secret, callbackTimeoutMs: 500, callbackBackoffMs: '50,50' });
  t.teardown(() => agent.close());
  const dir = t.testdir();
  writeApp(join(dir, 'app'), { Procfile: 'run: echo hello\n' });
  const app = readFileSync(await pack(join(dir, 'app'), join(dir, 'app.tgz')));
  const rx = await receiver(t, (path, nth) => {
    if (path === '/flaky') return nth === 1 ? 500 : nth === 2 ? 'hang' : 200;
    if (path === '/gone') return 404;
    return 503;
  });
  const submit = async (path: string, extra: Record<string, unknown> = {}) => {
    const created = await api('POST', `${agent.url}/runs`, {});
    const self = created.json.links.self;
    await fetch(`${self}/app`, { method: 'PUT', body: new Uint8Array(app), headers: { 'content-type': 'application/gzip' } });
    const s = await api('POST', `${self}/start`, { callback: { url: rx.url + path, signature: 'sig-42', ...extra } });
    t.equal(s.status, 200, s.text);
    return { id: created.json.id as string, self };
  };

  const flaky = await submit('/flaky');
  const ok = (path: string) => rx.hits.filter((h) => h.path === path && h.body !== '');
  await waitFor(() => rx.hits.filter((h) => h.path === '/flaky').length >= 9, 'three events, each after a 500 and a timeout');
  const firsts = new Map<string, Hit>();
  for (const h of ok('/flaky')) firsts.set(h.delivery, h);
  const kinds = [...firsts.values()].map((h) => JSON.parse(h.body).event);
  t.same(kinds, ['queued', 'running', 'finished'], 'in order');
  for (const [delivery, h] of firsts) {
    t.equal(rx.hits.filter((x) => x.delivery === delivery).length, 3, `${delivery}: 500, timeout, then 200`);
    t.equal(h.signature, `sha256=${createHmac('sha256', secret).update(h.body).digest('hex')}`, 'HMAC verifies');
    t.equal(JSON.parse(h.body).signature, 'sig-42', 'the signature is echoed');
  }
  const fin = JSON.parse([...firsts.values()][2].body);
  t.equal(fin.exit_data.execute.exit_code, 0);
  const events = (await api('GET', `${flaky.self}/events`)).text;
  t.match(events, /"callback_attempt"/, 'attempts are events of the run');

  await submit('/gone', { events: ['finished'] });
  await waitFor(() => rx.hits.some((h) => h.path === '/gone'), 'a 404 answer');
  await new Promise((r) => setTimeout(r, 300)); // room for a wrong retry (backoff is 50 ms)
  t.equal(rx.hits.filter((h) => h.path === '/gone').length, 1, '4xx is not retried, and no give-up');

  await submit('/down', { events: ['finished'], format: 'form' });
  await waitFor(() => rx.hits.filter((h) => h.path === '/down').length === 6, 'three tries, then a give-up with three tries');
  const down = rx.hits.filter((h) => h.path === '/down');
  t.equal(new Set(down.slice(0, 3).map((h) => h.delivery)).size, 1);
  const notice = new URLSearchParams(down[3].body);
  t.equal(down[3].type, 'application/x-www-form-urlencoded', 'the give-up in the same format');
  t.equal(notice.get('returntype'), 'failed');
  t.equal(notice.get('returnmsg'), 'no response received from the callback URL after 3 tries');
  t.equal(notice.get('signature'), 'sig-42');
  t.equal(new URLSearchParams(down[0].body).get('returntype'), 'finished');
});
