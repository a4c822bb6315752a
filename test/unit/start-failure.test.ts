// A child that cannot even be spawned (spawn() throws E2BIG, EMFILE, …) is that process's error,
// retried with backoff like any failed start: nothing escapes the actor. And error entries
// stay bounded whatever produced them.
import t from 'tap';
import { createActor, SimulatedClock } from 'xstate';
import { capError, MAX_ERROR_LENGTH, processMachine, type ProcessDeps } from '../../lib/process/machine.js';

const tick = () => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean) {
  for (let i = 0; i < 200 && !cond(); i++) await tick();
  if (!cond()) throw new Error('condition never held');
}

t.test('a start that throws is the process error, retried with backoff, never thrown out of the actor', async (t) => {
  const clock = new SimulatedClock();
  let starts = 0;
  const deps: ProcessDeps = {
    download: async () => 'archive',
    build: async () => 'launch',
    start: () => {
      starts++;
      throw Object.assign(new Error('spawn E2BIG'), { code: 'E2BIG' });
    },
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    stopGraceMs: 1000,
  };
  const actor = createActor(processMachine, { input: { deps }, clock });
  const failures: unknown[] = [];
  actor.subscribe({ error: (e) => failures.push(e) });
  actor.start();
  actor.send({ type: 'START' });
  await until(() => actor.getSnapshot().context.errors.length >= 1);
  t.equal(actor.getSnapshot().context.errors[0], 'cannot start: spawn E2BIG');
  t.equal(actor.getSnapshot().status, 'active', 'the actor is still alive');
  // The first restart is at once (zero-delay timers on the simulated clock), the next after the backoff.
  await until(() => (clock.increment(0), starts >= 2));
  await until(() => (clock.increment(0), actor.getSnapshot().value === 'restarting'));
  t.equal(actor.getSnapshot().context.restartDelayMs, 1000, 'then it waits the backoff');
  clock.increment(1000);
  await until(() => (clock.increment(0), starts >= 3));
  t.same(failures, [], 'no error escaped the actor');
  t.equal(actor.getSnapshot().context.pid, null);
  actor.send({ type: 'DELETE' });
  await until(() => actor.getSnapshot().value === 'deleted');
});

t.test('error entries are capped with an ellipsis and the count of what was cut', async (t) => {
  t.equal(capError('short'), 'short');
  const exact = 'x'.repeat(MAX_ERROR_LENGTH);
  t.equal(capError(exact), exact, 'exactly at the cap is kept whole');
  const long = `unknown process type "web"; the Procfile has: ${Array.from({ length: 4000 }, (_, i) => `t${i}`).join(', ')}`;
  const capped = capError(long);
  t.equal(capped.length, MAX_ERROR_LENGTH);
  t.ok(long.startsWith(capped.slice(0, capped.indexOf('…'))), 'the start is kept');
  const cut = Number(/… \((\d+) more characters\)$/.exec(capped)?.[1]);
  t.equal(capped.indexOf('…') + cut, long.length, 'the count says exactly how much was cut');
});

t.test('the machine keeps capped entries', async (t) => {
  const deps: ProcessDeps = {
    download: async () => {
      throw new Error('e'.repeat(24_000));
    },
    build: async () => 'launch',
    start: () => {
      throw new Error('unused');
    },
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    stopGraceMs: 1000,
  };
  const actor = createActor(processMachine, { input: { deps }, clock: new SimulatedClock() });
  actor.start();
  actor.send({ type: 'START' });
  await until(() => actor.getSnapshot().context.errors.length >= 1);
  t.ok(actor.getSnapshot().context.errors[0].length <= MAX_ERROR_LENGTH);
  t.match(actor.getSnapshot().context.errors[0], /… \(\d+ more characters\)$/);
  actor.send({ type: 'DELETE' });
});
