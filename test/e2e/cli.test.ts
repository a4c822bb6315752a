import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { list as tarList } from 'tar';
import { api } from '../helpers/agent.js';
import { bin, spawnAgent } from '../helpers/agent-process.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

// Dozens of CLI processes, one after another: on a slow, shared machine the file needs more than tap's 120 s.
t.setTimeout(300_000);

const examples = join(import.meta.dirname, '..', '..', 'examples');

async function agentFor(t: Test) {
  const agent = await spawnAgent(['--stop-grace-ms', '3000', '--backoff-initial-ms', '200']);
  t.teardown(async () => {
    agent.proc.kill('SIGINT');
    await agent.exit;
  });
  return agent;
}

const ps = async (url: string) =>
  (JSON.parse((await runCli(['ps', '--json'], { url })).stdout) as any[]).sort((a, b) => (a.slug < b.slug ? -1 : 1));

/** What the app on `port` answers, once it listens (`running` means started, not yet listening). */
const answer = (port: number) =>
  waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`)).text(), `the app on port ${port} to answer`);

function oneLineError(t: Test, r: CliResult, code: number, pattern: RegExp) {
  t.equal(r.code, code, `exit code ${code}`);
  t.equal(r.stderr.split('\n').filter(Boolean).length, 1, `one line: ${r.stderr.trim()}`);
  t.match(r.stderr, pattern);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

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

t.test('apply: --dry-run changes nothing; apply creates, converges and deletes', async (t) => {
  const agent = await agentFor(t);
  const dir = t.testdir();
  const manifest = join(dir, 'drover.yaml');
  writeFileSync(
    manifest,
    `apps:\n  site:\n    source: ${join(examples, 'web')}\n    processes: {web: 1}\n    env: {GREETING: yo}\n  jobs:\n    source: ${join(examples, 'worker')}\n    processes: {worker: 1}\n`,
  );
  const dry = await runCli(['apply', manifest, '--dry-run'], { url: agent.url });
  t.equal(dry.code, 0, dry.stderr);
  t.same(
    dry.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/)),
    [
      ['jobs.worker.0', 'create'],
      ['site.web.0', 'create'],
    ],
  );
  t.same(await ps(agent.url), [], 'a dry run creates nothing');
  t.same((await api('GET', `${agent.url}/data`)).json.data, [], 'a dry run uploads nothing');

  const applied = await runCli(['apply', manifest], { url: agent.url });
  t.equal(applied.code, 0, applied.stderr);
  const before = await ps(agent.url);
  t.same(
    before.map((d) => [d.slug, d.state]),
    [
      ['jobs.worker.0', 'running'],
      ['site.web.0', 'running'],
    ],
  );

  // Scale site up, drop jobs, add a third app from a URL-less dir; site.web.0 stays as it is.
  writeFileSync(manifest, `apps:\n  site:\n    source: ${join(examples, 'web')}\n    processes: {web: 2}\n    env: {GREETING: yo}\n`);
  const plan = await runCli(['apply', manifest, '--dry-run', '--json'], { url: agent.url });
  t.equal(plan.code, 0, plan.stderr);
  t.same(JSON.parse(plan.stdout), {
    dry_run: true,
    create: ['site.web.1'],
    replace: [],
    delete: ['jobs.worker.0'],
    unchanged: ['site.web.0'],
  });
  t.same(
    (await ps(agent.url)).map((d) => d.slug),
    ['jobs.worker.0', 'site.web.0'],
    'still nothing changed',
  );

  const converged = await runCli(['apply', manifest], { url: agent.url });
  t.equal(converged.code, 0, converged.stderr);
  const after = await ps(agent.url);
  t.same(
    after.map((d) => [d.slug, d.state]),
    [
      ['site.web.0', 'running'],
      ['site.web.1', 'running'],
    ],
  );
  t.equal(after[0].pid, before[1].pid, 'the unchanged process kept running');
  const noop = await runCli(['apply', manifest], { url: agent.url });
  t.match(noop.stdout, /^nothing to change \(2 processes unchanged\)$/m);

  writeFileSync(manifest, 'apps: {}\n');
  const emptied = await runCli(['apply', manifest], { url: agent.url });
  t.equal(emptied.code, 0);
  t.same(await ps(agent.url), [], 'an empty manifest deletes everything');

  writeFileSync(manifest, `apps:\n  site:\n    source: ${join(examples, 'web')}\n    procesess: {web: 1}\n`);
  oneLineError(t, await runCli(['apply', manifest], { url: agent.url }), 2, /drover\.yaml: apps\.site\.procesess: unknown key/);
  writeFileSync(manifest, `apps:\n  site:\n    source: ${join(examples, 'web')}\n    processes: {web: -1}\n`);
  oneLineError(
    t,
    await runCli(['apply', manifest], { url: agent.url }),
    2,
    /apps\.site\.processes\.web: must be an integer from 0 to 1000/,
  );
  writeFileSync(manifest, 'apps: [\n');
  oneLineError(t, await runCli(['apply', manifest], { url: agent.url }), 2, /is not valid YAML/);
});

t.test('logs -f follows a process until it is deleted', async (t) => {
  const agent = await agentFor(t);
  const deployed = await runCli(['deploy', join(examples, 'worker'), '--app', 'tick'], { url: agent.url });
  t.equal(deployed.code, 0, deployed.stderr);
  const follow = spawn(process.execPath, [bin, 'logs', '-f', 'tick.worker.0'], {
    env: { ...process.env, DROVER_URL: agent.url },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => follow.kill('SIGKILL'));
  let out = '';
  follow.stdout.on('data', (c) => (out += c));
  const exited = new Promise<number | null>((r) => follow.on('exit', (code) => r(code)));
  const ticks = () => [...out.matchAll(/^tick (\d+) from worker\.0$/gm)].map((m) => Number(m[1]));
  await waitFor(() => ticks().length >= 2, 'two lines followed', 30_000);
  const [a, b] = ticks();
  t.equal(b, a + 1, 'consecutive lines, as the process prints them');
  t.equal((await runCli(['rm', 'tick.worker.0'], { url: agent.url })).code, 0);
  t.equal(await exited, 0, 'logs -f ends when the process is deleted');
  t.match(out, /── tick\.worker\.0 was deleted; no more output\n$/, 'a clear last line');
  t.match(out, /^── started \(pid \d+/m, 'the start marker');
});

t.test('errors are one line with a meaningful exit code', async (t) => {
  const agent = await agentFor(t);
  await runCli(['deploy', join(examples, 'worker'), '--app', 'tick', '--no-wait'], { url: agent.url });
  // What the agent on this branch does not offer yet is a one-line "does not offer".
  const doc = (await ps(agent.url))[0];
  for (const [verb, link] of [
    ['stop', 'stop'],
    ['restart', 'restart'],
    ['start', 'start'],
  ] as const) {
    if (typeof doc[link] === 'string') continue;
    oneLineError(
      t,
      await runCli([verb, 'tick.worker.0'], { url: agent.url }),
      5,
      new RegExp(`does not offer .*no "${link}" link for tick\\.worker\\.0`),
    );
  }
  if (typeof doc.signal !== 'string')
    oneLineError(t, await runCli(['signal', 'tick.worker.0', 'HUP'], { url: agent.url }), 5, /does not offer sending signals/);
  if (typeof doc.events !== 'string')
    oneLineError(t, await runCli(['logs', 'tick.worker.0'], { url: agent.url }), 5, /does not offer events/);
  // Independent of each other: run side by side.
  const cases: [string[], number, RegExp][] = [
    [['status', 'nope.web.0'], 6, /no process "nope\.web\.0"/],
    [['rm', 'nope.web.0'], 6, /no process "nope\.web\.0"/],
    [['ps', '--bogus'], 2, /unknown option --bogus \(see drover ps --help\)/],
    [['deploy', join(examples, 'web')], 2, /--app NAME is required/],
    [['deploy', join(examples, 'web'), '--app', 'x', '--scale', 'web'], 2, /--scale: expected TYPE=COUNT/],
    [['deploy', join(examples, 'web'), '--app', 'x', '--env', '1X=2'], 2, /--env: expected NAME=VALUE/],
    [['deploy', '/no/such/dir', '--app', 'x'], 2, /no such directory/],
    [['deploy', join(examples, 'web'), '--app', 'bad/name', '--no-wait'], 1, /app: must be .* \(HTTP 400\)/],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(args, { url: agent.url })));
  results.forEach((r, i) => oneLineError(t, r, cases[i][1], cases[i][2]));
  oneLineError(t, await runCli(['ps'], { url: 'not a url' }), 2, /DROVER_URL is not a valid URL/);

  // A stopped agent: every verb says it cannot reach it.
  agent.proc.kill('SIGINT');
  await agent.exit;
  const verbs = [
    ['ps'],
    ['status', 'tick.worker.0'],
    ['logs', '-f', 'tick.worker.0'],
    ['deploy', join(examples, 'web'), '--app', 'x'],
    ['rm', '--app', 'tick'],
  ];
  for (const r of await Promise.all(verbs.map((args) => runCli(args, { url: agent.url })))) {
    oneLineError(t, r, 3, /cannot reach the agent at http:\/\/127\.0\.0\.1:\d+ \(connection refused\); is it running\?/);
  }
});

t.test('with token auth: the right token deploys (own blob URL included), a wrong one is one line, exit 4', async (t) => {
  const token = 'correct-horse-battery-staple-42';
  const agent = await spawnAgent(['--stop-grace-ms', '3000'], { env: { ...process.env, DROVER_TOKEN: token } });
  t.teardown(async () => {
    agent.proc.kill('SIGINT');
    await agent.exit;
  });
  t.equal((await api('GET', agent.url)).status, 401, 'the agent requires the token');

  // The source_url is the agent's own blob URL: it must work although the agent needs a token.
  const deployed = await runCli(['deploy', join(examples, 'worker'), '--app', 'tick'], { url: agent.url, env: { DROVER_TOKEN: token } });
  t.equal(deployed.code, 0, deployed.stderr);
  t.match(deployed.stdout, /tick\.worker\.0\s+running/);
  const follow = spawn(process.execPath, [bin, 'attach', 'tick.worker.0'], {
    env: { ...process.env, DROVER_URL: agent.url, DROVER_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => follow.kill('SIGKILL'));
  let out = '';
  follow.stdout.on('data', (c) => (out += c));
  await waitFor(() => /^tick \d+ from worker\.0$/m.test(out), 'attach with the token streams output', 30_000);

  const wrong = await Promise.all([
    runCli(['ps'], { url: agent.url, env: { DROVER_TOKEN: 'wrong-token-of-enough-length' } }),
    runCli(['attach', 'tick.worker.0'], { url: agent.url, env: { DROVER_TOKEN: 'wrong-token-of-enough-length' } }),
    runCli(['deploy', join(examples, 'web'), '--app', 'x'], { url: agent.url }),
  ]);
  oneLineError(t, wrong[0], 4, /^drover: the token in DROVER_TOKEN was refused \(HTTP 401 from http:\/\/127\.0\.0\.1:\d+: .+\)$/m);
  oneLineError(t, wrong[1], 4, /the token in DROVER_TOKEN was refused/);
  oneLineError(t, wrong[2], 4, /the agent requires a token: set DROVER_TOKEN/);
  for (const r of wrong) t.notMatch(r.stderr, new RegExp(token), 'the real token never appears');
  t.notMatch(wrong[0].stderr, /wrong-token/, 'nor the wrong one');
});

t.test("client verbs do not load the agent's dependencies", async (t) => {
  const dir = t.testdir();
  const hook = join(dir, 'forbid.mjs');
  writeFileSync(
    hook,
    `export async function resolve(specifier, context, next) {\n` +
      `  if (/^(h3|xstate|listhen)(\\/|$)/.test(specifier)) throw new Error('client verb loaded ' + specifier);\n` +
      `  return next(specifier, context);\n}\n`,
  );
  const register = join(dir, 'register.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hook).href)});\n`);
  const verbs = ['ps', 'deploy', 'apply', 'status', 'logs', 'attach', 'rm', 'stop', 'restart', 'signal'];
  const results = await Promise.all(
    verbs.map(
      (verb) =>
        new Promise<{ code: number | null; err: string }>((resolve) => {
          const c = spawn(process.execPath, ['--import', pathToFileURL(register).href, bin, verb, '--help'], {
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          let err = '';
          c.stderr.on('data', (d) => (err += d));
          c.on('close', (code) => resolve({ code, err }));
        }),
    ),
  );
  results.forEach((r, i) => t.equal(r.code, 0, `drover ${verbs[i]} --help loads no agent module ${r.err.trim()}`));
  const serve = await new Promise<number | null>((resolve) => {
    spawn(process.execPath, ['--import', pathToFileURL(register).href, bin, 'serve', '--help'], { stdio: 'ignore' }).on('close', resolve);
  });
  t.not(serve, 0, 'the check can fail: serve does load them');
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
