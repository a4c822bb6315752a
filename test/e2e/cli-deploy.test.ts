import t from 'tap';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { list as tarList } from 'tar';
import { api } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';
import { agentFor, answer, oneLineError, ps } from '../helpers/cli-agent.js';

// deploy and redeploy, split from cli.test.ts so the two files run side by side.
// Dozens of CLI processes, one after another: on a slow, shared machine the file needs more than tap's 120 s.
t.setTimeout(300_000);

const examples = join(import.meta.dirname, '..', '..', 'examples');

t.test('deploy a directory: packed without ignored files, uploaded once, converged on redeploy', async (t) => {
  const agent = await agentFor(t);
  const app = join(t.testdir(), 'web');
  cpSync(join(examples, 'web'), app, { recursive: true });
  mkdirSync(join(app, '.git'));
  writeFileSync(join(app, '.git', 'HEAD'), 'ref: refs/heads/main\n');
  mkdirSync(join(app, 'node_modules', 'dep'), { recursive: true });
  writeFileSync(join(app, 'node_modules', 'dep', 'index.js'), '');
  writeFileSync(join(app, '.gitignore'), 'secret.txt\n*.log\n');
  writeFileSync(join(app, 'secret.txt'), 'do not ship');
  writeFileSync(join(app, 'debug.log'), 'noise');

  const first = await runCli(['deploy', app, '--app', 'shop', '--env', 'GREETING=hi there'], { url: agent.url });
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, /packed .*: 4 files, .* \(uploaded\)/);
  t.match(first.stdout, /shop\.web\.0\s+create/);
  t.match(first.stdout, /shop\.web\.0\s+ready on port \d+ \(pid \d+\)/);
  t.notMatch(first.stdout, /\x1b\[/, 'no colors when stdout is not a TTY');

  const [doc] = await ps(agent.url);
  t.match(doc, { slug: 'shop.web.0', state: 'running', env_names: ['GREETING'] });
  t.equal(await answer(doc.port), 'hi there (web.0)\n', 'the deployed app answers with its env');

  const data = (await api('GET', `${agent.url}/data`)).json.data;
  t.equal(data.length, 1, 'one blob uploaded');
  const buf = await (await fetch(data[0].blob)).arrayBuffer();
  const entries: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const parser = tarList({ onReadEntry: (e) => entries.push(e.path) });
    parser.on('end', resolve).on('error', reject);
    parser.end(Buffer.from(buf));
  });
  t.same(
    entries.sort(),
    ['.gitignore', 'Procfile', 'package.json', 'server.js'],
    ".git, node_modules and .gitignore'd files are not shipped",
  );

  const table = await runCli(['ps'], { url: agent.url });
  t.equal(table.code, 0);
  t.match(table.stdout, /^SLUG\s+STATE\s+PID\s+PORT\s+RESTARTS\s+UPTIME\s+CPU\s+MEM\s+RELEASE\s+COMMAND\n/);
  t.match(table.stdout, new RegExp(`shop\\.web\\.0\\s+running\\s+${doc.pid}\\s+${doc.port}\\s+0\\s+\\d+s`));

  const status = await runCli(['status', 'shop.web.0'], { url: agent.url });
  t.equal(status.code, 0);
  t.match(status.stdout, new RegExp(`state\\s+running \\(pid ${doc.pid}, up`));
  t.match(status.stdout, /env\s+GREETING/);

  // The same bytes again: the blob is reused and nothing is restarted.
  const again = await runCli(['deploy', app, '--app', 'shop', '--env', 'GREETING=hi there'], { url: agent.url });
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, /\(already on the agent\)/);
  t.match(again.stdout, /shop: nothing to change \(1 process unchanged\)/);
  t.equal((await api('GET', `${agent.url}/data`)).json.data.length, 1, 'still one blob');
  t.equal((await ps(agent.url))[0].pid, doc.pid, 'the process was left alone');

  // A changed env replaces the process; --scale adds one; --json summarises.
  const changed = await runCli(['deploy', app, '--app', 'shop', '--env', 'GREETING=changed', '--scale', 'web=2', '--json'], {
    url: agent.url,
  });
  t.equal(changed.code, 0, changed.stderr);
  const summary = JSON.parse(changed.stdout);
  t.same([summary.ok, summary.created, summary.replaced, summary.deleted], [true, ['shop.web.1'], ['shop.web.0'], []]);
  const now = await ps(agent.url);
  t.same(
    now.map((d) => [d.slug, d.state]),
    [
      ['shop.web.0', 'running'],
      ['shop.web.1', 'running'],
    ],
  );
  t.not(now[0].pid, doc.pid, 'replaced: a new child');
  t.equal(await answer(now[1].port), 'changed (web.1)\n');

  const rm = await runCli(['rm', '--app', 'shop'], { url: agent.url });
  t.equal(rm.code, 0, rm.stderr);
  // Each line says how its last run ended, from the final status document (Prefer: return=representation).
  t.match(
    rm.stdout,
    /^deleted shop\.web\.[01] \((killed by SIG\w+|exited with code \d+) after [\d.e-]+ s\)\ndeleted shop\.web\.[01] \((killed by SIG\w+|exited with code \d+) after [\d.e-]+ s\)\n$/,
  );
  t.match(rm.stdout, /shop\.web\.0/);
  t.match(rm.stdout, /shop\.web\.1/);
  t.same(await ps(agent.url), []);
});

