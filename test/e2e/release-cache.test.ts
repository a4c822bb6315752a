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
import { unpack } from '../../lib/release/unpack.js';
import { tgz } from '../helpers/hostile.js';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';

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
// Bigger than the unpacker's first batch (1 MiB), so unpacking is under way mid-body.
let bigArchive: Buffer;
const hostileArchive = tgz([{ path: 'link', type: 'SymbolicLink', linkpath: '../../evil' }]);
// /big-cut.tar.gz sends 3/4 of the body, then (once the test opens it) cuts the connection, or
// sends the rest when cutBody is false.
let cutBody = true;
let cutGate: Promise<void> = Promise.resolve();
let openCutGate: () => void = () => {};
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
  } else if (req.url?.startsWith('/big.tar.gz')) {
    res.writeHead(200, { 'content-length': bigArchive.length });
    res.end(bigArchive);
  } else if (req.url === '/hostile.tar.gz') {
    res.writeHead(200, { 'content-length': hostileArchive.length });
    res.end(hostileArchive);
  } else if (req.url === '/big-cut.tar.gz') {
    res.writeHead(200, { 'content-length': bigArchive.length });
    const most = Math.floor((bigArchive.length * 3) / 4);
    res.write(bigArchive.subarray(0, most));
    const cut = cutBody;
    void cutGate.then(() => (cut ? res.destroy() : res.end(bigArchive.subarray(most))));
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
  const big = t.testdir({ 'myapp-big': { Procfile: 'web: sh -c "echo hi"\n', bin: { build: BUILD_SCRIPT } } });
  await chmod(path.join(big, 'myapp-big/bin/build'), 0o755);
  writeFileSync(path.join(big, 'myapp-big/blob.bin'), randomBytes(4 * 1024 * 1024));
  await tar.c({ gzip: true, file: path.join(big, 'big.tar.gz'), cwd: big }, ['myapp-big']);
  bigArchive = readFileSync(path.join(big, 'big.tar.gz'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
t.teardown(() => {
  openGate();
  openCutGate();
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

// ---- unpacking while downloading (fetch({ unpack: true })) ------------------

/** What the cache holds besides archives: release dirs (incl. .unpack-*), markers. */
function leftovers(state: string): { releases: string[]; meta: string[] } {
  const list = (d: string) => (existsSync(path.join(state, d)) ? readdirSync(path.join(state, d)).sort() : []);
  return { releases: list('releases'), meta: list('release-meta') };
}
const unpacking = (state: string): string[] => leftovers(state).releases.filter((n) => n.startsWith('.unpack-'));

t.test('fetch({ unpack }) unpacks while downloading; the build takes that tree instead of unpacking again', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  await cache.init();
  const arch = await cache.fetch(`${base}/big.tar.gz?stream`, { unpack: true });
  t.same(arch, { sha256: sha(bigArchive), file: path.join(state, 'archives', `${sha(bigArchive)}.archive`), bytes: bigArchive.length });
  t.ok(readFileSync(arch.file).equals(bigArchive), 'the archive file is kept, whole');
  const [tmp] = unpacking(state);
  t.ok(tmp, 'unpacked beside the releases, under a temp name');
  t.equal(readFileSync(path.join(state, 'releases', tmp, 'myapp-big/blob.bin')).length, 4 * 1024 * 1024, 'the whole app');
  // Mark the tree: the release must be this very tree, moved into place.
  writeFileSync(path.join(state, 'releases', tmp, 'myapp-big/from-download'), '');
  const rel = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.equal(rel.root, path.join(state, 'releases', arch.sha256, 'myapp-big'));
  t.ok(existsSync(path.join(rel.root, 'from-download')), 'the build used the tree unpacked during the download');
  t.ok(existsSync(path.join(rel.root, 'built')));
  t.equal(runs(path.join(dir, 'counter')), 1);
  t.same(unpacking(state), [], 'nothing left under a temp name');
  // Fetched again once built: the fresh unpack is not kept.
  await cache.fetch(`${base}/big.tar.gz?stream-again`, { unpack: true });
  t.same(leftovers(state), { releases: [arch.sha256], meta: [`${arch.sha256}.json`] });
});

t.test('a download that fails mid-body leaves no release dir and no marker; a later fetch downloads afresh', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  cutBody = true;
  cutGate = new Promise((resolve) => (openCutGate = resolve));
  const before = hits.get('/big-cut.tar.gz') ?? 0;
  const p = cache.fetch(`${base}/big-cut.tar.gz`, { unpack: true });
  // Unpacking is under way (the blob is being written) when the connection is cut.
  await waitFor(() => unpacking(state).some((d) => existsSync(path.join(state, 'releases', d, 'myapp-big/blob.bin'))), 'the unpack');
  openCutGate();
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof ReleaseError, `a ReleaseError (${String(err)})`);
  t.match((err as Error).message, /^download failed: /);
  t.same(leftovers(state), { releases: [], meta: [] }, 'no half release, no marker');
  t.same(readdirSync(path.join(state, 'archives')), [], 'no half archive');

  cutBody = false;
  cutGate = Promise.resolve();
  const arch = await cache.fetch(`${base}/big-cut.tar.gz`, { unpack: true });
  t.equal(hits.get('/big-cut.tar.gz'), before + 2, 'downloaded again');
  t.equal(arch.sha256, sha(bigArchive), 'the hash is the hash of the bytes');
  const rel = await cache.build(arch, { env: env(dir), onLine: () => {} });
  t.ok(readFileSync(path.join(rel.root, 'blob.bin')).length === 4 * 1024 * 1024);
  t.same(unpacking(state), []);
});

t.test('concurrent fetches with unpack share one download and one unpack; their builds share one run', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  const url = `${base}/big.tar.gz?shared`;
  const [a, b, c] = await Promise.all([cache.fetch(url, { unpack: true }), cache.fetch(url, { unpack: true }), cache.fetch(url)]);
  t.equal(hits.get('/big.tar.gz?shared'), 1, 'the server saw ONE request');
  t.same(a, b);
  t.same(a, c);
  t.equal(unpacking(state).length, 1, 'unpacked once');
  const [r1, r2] = await Promise.all([
    cache.build(a, { env: env(dir), onLine: () => {} }),
    cache.build(b, { env: env(dir), onLine: () => {} }),
  ]);
  t.same(r1, r2);
  t.equal(runs(path.join(dir, 'counter')), 1, 'ONE build run');
  t.same(unpacking(state), []);
});

t.test('when every waiter of an unpacking download aborts, nothing is left', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  cutBody = true;
  cutGate = new Promise((resolve) => (openCutGate = resolve));
  const ac = new AbortController();
  const p = cache.fetch(`${base}/big-cut.tar.gz`, { unpack: true, signal: ac.signal });
  await waitFor(() => unpacking(state).some((d) => existsSync(path.join(state, 'releases', d, 'myapp-big/blob.bin'))), 'the unpack');
  ac.abort();
  await t.rejects(p, { name: 'AbortError' });
  await waitFor(() => leftovers(state).releases.length === 0, 'the unpacked tree to be removed');
  await waitFor(() => readdirSync(path.join(state, 'archives')).length === 0, 'the temp file to be removed');
  t.same(leftovers(state).meta, []);
  openCutGate();
});

