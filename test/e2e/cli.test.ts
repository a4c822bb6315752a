import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { api } from '../helpers/agent.js';
import { bin, spawnAgent } from '../helpers/agent-process.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';
import { agentFor, oneLineError, ps } from '../helpers/cli-agent.js';

// Dozens of CLI processes, one after another: on a slow, shared machine the file needs more than tap's 120 s.
t.setTimeout(300_000);

const examples = join(import.meta.dirname, '..', '..', 'examples');

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
