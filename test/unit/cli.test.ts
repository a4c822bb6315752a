// The CLI's pure parts: plans, argument parsing, packing rules, formatting, the manifest.
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEnvPairs, parseScale } from '../../lib/cli/args.js';
import { Client, EXIT, linkOf } from '../../lib/cli/client.js';
import { describePlan, difference, expand, isEmpty, plan } from '../../lib/cli/converge.js';
import { bytes, colorsEnabled, duration, shownState, table } from '../../lib/cli/format.js';
import { readManifest } from '../../lib/cli/manifest.js';
import { listEntries, packDirectory } from '../../lib/cli/pack.js';
import { psRows, shortSource } from '../../lib/cli/ps.js';
import { isRemoteStart, startArgument } from '../../lib/cli/start.js';
import { outputLine, readEvents } from '../../lib/cli/stream.js';
import { envDigest, sourceDigest } from '../../lib/api/digest.js';

const current = (slug: string, type: string, sourceUrl: string, env: Record<string, string>) => {
  const [app, ...node] = slug.split('.');
  return {
    slug,
    app,
    node: node.join('.'),
    process_type: type,
    source_digest: sourceDigest(sourceUrl),
    env_digest: envDigest(env),
    delete: `http://a/delete-process/${slug}`,
    replace: `http://a/replace-process/${slug}`,
  };
};

t.test('expand and plan: create what is missing, replace what changed, delete what is extra, keep the rest', async (t) => {
  const want = expand('shop', { worker: 1, web: 2 }, 'http://a/data/x/blob', { A: '1' });
  t.same(
    want.map((w) => `${w.app}.${w.node}:${w.processType}`),
    ['shop.web.0:web', 'shop.web.1:web', 'shop.worker.0:worker'],
  );
  const now = [
    current('shop.web.0', 'web', 'http://a/data/x/blob', { A: '1' }),
    current('shop.worker.0', 'worker', 'http://a/data/x/blob', { A: '2' }),
    current('shop.web.5', 'web', 'http://a/data/x/blob', { A: '1' }),
    current('other.web.0', 'web', 'http://b', {}),
  ];
  const p = plan(want, now, (d) => d.app === 'shop');
  t.same(
    p.create.map((w) => w.node),
    ['web.1'],
  );
  t.same(
    p.replace.map((r) => [r.current.slug, r.why]),
    [['shop.worker.0', 'env changed']],
  );
  t.same(
    p.remove.map((d) => d.slug),
    ['shop.web.5'],
    'only managed processes are removed',
  );
  t.same(
    p.keep.map((d) => d.slug),
    ['shop.web.0'],
  );
  t.notOk(isEmpty(p));
  t.same(describePlan(p), [
    'shop.web.0     unchanged',
    'shop.web.1     create',
    'shop.web.5     delete',
    'shop.worker.0  replace (env changed)',
  ]);
  // An agent without the replace link (older), or a changed process type: delete and create.
  const old = plan(want, [{ ...now[1], replace: undefined }], (d) => d.app === 'shop');
  t.same(
    old.replace.map((r) => [r.current.slug, r.recreate]),
    [['shop.worker.0', true]],
  );

  const everything = plan(want, now, () => true);
  t.same(
    everything.remove.map((d) => d.slug),
    ['shop.web.5', 'other.web.0'],
    'apply manages every process',
  );
  t.ok(isEmpty(plan([], [], () => true)));
});

t.test('difference: what makes a process different', async (t) => {
  const [w] = expand('a', { web: 1 }, 'http://s/1', { K: 'v' });
  t.equal(difference(current('a.web.0', 'web', 'http://s/1', { K: 'v' }), w), null);
  t.equal(difference(current('a.web.0', 'web', 'http://s/2', { K: 'v' }), w), 'source changed');
  t.equal(difference(current('a.web.0', 'web', 'http://s/1', { K: 'w' }), w), 'env changed');
  t.equal(difference(current('a.web.0', 'web', 'http://s/1', {}), w), 'env changed', 'a removed variable counts');
  t.equal(difference(current('a.web.0', 'worker', 'http://s/1', { K: 'v' }), w), 'type worker → web');
  t.equal(difference({ slug: 'a.web.0', process_type: 'web' }, w), 'the agent does not report digests to compare');
  t.equal(
    difference(current('a.web.0', 'web', 'http://s/1', { K: 'v' }), { ...w, sourceUrl: null }),
    'source changed',
    'a source not uploaded yet is a change',
  );
  t.equal(envDigest({ B: '2', A: '1' }), envDigest({ A: '1', B: '2' }), 'env digests ignore order');
  t.not(envDigest({ A: '1=2' }), envDigest({ 'A=1': '2' } as Record<string, string>), 'and cannot be confused by "="');
});

