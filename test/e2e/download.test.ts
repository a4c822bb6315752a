import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { download, hostAllowed, redactUrl } from '../../lib/release/download.js';
import { ReleaseError } from '../../lib/release/errors.js';

const payload = randomBytes(1024 * 1024 + 123); // several progress intervals, odd size
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Resolves when the server sees the client go away mid-response. */
let clientGone: Promise<void> = Promise.resolve();
let markGone: () => void = () => {};
const requests: string[] = [];
const seen: { url: string; auth?: string; host?: string }[] = [];

const server = http.createServer((req, res) => {
  requests.push(req.url ?? '');
  const url = (req.url ?? '').split('?')[0];
  seen.push({ url, auth: req.headers.authorization, host: req.headers.host });
  const hop = /^\/r\/(\d+)$/.exec(url);
  const redirect = (location: string) => {
    res.writeHead(302, { location });
    res.end();
  };
  if (hop) return Number(hop[1]) === 0 ? redirect('/file') : redirect(`/r/${Number(hop[1]) - 1}`);
  switch (url) {
    case '/file':
      res.writeHead(200, { 'content-length': payload.length });
      return res.end(payload);
    case '/loop':
      return redirect('/loop');
    case '/to-file':
      return redirect('file:///etc/passwd');
    case '/to-ftp':
      return redirect('ftp://127.0.0.1/x.tgz');
    case '/to-metadata':
      return redirect('http://169.254.169.254/latest/meta-data/');
    case '/to-localhost':
      return redirect(`${baseByName}/file`);
    case '/bad-location':
      return redirect('http://[::1');
    case '/private':
      if (req.headers.authorization !== `Basic ${Buffer.from('deploy:p@ss word').toString('base64')}`) {
        res.writeHead(401);
        return res.end();
      }
      res.writeHead(200, { 'content-length': payload.length });
      return res.end(payload);
    case '/private-then-away':
      return redirect(`${baseByName}/file`);
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
      res.writeHead(404);
      res.end();
  }
});

let base = '';
let baseByName = ''; // the same server as "localhost": another host for the allow-list and origin checks
t.before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
  baseByName = `http://localhost:${port}`;
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
  await rejectsRelease(
    t,
    download(`${base}/archive.tar.gz`, path.join(dir, 'a'), { maxBytes: 1000 }),
    /download exceeds 1000 bytes \(size 1048699\)/,
  );
  t.equal(requests.length, before + 1);
  t.notOk(existsSync(path.join(dir, 'a')));

  await rejectsRelease(t, download(`${base}/chunked`, path.join(dir, 'b'), { maxBytes: 100_000 }), /^download exceeds 100000 bytes from /);
  t.notOk(existsSync(path.join(dir, 'b')), 'partial file removed');

  const ok = await download(`${base}/chunked`, path.join(dir, 'c'), { maxBytes: payload.length });
  t.equal(ok.bytes, payload.length, 'exactly at the cap is fine');
});

t.test('timeout covers a server that never answers and one that stalls', async (t) => {
  const dir = t.testdir();
  await rejectsRelease(
    t,
    download(`${base}/hang`, path.join(dir, 'a'), { timeoutMs: 200 }),
    new RegExp(`^download timed out after 200 ms from ${base}/hang$`),
  );
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
  // Whatever went wrong on the way, the caller learns "unreachable", nothing about the network.
  await rejectsRelease(
    t,
    download(`http://127.0.0.1:${port}/a`, path.join(dir, 'a')),
    new RegExp(`^download failed: http://127\\.0\\.0\\.1:${port}/a is unreachable$`),
  );
  await rejectsRelease(t, download('http://no-such-host.invalid/a.tgz', path.join(dir, 'a')), /^download failed: .* is unreachable$/);
});

t.test('link-local and cloud-metadata targets are refused unless the source hosts name them', async (t) => {
  const dir = t.testdir();
  for (const url of [
    'http://169.254.169.254/latest/meta-data/',
    'http://169.254.0.1/',
    'http://[fe80::1]/a.tgz',
    'http://[febf::1]/a.tgz',
    'http://[::ffff:169.254.169.254]/a.tgz',
    'http://[fd00:ec2::254]/latest/',
    'http://metadata.google.internal/computeMetadata/v1/',
    'http://METADATA.google.internal./x',
  ]) {
    const started = requests.length;
    await rejectsRelease(t, download(url, path.join(dir, 'a'), { connectTimeoutMs: 1000 }), /^download failed: .* is unreachable$/);
    t.equal(requests.length, started, `${url}: no request made`);
  }
  // A redirect to one is refused just the same.
  await rejectsRelease(
    t,
    download(`${base}/to-metadata`, path.join(dir, 'a')),
    /^download failed: http:\/\/169\.254\.169\.254\/.* is unreachable$/,
  );
  // Named in --source-hosts: the operator asked for it (here it then fails to connect, quickly).
  await rejectsRelease(
    t,
    download('http://169.254.169.254:1/x', path.join(dir, 'a'), { allowedHosts: ['169.254.169.254'], connectTimeoutMs: 500 }),
    /unreachable|no response within 500 ms/,
  );
});

