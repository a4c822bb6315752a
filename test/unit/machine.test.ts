import t from 'tap';
import { createActor, SimulatedClock } from 'xstate';
import { processMachine, type ProcessDeps, type ChildHandle } from '../../lib/process/machine.js';
import type { RestartPolicy } from '../../lib/process/policy.js';
import type { ExitInfo } from '../../lib/os/child.js';
import { backoffDelay, effectiveAttempt } from '../../lib/process/backoff.js';

const policy = { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 };

/** A fake child whose exit the test decides. */
class FakeChild implements ChildHandle {
  static next = 100;
  readonly pid = FakeChild.next++;
  stopped = false;
  stopArgs: [number, (NodeJS.Signals | number)?] | null = null;
  private finish!: (e: ExitInfo) => void;
  readonly exited = new Promise<ExitInfo>((r) => (this.finish = r));
  constructor(readonly startedAt: number) {}
  exit(code: number | null, signal: NodeJS.Signals | null = null, at = this.startedAt + 10) {
    this.finish({ code, signal, startedAt: this.startedAt, endedAt: at });
  }
  async stop(graceMs: number, signal?: NodeJS.Signals | number): Promise<void> {
    this.stopped = true;
    this.stopArgs = [graceMs, signal];
    this.exit(null, typeof signal === 'string' ? signal : 'SIGTERM');
  }
}

function harness(
  opts: {
    download?: (s: AbortSignal) => Promise<unknown>;
    build?: (a: unknown, s: AbortSignal) => Promise<unknown>;
    policy?: RestartPolicy;
    retryFailures?: boolean;
  } = {},
) {
  const clock = new SimulatedClock();
  const children: FakeChild[] = [];
  const deps: ProcessDeps = {
    download: opts.download ?? (async () => 'archive'),
    build: opts.build ?? (async (a) => `launch-of-${a}`),
    start: () => {
      const c = new FakeChild(clock.now());
      children.push(c);
      return c;
    },
    backoff: policy,
    stopGraceMs: 1000,
  };
  const actor = createActor(processMachine, { input: { deps, policy: opts.policy, retryFailures: opts.retryFailures }, clock });
  const seen: string[] = [];
  actor.subscribe((s) => {
    if (seen.at(-1) !== s.value) seen.push(s.value as string);
  });
  actor.start();
  return { actor, clock, children, seen };
}

const tick = () => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean) {
  for (let i = 0; i < 200 && !cond(); i++) await tick();
  if (!cond()) throw new Error('condition never held');
}

t.test('backoff: first restart at once, then doubling to the cap, reset after a healthy run', async (t) => {
  t.same(
    [0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffDelay(a, policy)),
    [0, 1000, 2000, 4000, 8000, 16000, 30000, 30000],
  );
  t.equal(effectiveAttempt(5, 60_000, policy), 0);
  t.equal(effectiveAttempt(5, 59_999, policy), 5);
  t.equal(effectiveAttempt(5, null, policy), 5);
  t.equal(backoffDelay(1e6, policy), 30000, 'no overflow');
});

t.test('backoff jitter: each delay up to `jitter` shorter, never longer; none for the first restart', async (t) => {
  const jittered = { ...policy, jitter: 0.1 };
  t.equal(
    backoffDelay(0, jittered, () => 0.99),
    0,
  );
  t.equal(
    backoffDelay(1, jittered, () => 0),
    1000,
    'the longest is the policy',
  );
  t.equal(
    backoffDelay(1, jittered, () => 1),
    900,
    'the shortest is 10% less',
  );
  t.equal(
    backoffDelay(7, jittered, () => 0.5),
    28500,
    'from the capped delay',
  );
  const many = Array.from({ length: 200 }, () => backoffDelay(3, jittered));
  t.ok(
    many.every((d) => d >= 3600 && d <= 4000),
    'within bounds',
  );
  t.ok(new Set(many).size > 20, 'spread out');
});

t.test('walks pending → downloading → building → running, observing every state', async (t) => {
  const h = harness();
  t.equal(h.actor.getSnapshot().value, 'pending');
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'running');
  t.same(h.seen, ['pending', 'downloading', 'building', 'running']);
  t.equal(h.actor.getSnapshot().context.pid, h.children[0].pid);
  t.equal(h.actor.getSnapshot().context.launch, 'launch-of-archive');
});

