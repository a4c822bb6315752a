import t from 'tap';
import type { Test as TestBase } from 'tap';
import { createServer, Socket } from 'node:net';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { EventSource } from 'eventsource';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, attach, testAgent, waitForState } from '../helpers/agent.js';
import { consecutive, readEvents } from '../helpers/events.js';
import { waitFor } from '../helpers/wait.js';

// Prints "line N" for N = 0, 1, 2, ... without end, in small bursts.
const TICKER = `let i = 0; setInterval(() => { for (let k = 0; k < 10; k++) console.log('line ' + i++); }, 5);\n`;

async function setup(t: TestBase, overrides = {}) {
  const agent = await testAgent({ backoffInitialMs: 50, backoffMaxMs: 200, ...overrides });
  const archives = await new ArchiveServer().start();
  t.teardown(async () => {
    await agent.close();
    await archives.close();
  });
  const dir = t.testdir();
  const app = async (name: string, files: Record<string, string>) =>
    archives.serve(`${name}.tgz`, await pack(writeApp(join(dir, name), files), join(dir, `${name}.tgz`)));
  const create = async (node: string, sourceUrl: string) => {
    const r = await api('POST', `${agent.url}/create-process`, {
      app: 'ev',
      node,
      process_type: node.split('.')[0],
      source_url: sourceUrl,
    });
    if (r.status !== 201) throw new Error(`create failed: ${r.status} ${r.text}`);
    return r.json;
  };
  return { agent, archives, app, create };
}

const lineNumber = (text: string) => Number(text.split(' ')[1]);

t.test('resume with since: exactly the rest, no gap, no duplicate, while the child keeps printing', async (t) => {
  const { app, create } = await setup(t);
  const proc = await create('web.0', await app('ticker', { Procfile: 'web: node ticker.js\n', 'ticker.js': TICKER }));
  t.equal(proc.events, proc.status.replace('/process-status/', '/process-events/'), 'events link in the status document');

  const first = await readEvents(proc.events, (ev) => ev.filter((e) => e.type === 'output').length >= 300);
  t.equal(first.status, 200);
  t.match(first.headers.get('content-type'), /^application\/x-ndjson/);
  t.equal(first.headers.get('first-event-id'), '1');
  t.same(
    first.events.slice(0, 2).map((e) => [e.id, e.type, e.to]),
    [
      [1, 'state', 'pending'],
      [2, 'state', 'downloading'],
    ],
  );
  t.ok(consecutive(first.events.map((e) => e.id)), 'first read: consecutive ids from 1');
  const last = first.events.at(-1).id;

  // While disconnected, the child goes on printing.
  await waitFor(async () => (await readEvents(`${proc.events}?since=${last + 500}&follow=false`)).events.length > 0, '500 more events');
  const rest = await readEvents(`${proc.events}?since=${last}`, (ev) => ev.length >= 1000);
  t.equal(rest.events[0].id, last + 1, 'resumes right after the last event received');
  t.ok(consecutive(rest.events.map((e) => e.id)), 'no gap, no duplicate');
  const outputs = [...first.events, ...rest.events].filter((e) => e.type === 'output').map((e) => lineNumber(e.text));
  t.ok(consecutive(outputs), `the child's lines arrive in order, each once (${outputs.length} lines)`);

  // The same events, read again from the log, are the same bytes' worth of events.
  // (`rest` may hold a few more than 1000: compare exactly as many as were received.)
  const received = [...first.events, ...rest.events];
  const again = await readEvents(`${proc.events}?follow=false`, (ev) => ev.length >= received.length);
  t.same(again.events.slice(0, received.length), received);
});

t.test('Server-Sent Events: a real EventSource resumes by itself with Last-Event-ID after the connection drops', async (t) => {
  const { agent, app, create } = await setup(t);
  const proc = await create('web.0', await app('ticker', { Procfile: 'web: node ticker.js\n', 'ticker.js': TICKER }));
  // A TCP proxy between client and agent whose connections the test can cut.
  const target = new URL(agent.url);
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    const upstream = new Socket().connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    proxy.close();
  });
  const url = proc.events.replace(target.host, `127.0.0.1:${(proxy.address() as { port: number }).port}`);
  const es = new EventSource(url);
  t.teardown(() => es.close());
  const ids: number[] = [];
  let opens = 0;
  es.addEventListener('open', () => opens++);
  let idMismatches = 0;
  es.addEventListener('message', (m) => {
    const e = JSON.parse(m.data);
    if (Number(m.lastEventId) !== e.id) idMismatches++;
    ids.push(e.id);
  });
  await waitFor(() => ids.length >= 200, '200 events');
  for (const s of sockets) s.destroy(); // the connection drops mid-stream
  const cut = ids.length;
  await waitFor(() => opens >= 2 && ids.length >= cut + 300, 'the EventSource reconnected and went on', 30_000);
  es.close();
  t.equal(idMismatches, 0, 'every SSE id is its event id');
  t.equal(ids[0], 1);
  t.ok(consecutive(ids), `no gap, no duplicate across the reconnect (${ids.length} events, ${opens} connections)`);
});

