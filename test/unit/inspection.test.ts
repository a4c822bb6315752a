import t from 'tap';
import { createActor, createMachine } from 'xstate';
import { processMachine, STATES, type ChildHandle, type ProcessDeps } from '../../lib/process/machine.js';
import type { ExitInfo } from '../../lib/os/child.js';
import { createTranslator, InspectionHub, stateName, type InspectionRecord, type TransitionRecord } from '../../lib/process/inspection.js';
import { describeMachine } from '../../lib/process/machine-doc.js';
import { waitFor } from '../helpers/wait.js';

/** A child whose exit the test decides. */
class FakeChild implements ChildHandle {
  static next = 500;
  readonly pid = FakeChild.next++;
  private finish!: (e: ExitInfo) => void;
  readonly exited = new Promise<ExitInfo>((r) => (this.finish = r));
  exit(code: number | null, signal: NodeJS.Signals | null = null) {
    this.finish({ code, signal, startedAt: 0, endedAt: 10 });
  }
  async stop(): Promise<void> {
    this.exit(null, 'SIGTERM');
  }
}

function fakeDeps(children: FakeChild[]): ProcessDeps {
  return {
    download: async () => 'archive',
    build: async () => 'launch',
    start: () => {
      const c = new FakeChild();
      children.push(c);
      return c;
    },
    backoff: { initialMs: 5, maxMs: 10, resetAfterMs: 60_000 },
    stopGraceMs: 100,
  };
}

const path = (records: TransitionRecord[]) => records.map((r) => `${r.from ?? '∅'}→${r.to}`);

t.test('every state of a crash-and-restart cycle becomes a record, with pid, restarts and last error', async (t) => {
  const children: FakeChild[] = [];
  const records: TransitionRecord[] = [];
  let clock = 1_700_000_000_000;
  const actor = createActor(processMachine, {
    input: { deps: fakeDeps(children) },
    inspect: createTranslator(
      'app.web.0',
      (r) => records.push(r),
      () => clock++,
    ),
  });
  actor.start();
  t.same(path(records), ['∅→pending'], 'the initial state is the first record');
  t.equal(records[0].event, 'xstate.init');
  actor.send({ type: 'START' });
  await waitFor(() => children.length === 1 && records.some((r) => r.pid === children[0].pid), 'the first child');
  children[0].exit(1);
  await waitFor(() => children.length === 2 && records.some((r) => r.pid === children[1].pid), 'the restarted child');
  actor.send({ type: 'DELETE' });
  await waitFor(() => records.at(-1)?.to === 'deleted', 'deleted');

  t.same(path(records), [
    '∅→pending',
    'pending→downloading',
    'downloading→building',
    'building→running',
    'running→running', // CHILD.STARTED: same state, the pid is new
    'running→exited', // entered and left on a 0 ms timer
    'exited→restarting',
    'restarting→running',
    'running→running',
    'running→deleted', // DELETE itself only marks the process; the child's exit moves it
  ]);
  const started = records.find((r) => r.event === 'CHILD.STARTED')!;
  t.equal(started.pid, children[0].pid);
  t.equal(started.since, records[3].time, 'since is when running was entered, not when the pid arrived');
  const exited = records.find((r) => r.to === 'exited')!;
  t.equal(exited.event, 'CHILD.EXITED');
  t.equal(exited.pid, null);
  t.equal(exited.last_error, 'process exited with code 1');
  const restarting = records.find((r) => r.to === 'restarting')!;
  t.equal(restarting.restarts, 1);
  t.match(restarting.event, /^xstate\.after\./);
  t.equal(records.at(-1)!.slug, 'app.web.0');
  for (const r of records) t.match(r, { type: 'transition', slug: 'app.web.0', time: String, since: String });
  t.ok(
    records.every((r, i) => i === 0 || r.time > records[i - 1].time),
    'times increase',
  );
});

