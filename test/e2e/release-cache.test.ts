import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import t from 'tap';
import * as tar from 'tar';
import { ReleaseCache, type Archive } from '../../lib/release/cache.js';
import { ReleaseError } from '../../lib/release/errors.js';

// The app's bin/build counts its runs in $COUNTER, can wait for $GATE to exist, and fails if $FAIL=1.
const BUILD_SCRIPT = `#!/bin/sh
echo building
echo run >> "$COUNTER"
if [ -n "$GATE" ]; then
  echo waiting
  while [ ! -e "$GATE" ]; do sleep 0.02; done
fi
if [ "$FAIL" = 1 ]; then echo failing; exit 1; fi
echo finished > built
echo finished
`;

let archive: Buffer;
let gate: Promise<void> = Promise.resolve();
let openGate: () => void = () => {};
let clientGone: Promise<void> = Promise.resolve();
let markGone: () => void = () => {};
const hits = new Map<string, number>();

const server = http.createServer((req, res) => {
  hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1);
  if (req.url?.startsWith('/app.tar.gz')) {
    res.writeHead(200, { 'content-length': archive.length });
    res.end(archive);
  } else if (req.url === '/gated.tar.gz') {
    // Half the body, then the rest only once the test opens the gate.
    res.writeHead(200, { 'content-length': archive.length });
    const half = Math.floor(archive.length / 2);
    res.write(archive.subarray(0, half));
    res.on('close', () => markGone());
    void gate.then(() => res.end(archive.subarray(half)));
  } else {
    res.writeHead(404);
    res.end();
  }
});

