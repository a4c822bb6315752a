// The job service across agent restarts, with the agent as its own OS process: queued runs come
// back in their order after SIGKILL and SIGTERM, running ones are reported interrupted (or
// queued again with retry_on_restart), and callbacks owed when the agent was killed are sent by
// the next agent exactly once per X-Drover-Delivery, in order.
import t from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack, writeApp } from '../helpers/archives.js';
import { api } from '../helpers/agent.js';
import { spawnAgent } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';

type T = { teardown(fn: () => unknown): void; testdir(): string };

// Each run notes its start and end in $LOG and waits for $GATE to exist.
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
  const id = created.json.id as string;
  const up = await fetch(`${base}/runs/${id}/app`, { method: 'PUT', body: new Uint8Array(app) });
  if (up.status !== 200) throw new Error(`app: ${up.status} ${await up.text()}`);
  const started = await api('POST', `${base}/runs/${id}/start`, start);
  if (started.status !== 200) throw new Error(`start: ${started.status} ${started.text}`);
  return id;
}

/** The run's own events (those carrying run_id) from its whole log, without following it. */
const events = async (base: string, id: string) =>
  (await api('GET', `${base}/process-events/run.${id}?follow=false`)).text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((e) => e.run_id === id);

const queueIds = async (base: string) => ((await api('GET', `${base}/queue`)).json.queued as { id: string }[]).map((e) => e.id);