t.test('follow=false ends at the tail; bad parameters are 400s naming the field; unknown processes 404', async (t) => {
  const { agent, app, create } = await setup(t);
  const proc = await create('web.0', await app('sleeper', { Procfile: 'web: echo ready; exec sleep 600\n' }));
  await waitFor(async () => (await readEvents(`${proc.events}?follow=false`)).events.some((e) => e.text === 'ready'), 'ready');
  const all = await readEvents(`${proc.events}?follow=false`);
  t.ok(all.ended, 'the response ends by itself');
  t.ok(consecutive(all.events.map((e) => e.id)));
  const tail = await readEvents(`${proc.events}?follow=false&since=${all.events.at(-2).id}`);
  t.same(tail.events, [all.events.at(-1)]);
  t.same((await readEvents(`${proc.events}?follow=false&since=${all.events.at(-1).id + 100}`)).events, [], 'nothing after the end');

  const sse = await fetch(`${proc.events}?follow=false`, {
    headers: { accept: 'text/event-stream', 'last-event-id': String(all.events.at(-3).id) },
  });
  t.match(sse.headers.get('content-type'), /^text\/event-stream/);
  const text = await sse.text();
  t.equal(
    text,
    `retry: 1000\n\n${all.events
      .slice(-2)
      .map((e) => `id: ${e.id}\ndata: ${JSON.stringify(e)}\n\n`)
      .join('')}`,
    'Last-Event-ID honoured',
  );

  const bad: [string, Record<string, string>, string, RegExp][] = [
    [`${proc.events}?since=abc`, {}, 'since', /since: must be an event id/],
    [`${proc.events}?since=-1`, {}, 'since', /since: must be an event id/],
    [`${proc.events}?follow=maybe`, {}, 'follow', /follow: must be true or false/],
    [proc.events, { accept: 'text/event-stream', 'last-event-id': 'x1' }, 'Last-Event-ID', /Last-Event-ID: must be an event id/],
  ];
  for (const [url, headers, field, detail] of bad) {
    const r = await api('GET', url, undefined, headers);
    t.equal(r.status, 400, url);
    t.equal(r.json.errors[0].field, field);
    t.match(r.json.errors[0].detail, detail);
  }
  const missing = await api('GET', `${agent.url}/process-events/ev.nope.0`);
  t.equal(missing.status, 404);
  t.match(missing.json.errors[0].detail, /no process "ev\.nope\.0"/);
});

t.test('a process that crashed many times: its whole log is readable, also after delete, until retention ends', async (t) => {
  const { agent, app, create } = await setup(t, { eventsRetentionMs: 2000 });
  const proc = await create('web.0', await app('crashy', { Procfile: 'web: echo "run $$"; exit 3\n' }));
  const follower = readEvents(proc.events);
  await waitForState(proc.status, (d) => d.restarts >= 6);
  const deleted = await api('POST', proc.delete, {}, { prefer: 'return=representation' });
  t.equal(deleted.status, 200);
  t.equal(deleted.json.events, proc.events, 'the delete response carries the events URL');
  const followed = await follower;
  t.ok(followed.ended, 'a follower is ended by the delete');
  t.equal(followed.events.at(-1).to, 'deleted');

  const log = (await readEvents(deleted.json.events)).events;
  t.same(log, followed.events, 'after the delete, the same log');
  t.ok(consecutive(log.map((e) => e.id)) && log[0].id === 1, 'complete from event 1');
  const runs = log.filter((e) => e.type === 'output' && e.text.startsWith('run '));
  const exits = log.filter((e) => e.type === 'child_exited');
  t.ok(runs.length >= 6, `every run's output is there (${runs.length})`);
  t.ok(exits.length >= 6 && exits.every((e) => e.exit_code === 3 && e.signal === null), 'every exit, with its code');
  // The backoff is visible: 0, 50, 100, 200 ms, each up to 10% shorter (the restart jitter).
  const delays = log
    .filter((e) => e.type === 'restart_scheduled')
    .map((e) => e.delay_ms)
    .slice(0, 4);
  t.equal(delays[0], 0);
  [50, 100, 200].forEach((d, i) =>
    t.ok(delays[i + 1] <= d && delays[i + 1] >= d * 0.9, `restart ${i + 2} after ${delays[i + 1]} ms of ${d}`),
  );
  t.equal(new Set(runs.map((e) => e.text)).size, runs.length, 'a new pid each run');
  t.equal((await api('GET', proc.status)).status, 404, 'the process itself is gone');

  const dir = join(agent.stateDir, 'events', 'ev.web.0');
  t.ok(existsSync(join(dir, 'deleted.json')));
  await waitFor(async () => (await api('GET', proc.events)).status === 404, 'retention to end', 20_000);
  await waitFor(() => !existsSync(dir), 'files removed');
});

