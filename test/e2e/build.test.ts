import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import t from 'tap';
import { buildEnvPath, detectBuildSteps, runBuild } from '../../lib/release/build.js';
import { ReleaseError } from '../../lib/release/errors.js';

const baseEnv = (): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('npm_')) env[k] = v;
  return { ...env, npm_config_update_notifier: 'false', PIP_DISABLE_PIP_VERSION_CHECK: '1' };
};

async function files(dir: string, spec: Record<string, string | { body: string; mode: number }>): Promise<void> {
  for (const [rel, s] of Object.entries(spec)) {
    const p = path.join(dir, rel);
    await mkdir(path.dirname(p), { recursive: true });
    await writeFile(p, typeof s === 'string' ? s : s.body);
    if (typeof s !== 'string') await chmod(p, s.mode);
  }
}

/** Live (non-zombie) processes whose process group is `pgid`, from /proc. */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // "pid (comm) state ppid pgrp ...": comm may contain anything, so split after the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') out.push(Number(name));
  }
  return out;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

const exe = (body: string) => ({ body, mode: 0o755 });

t.test('detectBuildSteps looks only at files', async (t) => {
  const dir = t.testdir();
  t.same(await detectBuildSteps(dir), [], 'nothing to do');

  await files(dir, { 'package.json': '{"scripts": {"start": "node ."}}' });
  t.same(
    (await detectBuildSteps(dir)).map((s) => s.name),
    ['npm install'],
    'no build script: no "npm run build" step (nor its banner)',
  );
  await files(dir, { 'package.json': '{"scripts": {"build": ""}}' });
  t.same(
    (await detectBuildSteps(dir)).map((s) => s.name),
    ['npm install'],
    'an empty build script is none',
  );
  await files(dir, { 'package.json': 'not json' });
  t.same(
    (await detectBuildSteps(dir)).map((s) => s.name),
    ['npm install'],
    'a package.json that is not JSON has no build script (npm install says why)',
  );
  await files(dir, { 'package.json': '{"scripts": {"build": "tsc"}}' });
  t.same(
    (await detectBuildSteps(dir)).map((s) => [s.name, s.command, s.args[0]]),
    [
      ['npm install', 'npm', 'install'],
      ['npm run build', 'npm', 'run'],
    ],
  );
  t.same((await detectBuildSteps(dir))[1].args, ['run', 'build']);

  await files(dir, { 'package-lock.json': '{}' });
  t.equal((await detectBuildSteps(dir))[0].name, 'npm ci');

  const shrink = t.testdir({ 'package.json': '{}', 'npm-shrinkwrap.json': '{}' });
  t.equal((await detectBuildSteps(shrink))[0].name, 'npm ci');

  const py = t.testdir({ 'requirements.txt': '' });
  const steps = await detectBuildSteps(py);
  t.same(
    steps.map((s) => s.name),
    ['python3 -m venv .venv', 'pip install'],
  );
  t.same(steps[0].args, ['-m', 'venv', '.venv']);
  t.equal(steps[1].command, path.join(py, '.venv/bin/pip'));
  t.same(steps[1].args, ['install', '-r', 'requirements.txt']);

  const withBin = t.testdir({ 'package.json': '{"scripts": {"build": "tsc"}}' });
  await files(withBin, { 'bin/build': exe('#!/bin/sh\n') });
  t.same(
    (await detectBuildSteps(withBin)).map((s) => s.name),
    ['bin/build', 'npm install', 'npm run build'],
    'bin/build first',
  );
  const notExec = t.testdir();
  await files(notExec, { 'bin/build': { body: '#!/bin/sh\n', mode: 0o644 } });
  t.same(await detectBuildSteps(notExec), [], 'a non-executable bin/build is ignored');
});

t.test('buildEnvPath puts the venv and node_modules/.bin first, if present', async (t) => {
  const dir = t.testdir();
  t.equal(buildEnvPath(dir, '/usr/bin:/bin'), '/usr/bin:/bin');
  t.equal(buildEnvPath(dir, ''), '', 'no empty element (which would mean ".")');
  await mkdir(path.join(dir, 'node_modules/.bin'), { recursive: true });
  await mkdir(path.join(dir, '.venv/bin'), { recursive: true });
  t.equal(buildEnvPath(dir, '/usr/bin:/bin'), `${dir}/.venv/bin:${dir}/node_modules/.bin:/usr/bin:/bin`);
  t.equal(buildEnvPath(dir, ''), `${dir}/.venv/bin:${dir}/node_modules/.bin`);
});