t.test('crash → exited → restarting → running, with backoff growing between crashes', async (t) => {
  const h = harness();
  h.actor.send({ type: 'START' });
  await until(() => h.children.length === 1);
  h.children[0].exit(1);
  await until(() => h.actor.getSnapshot().value === 'exited');
  t.same(h.actor.getSnapshot().context.errors, ['process exited with code 1']);
  t.equal(h.actor.getSnapshot().context.pid, null);
  h.clock.increment(0);
  await until(() => h.actor.getSnapshot().value === 'restarting');
  t.equal(h.actor.getSnapshot().context.restartDelayMs, 0, 'first restart without delay');
  h.clock.increment(0);
  await until(() => h.children.length === 2);
  t.same(h.seen.slice(-3), ['exited', 'restarting', 'running'], 'restart');
  t.equal(h.actor.getSnapshot().context.restarts, 1);

  h.children[1].exit(null, 'SIGSEGV');
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.clock.increment(0);
  await until(() => h.actor.getSnapshot().value === 'restarting');
  t.equal(h.actor.getSnapshot().context.restartDelayMs, 1000);
  h.clock.increment(999);
  await tick();
  t.equal(h.children.length, 2, 'still waiting the backoff');
  h.clock.increment(1);
  await until(() => h.children.length === 3);
  t.match(h.actor.getSnapshot().context.errors.at(-1), /SIGSEGV/);
});

t.test('a long healthy run resets the backoff', async (t) => {
  const h = harness();
  h.actor.send({ type: 'START' });
  await until(() => h.children.length === 1);
  for (let i = 0; i < 3; i++) {
    h.children.at(-1)!.exit(1);
    await until(() => h.actor.getSnapshot().value === 'exited');
    h.clock.increment(0);
    await until(() => h.actor.getSnapshot().value === 'restarting');
    h.clock.increment(h.actor.getSnapshot().context.restartDelayMs);
    await until(() => h.children.length === i + 2);
  }
  const c = h.children.at(-1)!;
  c.exit(0, null, c.startedAt + 61_000);
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.clock.increment(0);
  await until(() => h.actor.getSnapshot().value === 'restarting');
  t.equal(h.actor.getSnapshot().context.restartDelayMs, 0);
});

t.test('download failures are recorded and retried with backoff', async (t) => {
  let calls = 0;
  const h = harness({
    download: async () => {
      calls++;
      if (calls < 3) throw new Error(`download failed: HTTP 404 Not Found`);
      return 'archive';
    },
  });
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'restarting');
  h.clock.increment(0);
  await until(() => calls === 2 && h.actor.getSnapshot().value === 'restarting');
  t.equal(h.actor.getSnapshot().context.restartDelayMs, 1000);
  h.clock.increment(1000);
  await until(() => h.actor.getSnapshot().value === 'running');
  t.same(h.actor.getSnapshot().context.errors, ['download failed: HTTP 404 Not Found', 'download failed: HTTP 404 Not Found']);
  t.same(h.seen, ['pending', 'downloading', 'restarting', 'downloading', 'restarting', 'downloading', 'building', 'running']);
});

t.test('errors are bounded, newest last', async (t) => {
  let n = 0;
  const h = harness({
    build: async () => {
      throw new Error(`build error ${++n}`);
    },
  });
  h.actor.send({ type: 'START' });
  for (let i = 0; i < 25; i++) {
    await until(() => h.actor.getSnapshot().value === 'restarting');
    h.clock.increment(h.actor.getSnapshot().context.restartDelayMs);
    await until(() => h.actor.getSnapshot().value !== 'restarting');
  }
  await until(() => h.actor.getSnapshot().value === 'restarting');
  const errors = h.actor.getSnapshot().context.errors;
  t.equal(n, 26);
  t.equal(errors.length, 20);
  t.equal(errors.at(-1), 'build error 26');
  t.equal(errors[0], 'build error 7');
});

for (const state of ['pending', 'downloading', 'building', 'exited', 'restarting'] as const) {
  t.test(`delete while ${state} ends in deleted and cancels work in flight`, async (t) => {
    let aborted = false;
    const hang = (s: AbortSignal) =>
      new Promise<unknown>((_r, reject) =>
        s.addEventListener('abort', () => {
          aborted = true;
          reject(new Error('aborted'));
        }),
      );
    const h = harness({
      download: state === 'downloading' ? hang : undefined,
      build: state === 'building' ? (_a, s) => hang(s) : undefined,
    });
    if (state !== 'pending') h.actor.send({ type: 'START' });
    if (state === 'exited' || state === 'restarting') {
      await until(() => h.children.length === 1);
      h.children[0].exit(1);
      await until(() => h.actor.getSnapshot().value === 'exited');
      if (state === 'restarting') {
        h.children.length = 0;
        h.clock.increment(0);
        await until(() => h.actor.getSnapshot().value === 'restarting');
        h.clock.increment(0);
        await until(() => h.children.length === 1);
        h.children[0].exit(1);
        await until(() => h.actor.getSnapshot().value === 'exited');
        h.clock.increment(0);
      }
    }
    await until(() => h.actor.getSnapshot().value === state);
    h.actor.send({ type: 'DELETE' });
    t.equal(h.actor.getSnapshot().value, 'deleted');
    t.equal(h.actor.getSnapshot().status, 'done');
    if (state === 'downloading' || state === 'building') t.ok(aborted, 'AbortSignal fired');
  });
}