t.test('a state entered and left in the same macrostep still appears', async (t) => {
  const m = createMachine({
    initial: 'idle',
    states: {
      idle: { on: { GO: 'checking' } },
      checking: { always: 'done' },
      done: {},
    },
  });
  const records: TransitionRecord[] = [];
  const snapshots: string[] = [];
  const actor = createActor(m, { inspect: createTranslator('x.y', (r) => records.push(r)) });
  actor.subscribe((s) => snapshots.push(stateName(s.value)));
  actor.start();
  actor.send({ type: 'GO' });
  t.same(snapshots, ['idle', 'done'], 'subscribers never see `checking`');
  t.same(path(records), ['∅→idle', 'idle→checking', 'checking→done'], 'the inspector does');
  t.equal(records[2].event, 'GO', 'the eventless step is attributed to the event that caused it');
});

t.test('state names: flat, nested and parallel values', async (t) => {
  t.equal(stateName('running'), 'running');
  t.equal(stateName({ a: 'b' }), 'a.b');
  t.equal(stateName({ a: { b: 'c' } }), 'a.b.c');
  t.equal(stateName({ x: 'one', y: 'two' }), 'x.one,y.two');
  t.equal(stateName({ a: {} }), 'a');
});

function record(slug: string, to: string, from: string | null = null): TransitionRecord {
  return { type: 'transition', slug, from, to, event: 'E', time: 't', since: 't', pid: null, restarts: 0, last_error: null };
}

t.test('hub: a watcher starts with a snapshot of every live process, then gets records; ?slug filters', async (t) => {
  const hub = new InspectionHub(1000, () => 0);
  hub.publish(record('a.web.0', 'running', 'building'));
  hub.publish(record('b.web.0', 'pending'));
  hub.publish(record('c.web.0', 'deleted', 'running'));
  const all: InspectionRecord[] = [];
  const onlyB: InspectionRecord[] = [];
  hub.subscribe({ send: (r) => (all.push(r), 0), overflow: () => t.fail('no overflow') });
  hub.subscribe({ slug: 'b.web.0', send: (r) => (onlyB.push(r), 0), overflow: () => t.fail('no overflow') });
  t.same(
    all[0],
    {
      type: 'snapshot',
      time: new Date(0).toISOString(),
      processes: [
        { slug: 'a.web.0', state: 'running', since: 't', pid: null, restarts: 0, last_error: null },
        { slug: 'b.web.0', state: 'pending', since: 't', pid: null, restarts: 0, last_error: null },
      ],
    },
    'deleted processes are not in the snapshot',
  );
  t.same(onlyB[0], {
    type: 'snapshot',
    time: new Date(0).toISOString(),
    processes: [{ slug: 'b.web.0', state: 'pending', since: 't', pid: null, restarts: 0, last_error: null }],
  });
  hub.publish(record('a.web.0', 'exited', 'running'));
  hub.publish(record('b.web.0', 'downloading', 'pending'));
  t.same(
    all.slice(1).map((r) => (r as TransitionRecord).to),
    ['exited', 'downloading'],
  );
  t.same(
    onlyB.slice(1).map((r) => (r as TransitionRecord).to),
    ['downloading'],
  );
  hub.publish(record('b.web.0', 'deleted', 'downloading'));
  t.same(
    hub.snapshot().processes.map((p) => p.slug),
    ['a.web.0'],
  );
  t.same(hub.snapshot('nope.web.0').processes, [], 'an unknown slug gives an empty snapshot');
});

