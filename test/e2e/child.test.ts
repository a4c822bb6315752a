import t from 'tap';
import { Child, shellCommand } from '../../lib/os/child.js';
import { readFileSync } from 'node:fs';
import { liveGroupMembers, listProcesses } from '../../lib/os/proc.js';
import { findWaitHelper } from '../../lib/os/wait-helper.js';
import { waitFor } from '../helpers/wait.js';

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

t.test('shellCommand execs simple commands only', async (t) => {
  t.equal(shellCommand('node server.js'), 'exec node server.js');
  t.equal(shellCommand('cd web && node s.js'), 'cd web && node s.js');
  t.equal(shellCommand('a | b'), 'a | b');
  t.equal(shellCommand('echo $PORT'), 'exec echo $PORT');
  t.equal(shellCommand('exec node s.js'), 'exec node s.js', 'never exec twice');
  t.equal(shellCommand('exit 3'), 'exit 3', 'builtins are not programs');
  t.equal(shellCommand('ulimit -c 0'), 'ulimit -c 0');
  t.equal(shellCommand('exec node x'), 'exec node x');
  t.equal(shellCommand('FOO=1 node x'), 'FOO=1 node x');
  t.equal(shellCommand('exiter --now'), 'exec exiter --now');
});

t.test('lines from stdout and stderr, env expanded, final partial line flushed', async (t) => {
  const lines: string[] = [];
  const c = new Child({
    command: 'echo "port $PORT"; echo oops >&2; printf tail',
    cwd: '/tmp',
    env: { ...env, PORT: '5123' },
    onLine: (s, l) => lines.push(`${s}:${l}`),
  });
  const exit = await c.exited;
  t.equal(exit.code, 0);
  t.same(
    lines.filter((l) => l.startsWith('stdout')),
    ['stdout:port 5123', 'stdout:tail'],
  );
  t.ok(lines.includes('stderr:oops'));
  t.same(liveGroupMembers(c.pid!), [], 'group gone after exit (watchdog included)');
});

t.test('stop kills grandchildren and the watchdog', async (t) => {
  const c = new Child({ command: 'sleep 300 & sleep 300 & echo started; wait', cwd: '/tmp', env, onLine: () => {} });
  await waitFor(() => liveGroupMembers(c.pid!).length >= 4, 'shell, two sleeps and the watchdog');
  await c.stop(5000);
  t.same(liveGroupMembers(c.pid!), []);
  const exit = await c.exited;
  t.equal(exit.signal, 'SIGTERM');
});

t.test('a child ignoring SIGTERM is killed after the grace', async (t) => {
  const lines: string[] = [];
  const c = new Child({
    command: "trap '' TERM; echo ready; while true; do sleep 0.05; done",
    cwd: '/tmp',
    env,
    onLine: (_s, l) => lines.push(l),
  });
  await waitFor(() => lines.includes('ready'), 'ready line');
  const t0 = Date.now();
  await c.stop(300);
  t.ok(Date.now() - t0 >= 300, 'waited the grace');
  t.equal((await c.exited).signal, 'SIGKILL');
  t.same(liveGroupMembers(c.pid!), []);
});

t.test('a command that cannot start reports an exit with an error', async (t) => {
  const c = new Child({ command: 'true', cwd: '/nonexistent-dir', env, onLine: () => {} });
  const exit = await c.exited;
  t.equal(exit.code, null);
  t.match(exit.error, /cannot start/);
});

t.test('leftovers of a crashed leader die with it', async (t) => {
  const c = new Child({ command: '(sleep 300 &); sleep 0.2; exit 4', cwd: '/tmp', env, onLine: () => {} });
  const exit = await c.exited;
  t.equal(exit.code, 4);
  await waitFor(() => liveGroupMembers(c.pid!).length === 0, 'no live members');
  t.notOk(listProcesses().some((p) => p.pgid === c.pid && p.state !== 'Z'));
});

/** A live process's argv and environment as the kernel shows them (`ps aux` prints the argv). */
function procArgs(pid: number): { argv: string[]; environ: string[] } | null {
  try {
    const split = (f: string) => readFileSync(`/proc/${pid}/${f}`, 'latin1').split('\0').slice(0, -1);
    return { argv: split('cmdline'), environ: split('environ') };
  } catch {
    return null; // gone meanwhile
  }
}

for (const helper of [null, findWaitHelper() ?? undefined]) {
  const how = helper === null ? 'without the exit helper' : 'under the exit helper';
  const skip = helper === undefined ? 'the exit helper is not built' : false;
  t.test(`short command lines in ps, ${how}: the wrapper and watchdog scripts travel in the environment`, { skip }, async (t) => {
    // Not exec-able, so the wrapper shell stays alive (and shows) next to the watchdog.
    const c = new Child({ command: 'sleep 300; true', cwd: '/tmp', env, helper, onLine: () => {} });
    t.teardown(() => c.stop(1000));
    // The leader (helper or wrapper shell), the watchdog and the sleep.
    const members = await waitFor(() => {
      const m = liveGroupMembers(c.pid!);
      const args = m.map(procArgs).filter((a) => a !== null);
      // The watchdog is a forked subshell that execs itself under its name a moment later.
      const settled = args.some((a) => a.argv[0] === 'sleep') && args.some((a) => a.argv.join(' ').endsWith('drover-watchdog'));
      return args.length >= (helper ? 4 : 3) && settled ? args : null;
    }, 'the wrapper, the watchdog (under its name) and the command');
    for (const { argv } of members) {
      const line = argv.join(' ');
      t.ok(line.length <= 160, `short: ${line}`);
      t.notMatch(line, /trap|cgroup|kill -KILL/, 'no script in argv');
    }
    const lines = members.map((m) => m.argv.join(' '));
    t.ok(lines.includes('/bin/sh -c eval "$__DROVER_WRAPPER" drover sleep 300; true'), 'the wrapper shows the command');
    t.ok(
      lines.some((l) => l.endsWith('drover-watchdog')),
      'the watchdog shows its name',
    );
    const app = members.find((m) => m.argv[0] === 'sleep')!;
    t.same(
      app.environ.filter((e) => e.startsWith('__DROVER') || e.startsWith('__drover')),
      [],
      "the command's environment has none of drover's variables",
    );
    t.same(
      app.environ.filter((e) => e.startsWith('PATH=')),
      [`PATH=${env.PATH}`],
      'and its own',
    );
  });
}

t.test('an argv command gets exactly its environment (no wrapper variables)', async (t) => {
  const lines: string[] = [];
  const c = new Child({ argv: ['/usr/bin/env'], cwd: '/tmp', env: { ...env, A: '1' }, onLine: (_s, l) => lines.push(l) });
  t.equal((await c.exited).code, 0);
  // (The test runner adds its own variables to every spawn, and the shell PWD.)
  t.same(
    lines.filter((l) => /^(__DROVER|__drover|A=)/.test(l)),
    ['A=1'],
  );
});