t.test('delete while running stops the child and waits for its exit', async (t) => {
  const h = harness();
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'running');
  h.actor.send({ type: 'DELETE' });
  await until(() => h.actor.getSnapshot().value === 'deleted');
  t.ok(h.children[0].stopped);
  t.same(h.seen.slice(-2), ['running', 'deleted'], 'no detour through exited');
  t.equal(h.children.length, 1, 'no restart');
});

/** Like until(), firing due zero-delay timers (exited → restarting → running) as it goes. */
async function untilTimed(h: ReturnType<typeof harness>, cond: () => boolean) {
  await until(() => {
    if (!cond()) h.clock.increment(0);
    return cond();
  });
}

/** Starts the harness and waits for the first child. */
async function runningHarness(opts: Parameters<typeof harness>[0] = {}) {
  const h = harness(opts);
  h.actor.send({ type: 'START' });
  await until(() => h.children.length === 1 && h.actor.getSnapshot().value === 'running');
  return h;
}

/** Lets every zero-delay timer fire a few times over: a process that should stay, stays. */
async function settle(h: ReturnType<typeof harness>, ms = 0) {
  for (let i = 0; i < 5; i++) {
    h.clock.increment(ms);
    await tick();
  }
}

t.test('policy never: a finished run stays exited with its exit detail; start runs it again', async (t) => {
  const h = await runningHarness({ policy: 'never' });
  h.children[0].exit(0);
  await until(() => h.actor.getSnapshot().value === 'exited');
  await settle(h, 60_000);
  const snap = h.actor.getSnapshot();
  t.equal(snap.value, 'exited', 'no restart');
  t.equal(snap.context.restarts, 0);
  t.equal(snap.context.lastExit?.code, 0);
  t.equal(h.children.length, 1);
  h.actor.send({ type: 'START' });
  await untilTimed(h, () => h.children.length === 2);
  t.equal(h.actor.getSnapshot().value, 'running');
  t.equal(h.actor.getSnapshot().context.restarts, 0, 'a start is not a restart');
  h.children[1].exit(null, 'SIGSEGV');
  await until(() => h.actor.getSnapshot().value === 'exited');
  await settle(h, 60_000);
  t.equal(h.actor.getSnapshot().value, 'exited', 'never means never, crash or not');
});

t.test('policy on-failure: no restart after exit 0, a restart after exit 1 or a signal', async (t) => {
  const h = await runningHarness({ policy: 'on-failure' });
  h.children[0].exit(1);
  await untilTimed(h, () => h.children.length === 2);
  t.equal(h.actor.getSnapshot().context.restarts, 1, 'restarted after exit 1');
  h.children[1].exit(null, 'SIGKILL');
  await untilTimed(h, () => h.actor.getSnapshot().value === 'restarting');
  h.clock.increment(h.actor.getSnapshot().context.restartDelayMs);
  await untilTimed(h, () => h.children.length === 3);
  t.equal(h.actor.getSnapshot().context.restarts, 2, 'restarted after a signal');
  h.children[2].exit(0);
  await until(() => h.actor.getSnapshot().value === 'exited');
  await settle(h, 60_000);
  t.equal(h.actor.getSnapshot().value, 'exited', 'exit 0 is done');
  t.equal(h.children.length, 3);
  t.same(h.actor.getSnapshot().context.errors, ['process exited with code 1', 'process was killed by SIGKILL']);
});

t.test('stop: the child gets the stop signal and grace, the process stays exited until start', async (t) => {
  const h = await runningHarness();
  h.actor.send({ type: 'STOP', signal: 'SIGUSR1', graceMs: 250 });
  await until(() => h.actor.getSnapshot().value === 'exited');
  t.same(h.children[0].stopArgs, [250, 'SIGUSR1']);
  await settle(h, 60_000);
  const snap = h.actor.getSnapshot();
  t.equal(snap.value, 'exited');
  t.equal(snap.context.stopped, true);
  t.equal(snap.context.lastExit?.signal, 'SIGUSR1', 'exit detail kept');
  t.same(snap.context.errors, [], 'a requested stop is no error');
  t.equal(h.children.length, 1);
  h.actor.send({ type: 'START' });
  await untilTimed(h, () => h.children.length === 2);
  t.equal(h.actor.getSnapshot().value, 'running');
  t.equal(h.actor.getSnapshot().context.stopped, false);
  t.equal(h.actor.getSnapshot().context.restarts, 0);
});