t.test('redirects are followed up to the limit, each hop re-checked', async (t) => {
  const dir = t.testdir();
  const dest = path.join(dir, 'a');
  const r = await download(`${base}/r/4`, dest, { maxRedirects: 5 });
  t.equal(r.bytes, payload.length);
  t.same(readFileSync(dest), payload);
  await rejectsRelease(t, download(`${base}/r/5`, dest, { maxRedirects: 5 }), /more than 5 redirects from http:\/\/127\.0\.0\.1:\d+\/r\/5/);
  t.notOk(existsSync(dest), 'nothing left behind');
  await rejectsRelease(t, download(`${base}/r/0`, dest, { maxRedirects: 0 }), /more than 0 redirects/);
  await rejectsRelease(t, download(`${base}/loop`, dest), /more than 5 redirects/);
  await rejectsRelease(t, download(`${base}/to-file`, dest), /redirect to scheme "file:" .* \(only http: and https:\)/);
  await rejectsRelease(t, download(`${base}/to-ftp`, dest), /redirect to scheme "ftp:"/);
  await rejectsRelease(t, download(`${base}/bad-location`, dest), /malformed redirect location/);
});

t.test('the host allow-list applies to the URL and to every redirect', async (t) => {
  const dest = path.join(t.testdir(), 'a');
  const allowedHosts = ['127.0.0.1'];
  t.equal((await download(`${base}/r/1`, dest, { allowedHosts })).bytes, payload.length);
  await rejectsRelease(
    t,
    download(`${baseByName}/file`, dest, { allowedHosts }),
    /^download refused: host localhost is not in the allowed source hosts$/,
  );
  const before = seen.length;
  await rejectsRelease(
    t,
    download(`${base}/to-localhost`, dest, { allowedHosts }),
    /host localhost is not in the allowed source hosts \(redirected from http:\/\/127\.0\.0\.1:\d+\/to-localhost\)/,
  );
  t.equal(seen.length, before + 1, 'the disallowed host was never contacted');
  t.equal((await download(`${base}/to-localhost`, dest, { allowedHosts: ['127.0.0.1', 'localhost'] })).bytes, payload.length);
});

t.test('hostAllowed: exact names and *.domain', async (t) => {
  t.ok(hostAllowed('anything.example', []));
  t.ok(hostAllowed('anything.example', undefined));
  t.ok(hostAllowed('codeload.github.com', ['codeload.github.com']));
  t.ok(hostAllowed('CodeLoad.GitHub.com.', ['codeload.github.com']), 'case and a final dot do not matter');
  t.notOk(hostAllowed('github.com', ['codeload.github.com']));
  t.notOk(hostAllowed('evilcodeload.github.com', ['codeload.github.com']));
  t.ok(hostAllowed('a.b.example.com', ['*.example.com']));
  t.notOk(hostAllowed('example.com', ['*.example.com']), 'the wildcard needs a label');
  t.notOk(hostAllowed('badexample.com', ['*.example.com']));
  t.notOk(hostAllowed('example.com.evil.net', ['*.example.com', 'example.com']));
});

t.test('URL credentials become Basic auth for their origin only, and never appear in messages', async (t) => {
  const dest = path.join(t.testdir(), 'a');
  const port = new URL(base).port;
  const r = await download(`http://deploy:p%40ss%20word@127.0.0.1:${port}/private`, dest);
  t.equal(r.bytes, payload.length, 'the server got the decoded user and password');
  await rejectsRelease(
    t,
    download(`http://deploy:wrong@127.0.0.1:${port}/private?sig=s3cr3t`, dest),
    /^download failed: HTTP 401 Unauthorized from http:\/\/127\.0\.0\.1:\d+\/private\?<redacted>$/,
  );
  seen.length = 0;
  await download(`http://deploy:pw@127.0.0.1:${port}/private-then-away`, dest);
  t.equal(seen.length, 2);
  t.ok(seen[0].auth, 'sent to the origin it was given for');
  t.equal(seen[1].host, `localhost:${port}`);
  t.equal(seen[1].auth, undefined, 'not forwarded to another origin');

  t.equal(redactUrl('https://u:p@h.example/a/b.tgz?X-Amz-Signature=abc#frag'), 'https://u:***@h.example/a/b.tgz?<redacted>');
  t.equal(redactUrl('https://h.example/a.tgz'), 'https://h.example/a.tgz');
  t.equal(redactUrl('file:///tmp/a.tgz'), 'file:///tmp/a.tgz');
  t.equal(redactUrl('not a url'), '"not a url"');
});

t.test('connect and read timeouts', async (t) => {
  const dest = path.join(t.testdir(), 'a');
  await rejectsRelease(
    t,
    download(`${base}/hang`, dest, { connectTimeoutMs: 300 }),
    /^download failed: no response within 300 ms from http:\/\/127\.0\.0\.1:\d+\/hang$/,
  );
  await rejectsRelease(
    t,
    download(`${base}/stall`, dest, { connectTimeoutMs: 10_000, readTimeoutMs: 300 }),
    /^download stalled: no data for 300 ms from http:\/\/127\.0\.0\.1:\d+\/stall$/,
  );
  t.notOk(existsSync(dest), 'the partial file is removed');
  // A caller's abort still wins over the timeouts' own messages.
  const ac = new AbortController();
  const p = download(`${base}/hang`, dest, { connectTimeoutMs: 60_000, signal: ac.signal });
  ac.abort(new Error('caller gave up'));
  t.match(await p.catch((e: Error) => e.message), /caller gave up/);
});
