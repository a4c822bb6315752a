// The run queue: the concurrency limit, the admin's reserved slot, fairness between users, and
// cancel of queued, building and running runs (a child that traps SIGUSR1 sees it).
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack, writeApp } from '../helpers/archives.js';
import { api, testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

type T = { teardown(fn: () => unknown): void; testdir(): string };

// Each run notes its start and end in $LOG (O_APPEND lines), and waits for $GATE to exist.
const RUN_SH = `echo "start $NAME" >> "$LOG"
while [ ! -f "$GATE" ]; do sleep 0.05; done
echo "end $NAME" >> "$LOG"
`;

async function appArchive(t: T, files: Record<string, string>): Promise<Buffer> {
  const dir = t.testdir();
  writeApp(join(dir, 'app'), files);
  return readFileSync(await pack(join(dir, 'app'), join(dir, 'app.tgz')));
}

async function submit(base: string, app: Buffer, start: Record<string, unknown>) {
  const created = await api('POST', `${base}/runs`, {});
  const self = created.json.links.self as string;
  const up = await fetch(`${self}/app`, { method: 'PUT', body: new Uint8Array(app), headers: { 'content-type': 'application/gzip' } });
  if (up.status !== 200) throw new Error(`app: ${up.status} ${await up.text()}`);
  const started = await api('POST', `${self}/start`, start);
  if (started.status !== 200) throw new Error(`start: ${started.status} ${started.text}`);
  return { id: created.json.id as string, self, started: started.json };
}

/** The most runs that were between start and end at once, from the log's lines. */
function maxOverlap(lines: string[], filter: (name: string) => boolean = () => true): number {
  let n = 0;
  let max = 0;
  for (const l of lines) {
    const [what, name] = l.split(' ');
    if (!filter(name)) continue;
    n += what === 'start' ? 1 : -1;
    max = Math.max(max, n);
  }
  return max;
}

t.test('limit, admin reserved slot and fairness between a user with 50 runs and one with 1', async (t) => {
  const agent = await testAgent({ maxConcurrentRuns: 2, adminReservedRuns: 1 });
  t.teardown(() => agent.close());
  const dir = t.testdir();
  const log = join(dir, 'log');
  const gate = join(dir, 'gate');
  writeFileSync(log, '');
  const app = await appArchive(t, { Procfile: 'run: sh run.sh\n', 'run.sh': RUN_SH });
  const env = (name: string) => ({ NAME: name, LOG: log, GATE: gate });

  const alice: { id: string; self: string }[] = [];
  for (let i = 0; i < 50; i++) alice.push(await submit(agent.url, app, { env: env(`a${i}`), user: 'alice' }));
  const bob = await submit(agent.url, app, { env: env('b0'), user: 'bob' });
  await waitFor(() => readFileSync(log, 'utf8').includes('start a0'), 'the first run starts');

  const q = await api('GET', `${agent.url}/queue`);
  t.equal(q.status, 200);
  t.equal(q.json.running, 1, 'one slot is reserved for admins');
  t.same(q.json.users, { alice: 49, bob: 1 });
  t.equal(q.json.queued[0].id, bob.id, "bob's one run is next, ahead of alice's 49");
  t.equal(q.json.queued[1].id, alice[1].id);
  const doc = await api('GET', bob.self);
  t.equal(doc.json.status, 'queued');
  t.equal(doc.json.queue_position, 1);
  const scraped = await (await fetch(`${agent.url}/metrics`)).text();
  t.match(scraped, /^drover_queue_length 50$/m, '/metrics counts the same queue');
  t.match(scraped, /^drover_runs_active 1$/m);

  // An admin takes the reserved slot at once, although 50 runs wait.
  const admin = await submit(agent.url, app, { env: env('admin'), user: 'carol', priority: 'admin' });
  await waitFor(() => readFileSync(log, 'utf8').includes('start admin'), 'the admin run starts in the reserved slot');
  t.equal((await api('GET', `${agent.url}/queue`)).json.running, 2);
  t.notOk(readFileSync(log, 'utf8').includes('start b0'), 'the reserved slot is not used by others');

  writeFileSync(gate, '');
  await waitFor(async () => (await api('GET', alice[49].self)).json.state === 'finished', 'every run finishes', 120_000);
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  t.ok(maxOverlap(lines) <= 2, `never more than 2 at once (saw ${maxOverlap(lines)})`);
  t.ok(maxOverlap(lines, (n) => n !== 'admin') <= 1, 'never more than 1 non-admin at once');
  const starts = lines.filter((l) => l.startsWith('start ') && l !== 'start admin').map((l) => l.slice(6));
  t.same(starts.slice(0, 3), ['a0', 'b0', 'a1'], 'bob is served second');
  t.same(
    starts.filter((s) => s.startsWith('a')),
    alice.map((_, i) => `a${i}`),
    "alice's runs in her order",
  );
  const ev = await api('GET', `${bob.self}/events`);
  const types = ev.text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const queued = types.find((e) => e.type === 'queued');
  t.equal(queued.data.position, 1, 'the queued event carries the place');
  t.equal(queued.data.user, 'bob');
});

t.test('cancel: a queued run never runs, a building and a running one get the chosen signal', async (t) => {
  const agent = await testAgent({ maxConcurrentRuns: 1, adminReservedRuns: 0 });
  t.teardown(() => agent.close());
  const dir = t.testdir();
  const out = join(dir, 'out');
  const app = await appArchive(t, {
    Procfile: 'run: sh run.sh\n',
    'run.sh': `trap 'echo "run got USR1" >> "$OUT"; exit 3' USR1\necho ready >> "$OUT"\nwhile :; do sleep 0.05; done\n`,
  });
  const running = await submit(agent.url, app, { env: { OUT: out } });
  const queued = await submit(agent.url, app, { env: { OUT: out } });
  await waitFor(() => existsSync(out) && readFileSync(out, 'utf8').includes('ready'), 'the first run is ready');
  t.equal((await api('GET', queued.self)).json.status, 'queued');

  const bad = await api('POST', `${queued.self}/cancel`, { signal: 'SIGNOPE' });
  t.equal(bad.status, 400);
  t.match(bad.json.errors[0], { field: 'signal' });

  const c1 = await api('POST', `${queued.self}/cancel`, {});
  t.equal(c1.status, 200);
  t.equal(c1.json.state, 'finished');
  t.equal(c1.json.status, 'cancelled');
  const qev = (await api('GET', `${queued.self}/events`)).text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.same(
    qev.map((e) => e.type),
    ['first', 'queued', 'cancelled', 'last'],
    'a cancelled queued run never starts',
  );

  const c2 = await api('POST', `${running.self}/cancel`, { signal: 'SIGUSR1', grace_ms: 5000 });
  t.equal(c2.status, 200);
  t.match(readFileSync(out, 'utf8'), /run got USR1/, 'the child saw SIGUSR1');
  const exit = await api('GET', `${running.self}/exit-data`);
  t.equal(exit.json.execute.exit_code, 3, 'it exited by its trap');
  t.equal(exit.json.execute.cancelled, true);
  const rev = (await api('GET', `${running.self}/events`)).text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.same(
    rev.slice(-2).map((e) => e.type),
    ['cancelled', 'last'],
  );

  // In the build: bin/build traps USR1.
  const building = await appArchive(t, {
    Procfile: 'run: echo never\n',
    'bin/build': `#!/bin/sh\ntrap 'echo "build got USR1" >> "$OUT"; exit 4' USR1\necho building >> "$OUT"\nwhile :; do sleep 0.05; done\n`,
  });
  const b = await submit(agent.url, building, { env: { OUT: out } });
  await waitFor(() => readFileSync(out, 'utf8').includes('building'), 'the build runs');
  const c3 = await api('POST', `${b.self}/cancel`, { signal: 'SIGUSR1', grace_ms: 5000 });
  t.equal(c3.status, 200);
  t.match(readFileSync(out, 'utf8'), /build got USR1/, 'the build saw SIGUSR1');
  const bexit = await api('GET', `${b.self}/exit-data`);
  t.equal(bexit.json.build.cancelled, true);
  t.notOk(bexit.json.execute, 'execute never ran');
  t.equal((await api('POST', `${b.self}/cancel`, {})).json.cancelled, false, 'a second cancel finds it over');
});
