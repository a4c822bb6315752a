import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { download } from '../../lib/release/download.js';
import { ReleaseError } from '../../lib/release/errors.js';

const payload = randomBytes(1024 * 1024 + 123); // several progress intervals, odd size
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Resolves when the server sees the client go away mid-response. */
let clientGone: Promise<void> = Promise.resolve();
let markGone: () => void = () => {};
const requests: string[] = [];

const server = http.createServer((req, res) => {
  requests.push(req.url ?? '');
  switch (req.url) {
    case '/archive.tar.gz':
      res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': payload.length });
      res.end(payload);
      return;
    case '/chunked': {
      // No Content-Length: the cap has to be enforced while streaming.
      res.writeHead(200);
      let off = 0;
      const pump = (): void => {
        while (off < payload.length) {
          const chunk = payload.subarray(off, off + 16 * 1024);
          off += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    case '/missing':
      res.writeHead(404);
      res.end('nope');
      return;
    case '/hang':
      return; // never answers
    case '/stall':
      // Some bytes, then nothing until the client gives up.
      res.writeHead(200, { 'content-length': payload.length });
      res.write(payload.subarray(0, 100 * 1024));
      res.on('close', () => markGone());
      return;
    default:
      res.writeHead(500);
      res.end();
  }
});

let base = '';
t.before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
t.teardown(() => {
  server.closeAllConnections();
  server.close();
});

async function rejectsRelease(t: Tap, p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected rejection matching ${re}`);
  } catch (err) {
    t.ok(err instanceof ReleaseError, `ReleaseError (got ${(err as Error).name}: ${(err as Error).message})`);
    t.match((err as Error).message, re);
  }
}
type Tap = Pick<typeof t, 'ok' | 'match' | 'fail'>;

t.test('downloads, hashes and reports throttled progress', async (t) => {
  const dest = path.join(t.testdir(), 'a.archive');
  const calls: Array<[number, number | null]> = [];
  const res = await download(`${base}/archive.tar.gz`, dest, { onProgress: (b, total) => calls.push([b, total]) });
  t.equal(res.bytes, payload.length);
  t.equal(res.sha256, sha(payload));
  t.ok(readFileSync(dest).equals(payload), 'file content matches');
  t.same(calls.at(-1), [payload.length, payload.length], 'final progress is the full size');
  t.ok(calls.length >= 2, 'progress reported during the download');
  t.ok(calls.length <= payload.length / (64 * 1024) + 2, `throttled (${calls.length} calls)`);
  for (let i = 1; i < calls.length; i++) t.ok(calls[i][0] > calls[i - 1][0], 'monotonic');
});

t.test('HTTP errors name the status', async (t) => {
  const dest = path.join(t.testdir(), 'x');
  await rejectsRelease(t, download(`${base}/missing`, dest), new RegExp(`^download failed: HTTP 404 Not Found from ${base}/missing$`));
  t.notOk(existsSync(dest));
});

t.test('size cap: up front from Content-Length, and while streaming', async (t) => {
  const dir = t.testdir();
  const before = requests.length;
  await rejectsRelease(t, download(`${base}/archive.tar.gz`, path.join(dir, 'a'), { maxBytes: 1000 }), /download exceeds 1000 bytes \(size 1048699\)/);
  t.equal(requests.length, before + 1);
  t.notOk(existsSync(path.join(dir, 'a')));

  await rejectsRelease(t, download(`${base}/chunked`, path.join(dir, 'b'), { maxBytes: 100_000 }), /^download exceeds 100000 bytes from /);
  t.notOk(existsSync(path.join(dir, 'b')), 'partial file removed');

  const ok = await download(`${base}/chunked`, path.join(dir, 'c'), { maxBytes: payload.length });
  t.equal(ok.bytes, payload.length, 'exactly at the cap is fine');
});

t.test('timeout covers a server that never answers and one that stalls', async (t) => {
  const dir = t.testdir();
  await rejectsRelease(t, download(`${base}/hang`, path.join(dir, 'a'), { timeoutMs: 200 }), new RegExp(`^download timed out after 200 ms from ${base}/hang$`));
  t.notOk(existsSync(path.join(dir, 'a')));
  clientGone = new Promise((resolve) => (markGone = resolve));
  await rejectsRelease(t, download(`${base}/stall`, path.join(dir, 'b'), { timeoutMs: 300 }), /timed out/);
  await clientGone;
  t.notOk(existsSync(path.join(dir, 'b')));
});

t.test("the caller's abort mid-download rejects with its reason and closes the connection", async (t) => {
  const dir = t.testdir();
  const ac = new AbortController();
  clientGone = new Promise((resolve) => (markGone = resolve));
  const dest = path.join(dir, 'a');
  const p = download(`${base}/stall`, dest, {
    signal: ac.signal,
    timeoutMs: 60_000,
    onProgress: (bytes) => {
      if (bytes > 0) ac.abort();
    },
  });
  await t.rejects(p, { name: 'AbortError' });
  await clientGone;
  t.notOk(existsSync(dest), 'partial file removed');

  const pre = new AbortController();
  pre.abort(new Error('custom reason'));
  await t.rejects(download(`${base}/archive.tar.gz`, path.join(dir, 'b'), { signal: pre.signal }), { message: 'custom reason' });
});

t.test('file: URLs are read from disk with the same cap and hashing', async (t) => {
  const dir = t.testdir();
  const src = path.join(dir, 'src.tar.gz');
  writeFileSync(src, payload);
  const res = await download(pathToFileURL(src).href, path.join(dir, 'copy'));
  t.same(res, { bytes: payload.length, sha256: sha(payload) });
  t.ok(readFileSync(path.join(dir, 'copy')).equals(payload));
  await rejectsRelease(t, download(pathToFileURL(src).href, path.join(dir, 'capped'), { maxBytes: 10 }), /exceeds 10 bytes/);
  await rejectsRelease(t, download(pathToFileURL(path.join(dir, 'nope')).href, path.join(dir, 'x')), /cannot read .*nope \(ENOENT\)/);
});

t.test('bad URLs and unreachable hosts', async (t) => {
  const dir = t.testdir();
  await rejectsRelease(t, download('ftp://example.com/a.tgz', path.join(dir, 'a')), /unsupported URL scheme "ftp:"/);
  await rejectsRelease(t, download('not a url', path.join(dir, 'a')), /invalid source URL/);
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  await rejectsRelease(t, download(`http://127.0.0.1:${port}/a`, path.join(dir, 'a')), /^download failed: connect ECONNREFUSED/);
});
