import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, attach, waitForState } from '../helpers/agent.js';
import { bin, spawnAgent } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';

const TOKEN = 'c0ffee-and-a-long-enough-secret-4242';
// An environment without any token, whatever the test runner's has.
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DROVER_'))) as NodeJS.ProcessEnv;
const run = (args: string[], env: NodeJS.ProcessEnv = cleanEnv()) =>
  spawnSync(process.execPath, [bin, 'serve', '--port', '0', ...args], { encoding: 'utf8', timeout: 30_000, env });

t.test('a non-loopback address without a token is refused, with why and how', async (t) => {
  const dir = t.testdir();
  for (const host of ['0.0.0.0', '::']) {
    const r = run(['--host', host, '--state-dir', dir]);
    t.equal(r.status, 1, host);
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    t.match(
      r.stderr,
      new RegExp(
        `^drover: refusing to listen on ${host.replace(/[.]/g, '\\.')} without a token: anyone who can reach it could run any command`,
      ),
    );
    t.match(r.stderr, /DROVER_TOKEN/);
    t.match(r.stderr, /--token-file/);
    t.match(r.stderr, /--insecure/);
  }
});

t.test('--insecure starts anyway and warns loudly', async (t) => {
  const agent = await spawnAgent(['--host', '0.0.0.0', '--insecure'], { env: cleanEnv() });
  t.teardown(() => agent.proc.kill('SIGKILL'));
  t.match(agent.stderr(), /WARNING: listening on 0\.0\.0\.0 WITHOUT A TOKEN \(--insecure\)/);
  const port = new URL(agent.url).port;
  t.equal((await api('GET', `http://127.0.0.1:${port}/`)).status, 200);
  agent.proc.kill('SIGTERM');
  t.equal((await agent.exit).code, 0);
});