t.test('stop with no options uses the configured grace', async (t) => {
  const h = await runningHarness();
  h.actor.send({ type: 'STOP' });
  await until(() => h.actor.getSnapshot().value === 'exited');
  t.same(h.children[0].stopArgs, [1000, undefined]);
});

t.test('restart: graceful stop, then a new child at once, counted, backoff reset', async (t) => {
  const h = await runningHarness();
  // Build up a backoff first: two quick crashes.
  h.children[0].exit(1);
  await untilTimed(h, () => h.children.length === 2);
  h.children[1].exit(1);
  await untilTimed(h, () => h.actor.getSnapshot().value === 'restarting');
  t.equal(h.actor.getSnapshot().context.restartDelayMs, 1000);
  h.clock.increment(1000);
  await untilTimed(h, () => h.children.length === 3);
  h.actor.send({ type: 'RESTART', signal: 'SIGINT' });
  await untilTimed(h, () => h.children.length === 4);
  const snap = h.actor.getSnapshot();
  t.same(h.children[2].stopArgs, [1000, 'SIGINT']);
  t.equal(snap.value, 'running');
  t.equal(snap.context.restarts, 3);
  t.equal(snap.context.restartDelayMs, 0, 'no backoff');
  t.equal(snap.context.errors.length, 2, 'the requested stop added no error');
  t.same(h.seen.slice(-3), ['exited', 'restarting', 'running']);
  h.children[3].exit(1);
  await untilTimed(h, () => h.actor.getSnapshot().value === 'restarting');
  t.equal(h.actor.getSnapshot().context.restartDelayMs, 0, 'backoff starts afresh after a restart');
});

t.test('restart of an exited (stopped or finished) process starts it at once', async (t) => {
  const h = await runningHarness({ policy: 'never' });
  h.children[0].exit(0);
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.actor.send({ type: 'RESTART' });
  await untilTimed(h, () => h.children.length === 2);
  t.equal(h.actor.getSnapshot().context.restarts, 1);
});

t.test('stop during the backoff cancels the restart; restart during it skips the wait', async (t) => {
  const h = await runningHarness();
  h.children[0].exit(1);
  await untilTimed(h, () => h.children.length === 2);
  h.children[1].exit(1);
  await untilTimed(h, () => h.actor.getSnapshot().value === 'restarting');
  h.actor.send({ type: 'STOP' });
  t.equal(h.actor.getSnapshot().value, 'exited');
  await settle(h, 60_000);
  t.equal(h.children.length, 2, 'no restart after the backoff');

  const h2 = await runningHarness();
  h2.children[0].exit(1);
  await untilTimed(h2, () => h2.children.length === 2);
  h2.children[1].exit(1);
  await untilTimed(h2, () => h2.actor.getSnapshot().value === 'restarting');
  t.equal(h2.actor.getSnapshot().context.restartDelayMs, 1000);
  h2.actor.send({ type: 'RESTART' });
  await untilTimed(h2, () => h2.children.length === 3);
  t.equal(h2.actor.getSnapshot().context.restarts, 2, 'counted once');
});

t.test('stop while downloading aborts it; start downloads again', async (t) => {
  let aborted = 0;
  let calls = 0;
  const h = harness({
    download: (s) => {
      calls++;
      if (calls > 1) return Promise.resolve('archive');
      return new Promise((_r, reject) =>
        s.addEventListener('abort', () => {
          aborted++;
          reject(new Error('aborted'));
        }),
      );
    },
  });
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'downloading');
  h.actor.send({ type: 'STOP' });
  t.equal(h.actor.getSnapshot().value, 'exited');
  await tick();
  t.equal(aborted, 1);
  await settle(h, 60_000);
  t.equal(calls, 1, 'no retry while stopped');
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'running');
  t.equal(calls, 2);
});

t.test('stop right after an exit (before the restart timer) keeps it exited', async (t) => {
  const h = await runningHarness();
  h.children[0].exit(1);
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.actor.send({ type: 'STOP' });
  await settle(h, 60_000);
  t.equal(h.actor.getSnapshot().value, 'exited');
  t.equal(h.children.length, 1);
});

t.test('a run (retryFailures false) rests in exited after a failed build, with the error', async (t) => {
  const h = harness({
    policy: 'never',
    retryFailures: false,
    build: async () => Promise.reject(new Error('build step "bin/build" exited with code 3')),
  });
  h.actor.send({ type: 'START' });
  await until(() => h.actor.getSnapshot().value === 'exited');
  h.clock.increment(60_000);
  await tick();
  t.same(h.seen, ['pending', 'downloading', 'building', 'exited']);
  t.same(h.actor.getSnapshot().context.errors, ['build step "bin/build" exited with code 3']);
  t.equal(h.children.length, 0);
});
