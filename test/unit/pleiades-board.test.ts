// The job board's rules without HTTP: matching, FIFO, reports, waits, the journal.
import t from 'tap';
import { JobBoard } from '../../lib/agent/pleiades.js';
import { openPleiadesJournal } from '../../lib/store/pleiades.js';

async function board(dir: string, leaseMs = 60_000) {
  const journal = await openPleiadesJournal(dir, () => {});
  const b = new JobBoard(journal, { leaseMs, maxWaitMs: 5_000, dataExists: async (id) => id !== 'missing' });
  return { b, journal };
}

t.test('runtime and tags decide, oldest job first', async (t) => {
  const dir = t.testdir();
  const { b, journal } = await board(dir);
  t.teardown(() => {
    b.close();
    return journal.close();
  });
  const cpu = await b.registerWorker(['default']);
  const gpu = await b.registerWorker(['default', 'cuda']);
  const plain = await b.createLambda('codex', 'default');
  const cuda = await b.createLambda('codex', 'cuda');
  const j1 = await b.createJob(cuda.id, 'in', []);
  const j2 = await b.createJob(plain.id, 'in', ['fast']);
  const j3 = await b.createJob(plain.id, 'in', []);
  t.equal((await b.contract(cpu.id, [], 0))?.id, j3.id, 'cpu: not the cuda job, not the tagged one');
  t.equal(await b.contract(cpu.id, [], 0), null, 'nothing left for it');
  t.equal((await b.contract(gpu.id, ['fast'], 0))?.id, j1.id, 'gpu: the oldest it can run');
  t.equal((await b.contract(gpu.id, ['fast'], 0))?.id, j2.id, 'tags covered');
  // A waiting contract takes a job created later; an aborted one takes nothing.
  const gone = new AbortController();
  const abandoned = b.contract(cpu.id, [], 5_000, gone.signal);
  const waiting = b.contract(gpu.id, [], 5_000);
  gone.abort();
  t.equal(await abandoned, null);
  const j4 = await b.createJob(plain.id, 'in', []);
  t.equal((await waiting)?.id, j4.id);
  t.equal(b.job(j4.id).attempts, 1);
});

t.test('reports: any letter case, idempotent, final states stay', async (t) => {
  const { b, journal } = await board(t.testdir());
  t.teardown(() => {
    b.close();
    return journal.close();
  });
  const w = await b.registerWorker(['default']);
  const l = await b.createLambda('codex', 'default');
  const j = await b.createJob(l.id, 'in', []);
  await t.rejects(b.createJob(l.id, 'missing', []), { message: /./, field: 'input' });
  await t.rejects(b.createJob('nope', 'in', []), { message: /./, field: 'lambda' });
  await b.contract(w.id, [], 0);
  const waited = b.waitFor(j.id, 'finished', 5_000);
  await b.update(j.id, 'RUNNING', undefined, undefined);
  await t.rejects(b.update(j.id, 'Finished', undefined, undefined), { message: /./, field: 'output' });
  await t.rejects(b.update(j.id, 'done', undefined, undefined), { message: /status must be/, field: 'status' });
  await b.update(j.id, 'Finished', 'out', undefined);
  t.equal((await waited).state, 'Finished');
  t.equal((await b.update(j.id, 'finished', 'out', undefined)).state, 'Finished', 'repeated: ok');
  await t.rejects(b.update(j.id, 'failed', undefined, 'x'), { message: /already/, status: 409 });
  const k = await b.createJob(l.id, 'in', []);
  await b.update(k.id, 'cancelled', undefined, undefined);
  t.equal(await b.contract(w.id, [], 0), null, 'a cancelled job is not handed out');
  t.same([...b.referencedData()].sort(), ['codex', 'in', 'out']);
});
