// Pull-mode jobs end to end: a drover agent as the Pleiades server, two `drover worker`
// processes with different runtimes, jobs created through POST /lambda + POST /job.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { api } from '../helpers/agent.js';
import { bin, spawnAgent } from '../helpers/agent-process.js';
import { pack, writeApp } from '../helpers/archives.js';
import { waitFor } from '../helpers/wait.js';

interface Worker {
  proc: ChildProcess;
  stateDir: string;
  stderr: () => string;
  exit: Promise<unknown>;
}

function startWorker(server: string, runtime: string, stateDir: string, env: Record<string, string>): Worker {
  const proc = spawn(
    process.execPath,
    [bin, 'worker', '--server', server, '--runtime', runtime, '--state-dir', stateDir, '--heartbeat', '0.5', '--poll', '2', '--drain', '5'],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } },
  );
  let err = '';
  proc.stderr!.on('data', (c) => (err += c));
  const exit = new Promise((r) => proc.on('exit', r));
  return { proc, stateDir, stderr: () => err, exit };
}

async function upload(base: string, bytes: Buffer | string) {
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(Buffer.from(bytes))]), 'input');
  const res = await fetch(`${base}/data`, { method: 'POST', body: form });
  return ((await res.json()) as { id: string }).id;
}

async function finished(base: string, id: string) {
  return waitFor(
    async () => {
      const doc = (await api('GET', `${base}/job/${id}?except=Finished&timeout=5`)).json;
      return ['Finished', 'Failed'].includes(doc?.state) && doc;
    },
    `job ${id} to finish`,
    90_000,
  );
}

async function output(base: string, id: string): Promise<string> {
  const res = await fetch(`${base}/data/${id}/blob`);
  return Buffer.from(await res.arrayBuffer()).toString();
}

const workerId = (w: Worker) => (JSON.parse(readFileSync(join(w.stateDir, 'worker.json'), 'utf8')) as { id: string }).id;

