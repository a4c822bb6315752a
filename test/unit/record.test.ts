import t from 'tap';
import { createActor, SimulatedClock } from 'xstate';
import { processMachine, type ChildHandle, type ProcessDeps } from '../../lib/process/machine.js';
import type { ExitInfo } from '../../lib/os/child.js';
import { ProcessRecorder } from '../../lib/process/record.js';

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

/** The real machine with fake work, recorded the way the supervisor records it. */
function recorded(opts: { download?: () => Promise<unknown> } = {}) {
  const clock = new SimulatedClock();
  const children: FakeChild[] = [];
  const entries: { type: string; [k: string]: unknown }[] = [];
  const log = { append: (type: string, fields?: Record<string, unknown>) => entries.push({ type, ...fields }) };
  const deps: ProcessDeps = {
    download: opts.download ?? (async () => ({ sha256: 'ab'.repeat(32), bytes: 1234 })),
    build: async () => ({ command: 'node server.js' }),
    start: () => {
      const c = new FakeChild();
      children.push(c);
      return c;
    },
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    stopGraceMs: 1000,
  };
  const recorder = new ProcessRecorder(log, 4242);
  const actor = createActor(processMachine, { input: { deps }, clock, inspect: recorder.inspect });
  recorder.begin(actor, 'created');
  actor.start();
  return { actor, clock, children, entries };
}

const tick = () => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean) {
  for (let i = 0; i < 200 && !cond(); i++) await tick();
  if (!cond()) throw new Error('condition never held');
}

t.test('a start, a crash and a restart, with the reason for every transition', async (t) => {
  const h = recorded();
  h.actor.send({ type: 'START' });
  await until(() => h.children.length === 1);
  h.children[0].exit(2);
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.clock.increment(0);
  await until(() => h.actor.getSnapshot().value === 'restarting');
  h.clock.increment(0);
  await until(() => h.children.length === 2);
  const pid0 = h.children[0].pid;
  t.match(h.entries, [
    { type: 'state', from: null, to: 'pending', why: 'created' },
    { type: 'state', from: 'pending', to: 'downloading', why: 'started' },
    { type: 'state', from: 'downloading', to: 'building', why: 'downloaded 1234 bytes (sha256 abababababab)' },
    { type: 'state', from: 'building', to: 'running', why: 'release ready: node server.js' },
    { type: 'child_started', pid: pid0, port: 4242 },
    { type: 'child_exited', exit_code: 2, signal: null, core_dump: null, duration: 0.01 },
    { type: 'error', message: 'process exited with code 2' },
    { type: 'state', from: 'running', to: 'exited', why: 'the child exited with code 2' },
    { type: 'state', from: 'exited', to: 'restarting', why: 'restarting after the exit' },
    { type: 'restart_scheduled', delay_ms: 0, restarts: 1 },
    { type: 'state', from: 'restarting', to: 'running', why: 'backoff of 0 ms elapsed' },
    { type: 'child_started', pid: h.children[1].pid, port: 4242 },
  ]);
  t.equal(h.entries.length, 12, 'nothing else');
  t.match(
    h.entries[5],
    { started_at: '1970-01-01T00:00:00.000Z', ended_at: '1970-01-01T00:00:00.010Z' },
    'the exit detail of the status document',
  );
});

t.test('stop, start and restart on request say so', async (t) => {
  const h = recorded();
  h.actor.send({ type: 'START' });
  await until(() => h.children.length === 1);
  const from = h.entries.length;
  h.actor.send({ type: 'STOP' });
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.clock.increment(0);
  h.actor.send({ type: 'START' });
  await until(() => h.children.length === 2);
  h.actor.send({ type: 'RESTART' });
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.clock.increment(0); // the simulated clock runs the zero-delay timers
  await until(() => h.actor.getSnapshot().value === 'restarting');
  h.clock.increment(0);
  await until(() => h.children.length === 3);
  const states = h.entries
    .slice(from)
    .filter((e) => e.type === 'state')
    .map((e) => [e.from, e.to, e.why]);
  t.same(states, [
    ['running', 'exited', 'stop requested; the child was killed by SIGTERM'],
    ['exited', 'running', 'start requested'],
    ['running', 'exited', 'restart requested; the child was killed by SIGTERM'],
    ['exited', 'restarting', 'restart requested'],
    ['restarting', 'running', 'backoff of 0 ms elapsed'],
  ]);
  t.notOk(
    h.entries.slice(from).some((e) => e.type === 'error'),
    'a requested stop is no error',
  );
});

t.test('a failed download, the backoff, and a second download', async (t) => {
  let calls = 0;
  const h = recorded({
    download: async () => {
      if (++calls === 1) throw new Error('download failed: HTTP 503 from http://x/a.tgz');
      return { sha256: 'cd'.repeat(32), bytes: 0, reused: true };
    },
  });
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'restarting');
  h.clock.increment(0);
  await until(() => h.actor.getSnapshot().value === 'running');
  t.same(h.entries.slice(2, 8), [
    { type: 'error', message: 'download failed: HTTP 503 from http://x/a.tgz' },
    { type: 'state', from: 'downloading', to: 'restarting', why: 'download failed: download failed: HTTP 503 from http://x/a.tgz' },
    { type: 'restart_scheduled', delay_ms: 0, restarts: 1 },
    { type: 'state', from: 'restarting', to: 'downloading', why: 'backoff of 0 ms elapsed; no release yet, downloading again' },
    { type: 'state', from: 'downloading', to: 'building', why: 'reused the archive from the cache (sha256 cdcdcdcdcdcd)' },
    { type: 'state', from: 'building', to: 'running', why: 'release ready: node server.js' },
  ]);
});

t.test('deleting a running process records why, and how the child ended', async (t) => {
  const h = recorded();
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'running');
  h.actor.send({ type: 'DELETE', reason: 'agent shutting down' });
  await until(() => h.actor.getSnapshot().value === 'deleted');
  t.match(h.entries.slice(-2), [
    { type: 'child_exited', exit_code: null, signal: 'SIGTERM' },
    { type: 'state', from: 'running', to: 'deleted', why: 'agent shutting down; the child was killed by SIGTERM' },
  ]);
});

t.test('deleting a pending process', async (t) => {
  const h = recorded();
  h.actor.send({ type: 'DELETE' });
  t.same(h.entries, [
    { type: 'state', from: null, to: 'pending', why: 'created' },
    { type: 'state', from: 'pending', to: 'deleted', why: 'delete requested' },
  ]);
});