t.test('the disk cap: a child printing far past it leaves a log under the cap, readable from its first kept event', async (t) => {
  const cap = 1024 * 1024;
  const { agent, app, create } = await setup(t, { eventsMaxBytes: cap });
  const lines = 40_000;
  const proc = await create(
    'web.0',
    await app('loud', {
      Procfile: 'web: node loud.js; exec sleep 600\n',
      'loud.js': `for (let i = 0; i < ${lines}; i++) console.log(i + ' ' + 'x'.repeat(200));\n`,
    }),
  );
  const last = `${lines - 1} ${'x'.repeat(200)}`;
  await waitFor(
    async () => (await readEvents(`${proc.events}?follow=false&since=${lines}`)).events.some((e) => e.text === last),
    'the last line logged',
    60_000,
  );
  const dir = join(agent.stateDir, 'events', 'ev.web.0');
  const size = readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
  t.ok(size <= cap, `on disk: ${size} bytes, cap ${cap} (the child printed ~${Math.round((lines * 240) / 1e6)} MB)`);
  const all = await readEvents(`${proc.events}?follow=false`);
  const first = Number(all.headers.get('first-event-id'));
  t.ok(first > 1, `the oldest events were dropped; first kept id ${first}`);
  t.equal(all.events[0].id, first, 'reading from the start begins at the first kept event');
  t.ok(consecutive(all.events.map((e) => e.id)), 'no gap after it');
  t.equal(all.events.filter((e) => e.text === last).length, 1);
});

t.test('attach with ?since and ?tail: history from the log, then live, without gap or duplicate', async (t) => {
  const { app, create } = await setup(t);
  const proc = await create('web.0', await app('ticker', { Procfile: 'web: node ticker.js\n', 'ticker.js': TICKER }));
  const seen = await readEvents(proc.events, (ev) => ev.filter((e) => e.type === 'output').length >= 50);
  const outputs = seen.events.filter((e) => e.type === 'output');
  const from = outputs[20];

  const since = await attach(`${proc.attach}?since=${from.id}`);
  await waitFor(() => since.lines.length >= 2000, '2000 lines');
  since.ws.close();
  t.equal(since.lines[0], outputs[21].text, 'starts with the line after `since`');
  t.ok(consecutive(since.lines.map(lineNumber)), 'replay then live: every line once, in order');

  await waitFor(async () => (await readEvents(`${proc.events}?since=${from.id + 3000}&follow=false`)).events.length > 0, 'more lines');
  const tail = await attach(`${proc.attach}?tail=5`);
  await waitFor(() => tail.lines.length >= 1000, '1000 lines');
  tail.ws.close();
  t.ok(lineNumber(tail.lines[0]) > lineNumber(since.lines[0]) + 2000, `the tail starts near the end (${tail.lines[0]})`);
  t.ok(consecutive(tail.lines.map(lineNumber)), 'tail then live: every line once, in order');

  for (const q of ['tail=-1', 'tail=abc', 'since=1&tail=2', 'since=x', 'tail=2000000']) {
    const err = await attach(`${proc.attach}?${q}`).then(
      () => 'opened',
      (e: Error) => e.message,
    );
    t.match(err, /400/, `?${q} refused`);
  }
});

t.test('attach ?since on a deleted process ends with the process; plain attach is unchanged', async (t) => {
  const { app, create } = await setup(t);
  const proc = await create('web.0', await app('once', { Procfile: 'web: echo one; echo two; exec sleep 600\n' }));
  await waitForState(proc.status, 'running');
  const plain = await attach(proc.attach);
  const replay = await attach(`${proc.attach}?since=0`);
  await waitFor(() => replay.lines.includes('two'), 'replayed');
  t.same(replay.lines, ['one', 'two']);
  await api('POST', proc.delete, {});
  t.equal((await replay.closed).code, 1000);
  t.equal((await plain.closed).code, 1000);
});