t.test('a hostile archive: the download succeeds, nothing unpacked is kept, the build fails as before', async (t) => {
  const dir = t.testdir();
  const state = path.join(dir, 'state');
  const cache = new ReleaseCache({ dir: state });
  const arch = await cache.fetch(`${base}/hostile.tar.gz`, { unpack: true });
  t.equal(arch.sha256, sha(hostileArchive));
  t.same(unpacking(state), [], 'the refused unpack left nothing');
  const expected = await unpack(arch.file, path.join(dir, 'direct')).then(
    () => null,
    (e: Error) => e.message,
  );
  t.match(expected, /escapes the release directory/);
  await t.rejects(cache.build(arch, { env: env(dir), onLine: () => {} }), { message: expected! });
  t.same(leftovers(state), { releases: [], meta: [] });
});

t.test('file: URLs and local sources (blobs) unpack while they are read too', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'big.tar.gz');
  writeFileSync(file, bigArchive);
  const localSource = async (u: string): Promise<string | null> => (u === 'http://blobs.invalid/big' ? file : null);
  for (const [i, url] of [pathToFileURL(file).href, 'http://blobs.invalid/big'].entries()) {
    const state = path.join(dir, `state-${i}`);
    const cache = new ReleaseCache({ dir: state, localSource });
    const arch = await cache.fetch(url, { unpack: true });
    t.equal(arch.sha256, sha(bigArchive), url);
    t.equal(unpacking(state).length, 1, `${url}: unpacked while read`);
    const rel = await cache.build(arch, { env: env(dir), onLine: () => {} });
    t.ok(existsSync(path.join(rel.root, 'built')));
    t.same(unpacking(state), []);
  }
});

t.test('init() removes trees an earlier agent unpacked while downloading but never built', async (t) => {
  const state = t.testdir({ releases: { '.unpack-0123456789abcdef': { 'myapp-1a2b3c': { Procfile: 'web: x\n' } } } });
  await new ReleaseCache({ dir: state }).init();
  t.same(readdirSync(path.join(state, 'releases')), []);
});
