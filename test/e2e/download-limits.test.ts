import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import t, { type Test } from 'tap';
import { download, hostAllowed, redactUrl } from '../../lib/release/download.js';
import { ReleaseError } from '../../lib/release/errors.js';

const payload = randomBytes(64 * 1024);
const seen: { url: string; auth?: string; host?: string }[] = [];
let base = '';
let baseByName = ''; // the same server as "localhost": another host for the allow-list and origin checks

const server = http.createServer((req, res) => {
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
    case '/hang':
      return; // accepts, never answers
    case '/stall':
      res.writeHead(200, { 'content-length': payload.length });
      res.write(payload.subarray(0, 1000)); // then nothing
      return;
    default:
      res.writeHead(404);
      res.end();
  }
});

t.before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  base = `http://127.0.0.1:${port}`;
  baseByName = `http://localhost:${port}`;
});
t.teardown(() => {
  server.closeAllConnections();
  server.close();
});

async function fails(t: Test, p: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, ReleaseError);
  t.match((err as Error).message, message);
}

t.test('redirects are followed up to the limit, each hop re-checked', async (t) => {
  const dir = t.testdir();
  const dest = path.join(dir, 'a');
  const r = await download(`${base}/r/4`, dest, { maxRedirects: 5 });
  t.equal(r.bytes, payload.length);
  t.same(readFileSync(dest), payload);
  await fails(t, download(`${base}/r/5`, dest, { maxRedirects: 5 }), /more than 5 redirects from http:\/\/127\.0\.0\.1:\d+\/r\/5/);
  t.notOk(existsSync(dest), 'nothing left behind');
  await fails(t, download(`${base}/r/0`, dest, { maxRedirects: 0 }), /more than 0 redirects/);
  await fails(t, download(`${base}/loop`, dest), /more than 5 redirects/);
  await fails(t, download(`${base}/to-file`, dest), /redirect to scheme "file:" .* \(only http: and https:\)/);
  await fails(t, download(`${base}/to-ftp`, dest), /redirect to scheme "ftp:"/);
  await fails(t, download(`${base}/bad-location`, dest), /malformed redirect location/);
});

t.test('the host allow-list applies to the URL and to every redirect', async (t) => {
  const dest = path.join(t.testdir(), 'a');
  const allowedHosts = ['127.0.0.1'];
  t.equal((await download(`${base}/r/1`, dest, { allowedHosts })).bytes, payload.length);
  await fails(t, download(`${baseByName}/file`, dest, { allowedHosts }), /^download refused: host localhost is not in the allowed source hosts$/);
  const before = seen.length;
  await fails(t, download(`${base}/to-localhost`, dest, { allowedHosts }), /host localhost is not in the allowed source hosts \(redirected from http:\/\/127\.0\.0\.1:\d+\/to-localhost\)/);
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
  await fails(t, download(`http://deploy:wrong@127.0.0.1:${port}/private?sig=s3cr3t`, dest), /^download failed: HTTP 401 Unauthorized from http:\/\/127\.0\.0\.1:\d+\/private\?<redacted>$/);
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
  await fails(t, download(`${base}/hang`, dest, { connectTimeoutMs: 300 }), /^download failed: no response within 300 ms from http:\/\/127\.0\.0\.1:\d+\/hang$/);
  await fails(t, download(`${base}/stall`, dest, { connectTimeoutMs: 10_000, readTimeoutMs: 300 }), /^download stalled: no data for 300 ms from http:\/\/127\.0\.0\.1:\d+\/stall$/);
  t.notOk(existsSync(dest), 'the partial file is removed');
  // A caller's abort still wins over the timeouts' own messages.
  const ac = new AbortController();
  const p = download(`${base}/hang`, dest, { connectTimeoutMs: 60_000, signal: ac.signal });
  ac.abort(new Error('caller gave up'));
  t.match(await p.catch((e: Error) => e.message), /caller gave up/);
});
