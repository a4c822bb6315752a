import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { writeApp } from '../helpers/archives.js';
import { bin, descendants, stillAlive } from '../helpers/agent-process.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const SERVER = `require('http').createServer((q, s) => s.end(process.env.GREETING + ' ' + process.env.DYNO + '\\n'))
  .listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));
process.on('SIGTERM', () => { console.log('web got SIGTERM'); process.exit(0); });
`;

function startRunner(t: any, args: string[], env: Record<string, string> = {}) {
  const proc = spawn(process.execPath, [bin, 'start', ...args], {
    env: { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (c) => (out += c));
  proc.stderr.on('data', (c) => (err += c));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => r({ code, signal })),
  );
  t.teardown(() => proc.kill('SIGKILL'));
  return { proc, exit, out: () => out, err: () => err };
}

t.test('foreground runner: prefixed output, .env, PORT per process, restarts, Ctrl-C stops everything', async (t) => {
  const dir = writeApp(t.testdir(), {
    Procfile: [
      'web: node server.cjs',
      // A tree: the shell and two grandchildren, all of which must be gone after Ctrl-C.
      'worker: sleep 600 & sleep 600 & while true; do echo "tick $GREETING $DYNO port $PORT"; sleep 0.2; done',
      'crash: echo bye; exit 3',
    ].join('\n'),
    'server.cjs': SERVER,
    '.env': 'GREETING=from-dotenv\n',
  });
  const base = await freePort();
  const r = startRunner(t, [dir, '--port', String(base), '--stop-grace-ms', '5000']);
  const line = (name: string, text: string) => new RegExp(`^\\d\\d:\\d\\d:\\d\\d ${name.replace('.', '\\.')}\\s+\\| ${text}$`, 'm');
  await waitFor(() => line('web.0', `listening on ${base}`).test(r.out()), 'web to listen', 30_000).catch((e) => {
    throw new Error(`${e.message}\n${r.out()}\n${r.err()}`);
  });
  await waitFor(() => line('worker.0', `tick from-dotenv worker.0 port ${base + 100}`).test(r.out()), 'worker output', 30_000);
  await waitFor(() => line('crash.0', 'restarting in \\d+\\.\\d s').test(r.out()), 'crash restarted with backoff', 30_000);
  t.match(r.out(), line('crash.0', 'bye'));
  t.match(r.out(), line('crash.0', 'exited with code 3'));
  t.match(r.out(), line('system', `crash.0 on port ${base + 200}`), 'each type gets the next hundred (foreman)');
  t.notMatch(r.out(), /\x1b\[/, 'no colors when stdout is not a TTY');

  const res = await fetch(`http://127.0.0.1:${base}/`);
  t.equal(await res.text(), 'from-dotenv web.0\n');

  // At least the web server, the worker's shell and its two sleeps (wrappers and watchdogs vary
  // with the exit helper and are not counted on).
  const tree = await waitFor(() => {
    const d = descendants(r.proc.pid!);
    return d.length >= 4 ? d : null;
  }, 'the runner to have a tree of descendants');
  t.ok(tree.length >= 4, `the runner has a tree of descendants (${tree.length})`);
  r.proc.kill('SIGINT');
  t.same(await r.exit, { code: 0, signal: null }, 'a graceful stop exits 0');
  t.same(stillAlive(tree), [], 'no child or grandchild survives (checked in /proc)');
  t.match(r.out(), line('system', 'SIGINT received, stopping all processes \\(Ctrl-C again to kill them\\)'));
  t.match(r.out(), line('web.0', 'web got SIGTERM'), 'children were stopped with SIGTERM first');
  t.match(r.out(), line('web.0', 'stopped \\(exited with code 0\\)'));
});

t.test('foreground runner: chosen types, --scale, --env, colors when forced', async (t) => {
  const dir = writeApp(t.testdir(), {
    Procfile: 'web: node server.cjs\nworker: echo "worker $GREETING $DYNO $PORT"; exec sleep 600\n',
    'server.cjs': SERVER,
  });
  const base = await freePort();
  const r = startRunner(t, [dir, 'worker', '--scale', 'worker=2', '--port', String(base), '--env', 'GREETING=flag'], { FORCE_COLOR: '1' });
  await waitFor(() => /worker flag worker\.1 \d+/.test(r.out()) && /worker flag worker\.0 \d+/.test(r.out()), 'both workers', 30_000);
  t.match(r.out(), new RegExp(`worker flag worker\\.0 ${base}\\b`));
  t.match(r.out(), new RegExp(`worker flag worker\\.1 ${base + 1}\\b`), 'each further instance gets the next port');
  t.notMatch(r.out(), /web\.0/, 'only the chosen type runs');
  t.match(r.out(), /\x1b\[36m\d\d:\d\d:\d\d worker\.0 \|\x1b\[0m/, 'FORCE_COLOR colors the prefix');
  const tree = descendants(r.proc.pid!);
  r.proc.kill('SIGTERM');
  t.equal((await r.exit).code, 0);
  t.same(stillAlive(tree), []);
});

t.test('a second Ctrl-C kills children that ignore SIGTERM at once', async (t) => {
  const dir = writeApp(t.testdir(), { Procfile: `stubborn: trap '' TERM; echo ready; while true; do sleep 0.1; done\n` });
  const r = startRunner(t, [dir, '--stop-grace-ms', '60000']);
  await waitFor(() => /stubborn\.0 +\| ready/.test(r.out()), 'ready', 30_000);
  const tree = descendants(r.proc.pid!);
  r.proc.kill('SIGINT');
  await waitFor(() => /stopping all processes/.test(r.out()), 'first SIGINT seen');
  r.proc.kill('SIGINT');
  t.equal((await r.exit).code, 130);
  await waitFor(() => stillAlive(tree).length === 0, 'everything killed', 10_000);
});

t.test('foreground runner: bad input is one line and exit 2; a slug means the remote start', async (t) => {
  const dir = writeApp(t.testdir(), { Procfile: 'web: node server.js\n', 'empty/README': 'no Procfile here\n' });
  const cases: [string[], RegExp][] = [
    [[join(dir, 'empty')], /has no Procfile/],
    [[dir, 'worker'], /has no process type "worker" \(it has: web\)/],
    [[dir, '--scale', 'nope=1'], /has no process type "nope"/],
    [[join(dir, 'missing')], /no such directory/],
    [[dir, '--port', 'x'], /--port must be a port number/],
    [[dir, '--bogus'], /unknown option --bogus/],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(['start', ...args])));
  results.forEach((r, i) => {
    t.equal(r.code, 2, `exit 2: ${r.stderr.trim()}`);
    t.equal(r.stderr.trim().split('\n').length, 1);
    t.match(r.stderr, cases[i][1]);
  });
  const remote = await runCli(['start', 'shop.web.0'], { url: `http://127.0.0.1:${await freePort()}` });
  t.equal(remote.code, 3, 'drover start SLUG talks to the agent');
  t.match(remote.stderr, /cannot reach the agent/);
});