t.test('a real npm build: bin/build first, then npm install and the build script', async (t) => {
  const dir = t.testdir();
  await files(dir, {
    'bin/build': exe('#!/bin/sh\necho "bin/build in $(pwd)"\necho ran > from-bin-build\n'),
    'package.json': JSON.stringify({
      name: 'tiny',
      version: '1.0.0',
      private: true,
      scripts: {
        // Fails unless bin/build ran before it.
        build: `node -e "require('fs').readFileSync('from-bin-build'); require('fs').writeFileSync('built.txt', 'ok'); console.log('build done')"`,
      },
    }),
  });
  const lines: string[] = [];
  await runBuild(dir, { env: baseEnv(), onLine: (l) => lines.push(l) });
  t.equal(readFileSync(path.join(dir, 'built.txt'), 'utf8'), 'ok');
  t.ok(existsSync(path.join(dir, 'package-lock.json')), 'npm install ran');
  t.ok(lines.includes(`bin/build in ${dir}`), 'runs in the app dir');
  t.ok(lines.includes('build done'), 'build script output is captured');
  const headers = lines.filter((l) => l.startsWith('-----> '));
  t.same(headers, ['-----> bin/build', '-----> npm install', '-----> npm run build']);
});

t.test('a failing step reports its exit code; output lines incl. a final partial one are captured', async (t) => {
  const dir = t.testdir();
  await files(dir, { 'bin/build': exe('#!/bin/sh\necho out\necho err >&2\nprintf "no newline"\nexit 3\n'), 'package.json': '{}' });
  const lines: string[] = [];
  try {
    await runBuild(dir, { env: baseEnv(), onLine: (l) => lines.push(l) });
    t.fail('should fail');
  } catch (err) {
    t.ok(err instanceof ReleaseError);
    t.equal((err as Error).message, 'build step "bin/build" exited with code 3');
  }
  t.ok(lines.includes('out'));
  t.ok(lines.includes('err'));
  t.ok(lines.includes('no newline'), 'final partial line flushed');
  t.notOk(lines.includes('-----> npm install'), 'later steps do not run');
});

t.test('npm failures name the npm step', async (t) => {
  const dir = t.testdir({
    'package.json': JSON.stringify({ name: 'x', version: '1.0.0', scripts: { build: 'node -e "process.exit(7)"' } }),
  });
  try {
    await runBuild(dir, { env: baseEnv(), onLine: () => {} });
    t.fail('should fail');
  } catch (err) {
    t.equal((err as Error).message, 'build step "npm run build" exited with code 7');
  }
});

t.test('a step that cannot start is a ReleaseError', async (t) => {
  const dir = t.testdir();
  await files(dir, { 'bin/build': exe('#!/nonexistent/interpreter\n') });
  try {
    await runBuild(dir, { env: baseEnv(), onLine: () => {} });
    t.fail('should fail');
  } catch (err) {
    t.ok(err instanceof ReleaseError);
    t.match((err as Error).message, /^build step "bin\/build" could not start: .*ENOENT/);
  }
});

for (const [name, script, grace] of [
  ['SIGTERM', '#!/bin/sh\nsleep 1000 &\necho "started $$"\nsleep 1000\n', 60_000],
  // Ignored SIGTERM (inherited by the children too) needs the SIGKILL escalation.
  ['SIGKILL after the grace period', '#!/bin/sh\ntrap \'\' TERM\nsleep 1000 &\necho "started $$"\nsleep 1000\n', 200],
] as const) {
  t.test(`abort kills the whole process group (${name})`, async (t) => {
    const dir = t.testdir();
    await files(dir, { 'bin/build': exe(script) });
    const ac = new AbortController();
    let pgid = 0;
    const p = runBuild(dir, {
      signal: ac.signal,
      env: baseEnv(),
      killGraceMs: grace,
      onLine: (l) => {
        const m = /^started (\d+)$/.exec(l);
        if (!m) return;
        pgid = Number(m[1]);
        t.ok(groupMembers(pgid).length >= 2, 'shell and background sleep are in the group');
        ac.abort();
      },
    });
    await t.rejects(p, { name: 'AbortError' });
    t.ok(pgid > 0);
    await waitFor(() => groupMembers(pgid).length === 0, 'the process group to be gone');
    t.same(groupMembers(pgid), []);
  });
}

t.test('an already-aborted signal runs nothing', async (t) => {
  const dir = t.testdir();
  await files(dir, { 'bin/build': exe('#!/bin/sh\ntouch ran\n') });
  const ac = new AbortController();
  ac.abort();
  await t.rejects(runBuild(dir, { signal: ac.signal, env: baseEnv(), onLine: () => {} }), { name: 'AbortError' });
  t.notOk(existsSync(path.join(dir, 'ran')));
});

t.test('requirements.txt: venv + pip install', async (t) => {
  const dir = t.testdir({ 'requirements.txt': '# nothing needed\n' });
  const lines: string[] = [];
  await runBuild(dir, { env: { ...baseEnv(), PIP_NO_INDEX: '1' }, onLine: (l) => lines.push(l) });
  t.ok(existsSync(path.join(dir, '.venv/bin/python')), 'venv created in the app dir');
  t.same(
    lines.filter((l) => l.startsWith('-----> ')),
    ['-----> python3 -m venv .venv', '-----> pip install'],
  );
  t.match(buildEnvPath(dir, '/usr/bin'), new RegExp(`^${dir}/\\.venv/bin:`));
});
