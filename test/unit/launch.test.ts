import t from 'tap';
import { symlinkSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readProcfile, resolveLaunch, type LaunchInput } from '../../lib/release/launch.js';

const identity = { app: 'shop', node: 'web.0', slug: 'shop.web.0', processType: 'web' };

function input(dir: string, over: Partial<LaunchInput> = {}): LaunchInput {
  return {
    dir,
    spec: { kind: 'procfile', processType: 'web' },
    agentEnv: { PATH: '/usr/bin', FROM_AGENT: 'agent', DROVER_TOKEN: 'secret' },
    env: {},
    port: 5000,
    identity,
    ...over,
  };
}

t.test('a Procfile entry: its command, the app dir, env layered agent < .env < Procfile < request', async (t) => {
  const dir = t.testdir({
    Procfile: 'web: A=procfile B=procfile node server.js\n',
    '.env': 'A=dotenv\nC=dotenv\n',
    node_modules: { '.bin': {} },
  });
  const l = await resolveLaunch(input(dir, { env: { B: 'request' } }));
  t.equal(l.command, 'node server.js');
  t.equal(l.argv, undefined);
  t.equal(l.cwd, dir);
  t.match(l.env, {
    A: 'procfile',
    B: 'request',
    C: 'dotenv',
    FROM_AGENT: 'agent',
    PORT: '5000',
    DYNO: 'web.0',
    DROVER_PROCESS_TYPE: 'web',
  });
  t.equal(l.env.DROVER_TOKEN, undefined, "the agent's DROVER_* variables never reach the app");
  t.equal(l.env.PATH, `${join(dir, 'node_modules', '.bin')}:/usr/bin`, "the app's binaries first");
});

t.test('an argv: executed as given, cwd relative to the app dir, its env where the Procfile entry would be', async (t) => {
  const dir = t.testdir({ '.env': 'A=dotenv\nB=dotenv\n', sub: {} });
  const argv = ['printf', '%s\n', '$HOME; `x`'];
  const l = await resolveLaunch(
    input(dir, { spec: { kind: 'argv', argv, cwd: 'sub', env: { B: 'spec', C: 'spec' } }, env: { C: 'request' } }),
  );
  t.same(l.argv, argv);
  t.not(l.argv, argv, 'a copy: the spec cannot change a launch after the fact');
  t.equal(l.command, undefined);
  t.equal(l.cwd, join(dir, 'sub'));
  t.match(l.env, { A: 'dotenv', B: 'spec', C: 'request', PORT: '5000' });
  t.equal(
    (await resolveLaunch(input(dir, { spec: { kind: 'argv', argv: ['true'], cwd: '/tmp' } }))).cwd,
    '/tmp',
    'an absolute cwd as it is',
  );
  t.equal((await resolveLaunch(input(dir, { spec: { kind: 'argv', argv: ['true'] } }))).cwd, dir, 'the app dir by default');
  await t.rejects(resolveLaunch(input(dir, { spec: { kind: 'argv', argv: [] } })), /argv needs a program to run/);
  await t.rejects(resolveLaunch(input(dir, { spec: { kind: 'argv', argv: [''] } })), /argv needs a program to run/);
});

t.test('--env-file replaces .env; a Procfile read once is used as given', async (t) => {
  const dir = t.testdir({ '.env': 'A=dotenv\n' });
  const procfile = new Map([['web', { type: 'web', command: 'run-it', env: {}, line: 1 }]]);
  const l = await resolveLaunch(input(dir, { dotenv: { A: 'file' }, procfile }));
  t.equal(l.command, 'run-it', 'no Procfile on disk needed');
  t.equal(l.env.A, 'file');
});

t.test('the Procfile is read through the safe read: missing, unknown type, symlink, too large', async (t) => {
  const dir = t.testdir({
    empty: {},
    typed: { Procfile: 'worker: x\n' },
    big: { Procfile: `web: ${'x'.repeat(70 * 1024)}\n` },
    real: { Procfile: 'web: x\n' },
  });
  mkdirSync(join(dir, 'linked'));
  symlinkSync(join(dir, 'real', 'Procfile'), join(dir, 'linked', 'Procfile'));
  t.equal(await readProcfile(join(dir, 'empty')), null);
  await t.rejects(resolveLaunch(input(join(dir, 'empty'))), /no Procfile at its root/);
  await t.rejects(resolveLaunch(input(join(dir, 'typed'))), /unknown process type "web"; the Procfile has: worker/);
  await t.rejects(resolveLaunch(input(join(dir, 'linked'))), /Procfile: is a symbolic link; refusing to follow it/);
  await t.rejects(resolveLaunch(input(join(dir, 'big'))), /Procfile: file is larger than the limit/);
});