// tap matches thrown errors by their fields
const usageErr = { name: 'CliError', exitCode: EXIT.usage } as unknown as Error;

t.test('--scale and --env parsing', async (t) => {
  t.same(parseScale(['web=2,worker=1', 'clock=0']), { web: 2, worker: 1, clock: 0 });
  t.same(parseScale([]), {});
  for (const bad of ['web', 'web=-1', 'web=x', '=2', 'a.b=1', 'web=1001']) t.throws(() => parseScale([bad]), usageErr, bad);
  t.same(parseEnvPairs(['A=1', 'B=x=y', 'EMPTY=']), { A: '1', B: 'x=y', EMPTY: '' });
  for (const bad of ['A', '1A=2', 'A-B=1', '=x']) t.throws(() => parseEnvPairs([bad]), usageErr, bad);
});

t.test("packing: .git, node_modules and .gitignore'd paths are left out; the archive is reproducible", async (t) => {
  const dir = t.testdir({
    Procfile: 'web: node s.js\n',
    '.gitignore': 'logs/\n*.log\n!keep.log\nsecret.txt\n',
    'a.log': 'x',
    'keep.log': 'x',
    'secret.txt': 'x',
    logs: { 'today.txt': 'x' },
    '.git': { HEAD: 'x' },
    node_modules: { dep: { 'index.js': 'x' } },
    src: { '.gitignore': 'build/\n', build: { 'out.js': 'x' }, 'index.js': 'x', node_modules: { 'nested.js': 'x' } },
    sub: { '.gitignore': '!*.log\n', deep: { 'd.log': 'x' } },
    '.drover': { 'state.json': 'x' },
  });
  symlinkSync('src/index.js', join(dir, 'link.js'));
  mkdirSync(join(dir, 'empty'));
  chmodSync(join(dir, 'Procfile'), 0o644);
  const entries = await listEntries(dir);
  t.same(
    entries.map((e) => e.path + (e.dir ? '/' : '')),
    [
      '.gitignore',
      'Procfile',
      'empty/',
      'keep.log',
      'link.js',
      'src/',
      'src/.gitignore',
      'src/index.js',
      'sub/',
      'sub/.gitignore',
      'sub/deep/',
      'sub/deep/d.log',
    ],
    'a deeper .gitignore can re-include what a shallower one excludes, as in git',
  );
  const out = mkdtempSync(join(tmpdir(), 'drover-pack-test-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const a = await packDirectory(dir, join(out, 'a.tgz'));
  writeFileSync(join(dir, 'a.log'), 'ignored files changing change nothing');
  const b = await packDirectory(dir, join(out, 'b.tgz'));
  t.equal(b.sha256, a.sha256, 'same tree, same bytes');
  t.equal(a.files, 8);
  writeFileSync(join(dir, 'src', 'index.js'), 'changed');
  t.not((await packDirectory(dir, join(out, 'c.tgz'))).sha256, a.sha256, 'a real change changes the bytes');
  writeFileSync(join(dir, '.gitignore'), 'Procfile\n');
  await t.rejects(packDirectory(dir, join(out, 'd.tgz')), { message: /Procfile is missing or excluded by \.gitignore/ });
});

t.test('formatting', async (t) => {
  t.equal(duration(0), '0s');
  t.equal(duration(59_999), '59s');
  t.equal(duration(61_000), '1m01s');
  t.equal(duration(3_600_000 + 120_000), '1h02m');
  t.equal(duration(2 * 86_400_000 + 3_600_000), '2d01h');
  t.equal(duration(-1), '-');
  t.equal(bytes(512), '512 B');
  t.equal(bytes(1536), '1.5 KiB');
  t.equal(bytes(200 * 1024 * 1024), '200 MiB');
  t.equal(
    table(
      ['A', 'LONG'],
      [
        ['xxx', 'y'],
        ['\x1b[32mz\x1b[0m', 'w'],
      ],
    ),
    'A    LONG\nxxx  y\n\x1b[32mz\x1b[0m    w\n',
    'color codes do not count toward widths',
  );
  t.equal(colorsEnabled({ write() {}, isTTY: true }, {}), true);
  t.equal(colorsEnabled({ write() {}, isTTY: false }, {}), false);
  t.equal(colorsEnabled({ write() {}, isTTY: true }, { NO_COLOR: '1' }), false);
  t.equal(colorsEnabled({ write() {}, isTTY: false }, { FORCE_COLOR: '1' }), true);
  t.equal(colorsEnabled({ write() {}, isTTY: true }, { FORCE_COLOR: '0' }), false);
  t.equal(colorsEnabled({ write() {}, isTTY: true }, { TERM: 'dumb' }), false);

  const now = Date.parse('2024-01-01T00:10:00Z');
  const rows = psRows(
    [
      {
        slug: 'b.web.0',
        state: 'running',
        pid: 12,
        port: 5000,
        restarts: 3,
        started_at: '2024-01-01T00:05:00Z',
        usage: { cpu_percent: 12.345, rss_bytes: 50 * 1024 * 1024 },
        release: { id: '3f2a9c1b7d10', source: `http://127.0.0.1:8700/data/${'a'.repeat(64)}/blob` },
        command: 'npm start',
        command_from: 'package.json',
      },
      { slug: 'a.web.0', state: 'restarting', pid: null, port: 5001, restarts: 1, started_at: null },
      {
        slug: 'c.worker.0',
        state: 'exited',
        stopped: true,
        pid: null,
        port: 5002,
        restarts: 0,
        started_at: null,
        release: { id: null, source: 'https://example.com/builds/2024/app.tgz' },
        command: `node worker.js ${'--flag '.repeat(10)}`,
        command_from: 'Procfile',
      },
    ],
    now,
  );
  t.same(rows, [
    ['a.web.0', 'restarting', '-', '5001', '1', '-', '-', '-', '-', '-'],
    ['b.web.0', 'running', '12', '5000', '3', '5m00s', '12.3%', '50 MiB', '3f2a9c1b7d10 upload', 'npm start (package.json)'],
    ['c.worker.0', 'stopped', '-', '5002', '0', '-', '-', '-', '- example.com/…/app.tgz', 'node worker.js --flag --flag --flag --f…'],
  ]);
  t.equal(shortSource('file:///tmp/x/app.tgz'), 'app.tgz');
  t.equal(shortSource('http://h:1/a.tgz'), 'h:1/a.tgz');
  t.equal(shownState({ state: 'exited', stopped: true }), 'stopped', 'one word for a stopped process');
  t.equal(shownState({ state: 'exited', stopped: false }), 'exited');
  t.equal(shownState({ state: 'running', stopped: true }), 'running', 'a stale flag does not hide what runs');
});

t.test('the manifest: checked, with errors that name the key', async (t) => {
  const dir = t.testdir({
    'ok.yaml':
      'apps:\n  shop:\n    source: ./app\n    processes: {web: 2, worker: 0}\n    env: {A: 1, B: true, C: x}\n    env_file: shop.env\n  remote:\n    source: https://example.com/a.tgz\n    processes: {web: 1}\n',
    'shop.env': 'A=from-file\nD=file-only\n',
    'empty.yaml': 'apps: {}\n',
    'nothing.yaml': '',
  });
  const apps = await readManifest(join(dir, 'ok.yaml'));
  t.same(apps, [
    { name: 'shop', source: join(dir, 'app'), processes: { web: 2, worker: 0 }, env: { A: '1', D: 'file-only', B: 'true', C: 'x' } },
    { name: 'remote', source: 'https://example.com/a.tgz', processes: { web: 1 }, env: {} },
  ]);
  t.same(await readManifest(join(dir, 'empty.yaml')), []);
  await t.rejects(
    readManifest(join(dir, 'nothing.yaml')),
    { message: /the manifest is empty \(write "apps: \{\}" to delete every process\)/ },
    'an empty file is a mistake, not "delete everything"',
  );
  const bad: [string, RegExp][] = [
    ['apps: [1]\n', /apps: must be a mapping/],
    ['app: {}\n', /app: unknown key \(expected "apps"\)/],
    ['apps:\n  "../x": {source: a, processes: {web: 1}}\n', /apps\.\.\.\/x: app names are/],
    ['apps:\n  a: {processes: {web: 1}}\n', /apps\.a\.source: is required/],
    ['apps:\n  a: {source: a}\n', /apps\.a\.processes: is required/],
    ['apps:\n  a: {source: a, processes: {"web.x": 1}}\n', /apps\.a\.processes\.web\.x: is not a valid process type/],
    ['apps:\n  a: {source: a, processes: {web: 1.5}}\n', /apps\.a\.processes\.web: must be an integer/],
    ['apps:\n  a: {source: a, processes: {web: 1}, env: {"1X": y}}\n', /apps\.a\.env\.1X: is not a valid environment variable name/],
    ['apps:\n  a: {source: a, processes: {web: 1}, env: {X: [1]}}\n', /apps\.a\.env\.X: must be a string/],
    ['apps:\n  a: {source: a, processes: {web: 1}, env_file: missing.env}\n', /cannot read env file .*missing\.env: ENOENT/],
    ['apps: {\n', /not valid YAML/],
  ];
  for (const [text, pattern] of bad) {
    writeFileSync(join(dir, 'bad.yaml'), text);
    await t.rejects(readManifest(join(dir, 'bad.yaml')), { message: pattern, exitCode: EXIT.usage }, text);
  }
  await t.rejects(readManifest(join(dir, 'nope.yaml')), { message: /cannot read manifest .*nope\.yaml: ENOENT/ });
});

t.test('event streams: NDJSON split anywhere, output lines picked out', async (t) => {
  const events = [
    { id: 1, type: 'state', to: 'running' },
    { id: 2, type: 'output', stream: 'stdout', text: 'hello ünïcode' },
    { id: 3, type: 'output', stream: 'stderr', text: '' },
  ];
  const bytes = Buffer.from(events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  // Split in the middle of a multi-byte character and of lines.
  const chunks = [bytes.subarray(0, 7), bytes.subarray(7, bytes.indexOf(0xc3) + 1), bytes.subarray(bytes.indexOf(0xc3) + 1)];
  const seen: unknown[] = [];
  await readEvents(
    new Response(
      new ReadableStream({
        start(c) {
          chunks.forEach((x) => c.enqueue(x));
          c.close();
        },
      }),
    ),
    (ev) => seen.push(ev),
  );
  t.same(seen, events);
  t.same(
    seen.map((e) => outputLine(e as Record<string, unknown>)),
    [null, 'hello ünïcode', ''],
  );
  await t.rejects(
    readEvents(new Response('{"id":1}\nnot json\n'), () => {}),
    /not JSON/,
  );
});

t.test('links and credentials', async (t) => {
  t.equal(linkOf({ stop: 'http://a/stop' }, 'stop'), 'http://a/stop');
  t.throws(() => linkOf({ slug: 'a.web.0' }, 'stop', 'stopping processes'), {
    message: 'the agent does not offer stopping processes (no "stop" link for a.web.0)',
    exitCode: EXIT.unsupported,
  });
  const c = new Client('http://127.0.0.1:8080', 's3cret');
  t.same(c.authHeaders('http://127.0.0.1:8080/list-processes'), { authorization: 'Bearer s3cret' });
  t.same(c.authHeaders('ws://127.0.0.1:8080/attach-console/x'.replace(/^ws/, 'http')), { authorization: 'Bearer s3cret' });
  t.same(c.authHeaders('http://elsewhere:8080/x'), {}, 'the token never goes to another host a document links to');
  t.same(new Client('http://127.0.0.1:8080').authHeaders('http://127.0.0.1:8080/'), {});
  t.throws(() => new Client('ftp://x'), usageErr);
});

t.test('drover start: a slug is a remote start, a directory or type is the foreground runner', async (t) => {
  const dir = t.testdir({ 'my.app': { Procfile: 'web: x\n' } });
  const cwd = process.cwd();
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  t.equal(isRemoteStart([]), false);
  t.equal(isRemoteStart(['web']), false, 'a type');
  t.equal(isRemoteStart(['.']), false);
  t.equal(isRemoteStart(['./app']), false);
  t.equal(isRemoteStart(['my.app']), false, 'an existing directory, even with a dot');
  t.equal(isRemoteStart(['shop.web.0']), true);
  t.equal(isRemoteStart(['--port', '5000']), false);
});

t.test('drover start: the first argument is read by one explicit rule', async (t) => {
  const dirs = new Set(['my.app', 'web']);
  const kind = (arg: string | undefined) => startArgument(arg, (p) => dirs.has(p));
  t.equal(kind(undefined), 'none');
  t.equal(kind('--scale'), 'none');
  t.equal(kind('.'), 'dir');
  t.equal(kind('..'), 'dir');
  t.equal(kind('missing/app'), 'dir', 'a path, even when it does not exist (the error says so later)');
  t.equal(kind('my.app'), 'dir', 'an existing directory wins over the slug shape');
  t.equal(kind('web'), 'dir', 'an existing directory wins over a type');
  t.equal(kind('worker'), 'type');
  t.equal(kind('shop.web.0'), 'slug');
  for (const odd of ['.hidden', 'a..b', 'web.', 'a.b c']) {
    t.throws(
      () => kind(odd),
      { message: /is neither a directory here nor a process slug \(APP\.NODE\); write \.\/.* for a directory/ },
      odd,
    );
  }
});