t.test('two workers, exactly once, lost lease, server killed -9', async (t) => {
  const dir = t.testdir();
  const runs = join(dir, 'runs.log');
  // Each run appends its job id; `slow` sleeps on its first attempt only (the one we kill).
  const codex = await pack(
    writeApp(join(dir, 'app'), {
      Procfile: [
        'upper: echo "$PLEIADES_JOB" >> "$RUNS_LOG"; tr a-z A-Z',
        'lower: echo "$PLEIADES_JOB" >> "$RUNS_LOG"; tr A-Z a-z',
        'slow: echo "$PLEIADES_JOB" >> "$RUNS_LOG"; if mkdir "$RUNS_LOG.first" 2>/dev/null; then sleep 120; fi; rev',
      ].join('\n'),
    }),
    join(dir, 'app.tgz'),
  );
  const serverState = mkdtempSync(join(tmpdir(), 'drover-pleiades-server-'));
  t.teardown(() => rmSync(serverState, { recursive: true, force: true }));
  let server = await spawnAgent(['--job-lease-ms', '3000'], { stateDir: serverState });
  t.teardown(() => server.proc.kill('SIGKILL'));
  const port = new URL(server.url).port;
  const base = `${server.url}/api/v0.5`;
  const env = { RUNS_LOG: runs };
  const workers: Worker[] = [];
  const spawnW = (runtime: string, stateDir: string) => {
    const w = startWorker(server.url, runtime, stateDir, env);
    workers.push(w);
    return w;
  };
  t.teardown(async () => {
    for (const w of workers) w.proc.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exit));
    for (const w of workers) rmSync(w.stateDir, { recursive: true, force: true });
  });
  const a = spawnW('upper,slow', mkdtempSync(join(tmpdir(), 'drover-worker-a-')));
  const b = spawnW('lower,slow', mkdtempSync(join(tmpdir(), 'drover-worker-b-')));
  await waitFor(
    () => existsSync(join(a.stateDir, 'worker.json')) && existsSync(join(b.stateDir, 'worker.json')),
    'both workers to register',
  );
  const ids = { a: workerId(a), b: workerId(b) };

  const codexId = await upload(base, readFileSync(codex));
  const lambda = async (runtime: string) => (await api('POST', `${base}/lambda`, { codex: codexId, runtime })).json.id as string;
  const upper = await lambda('upper');
  const lower = await lambda('lower');
  const slow = await lambda('slow');
  const job = async (l: string, input: string) => {
    const doc = (await api('POST', `${base}/job`, { lambda: l, input: await upload(base, input), tags: [] })).json;
    t.equal(doc.code, 0);
    return doc.id as string;
  };

  // Each job once, on a worker with its runtime; outputs byte for byte.
  const inputs = ['Alpha one\n', 'bRaVo two\n', 'Charlie\nthree lines\nhere\n', 'DELTA four\n'];
  const created: { id: string; l: string; input: string }[] = [];
  for (const input of inputs) {
    created.push({ id: await job(upper, input), l: 'upper', input });
    created.push({ id: await job(lower, input), l: 'lower', input });
  }
  for (const c of created) {
    const doc = await finished(base, c.id);
    t.equal(doc.state, 'Finished', `${c.id} finished: ${doc.detail ?? ''}`);
    t.equal(doc.attempts, 1);
    t.equal(doc.worker, c.l === 'upper' ? ids.a : ids.b, 'ran on the worker with its runtime');
    t.equal(await output(base, doc.output.id), c.l === 'upper' ? c.input.toUpperCase() : c.input.toLowerCase());
  }
  const ran = readFileSync(runs, 'utf8').trim().split('\n');
  t.same([...ran].sort(), created.map((c) => c.id).sort(), 'every job ran exactly once');

  // A worker killed mid-job loses its lease; the job completes on the other.
  const s = await job(slow, 'stressed\n');
  const holder = await waitFor(async () => {
    const doc = (await api('GET', `${base}/job/${s}`)).json;
    return doc.state === 'Running' && existsSync(`${runs}.first`) && doc.worker;
  }, 'the slow job to start');
  const [victim, survivor] = holder === ids.a ? [a, b] : [b, a];
  victim.proc.kill('SIGKILL');
  await victim.exit;
  const redone = await finished(base, s);
  t.equal(redone.state, 'Finished');
  t.equal(redone.attempts, 2, 'counted as a second attempt');
  t.equal(redone.worker, workerId(survivor), 'completed on the other worker');
  t.equal(await output(base, redone.output.id), 'desserts\n');

  // Server killed -9 with jobs queued for the dead worker's runtime: they are restored, the
  // survivor reconnects, and the dead worker restarted with its state dir keeps its id.
  const victimRuntime = victim === a ? upper : lower;
  const queued = [await job(victimRuntime, 'Queued One\n'), await job(victimRuntime, 'Queued Two\n')];
  server.proc.kill('SIGKILL');
  await server.exit;
  server = await spawnAgent(['--job-lease-ms', '3000', '--port', port], { stateDir: serverState });
  for (const q of queued) t.equal((await api('GET', `${base}/job/${q}`)).json.state, 'Enqueued', 'restored in the queue');
  const survivorRuntime = survivor === a ? upper : lower;
  const after = await job(survivorRuntime, 'After Restart\n');
  const afterDoc = await finished(base, after);
  t.equal(afterDoc.worker, workerId(survivor), 'the survivor reconnected with its id');
  const reborn = spawnW(victim === a ? 'upper,slow' : 'lower,slow', victim.stateDir);
  for (const q of queued) {
    const doc = await finished(base, q);
    t.equal(doc.state, 'Finished');
    t.equal(doc.worker, ids[victim === a ? 'a' : 'b'], 'the restarted worker kept its id');
  }
  t.equal(await output(base, (await finished(base, queued[0])).output.id), victim === a ? 'QUEUED ONE\n' : 'queued one\n');

  // SIGINT: workers exit cleanly, no job left in hand.
  for (const w of [survivor, reborn]) w.proc.kill('SIGINT');
  await Promise.all([survivor.exit, reborn.exit]);
  t.match(survivor.stderr() + reborn.stderr(), /taking no more jobs/);
});
