import t from 'tap';
import { spawn } from 'node:child_process';
import { bin, descendants, stillAlive } from '../helpers/agent-process.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

// What `npm start` runs (README's first command): the agent plus the example app, and what to try next.
t.test('demo: the agent with the example web app deployed, then the next steps', async (t) => {
  const stateDir = t.testdir();
  const proc = spawn(process.execPath, [bin, 'demo', '--port', '0', '--state-dir', stateDir, '--stop-grace-ms', '5000'], {
    env: { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => proc.kill('SIGKILL'));
  let out = '';
  let err = '';
  proc.stdout.on('data', (c) => (out += c));
  proc.stderr.on('data', (c) => (err += c));
  const exit = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));

  const url = await waitFor(() => /drover is running at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1], 'the demo to be ready', 120_000);
  t.match(out, /demo\.web\.0\s+ready on port \d+ \(pid \d+\)/);
  t.match(out, new RegExp(`export DROVER_URL=${url}`), 'a non-default port comes with the DROVER_URL to use');
  t.match(out, /node \S*bin\/drover\.js ps /);
  t.match(out, /node \S*bin\/drover\.js logs -f demo\.web\.0/);
  const appUrl = /curl (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)?.[1];
  t.ok(appUrl, "prints the app's URL");
  t.equal(await (await fetch(appUrl!)).text(), 'hello from the drover demo (web.0)\n', 'the printed URL serves the example app');

  const ps = await runCli(['ps'], { url });
  t.match(ps.stdout, /demo\.web\.0\s+running/, 'the printed next step works');

  const tree = descendants(proc.pid!);
  proc.kill('SIGINT');
  t.equal(await exit, 0);
  t.same(stillAlive(tree), [], 'Ctrl-C leaves nothing behind');
  t.match(err, /agent listening on/);
});