let base = '';
t.before(async () => {
  const src = t.testdir({ 'myapp-1a2b3c': { Procfile: 'web: sh -c "echo hi"\n', bin: { build: BUILD_SCRIPT } } });
  await chmod(path.join(src, 'myapp-1a2b3c/bin/build'), 0o755);
  const file = path.join(src, 'app.tar.gz');
  await tar.c({ gzip: true, file, cwd: src }, ['myapp-1a2b3c']);
  archive = readFileSync(file);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
t.teardown(() => {
  openGate();
  server.closeAllConnections();
  server.close();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const runs = (counter: string): number => (existsSync(counter) ? readFileSync(counter, 'utf8').split('\n').filter(Boolean).length : 0);
const resetGate = (): void => {
  gate = new Promise((resolve) => (openGate = resolve));
};
const watchClient = (): void => {
  clientGone = new Promise((resolve) => (markGone = resolve));
};

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

function env(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', COUNTER: path.join(dir, 'counter'), ...extra };
}

t.test('concurrent fetches of one URL share one download', async (t) => {
  const dir = t.testdir();
  const cache = new ReleaseCache({ dir });
  const url = `${base}/app.tar.gz?dedup`;
  const progress: number[] = [];
  const [a, b] = await Promise.all([cache.fetch(url, { onProgress: (n) => progress.push(n) }), cache.fetch(url)]);
  t.equal(hits.get('/app.tar.gz?dedup'), 1, 'the server saw ONE request');
  t.same(a, b);
  t.same(a, { sha256: sha(archive), file: path.join(dir, 'archives', `${sha(archive)}.archive`), bytes: archive.length });
  t.ok(readFileSync(a.file).equals(archive));
  t.same(readdirSync(path.join(dir, 'archives')), [`${a.sha256}.archive`], 'no temp files left');
  t.equal(progress.at(-1), archive.length);

  // Completed downloads are not reused: the URL's content may have changed.
  await cache.fetch(url);
  t.equal(hits.get('/app.tar.gz?dedup'), 2);
});

t.test("one waiter's abort does not cancel the shared download", async (t) => {
  const dir = t.testdir();
  const cache = new ReleaseCache({ dir });
  resetGate();
  const before = hits.get('/gated.tar.gz') ?? 0;
  const ac = new AbortController();
  const a = cache.fetch(`${base}/gated.tar.gz`, { signal: ac.signal });
  let bDone = false;
  const b = cache.fetch(`${base}/gated.tar.gz`).finally(() => (bDone = true));
  await waitFor(() => hits.get('/gated.tar.gz') === before + 1, 'the request');
  ac.abort();
  await t.rejects(a, { name: 'AbortError' }, 'the aborting waiter is released at once');
  t.notOk(bDone, 'the other waiter is still waiting');
  openGate();
  const res = await b;
  t.equal(res.sha256, sha(archive));
  t.equal(hits.get('/gated.tar.gz'), before + 1);
});

t.test('when every waiter aborts, the download stops and cleans up; a new fetch starts afresh', async (t) => {
  const dir = t.testdir();
  const cache = new ReleaseCache({ dir });
  resetGate();
  watchClient();
  const before = hits.get('/gated.tar.gz') ?? 0;
  const ac1 = new AbortController();
  const ac2 = new AbortController();
  const a = cache.fetch(`${base}/gated.tar.gz`, { signal: ac1.signal });
  const b = cache.fetch(`${base}/gated.tar.gz`, { signal: ac2.signal });
  await waitFor(() => hits.get('/gated.tar.gz') === before + 1, 'the request');
  ac1.abort();
  ac2.abort();
  await t.rejects(a, { name: 'AbortError' });
  await t.rejects(b, { name: 'AbortError' });
  await clientGone; // the connection was dropped, i.e. the shared download really stopped
  await waitFor(() => readdirSync(path.join(dir, 'archives')).length === 0, 'the temp file to be removed');

  openGate();
  const res = await cache.fetch(`${base}/gated.tar.gz`);
  t.equal(res.sha256, sha(archive));
  t.equal(hits.get('/gated.tar.gz'), before + 2, 'a second, fresh request');
});

t.test('fetch errors are ReleaseErrors for every waiter', async (t) => {
  const cache = new ReleaseCache({ dir: t.testdir() });
  const results = await Promise.allSettled([cache.fetch(`${base}/nope`), cache.fetch(`${base}/nope`)]);
  t.equal(hits.get('/nope'), 1);
  for (const r of results) {
    t.equal(r.status, 'rejected');
    t.ok((r as PromiseRejectedResult).reason instanceof ReleaseError);
    t.match((r as PromiseRejectedResult).reason.message, /HTTP 404/);
  }
});

t.test('builds are shared in flight and reused once complete', async (t) => {
  const dir = t.testdir();
  const cache = new ReleaseCache({ dir: path.join(dir, 'state') });
  const arch = await cache.fetch(`${base}/app.tar.gz?build`);
  const linesA: string[] = [];
  const linesB: string[] = [];
  const [a, b] = await Promise.all([
    cache.build(arch, { env: env(dir), onLine: (l) => linesA.push(l) }),
    cache.build(arch, { env: env(dir), onLine: (l) => linesB.push(l) }),
  ]);
  t.equal(runs(path.join(dir, 'counter')), 1, 'ONE build run');
  t.same(a, b);
  t.equal(a.id, arch.sha256);
  t.equal(a.root, path.join(dir, 'state/releases', arch.sha256, 'myapp-1a2b3c'), 'GitHub-style root');
  t.equal(readFileSync(path.join(a.root, 'built'), 'utf8'), 'finished\n');
  t.ok(linesA.includes('finished') && linesB.includes('finished'), 'both waiters get the build output');

  const again = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.same(again, a);
  // A new cache on the same dir (an agent restart) trusts the completion marker.
  const restarted = await new ReleaseCache({ dir: path.join(dir, 'state') }).build(arch, { env: env(dir), onLine: () => {} });
  t.same(restarted, a);
  t.equal(runs(path.join(dir, 'counter')), 1, 'completed release reused, not rebuilt');
});

t.test('a half-built release dir without the marker (a crash) is discarded and rebuilt', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  const arch = await cache.fetch(`${base}/app.tar.gz?crash`);
  const junk = path.join(state, 'releases', arch.sha256, 'myapp-1a2b3c', 'junk-from-crash');
  await mkdir(path.dirname(junk), { recursive: true });
  await writeFile(junk, 'x');
  const rel = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.equal(runs(path.join(dir, 'counter')), 1);
  t.notOk(existsSync(junk));
  t.ok(existsSync(path.join(rel.root, 'built')));
});

t.test('a failed build removes its release dir; a retry rebuilds', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  const arch = await cache.fetch(`${base}/app.tar.gz?fail`);
  const lines: string[] = [];
  try {
    await cache.build(arch, { env: env(dir, { FAIL: '1' }), onLine: (l) => lines.push(l) });
    t.fail('should fail');
  } catch (err) {
    t.ok(err instanceof ReleaseError);
    t.equal((err as Error).message, 'build step "bin/build" exited with code 1');
  }
  t.ok(lines.includes('failing'));
  t.notOk(existsSync(path.join(state, 'releases', arch.sha256)), 'release dir removed');
  const rel = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.equal(runs(path.join(dir, 'counter')), 2, 'rebuilt');
  t.ok(existsSync(path.join(rel.root, 'built')));
});

t.test("one waiter's abort does not cancel the shared build; it stops getting lines", async (t) => {
  const dir = t.testdir();
  const cache = new ReleaseCache({ dir: path.join(dir, 'state') });
  const arch = await cache.fetch(`${base}/app.tar.gz?abort1`);
  const gateFile = path.join(dir, 'go');
  const ac = new AbortController();
  const linesA: string[] = [];
  const linesB: string[] = [];
  const a = cache.build(arch, {
    signal: ac.signal,
    env: env(dir, { GATE: gateFile }),
    onLine: (l) => {
      linesA.push(l);
      if (l === 'waiting') ac.abort();
    },
  });
  let bDone = false;
  const b = cache.build(arch, { env: env(dir), onLine: (l) => linesB.push(l) }).finally(() => (bDone = true));
  await t.rejects(a, { name: 'AbortError' });
  t.notOk(bDone);
  writeFileSync(gateFile, '');
  const rel = await b;
  t.ok(existsSync(path.join(rel.root, 'built')));
  t.equal(runs(path.join(dir, 'counter')), 1);
  t.ok(linesB.includes('finished'));
  t.notOk(linesA.includes('finished'), 'an aborted waiter gets no more lines');
});

t.test('when every build waiter aborts, the build is killed and cleaned up; a new build starts afresh', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  const arch: Archive = await cache.fetch(`${base}/app.tar.gz?abortall`);
  const gateFile = path.join(dir, 'never');
  const ac = new AbortController();
  const p = cache.build(arch, {
    signal: ac.signal,
    env: env(dir, { GATE: gateFile }),
    onLine: (l) => {
      if (l === 'waiting') ac.abort();
    },
  });
  await t.rejects(p, { name: 'AbortError' });
  // Right away, while the old build may still be tearing down:
  const lines: string[] = [];
  const rel = await cache.build(arch, { env: env(dir), onLine: (l) => lines.push(l) });
  t.ok(existsSync(path.join(rel.root, 'built')));
  t.equal(runs(path.join(dir, 'counter')), 2, 'the aborted build ran, then a fresh one');
  t.ok(lines.includes('building'), 'the new waiter saw a real build');
  t.notOk(existsSync(gateFile));
});

t.test('a completed build held in memory is rebuilt when its directory is removed by hand', async (t) => {
  const dir = t.testdir();
  const cache = new ReleaseCache({ dir: path.join(dir, 'state') });
  await cache.init();
  const arch = await cache.fetch(`${base}/app.tar.gz?memo`);
  const first = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.same(await cache.build(arch, { env: env(dir), onLine: () => {} }), first, 'the second ask is answered from memory');
  t.equal(runs(path.join(dir, 'counter')), 1);
  const { rmSync } = await import('node:fs');
  rmSync(path.join(dir, 'state/releases', arch.sha256), { recursive: true });
  const again = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.equal(runs(path.join(dir, 'counter')), 2, 'rebuilt');
  t.ok(existsSync(path.join(again.root, 'built')));
});

t.test('a remembered failure is found again by a restarted agent (init) and not rebuilt', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  await cache.init();
  const arch = await cache.fetch(`${base}/app.tar.gz?remember`);
  await t.rejects(cache.build(arch, { env: env(dir, { FAIL: '1' }), onLine: () => {} }), /exited with code 1/);
  await t.rejects(cache.build(arch, { env: env(dir, { FAIL: '1' }), onLine: () => {} }), { name: 'RememberedBuildFailure' });
  const restarted = new ReleaseCache({ dir: state });
  await restarted.init();
  await t.rejects(restarted.build(arch, { env: env(dir, { FAIL: '1' }), onLine: () => {} }), { name: 'RememberedBuildFailure' });
  t.equal(runs(path.join(dir, 'counter')), 1, 'built once');
  // Other inputs are another build.
  const ok = await restarted.build(arch, { env: env(dir), onLine: () => {} });
  t.ok(existsSync(path.join(ok.root, 'built')));
});