t.test('no Procfile, a start script: web: npm start, shown as from package.json; one word for stopped', async (t) => {
  const agent = await agentFor(t);
  const app = join(t.testdir(), 'npmstart');
  cpSync(join(examples, 'web'), app, { recursive: true });
  rmSync(join(app, 'Procfile'));
  writeFileSync(join(app, 'package.json'), JSON.stringify({ type: 'module', private: true, scripts: { start: 'node server.js' } }));
  const r = await runCli(['deploy', app, '--app', 'npm', '--env', 'GREETING=from npm start'], { url: agent.url });
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /has no Procfile: running web: npm start \(package\.json's start script\)/);
  t.match(r.stdout, /npm\.web\.0\s+ready on port \d+/);
  t.notMatch(r.stdout, /npm run build/, 'no build banner without a build script');
  const [doc] = await ps(agent.url);
  t.match(doc, { command: 'npm start', command_from: 'package.json', release: { id: /^[0-9a-f]{12}$/ } });
  t.equal(await answer(doc.port), 'from npm start (web.0)\n');
  const table = await runCli(['ps'], { url: agent.url });
  t.match(table.stdout, /^SLUG\s+STATE\s+PID\s+PORT\s+RESTARTS\s+UPTIME\s+CPU\s+MEM\s+RELEASE\s+COMMAND\n/);
  t.match(table.stdout, new RegExp(`npm\\.web\\.0\\s+running\\s+.*${doc.release.id} upload\\s+npm start \\(package\\.json\\)\\n`));
  const status = await runCli(['status', 'npm.web.0'], { url: agent.url });
  t.match(status.stdout, new RegExp(`release\\s+${doc.release.id} from http://`));
  t.match(status.stdout, /command\s+npm start \(package\.json start script: no Procfile\)/);
  t.match(status.stdout, /ready\s+yes, accepts connections since /);

  // stop says what ps says.
  const stop = await runCli(['stop', 'npm.web.0'], { url: agent.url });
  t.equal(stop.stdout, 'npm.web.0: stopped\n');
  t.match((await runCli(['ps'], { url: agent.url })).stdout, /npm\.web\.0\s+stopped\s/);
  t.match((await runCli(['status', 'npm.web.0'], { url: agent.url })).stdout, /state\s+stopped/);
  const start = await runCli(['start', 'npm.web.0'], { url: agent.url });
  t.match(start.stdout, /^npm\.web\.0: (pending|downloading|building|running)\n$/);

  // Without a start script either, the deploy says what is missing.
  writeFileSync(join(app, 'package.json'), '{"private": true}');
  oneLineError(
    t,
    await runCli(['deploy', app, '--app', 'npm'], { url: agent.url }),
    2,
    /has no Procfile .* nor a package\.json with a "start" script/,
  );
});

t.test('a deploy that fails to start exits non-zero and says why', async (t) => {
  const agent = await agentFor(t);
  const app = join(t.testdir(), 'broken');
  mkdirSync(app);
  writeFileSync(join(app, 'Procfile'), 'web: node server.js\n');
  writeFileSync(join(app, 'package.json'), '{"scripts": {"build": "exit 7"}}\n');
  const r = await runCli(['deploy', app, '--app', 'broken'], { url: agent.url });
  t.equal(r.code, 1);
  t.match(r.stdout, /broken\.web\.0\s+failed: build step "npm run build" exited with code 7/);
  t.match(r.stderr, /^drover: some processes of broken are not healthy/);
  const bad = await runCli(['deploy', app, '--app', 'broken', '--scale', 'worker=1'], { url: agent.url });
  oneLineError(t, bad, 2, /has no process type "worker" \(it has: web\)/);
  const url = await runCli(['deploy', 'http://127.0.0.1:1/nothing.tgz', '--app', 'remote', '--no-wait'], { url: agent.url });
  t.equal(url.code, 0, 'a URL source is created as is; --no-wait does not wait');
  t.match(url.stdout, /remote\.web\.0\s+create/);
});

t.test('redeploy: config kept, replaced in place, health checked', async (t) => {
  const agent = await agentFor(t);
  const app = join(t.testdir(), 'web');
  cpSync(join(examples, 'web'), app, { recursive: true });
  const first = await runCli(['deploy', app, '--app', 'keep', '--env', 'GREETING=kept', '--env', 'OTHER=1'], { url: agent.url });
  t.equal(first.code, 0, first.stderr);
  const [before] = await ps(agent.url);

  // A new source, no --env: the env stays; the same process (slug, restarts) is replaced in place.
  writeFileSync(join(app, 'NOTE'), 'a one-line change\n');
  const again = await runCli(['deploy', app, '--app', 'keep', '--strategy', 'start-first'], { url: agent.url });
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, /keep\.web\.0\s+replace \(source changed\)/);
  t.match(again.stdout, /keep\.web\.0\s+replaced \(start-first; source, port \d+ → \d+\); 0\.00 s without service/);
  t.match(again.stdout, /keep\.web\.0\s+ready on port \d+/);
  const [after] = await ps(agent.url);
  t.same(after.env_names.sort(), ['GREETING', 'OTHER'], 'config kept across the redeploy');
  t.equal(await answer(after.port), 'kept (web.0)\n');
  t.ok(after.restarts >= before.restarts, 'restarts not reset');

  // --env merges and prints the names that changed, never the values.
  const merged = await runCli(['deploy', app, '--app', 'keep', '--env', 'GREETING=new value'], { url: agent.url });
  t.equal(merged.code, 0, merged.stderr);
  t.match(merged.stdout, /replaced \(stop-first; env GREETING\); [\d.]+ s without service/);
  t.notMatch(merged.stdout, /new value/);
  t.same((await ps(agent.url))[0].env_names.sort(), ['GREETING', 'OTHER']);

  // --replace-env: exactly what is given.
  const exact = await runCli(['deploy', app, '--app', 'keep', '--env', 'GREETING=only', '--replace-env'], { url: agent.url });
  t.equal(exact.code, 0, exact.stderr);
  t.same((await ps(agent.url))[0].env_names, ['GREETING']);

  // A crash-looping worker: non-zero exit with its last error and last log lines.
  const crash = join(t.testdir(), 'crash');
  mkdirSync(crash);
  writeFileSync(join(crash, 'Procfile'), 'worker: echo starting up; sleep 0.3; echo giving up >&2; exit 3\n');
  const r = await runCli(['deploy', crash, '--app', 'crashy', '--min-uptime', '2'], { url: agent.url });
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /crashy\.worker\.0\s+failed: process exited with code 3/);
  t.match(r.stdout, /--- last \d+ log lines? of crashy\.worker\.0:\n(\s+.*\n)*\s+giving up/);
  t.match(r.stderr, /^drover: some processes of crashy are not healthy/);

  // logs APP: prefixed lines with markers for starts, exits and restarts.
  await waitFor(async () => (await ps(agent.url)).find((d) => d.slug === 'crashy.worker.0')!.restarts >= 2, 'two restarts');
  const applog = await runCli(['logs', 'crashy'], { url: agent.url });
  t.equal(applog.code, 0, applog.stderr);
  t.match(applog.stdout, /^crashy\.worker\.0 \| starting up$/m);
  t.match(applog.stdout, /^crashy\.worker\.0 \| ── started \(pid \d+, port \d+\)$/m);
  t.match(applog.stdout, /^crashy\.worker\.0 \| ── exited with code 3 after [\d.]+ s$/m);
  t.match(applog.stdout, /^crashy\.worker\.0 \| ── restarting in \d+ ms \(restart \d+\)$/m);
  const keep = await runCli(['logs', 'keep', '-n', '200'], { url: agent.url });
  t.match(keep.stdout, /^keep\.web\.0 \| ── replaced \(start-first, port \d+ → \d+\)$/m, 'the replace marker');
  t.match(keep.stdout, /^keep\.web\.0 \| ── ready on port \d+/m);
  const everything = await runCli(['logs', '-n', '3'], { url: agent.url });
  t.match(everything.stdout, /^crashy\.worker\.0 \| /m);
  t.match(everything.stdout, /^keep\.web\.0\s+\| /m);
  oneLineError(t, await runCli(['logs', 'nothing'], { url: agent.url }), 6, /no process or app "nothing"/);
});
