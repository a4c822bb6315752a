// `drover worker` against a minimal stand-in Pleiades server written from the public clients'
// field lists (pypleiades, pleiades-rs): numeric ids as strings, `job` in the contract reply,
// code 1299 for no job, data as multipart field `file`, blobs as application/octet-stream.
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { bin } from '../helpers/agent-process.js';
import { pack, writeApp } from '../helpers/archives.js';
import { waitFor } from '../helpers/wait.js';

interface Seen {
  method: string;
  path: string;
  type: string | undefined;
  body: Buffer;
}

async function read(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

t.test('drover worker against a stand-in Pleiades server', async (t) => {
  const dir = t.testdir();
  const codex = readFileSync(
    await pack(
      writeApp(join(dir, 'app'), { Procfile: 'default: read line; if [ "$line" = sleep ]; then sleep 60; fi; echo "got:$line"' }),
      join(dir, 'app.tgz'),
    ),
  );
  const blobs = new Map<string, Buffer>([
    ['11', codex],
    ['12', Buffer.from('hello\n')],
    ['14', Buffer.from('sleep\n')],
  ]);
  const queue = ['1001', '1002'];
  const seen: Seen[] = [];
  const reports: { job: string; body: Record<string, unknown> }[] = [];
  let contracts = 0;
  let failReport = true;

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server = createServer(async (req, res) => {
    const body = await read(req);
    const path = new URL(req.url!, 'http://x').pathname.replace(/^\/api\/v0\.5/, '');
    seen.push({ method: req.method!, path, type: req.headers['content-type'], body });
    let m: RegExpExecArray | null;
    if (req.method === 'POST' && path === '/worker') {
      const { runtime } = JSON.parse(body.toString()) as { runtime: string[] };
      return json(res, 200, { code: 0, status: 'ok', message: '', id: '78204124132', runtime });
    }
    if (req.method === 'GET' && path === '/worker/78204124132') return json(res, 200, { code: 0, status: 'ok', id: '78204124132' });
    if (req.method === 'POST' && path === '/worker/78204124132/contract') {
      contracts++;
      if (contracts === 1) return json(res, 503, { code: 1, status: 'error', message: 'busy' }); // a network fault first
      const job = queue.shift();
      if (job) return json(res, 200, { code: 0, status: 'ok', job });
      const { timeout } = JSON.parse(body.toString()) as { timeout: number };
      await new Promise((r) => setTimeout(r, Math.min(timeout, 1) * 1000));
      return json(res, 200, { code: 1299, status: 'ok', message: 'no job' });
    }
    if (req.method === 'GET' && (m = /^\/job\/(\d+)$/.exec(path))) {
      const input = m[1] === '1001' ? '12' : '14';
      return json(res, 200, {
        code: 0,
        status: 'ok',
        id: m[1],
        state: 'Running',
        lambda: { id: '5', runtime: 'default', codex: '11' },
        input: { id: input },
      });
    }
    if (req.method === 'GET' && (m = /^\/data\/(\d+)\/blob$/.exec(path))) {
      const b = blobs.get(m[1]);
      if (!b) return json(res, 404, { code: 601, status: 'error', message: 'BLOB data object is not exist' });
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return res.end(b);
    }
    if (req.method === 'POST' && path === '/data') {
      const form = await new Request('http://x/', {
        method: 'POST',
        headers: { 'content-type': req.headers['content-type']! },
        body: new Uint8Array(body),
      }).formData();
      const file = form.get('file');
      if (!(file instanceof Blob)) return json(res, 400, { code: 1, status: 'error', message: 'http: no such file' });
      const id = String(20 + blobs.size);
      blobs.set(id, Buffer.from(await file.arrayBuffer()));
      return json(res, 200, { code: 0, status: 'ok', id, checksum: 'ignored' });
    }
    if (req.method === 'POST' && (m = /^\/job\/(\d+)$/.exec(path))) {
      const b = JSON.parse(body.toString()) as Record<string, unknown>;
      if (b.status === 'finished' && failReport) {
        failReport = false;
        return json(res, 500, { code: 1, status: 'error', message: 'try again' }); // the report must be retried
      }
      reports.push({ job: m[1], body: b });
      return json(res, 200, { code: 0, status: 'ok', message: 'updated' });
    }
    json(res, 404, { code: 1, status: 'error', message: 'not found' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => server.close(r)));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/api/v0.5/`;

  const proc = spawn(
    process.execPath,
    [bin, 'worker', '--server', url, '--state-dir', join(dir, 'w'), '--poll', '1', '--heartbeat', '0.3', '--drain', '0'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  proc.stderr!.on('data', (c) => (err += c));
  const exit = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  t.teardown(() => proc.kill('SIGKILL'));

  // Job 1001: finished, with its output uploaded as multipart field `file`, report retried.
  const fin = await waitFor(
    () => reports.find((r) => r.job === '1001' && r.body.status === 'finished'),
    'job 1001 reported finished',
    60_000,
  );
  t.equal(blobs.get(fin.body.output as string)?.toString(), 'got:hello\n', 'output byte for byte');
  const reg = seen.find((s) => s.path === '/worker')!;
  t.equal(reg.type, 'application/json');
  t.same(JSON.parse(reg.body.toString()), { runtime: ['default'] });
  const contract = seen.find((s) => s.path.endsWith('/contract'))!;
  t.same(JSON.parse(contract.body.toString()), { id: '78204124132', tags: [], timeout: 1 });
  t.ok(contracts >= 2, 'contracted again after a 503');
  t.match(seen.find((s) => s.path === '/data' && s.method === 'POST')!.type, /^multipart\/form-data; boundary=/);
  t.equal(
    seen.filter((s) => s.path === '/job/1001' && s.method === 'POST' && JSON.parse(s.body.toString()).status === 'finished').length,
    2,
    'the refused report was sent again',
  );
  t.same(JSON.parse(readFileSync(join(dir, 'w', 'worker.json'), 'utf8')).id, '78204124132', 'the id is kept in the state dir');

  // Job 1002 runs long: SIGINT with --drain 0 hands it back (failed: interrupted).
  await waitFor(() => reports.find((r) => r.job === '1002' && r.body.status === 'running'), 'job 1002 to be running', 60_000);
  proc.kill('SIGINT');
  t.equal(await exit, 0);
  const back = reports.find((r) => r.job === '1002' && r.body.status === 'failed');
  t.ok(back, 'handed back');
  t.match(back?.body.message, /interrupted/);
  t.notMatch(err, /TypeError|at .*\.js/, 'no stack trace');

  // Restarted with the same state dir: the saved id is checked, not registered again.
  const registrations = seen.filter((s) => s.path === '/worker').length;
  const before = contracts;
  const again = spawn(process.execPath, [bin, 'worker', '--server', url, '--state-dir', join(dir, 'w'), '--poll', '1'], {
    stdio: 'ignore',
  });
  const againExit = new Promise((r) => again.on('exit', r));
  t.teardown(() => again.kill('SIGKILL'));
  await waitFor(() => contracts > before, 'the restarted worker to contract', 30_000);
  again.kill('SIGINT');
  await againExit;
  t.equal(seen.filter((s) => s.path === '/worker').length, registrations, 'no second registration');
  t.ok(
    seen.some((s) => s.method === 'GET' && s.path === '/worker/78204124132'),
    'checked its saved id',
  );
});
