// Run callbacks through the durable outbox: a receiver that fails, hangs and recovers gets every
// event exactly once per idempotency key, in order; 4xx is not retried; give-up after the last try.
import t from 'tap';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack, writeApp, zipEntries } from '../helpers/archives.js';
import { agentWithArchives, api, testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';
// parse-prometheus-text-format ships no types.
// @ts-expect-error no declaration file
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

type Family = { name: string; metrics: { labels?: Record<string, string>; value?: string }[] };
async function metric(url: string, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const families = (parsePrometheusTextFormat as (text: string) => Family[])(await (await fetch(`${url}/metrics`)).text());
  const m = families.find((f) => f.name === name)?.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v));
  return m?.value === undefined ? undefined : Number(m.value);
}

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

  // /metrics counts the same story: flaky 3 × (500, timeout, 200); gone one 404; down 3 + 3 × 503.
  await waitFor(
    async () => (await metric(agent.url, 'drover_callback_deliveries_total', { outcome: 'given_up' })) === 2,
    'both give-ups counted',
  );
  const counted = async (name: string, labels: Record<string, string> = {}) => metric(agent.url, name, labels);
  t.equal(await counted('drover_callback_attempts_total', { result: 'ok' }), 3);
  t.equal(await counted('drover_callback_attempts_total', { result: 'retryable' }), 9);
  t.equal(await counted('drover_callback_attempts_total', { result: 'error' }), 3);
  t.equal(await counted('drover_callback_attempts_total', { result: 'rejected' }), 1);
  t.equal(await counted('drover_callback_retries_total'), 10);
  t.equal(await counted('drover_callback_deliveries_total', { outcome: 'delivered' }), 3);
  t.equal(await counted('drover_callback_deliveries_total', { outcome: 'rejected' }), 1);
  t.equal(await counted('drover_queue_length'), 0, 'nothing queued');
});