t.test('token from a file: required on every request; bad token files are one-line errors', async (t) => {
  const dir = t.testdir({
    token: `${TOKEN}\n`,
    short: 'tooshort\n',
    spaced: 'has a space in the middle of it\n',
    open: `${TOKEN}\n`,
  });
  chmodSync(join(dir, 'token'), 0o600);
  chmodSync(join(dir, 'open'), 0o644);
  const agent = await spawnAgent(['--host', '0.0.0.0', '--token-file', join(dir, 'token')], { env: cleanEnv() });
  t.teardown(() => agent.proc.kill('SIGKILL'));
  t.notMatch(agent.stderr(), /WARNING/, 'a token on a network address is fine');
  const base = `http://127.0.0.1:${new URL(agent.url).port}`;
  t.equal((await api('GET', base)).status, 401);
  t.equal(
    (await api('GET', base, undefined, { authorization: `Bearer ${TOKEN}` })).status,
    200,
    'the final newline is not part of the token',
  );
  agent.proc.kill('SIGTERM');
  await agent.exit;
  t.notOk(agent.stderr().includes(TOKEN), 'the token is not on stderr');

  const cases: [string[], NodeJS.ProcessEnv | undefined, RegExp][] = [
    [['--token-file', join(dir, 'short')], undefined, /the token in token file .* is too short: use at least 16 characters/],
    [['--token-file', join(dir, 'spaced')], undefined, /must be printable ASCII without spaces/],
    [['--token-file', join(dir, 'nope')], undefined, /cannot read token file .*nope: ENOENT/],
    [['--token-file', dir], undefined, /is not a regular file/],
    [['--token-file', join(dir, 'token')], { ...cleanEnv(), DROVER_TOKEN: TOKEN }, /both DROVER_TOKEN and --token-file are set/],
    [[], { ...cleanEnv(), DROVER_TOKEN: '' }, /the token in DROVER_TOKEN is empty/],
    [[], { ...cleanEnv(), DROVER_TOKEN: 'short' }, /too short/],
    [['--source-hosts', 'ok.example.com,not a host!'], undefined, /"not a host!" is not a host name/],
    [['--download-max-redirects=-1'], undefined, /download_max_redirects" must be an integer >= 0/],
    [['--insecure', 'yes'], undefined, /Unexpected argument 'yes'/],
  ];
  for (const [args, env, message] of cases) {
    const r = run(['--state-dir', dir, ...args], env);
    t.equal(r.status, 2, args.join(' ') || 'env');
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    t.match(r.stderr, message);
    t.notOk(r.stderr.includes(TOKEN) || r.stderr.includes('tooshort'), 'no token in the message');
  }

  const open = await spawnAgent(['--token-file', join(dir, 'open')], { env: cleanEnv() });
  t.teardown(() => open.proc.kill('SIGKILL'));
  t.match(open.stderr(), /warning: token file .*open can be read by other users \(mode 0644\); chmod 600 it/);
  open.proc.kill('SIGTERM');
  await open.exit;
});

t.test('the token reaches no child, build step, log, status document or error', async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const app = writeApp(join(dir, 'app'), {
    Procfile: 'web: env | sort; echo envdone; exec sleep 600\n',
    'bin/build': '#!/bin/sh\nenv | sort > build-env.txt\necho "build done"\n',
  });
  const url = archives.serve('app.tgz', await pack(app, join(dir, 'app.tgz')));
  const agent = await spawnAgent(['--stop-grace-ms', '2000'], { env: { ...cleanEnv(), DROVER_TOKEN: TOKEN, DROVER_OTHER_SETTING: 'x' } });
  t.teardown(() => agent.proc.kill('SIGKILL'));
  const auth = { authorization: `Bearer ${TOKEN}` };
  const docs: string[] = []; // every response the agent sent

  const created = await api(
    'POST',
    `${agent.url}/create-process`,
    { app: 'leak', node: 'web.0', process_type: 'web', source_url: url, env: { APP_SECRET: 'request-env-value' } },
    auth,
  );
  t.equal(created.status, 201);
  docs.push(created.text, JSON.stringify([...created.headers]));
  const stream = await attach(`${created.json.attach}?token=${TOKEN}`);
  // The attach may start after the build; restart-free runs print env once, so also read /proc.
  const doc = await waitForState(created.json.status, 'running', 60_000, auth);
  const environ = readFileSync(`/proc/${doc.pid}/environ`, 'utf8').split('\0');
  t.ok(environ.includes('APP_SECRET=request-env-value'), 'the request env reached the child');
  t.notOk(
    environ.some((v) => v.includes(TOKEN)),
    'no token in the child environment',
  );
  t.notOk(
    environ.some((v) => v.startsWith('DROVER_TOKEN=') || v.startsWith('DROVER_OTHER_SETTING=')),
    'no DROVER_* setting in it',
  );

  // A failing process whose URL carries credentials and a signed query.
  const secretUrl = `${archives.url.replace('http://', 'http://deploy:hunter2-password@')}/missing.tgz?X-Signature=sig-abcdef`;
  const failing = await api(
    'POST',
    `${agent.url}/create-process`,
    { app: 'leak', node: 'web.1', process_type: 'web', source_url: secretUrl },
    auth,
  );
  t.equal(failing.status, 201);
  const failed = await waitForState(failing.json.status, (d) => d.errors.length > 0, 60_000, auth);
  t.match(failed.errors[0], /HTTP 404 Not Found from http:\/\/127\.0\.0\.1:\d+\/missing\.tgz\?<redacted>/);

  for (const path of ['/', '/list-processes', '/process-status/leak.web.0', '/process-status/leak.web.1']) {
    const r = await api('GET', agent.url + path, undefined, auth);
    t.equal(r.status, 200);
    docs.push(r.text, JSON.stringify([...r.headers]));
  }
  const buildEnv = readFileSync(
    join(
      agent.stateDir,
      'releases',
      readdirSync(join(agent.stateDir, 'releases')).find((n) => !n.endsWith('.json'))!,
      'build-env.txt',
    ),
    'utf8',
  );
  t.match(buildEnv, /^PATH=/m, 'the build step wrote its environment');
  t.notOk(buildEnv.includes(TOKEN) || buildEnv.includes('DROVER_TOKEN'), 'no token in the build environment');
  // The child's own `env` goes to attached clients.
  const rerun = await api(
    'POST',
    `${agent.url}/create-process`,
    { app: 'leak', node: 'web.2', process_type: 'web', source_url: url },
    auth,
  );
  const stream2 = await attach(`${rerun.json.attach}?token=${TOKEN}`);
  await waitFor(() => stream2.lines.includes('envdone'), 'the child printed its environment');
  const lines = [...stream.lines, ...stream2.lines];
  t.ok(
    stream2.lines.some((l) => l.startsWith('PATH=')),
    'the environment was printed',
  );
  for (const del of ['leak.web.0', 'leak.web.1', 'leak.web.2']) {
    const r = await api('POST', `${agent.url}/delete-process/${del}`, {}, auth);
    t.equal(r.status, 200);
    docs.push(r.text);
  }
  stream.ws.close();
  stream2.ws.close();
  agent.proc.kill('SIGTERM');
  await agent.exit;
  const everything = [...docs, ...lines, agent.stderr()].join('\n');
  t.notOk(everything.includes(TOKEN), 'the token is in no response, output line or log');
  t.notOk(everything.includes('DROVER_TOKEN'), 'nor is its name');
  t.notOk(everything.includes('hunter2-password'), 'URL credentials are redacted');
  t.notOk(everything.includes('sig-abcdef'), 'URL query strings are redacted');
  t.notOk(docs.join('\n').includes('request-env-value'), 'status documents never echo env values');
  t.ok(docs.join('\n').includes('"env_names":["APP_SECRET"]'), 'only the names');
  t.match(
    agent.stderr(),
    /HTTP 404 Not Found from http:\/\/127\.0\.0\.1:\d+\/missing\.tgz\?<redacted>/,
    'the logged error is redacted too',
  );
});