t.test('hub: a watcher that falls behind is dropped, the others keep receiving', async (t) => {
  const hub = new InspectionHub(100);
  let queued = 0;
  let overflowed = 0;
  const slow: InspectionRecord[] = [];
  const fast: InspectionRecord[] = [];
  hub.subscribe({ send: (r) => (slow.push(r), (queued += JSON.stringify(r).length)), overflow: () => overflowed++ });
  hub.subscribe({ send: (r) => (fast.push(r), 0), overflow: () => t.fail('the fast watcher is never dropped') });
  t.equal(hub.size, 2);
  for (let i = 0; i < 10; i++) hub.publish(record(`p.web.${i}`, 'pending'));
  t.equal(overflowed, 1, 'dropped once');
  t.equal(hub.size, 1);
  t.ok(slow.length < 3, `the slow watcher got nothing after it overflowed (${slow.length})`);
  t.equal(fast.length, 11);

  let broken = 0;
  hub.subscribe({
    send: (r) => {
      if (r.type === 'transition') throw new Error('stream gone');
      return 0;
    },
    overflow: () => broken++,
  });
  hub.publish(record('p.web.99', 'pending'));
  t.equal(broken, 1, 'a client whose send throws is dropped like a slow one');
  t.equal(fast.length, 12, 'and the others still get the record');

  let closed = 0;
  hub.subscribe({ send: () => 0, overflow: () => {}, close: () => closed++ });
  hub.close();
  t.equal(closed, 1);
  t.equal(hub.size, 0);
  const unsubscribe = hub.subscribe({ send: () => 0, overflow: () => {} });
  unsubscribe();
  t.equal(hub.size, 0, 'unsubscribe removes the watcher');
});

t.test('hub: observer() translates an actor and forwards raw events to extra inspectors', async (t) => {
  const hub = new InspectionHub(1 << 20);
  const raw: string[] = [];
  const stop = hub.forwardRaw((ev) => raw.push(ev.type));
  const got: InspectionRecord[] = [];
  hub.subscribe({ send: (r) => (got.push(r), 0), overflow: () => {} });
  const actor = createActor(processMachine, { input: { deps: fakeDeps([]) }, inspect: hub.observer('o.web.0') });
  actor.start();
  actor.send({ type: 'START' });
  await waitFor(() => got.some((r) => r.type === 'transition' && r.to === 'running'), 'running');
  t.ok(raw.includes('@xstate.actor') && raw.includes('@xstate.snapshot') && raw.includes('@xstate.event'), 'raw events forwarded');
  t.same(
    hub.snapshot().processes.map((p) => p.state),
    ['running'],
  );
  stop();
  const before = raw.length;
  actor.send({ type: 'DELETE' });
  await waitFor(() => actor.getSnapshot().status === 'done', 'done');
  t.equal(raw.length, before, 'a removed forwarder gets nothing more');
  t.same(hub.snapshot().processes, []);
});

t.test('the machine document lists every state and every arrow, without code', async (t) => {
  const doc = describeMachine(processMachine);
  t.equal(doc.id, 'process');
  t.equal(doc.initial, 'pending');
  t.same(
    doc.states.map((s) => s.name),
    [...STATES],
  );
  t.equal(doc.states.find((s) => s.name === 'deleted')!.type, 'final');
  t.same(doc.states.find((s) => s.name === 'downloading')!.invokes, ['download']);
  const arrows = doc.transitions.map((tr) => `${tr.source}→${tr.target} ${tr.label}${tr.guard ? ` [${tr.guard}]` : ''}`);
  t.same(arrows.sort(), [
    '*→deleted DELETE',
    'building→exited STOP',
    'building→exited error',
    'building→restarting error [retriesFailures]',
    'building→running REPLACE',
    'building→running done',
    'downloading→building done',
    'downloading→exited STOP',
    'downloading→exited error',
    'downloading→restarting error [retriesFailures]',
    'downloading→running REPLACE',
    'exited→downloading START',
    'exited→restarting RESTART',
    'exited→restarting after 0 ms [shouldRestart]',
    'exited→running REPLACE',
    'exited→running START [hasLaunch]',
    'pending→downloading START',
    'pending→exited STOP',
    'pending→running REPLACE',
    'restarting→downloading RESTART',
    'restarting→downloading after backoff',
    'restarting→exited STOP',
    'restarting→running REPLACE',
    'restarting→running RESTART [hasLaunch]',
    'restarting→running after backoff [hasLaunch]',
    'running→deleted CHILD.EXITED [deleting]',
    'running→exited CHILD.EXITED',
  ]);
  const text = JSON.stringify(doc);
  t.notMatch(text, /"actions":\[[^\]]*null/, 'function actions are left out, not nulled');
  const def = doc.definition as { states: Record<string, { on: Record<string, { actions: unknown[] }[]> }> };
  t.same(def.states.running.on.DELETE[0].actions, [], 'the DELETE actions (code) are gone');
});