/** A receiver that keeps each request's raw body and answers 200. */
async function rawReceiver(t: { teardown(fn: () => unknown): void }) {
  const hits: { path: string; delivery: string; signature: string; type: string; body: Buffer }[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hits.push({
        path: req.url!,
        delivery: String(req.headers['x-drover-delivery']),
        signature: String(req.headers['x-drover-signature']),
        type: String(req.headers['content-type']),
        body: Buffer.concat(chunks),
      });
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

const formOf = (h: { type: string; body: Buffer }) =>
  new Response(new Uint8Array(h.body), { headers: { 'content-type': h.type } }).formData();

t.test('a form callback of a run with output files is multipart with the files attached, and signed', async (t) => {
  const secret = 'k3y';
  const agent = await testAgent({ callbackSecret: secret });
  t.teardown(() => agent.close());
  const dir = t.testdir();
  writeApp(join(dir, 'app'), {
    Procfile: 'run: sh make.sh\n',
    'make.sh': 'echo data > out.txt\nmkdir -p res/sub\necho x > res/sub/a.txt\n',
  });
  const app = readFileSync(await pack(join(dir, 'app'), join(dir, 'app.tgz')));
  const rx = await rawReceiver(t);
  const created = await api('POST', `${agent.url}/runs`, {});
  const self = created.json.links.self;
  await fetch(`${self}/app`, { method: 'PUT', body: new Uint8Array(app) });
  const s = await api('POST', `${self}/start`, {
    output: ['out.txt', 'res', 'missing.txt'],
    callback: { url: `${rx.url}/done`, signature: 'sig-9', format: 'form', events: ['running', 'finished'] },
  });
  t.equal(s.status, 200, s.text);
  await waitFor(() => rx.hits.length === 2, 'running and finished');
  t.equal(rx.hits[0].type, 'application/x-www-form-urlencoded', 'no files: plain form');
  const h = rx.hits[1];
  t.match(h.type, /^multipart\/form-data; boundary=/);
  t.equal(h.signature, `sha256=${createHmac('sha256', secret).update(h.body).digest('hex')}`, 'the HMAC covers the multipart bytes');
  const form = await formOf(h);
  t.equal(form.get('returntype'), 'finished');
  t.equal(form.get('signature'), 'sig-9');
  const files = form.getAll('output') as File[];
  t.same(
    files.map((f) => f.name),
    ['out.txt', 'res.zip'],
    'each output present, a directory zipped; a missing one left out',
  );
  t.equal(await files[0].text(), 'data\n');
  const zip = join(dir, 'res.zip');
  writeFileSync(zip, Buffer.from(await files[1].arrayBuffer()));
  t.same(await zipEntries(zip), { 'sub/a.txt': 'x\n' });
  await waitFor(() => readdirSync(join(agent.stateDir, 'callbacks', 'files')).length === 0, 'the taken files to go once delivered');
});

t.test('a process created with a callback: running, exited (with exit detail), deleted', async (t) => {
  const { agent, archives, dir, serveApp } = await agentWithArchives(t);
  const rx = await rawReceiver(t);
  const url = await serveApp('p', 'web: echo hi; exit 3\n');
  const c = await api('POST', `${agent.url}/create-process`, {
    app: 'cb',
    node: 'web.0',
    process_type: 'web',
    source_url: url,
    restart: { policy: 'never' },
    callback: { url: `${rx.url}/proc`, signature: 'p-1' },
  });
  t.equal(c.status, 201, c.text);
  const bad = await api('POST', `${agent.url}/create-process`, {
    app: 'cb',
    node: 'web.1',
    process_type: 'web',
    source_url: url,
    callback: { url: 'ftp://x' },
  });
  t.equal(bad.status, 400);
  t.match(bad.json.errors[0], { field: 'callback' });
  await waitFor(() => rx.hits.length === 2, 'running and exited');
  const d = await api('POST', `${agent.url}/delete-process/cb.web.0`, {});
  t.equal(d.status, 200);
  await waitFor(() => rx.hits.length === 3, 'deleted');
  const bodies = rx.hits.map((h) => JSON.parse(h.body.toString()));
  t.same(
    bodies.map((b) => b.event),
    ['running', 'exited', 'deleted'],
  );
  t.match(bodies[0], { slug: 'cb.web.0', app: 'cb', node: 'web.0', process_type: 'web', signature: 'p-1', pid: Number });
  t.match(bodies[1].exit, { exit_code: 3, signal: null });
  t.equal(bodies[1].restarting, false);
  t.equal(new Set(rx.hits.map((h) => h.delivery)).size, 3, 'one key each');
  const log = (await api('GET', `${agent.url}/process-events/cb.web.0?follow=false`)).text;
  t.match(log, /"callback_attempt"/, 'attempts are events of the process');

  // A build that fails is `failed`, with the stage and the error; only the kinds asked for are sent.
  const broken = archives.serve(
    'broken.tgz',
    await pack(
      writeApp(join(dir, 'broken'), { Procfile: 'web: echo never\n', 'bin/build': '#!/bin/sh\nexit 1\n' }),
      join(dir, 'broken.tgz'),
    ),
  );
  const b = await api('POST', `${agent.url}/create-process`, {
    app: 'cb',
    node: 'web.2',
    process_type: 'web',
    source_url: broken,
    restart: { policy: 'never' },
    callback: { url: `${rx.url}/broken`, events: ['failed'] },
  });
  t.equal(b.status, 201, b.text);
  await waitFor(() => rx.hits.some((h) => h.path === '/broken'), 'the failure');
  const f = JSON.parse(rx.hits.find((h) => h.path === '/broken')!.body.toString());
  t.match(f, { event: 'failed', stage: 'build', slug: 'cb.web.2', error: /build/ });
});

t.test('an agent closed while a POST hangs leaves no retry timer behind', async (t) => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const rx = await receiver(t, () => 'hang');
  const before = timers();
  const agent = await testAgent({ callbackTimeoutMs: 600_000, callbackBackoffMs: '600000' });
  const dir = t.testdir();
  writeApp(join(dir, 'app'), { Procfile: 'run: echo hello\n' });
  const app = readFileSync(await pack(join(dir, 'app'), join(dir, 'app.tgz')));
  const created = await api('POST', `${agent.url}/runs`, {});
  const self = created.json.links.self;
  await fetch(`${self}/app`, { method: 'PUT', body: new Uint8Array(app), headers: { 'content-type': 'application/gzip' } });
  await api('POST', `${self}/start`, { callback: { url: `${rx.url}/hang` } });
  await waitFor(() => rx.hits.length > 0, 'the first POST to hang');
  await agent.close();
  // The aborted attempt must not schedule its 600 s retry: this process would stay up for it.
  await waitFor(() => timers() <= before, 'no timer left by the agent', 10_000);
  t.pass('no timer left');
});