t.test('no Procfile but a start script in package.json: web: npm start, as on Heroku', async (t) => {
  const dir = t.testdir({
    node: { 'package.json': JSON.stringify({ scripts: { start: 'node server.js' } }) },
    both: { Procfile: 'web: node other.js\n', 'package.json': JSON.stringify({ scripts: { start: 'node server.js' } }) },
    nostart: { 'package.json': JSON.stringify({ scripts: { build: 'tsc' } }) },
    blank: { 'package.json': JSON.stringify({ scripts: { start: ' ' } }) },
    notjson: { 'package.json': '{ not json' },
    real: { 'package.json': JSON.stringify({ scripts: { start: 'x' } }) },
  });
  mkdirSync(join(dir, 'linked'));
  symlinkSync(join(dir, 'real', 'package.json'), join(dir, 'linked', 'package.json'));
  const procfile = await readProcfile(join(dir, 'node'));
  t.same([...procfile!.values()], [{ type: 'web', command: 'npm start', env: {}, line: 0, from: 'package.json' }]);
  const l = await resolveLaunch(input(join(dir, 'node')));
  t.equal(l.command, 'npm start');
  t.same(l.origin, { command: 'npm start', from: 'package.json' }, 'the status document says where it comes from');
  await t.rejects(
    resolveLaunch(input(join(dir, 'node'), { spec: { kind: 'procfile', processType: 'worker' } })),
    /unknown process type "worker"; package.json gives only: web/,
  );
  const both = await resolveLaunch(input(join(dir, 'both')));
  t.same(both.origin, { command: 'node other.js', from: 'Procfile' }, 'a Procfile wins');
  for (const name of ['nostart', 'blank', 'notjson']) {
    t.equal(await readProcfile(join(dir, name)), null, `${name}: no default`);
    await t.rejects(resolveLaunch(input(join(dir, name))), /no Procfile at its root \(nor a package\.json with a "start" script\)/);
  }
  await t.rejects(readProcfile(join(dir, 'linked')), /package\.json: is a symbolic link; refusing to follow it/);
  const argv = await resolveLaunch(input(join(dir, 'nostart'), { spec: { kind: 'argv', argv: ['node', '-e', '1'] } }));
  t.same(argv.origin, { command: 'node -e 1', from: 'argv' });
});

t.test('a file read before is read again once it changes, and a link put in its place is still refused', async (t) => {
  const { writeFileSync, renameSync, rmSync, utimesSync } = await import('node:fs');
  const { readSmallFile } = await import('../../lib/release/small-file.js');
  const dir = t.testdir({ Procfile: 'web: one\n', other: 'web: two\n' });
  const file = join(dir, 'Procfile');
  // Settled files (changed over 2 s ago) are the ones remembered; utimes moves ctime to now,
  // so wait for the condition rather than for a fixed time.
  const settled = async (f: string) => {
    const { statSync } = await import('node:fs');
    while (Date.now() - statSync(f).ctimeMs <= 2000) await new Promise((r) => setTimeout(r, 100));
  };
  await settled(file);
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: one\n');
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: one\n', 'the same bytes when nothing changed');
  writeFileSync(file, 'web: uno\n'); // same size, rewritten in place
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: uno\n');
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: uno\n', 'a fresh file is read each time, never remembered');
  writeFileSync(file, 'web: dos\n');
  utimesSync(file, new Date(0), new Date(0));
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: dos\n');
  renameSync(join(dir, 'other'), file); // replaced by another file
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: two\n');
  await settled(file);
  const copy = await readSmallFile(file, 100, 'Procfile');
  copy![0] = 0x78; // a caller scribbling on its copy changes nothing for the next
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: two\n');
  await t.rejects(readSmallFile(file, 5, 'Procfile'), /larger than the limit of 5 bytes/, 'a lower cap still applies');
  writeFileSync(file, 'web: tre\n'); // same size, after it was remembered
  t.equal(String(await readSmallFile(file, 100, 'Procfile')), 'web: tre\n', 'a rewrite of a remembered file is seen');
  rmSync(file);
  t.equal(await readSmallFile(file, 100, 'Procfile'), null, 'gone is gone');
  writeFileSync(join(dir, 'target'), 'web: evil\n');
  symlinkSync(join(dir, 'target'), file);
  await t.rejects(readSmallFile(file, 100, 'Procfile'), /symbolic link; refusing to follow it/);
});