t.test('queued runs keep their order across SIGKILL and SIGTERM; running ones are interrupted or retried', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-jobs-'));
  const args = ['--max-concurrent-runs', '1', '--admin-reserved-runs', '0', '--stop-grace-ms', '2000'];
  let agent = await spawnAgent(args, { stateDir });
  t.teardown(() => {
    agent.proc.kill('SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });
  const dir = t.testdir();
  const log = join(dir, 'log');
  const gate = join(dir, 'gate');
  writeFileSync(log, '');
  const app = await appArchive(t, { Procfile: 'run: sh run.sh\n', 'run.sh': RUN_SH });
  const env = (name: string) => ({ NAME: name, LOG: log, GATE: gate });
  const lines = () => readFileSync(log, 'utf8').trim().split('\n');

  const a0 = await submit(agent.url, app, { env: env('a0'), user: 'alice' });
  await waitFor(() => lines().includes('start a0'), 'a0 to start');
  const a1 = await submit(agent.url, app, { env: env('a1'), user: 'alice' });
  const a2 = await submit(agent.url, app, { env: env('a2'), user: 'alice' });
  const b1 = await submit(agent.url, app, { env: env('b1'), user: 'bob', retry_on_restart: true });
  const a3 = await submit(agent.url, app, { env: env('a3'), user: 'alice' });
  const before = await queueIds(agent.url);
  // Alice was served last (a0), so bob's one run is next: the round-robin's memory must survive too.
  t.same(before, [b1, a1, a2, a3], 'the queue before the kill');

  agent.proc.kill('SIGKILL');
  await agent.exit;
  agent = await spawnAgent(args, { stateDir });
  // b1 is next and starts at once: a0's slot is free, since a0 did not survive the kill.
  await waitFor(() => lines().includes('start b1'), 'b1 to start after the restart');
  t.same(await queueIds(agent.url), [a1, a2, a3], 'the same order after SIGKILL');
  const r0 = await api('GET', `${agent.url}/runs/${a0}`);
  t.equal(r0.json.state, 'finished', 'the run that was executing is over');
  const x0 = await api('GET', `${agent.url}/runs/${a0}/exit-data`);
  t.equal(x0.json.execute.interrupted, true, 'its exit data says interrupted');
  const e0 = await events(agent.url, a0);
  t.same(
    e0.slice(-3).map((e) => e.type),
    ['interrupted', 'finish', 'last'],
  );
  t.same(e0.at(-3).data, { stage: 'execute', retry: false, reason: 'the agent restarted while the run was in its execute stage' });

  agent.proc.kill('SIGTERM');
  t.equal((await agent.exit).code, 0, 'a clean stop');
  agent = await spawnAgent(args, { stateDir });
  await waitFor(() => lines().filter((l) => l === 'start b1').length === 2, 'b1 to run again (retry_on_restart)').catch((e) => {
    throw new Error(e.message + agent.stderr() + JSON.stringify(lines()));
  });
  t.same(await queueIds(agent.url), [a1, a2, a3], 'the same order after SIGTERM');
  const eb = await events(agent.url, b1);
  const i = eb.findIndex((e) => e.type === 'interrupted');
  t.same(eb[i].data, { stage: 'execute', retry: true, reason: 'the agent restarted while the run was in its execute stage' });
  t.equal(eb[i + 1].type, 'queued', 'queued again');
  t.equal(eb[i + 1].data.retry, true);

  writeFileSync(gate, '');
  await waitFor(async () => (await api('GET', `${agent.url}/runs/${a3}`)).json.state === 'finished', 'every run to finish', 60_000);
  const starts = lines()
    .filter((l) => l.startsWith('start '))
    .map((l) => l.slice(6));
  t.same(starts, ['a0', 'b1', 'b1', 'a1', 'a2', 'a3'], 'served in order, b1 twice');
  t.notOk(lines().includes('end a0'), "a0's child did not outlive the killed agent");
  t.equal((await api('GET', `${agent.url}/runs/${b1}/exit-data`)).json.execute.exit_code, 0, 'the retried run succeeded');
  agent.proc.kill('SIGTERM');
  await agent.exit;
});

t.test('kill -9 while a callback hangs: the next agent delivers each event once, in order', async (t) => {
  let mode: 'hang' | 'ok' = 'hang';
  const hits: { delivery: string; event: string; answered: boolean }[] = [];
  const hung: ServerResponse[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const hit = { delivery: String(req.headers['x-drover-delivery']), event: JSON.parse(body).event, answered: mode === 'ok' };
      hits.push(hit);
      if (mode === 'hang') return void hung.push(res);
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/cb`;

  const stateDir = mkdtempSync(join(tmpdir(), 'drover-outbox-'));
  const args = ['--callback-timeout-ms', '60000', '--callback-backoff-ms', '100,100'];
  let agent = await spawnAgent(args, { stateDir });
  t.teardown(() => {
    agent.proc.kill('SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });
  const app = await appArchive(t, { Procfile: 'run: echo hello\n' });
  const id = await submit(agent.url, app, { callback: { url, signature: 'sig-7' } });
  await waitFor(async () => (await api('GET', `${agent.url}/runs/${id}`)).json.state === 'finished', 'the run to finish');
  await waitFor(() => hits.length === 1, 'the first POST to hang');
  t.ok(existsSync(join(stateDir, 'callbacks', 'outbox.ndjson')));

  agent.proc.kill('SIGKILL');
  await agent.exit;
  mode = 'ok';
  agent = await spawnAgent(args, { stateDir });
  await waitFor(() => hits.filter((h) => h.answered).length >= 3, 'three deliveries after the restart');
  // The attempts are events of the run, after the restart too.
  const attempts = await waitFor(async () => {
    const a = (await events(agent.url, id)).filter((e) => e.type === 'callback_attempt');
    return a.length >= 3 ? a : null;
  }, "the attempts in the run's log");
  t.same(
    attempts.map((e) => e.data.status ?? null),
    [200, 200, 200],
    'the hung attempt was never noted (the agent died in it); the three after the restart were',
  );
  const answered = hits.filter((h) => h.answered);
  t.same(
    answered.map((h) => h.event),
    ['queued', 'running', 'finished'],
    'in order',
  );
  t.equal(new Set(answered.map((h) => h.delivery)).size, 3, 'each delivery once');
  t.equal(hits[0].delivery, answered[0].delivery, 'the hung one is sent again under the same key');
  t.equal(answered.length, 3, 'nothing twice');
  agent.proc.kill('SIGTERM');
  await agent.exit;
});
