// The npm package: `npm pack` holds the CLI, the built dist/lib, the dashboard, the native
// helpers' sources and build script, the systemd unit and the README, and no tests or benches;
// installed globally into a temporary prefix, its `drover serve` answers.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { waitFor } from '../helpers/wait.js';

const root = join(import.meta.dirname, '..', '..');
// --ignore-scripts: `prepare` would recompile dist/ under the feet of the other tests; `npm test` built it.
const npm = (args: string[], cwd = root) =>
  spawnSync('npm', args, { cwd, encoding: 'utf8', timeout: 300_000, env: { ...process.env, npm_config_update_notifier: 'false' } });

t.test('npm pack holds what an install needs and nothing of the tests', async (t) => {
  const r = npm(['pack', '--dry-run', '--json', '--ignore-scripts']);
  t.equal(r.status, 0, r.stderr);
  const [pack] = JSON.parse(r.stdout) as { files: { path: string }[] }[];
  const files = pack.files.map((f) => f.path).sort();
  for (const needed of [
    'package.json',
    'README.md',
    'bin/drover.js',
    'dist/lib/cli/main.js',
    'dist/lib/http/server.js',
    'dist/build-info.json',
    'lib/ui/index.html',
    'native/build.mjs',
    'native/drover-wait.c',
    'native/drover-spawn.c',
    'native/sweep.h',
    'native/drover-notify.c',
    'examples/systemd/drover.service',
  ])
    t.ok(files.includes(needed), `has ${needed}`);
  t.same(
    files.filter(
      (f) => /^(test|bench|dist\/test|dist\/bench|native\/build\/|procfiles|docs)\//.test(f) || f.endsWith('.ts') || f.endsWith('.map'),
    ),
    [],
    'no tests, benches, sources, compiled helpers or source maps',
  );
  t.same(
    files.filter(
      (f) =>
        !/^(dist\/lib\/|lib\/ui\/|native\/|bin\/|examples\/systemd\/)/.test(f) &&
        !['package.json', 'README.md', 'dist/build-info.json'].includes(f),
    ),
    [],
    'nothing else',
  );
});

t.test('npm install -g of the packed file, then drover --version and drover serve', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'drover-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const packed = npm(['pack', '--ignore-scripts', '--pack-destination', dir, '--json']);
  t.equal(packed.status, 0, packed.stderr);
  const tgz = join(dir, (JSON.parse(packed.stdout) as { filename: string }[])[0].filename);
  const prefix = join(dir, 'prefix');
  // The dependencies come from npm's cache when `npm ci` put them there.
  const installed = npm(['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tgz], dir);
  t.equal(installed.status, 0, installed.stderr);
  const drover = join(prefix, 'bin', 'drover');
  const v = spawnSync(drover, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  t.match(v.stdout, /^drover \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,40}(-dirty)?|unknown)\)\n$/);

  const state = join(dir, 'state');
  const agent = spawn(drover, ['serve', '--port', '0', '--state-dir', state], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  agent.stderr!.on('data', (c) => (err += c));
  const exited = new Promise<number | null>((r) => agent.once('exit', (code) => r(code)));
  t.teardown(() => void agent.kill('SIGKILL'));
  const url = await waitFor(() => /listening on (http:\/\/\S+)/.exec(err)?.[1], 'the installed agent to listen', 60_000);
  const ready = await fetch(`${url}/readyz`);
  t.equal(ready.status, 200);
  t.equal((await fetch(`${url}/ui`)).status, 200, 'the dashboard files are in the package');
  t.match(await (await fetch(`${url}/metrics`)).text(), /^drover_build_info\{/m);
  agent.kill('SIGTERM');
  t.equal(await exited, 0);
});
