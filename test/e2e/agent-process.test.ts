import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, waitForState } from '../helpers/agent.js';
import { bin, descendants, spawnAgent, stillAlive } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';

async function withTree(t: any, args: string[] = [], procfile = 'web: sh -c "sleep 600 & sleep 600 & wait"\n') {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const url = archives.serve('tree.tgz', await pack(writeApp(join(dir, 'app'), { Procfile: procfile }), join(dir, 'tree.tgz')));
  const agent = await spawnAgent(args);
  t.teardown(() => agent.proc.kill('SIGKILL'));
  for (const node of ['web.0', 'web.1']) {
    const r = await api('POST', `${agent.url}/create-process`, { app: 'tree', node, process_type: 'web', source_url: url });
    t.equal(r.status, 201);
    const doc = await waitForState(r.json.status, 'running');
    await waitFor(() => descendants(doc.pid).length >= 2, 'grandchildren started');
  }
  const tree = descendants(agent.proc.pid!);
  t.ok(tree.length >= 8, `agent has a tree of descendants (${tree.length})`);
  return { agent, tree };
}

t.test('SIGINT: graceful stop of every process, exit 0, no descendants left', async (t) => {
  const { agent, tree } = await withTree(t);
  agent.proc.kill('SIGINT');
  const exit = await agent.exit;
  t.same(exit, { code: 0, signal: null });
  t.same(stillAlive(tree), [], 'no child or grandchild survives');
  t.match(agent.stderr(), /SIGINT, stopping every process/);
});

t.test('SIGTERM behaves like SIGINT', async (t) => {
  const { agent, tree } = await withTree(t);
  agent.proc.kill('SIGTERM');
  t.same(await agent.exit, { code: 0, signal: null });
  t.same(stillAlive(tree), []);
});

t.test('SIGKILL: the watchdogs kill every child and grandchild', async (t) => {
  const { agent, tree } = await withTree(t);
  agent.proc.kill('SIGKILL');
  await agent.exit;
  const t0 = Date.now();
  await waitFor(() => stillAlive(tree).length === 0, 'orphans to die', 10_000);
  t.pass(`all ${tree.length} descendants gone ${Date.now() - t0} ms after the agent died`);
});

t.test('a second SIGINT forces: children ignoring SIGTERM are killed at once', async (t) => {
  const { agent, tree } = await withTree(
    t,
    ['--stop-grace-ms', '60000'],
    `web: trap '' TERM; sleep 600 & sleep 600 & while true; do sleep 0.1; done\n`,
  );
  agent.proc.kill('SIGINT');
  await waitFor(() => /stopping every process/.test(agent.stderr()), 'first SIGINT seen');
  agent.proc.kill('SIGINT');
  const exit = await agent.exit;
  t.equal(exit.code, 130);
  await waitFor(() => stillAlive(tree).length === 0, 'everything killed', 10_000);
});

t.test('command line: version, help, bad flags, busy port', async (t) => {
  const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000 });
  const v = run('--version');
  t.equal(v.status, 0);
  t.match(v.stdout, /^drover \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,40}(-dirty)?|unknown)\)\n$/);
  const h = run('--help');
  t.equal(h.status, 0);
  t.match(h.stdout, /serve/);
  t.match(run('serve', '--help').stdout, /--state-dir/);

  const bad = run('serve', '--bogus');
  t.equal(bad.status, 2);
  t.equal(bad.stderr.trim().split('\n').length, 1, 'one line');
  t.match(bad.stderr, /^drover: .*bogus/);
  const badPort = run('serve', '--port', 'eighty');
  t.equal(badPort.status, 2);
  t.match(badPort.stderr, /port.*must be an integer/);
  const unknown = run('frobnicate');
  t.equal(unknown.status, 2);
  t.match(unknown.stderr, /unknown command "frobnicate"/);

  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const port = String((busy.address() as { port: number }).port);
  const dir = t.testdir();
  const b = run('serve', '--port', port, '--state-dir', dir);
  t.equal(b.status, 1);
  t.equal(b.stderr.trim(), `drover: port ${port} on 127.0.0.1 is already in use`);
});

t.test('a YAML config file sets options; flags override it', async (t) => {
  const dir = t.testdir({
    'drover.yaml': 'port: 1\nhost: 127.0.0.1\nstop_grace_ms: 1234\n',
    'bad.yaml': 'port: [1\n',
    'typo.yaml': 'prot: 8080\n',
  });
  const agent = await spawnAgent(['--config', join(dir, 'drover.yaml')]);
  t.teardown(() => agent.proc.kill('SIGKILL'));
  t.match(agent.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'flag --port 0 overrode the file');
  t.equal((await api('GET', agent.url)).status, 200);
  agent.proc.kill('SIGTERM');
  t.equal((await agent.exit).code, 0);
  const bad = spawnSync(process.execPath, [bin, 'serve', '--config', join(dir, 'bad.yaml')], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /not valid YAML/);
  const typo = spawnSync(process.execPath, [bin, 'serve', '--config', join(dir, 'typo.yaml')], { encoding: 'utf8' });
  t.equal(typo.status, 2);
  t.match(typo.stderr, /unknown setting "prot"/);
});
