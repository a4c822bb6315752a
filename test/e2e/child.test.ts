import t from 'tap';
import { Child, shellCommand } from '../../lib/os/child.js';
import { liveGroupMembers, listProcesses } from '../../lib/os/proc.js';
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
