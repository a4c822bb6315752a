// The Pleiades worker API (/api/v0.5/) driven exactly as its public clients (pypleiades,
// pleiades-rs) send requests: their field names, types and content types.
import t from 'tap';
import { createHash } from 'node:crypto';
import { api, testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** POST /data as both clients do: multipart, one part named `file` with a file name. */
async function upload(base: string, bytes: Buffer, filename = 'data', headers: Record<string, string> = {}) {
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(bytes)]), filename);
  const res = await fetch(`${base}/data`, { method: 'POST', body: form, headers });
  return { status: res.status, type: res.headers.get('content-type'), json: (await res.json()) as any };
}

t.test('the worker API as the public clients speak it', async (t) => {
  const agent = await testAgent({ jobLeaseMs: 60_000 });
  t.teardown(() => agent.close());
  const base = `${agent.url}/api/v0.5`;

  const ping = await api('GET', `${base}/ping`);
  t.equal(ping.status, 200);
  t.equal(ping.headers.get('content-type'), 'application/json', 'exactly application/json');
  t.match(ping.json, { code: 0, status: 'ok', message: String });

  // Data: multipart field `file`; id and checksum are strings (sha256), the bytes shared with /data.
  const codexBytes = Buffer.from('pretend archive');
  const codex = await upload(base, codexBytes, 'data');
  t.equal(codex.status, 200);
  t.equal(codex.type, 'application/json');
  t.same(
    { code: codex.json.code, status: codex.json.status, id: codex.json.id, checksum: codex.json.checksum },
    {
      code: 0,
      status: 'ok',
      id: sha(codexBytes),
      checksum: sha(codexBytes),
    },
  );
  const root = await api('GET', `${agent.url}/data/${codex.json.id}`);
  t.equal(root.status, 200, 'the same bytes are in drover’s own /data, in its own shape');
  t.ok(root.json.self, 'root /data keeps its hypermedia shape');
  const input = await upload(base, Buffer.from('hello input'), 'input');
  const meta = await api('GET', `${base}/data/${input.json.id}`);
  t.match(meta.json, { code: 0, status: 'ok', id: input.json.id });

  const blob = await fetch(`${base}/data/${input.json.id}/blob`);
  t.equal(blob.headers.get('content-type'), 'application/octet-stream', 'exactly application/octet-stream');
  t.equal(Buffer.from(await blob.arrayBuffer()).toString(), 'hello input');
  const missing = await api('GET', `${base}/data/${'0'.repeat(64)}/blob`);
  t.equal(missing.status, 404);
  t.equal(missing.headers.get('content-type'), 'application/json');
  t.same(
    { code: missing.json.code, status: missing.json.status, message: missing.json.message },
    {
      code: 601,
      status: 'error',
      message: 'BLOB data object is not exist',
    },
  );
  t.equal((await api('GET', `${base}/data/1234/blob`)).json.code, 601, 'a Pleiades-style numeric id is just missing');

  // Worker registration (pleiades-rs: {"runtime": [...]}).
  const reg = await api('POST', `${base}/worker`, { runtime: ['dlabLua54+pcli', 'default'] });
  t.equal(reg.status, 200);
  t.equal(reg.headers.get('content-type'), 'application/json');
  t.equal(reg.json.code, 0);
  t.type(reg.json.id, 'string', 'ids are strings');
  t.match(reg.json.id, /^\d+$/, 'a 64-bit integer as a string');
  t.same(reg.json.runtime, ['dlabLua54+pcli', 'default']);
  const wid: string = reg.json.id;
  t.match((await api('GET', `${base}/worker/${wid}`)).json, { code: 0, id: wid });
  t.equal((await api('GET', `${base}/worker/999`)).status, 404);

  // No job: code 1299, job absent or null.
  const empty = await api('POST', `${base}/worker/${wid}/contract`, { id: wid, tags: [], timeout: 0 });
  t.equal(empty.status, 200);
  t.equal(empty.json.code, 1299);
  t.notOk(empty.json.job);

  // Lambda and job (pypleiades sends tags and group_ids null when unset).
  const lambda = await api('POST', `${base}/lambda`, { codex: codex.json.id, runtime: 'default' });
  t.match(lambda.json, { code: 0, status: 'ok', id: String });
  const other = await api('POST', `${base}/lambda`, { codex: codex.json.id, runtime: 'gpu-only' });

  // A contract waiting when the job is created gets it (long-poll).
  const waiting = api('POST', `${base}/worker/${wid}/contract`, { id: wid, tags: [], timeout: 20 });
  await new Promise((r) => setTimeout(r, 100)); // not a timing assertion: either order must work
  const skipped = await api('POST', `${base}/job`, { lambda: other.json.id, input: input.json.id, tags: null, group_ids: null });
  t.match(skipped.json, { code: 0, id: String }, 'a job no worker here can run is still accepted');
  const job = await api('POST', `${base}/job`, { lambda: lambda.json.id, input: input.json.id, tags: [] });
  t.match(job.json, { code: 0, status: 'ok', id: String });
  const contracted = await waiting;
  t.same({ code: contracted.json.code, job: contracted.json.job }, { code: 0, job: job.json.id }, 'the matching job, not the other one');

  // Job info: no body, the fields the clients require.
  const info = await api('GET', `${base}/job/${job.json.id}`);
  t.equal(info.headers.get('content-type'), 'application/json');
  t.same(
    {
      code: info.json.code,
      status: info.json.status,
      id: info.json.id,
      state: info.json.state,
      lambda: info.json.lambda,
      input: info.json.input,
      output: info.json.output,
    },
    {
      code: 0,
      status: 'ok',
      id: job.json.id,
      state: 'Running',
      lambda: { id: lambda.json.id, runtime: 'default', codex: codex.json.id },
      input: { id: input.json.id },
      output: undefined,
    },
  );
  t.equal(info.json.attempts, 1);

  // A requester waits for the result (`except=Finished&timeout=10`) while the worker reports.
  const result = api('GET', `${base}/job/${job.json.id}?except=Finished&timeout=10`);
  const running = await api('POST', `${base}/job/${job.json.id}`, { status: 'running' });
  t.match(running.json, { code: 0, status: 'ok', message: String });
  const out = await upload(base, Buffer.from('HELLO OUTPUT'), 'data');
  // pleiades-rs sends "finished"; its docs show "Finished": any letter case.
  const fin = await api('POST', `${base}/job/${job.json.id}`, { output: out.json.id, status: 'Finished' });
  t.same({ code: fin.json.code, status: fin.json.status }, { code: 0, status: 'ok' });
  t.type(fin.json.message, 'string');
  const done = await result;
  t.equal(done.json.state, 'Finished');
  t.same(done.json.output, { id: out.json.id });
  const again = await api('POST', `${base}/job/${job.json.id}`, { output: out.json.id, status: 'finished' });
  t.equal(again.json.code, 0, 'a repeated report is idempotent');
  const late = await api('POST', `${base}/job/${job.json.id}`, { status: 'failed' });
  t.equal(late.status, 409, 'a finished job does not become failed');

  // The wait returns at its timeout when the state is not reached.
  const notYet = await api('GET', `${base}/job/${skipped.json.id}?except=Finished&timeout=0.2`);
  t.equal(notYet.json.state, 'Enqueued');

  // Bad input: 4xx, Pleiades-shaped, naming the field.
  const bad = [
    [await api('POST', `${base}/worker`, { runtime: 'default' }), 'runtime'],
    [await api('POST', `${base}/worker`, { runtime: [] }), 'runtime'],
    [await api('POST', `${base}/lambda`, { runtime: 'default' }), 'codex'],
    [await api('POST', `${base}/lambda`, { codex: '0'.repeat(64), runtime: 'default' }), 'codex'],
    [await api('POST', `${base}/job`, { lambda: '1', input: input.json.id }), 'lambda'],
    [await api('POST', `${base}/job`, { lambda: lambda.json.id, input: input.json.id, tags: 'x' }), 'tags'],
    [await api('POST', `${base}/job/${job.json.id}`, { status: 'done' }), 'status'],
    [await api('POST', `${base}/job/${skipped.json.id}`, { status: 'finished' }), 'output'],
    [await api('POST', `${base}/worker/${wid}/contract`, { id: wid, timeout: -1 }), 'timeout'],
    [await api('POST', `${base}/worker/${wid}/contract`, { id: '5', timeout: 0 }), 'id'],
    [await api('GET', `${base}/job/${job.json.id}?except=Finished&timeout=soon`), 'timeout'],
  ] as const;
  for (const [res, field] of bad) {
    t.ok(res.status >= 400 && res.status < 500, `${field}: 4xx (${res.status})`);
    t.equal(res.headers.get('content-type'), 'application/json');
    t.match(res.json, { code: Number, status: 'error', message: String, field }, `${field} named: ${res.json?.message}`);
    t.not(res.json.code, 0);
  }
  const notJson = await api('POST', `${base}/worker`, 'nope', { 'content-type': 'application/json' });
  t.equal(notJson.status, 400);
  t.match(notJson.json, { status: 'error', message: /JSON/ });
});

t.test('token auth applies to /api/v0.5 as to every route', async (t) => {
  const agent = await testAgent({ token: 's3cret-token-for-tests' });
  t.teardown(() => agent.close());
  const base = `${agent.url}/api/v0.5`;
  t.equal((await api('POST', `${base}/worker`, { runtime: ['default'] })).status, 401);
  const ok = await api('POST', `${base}/worker`, { runtime: ['default'] }, { authorization: 'Bearer s3cret-token-for-tests' });
  t.equal(ok.json.code, 0);
});

t.test('leases: a silent worker loses its job, a running report renews it; state survives a restart', async (t) => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { startAgent } = await import('../../lib/http/server.js');
  const { defaults } = await import('../../lib/agent/config.js');
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-pleiades-'));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const start = () => startAgent({ ...defaults, host: '127.0.0.1', port: 0, stateDir, jobLeaseMs: 600 }, () => {});
  let agent = await start();
  t.teardown(() => agent.close());
  let base = `${agent.url}/api/v0.5`;
  const codex = await upload(base, Buffer.from('c'));
  const input = await upload(base, Buffer.from('i'));
  const w = (await api('POST', `${base}/worker`, { runtime: ['default'] })).json.id;
  const l = (await api('POST', `${base}/lambda`, { codex: codex.json.id, runtime: 'default' })).json.id;
  const j = (await api('POST', `${base}/job`, { lambda: l, input: input.json.id, tags: [] })).json.id;
  const queued = (await api('POST', `${base}/job`, { lambda: l, input: input.json.id, tags: ['gpu'] })).json.id;
  t.equal((await api('POST', `${base}/worker/${w}/contract`, { id: w, tags: [], timeout: 5 })).json.job, j);
  // Renewed three times over more than one lease: still held.
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 300));
    t.equal((await api('POST', `${base}/job/${j}`, { status: 'running' })).json.code, 0);
  }
  t.equal((await api('GET', `${base}/job/${j}`)).json.state, 'Running');
  // Silent: back to Enqueued, counted.
  const lost = await waitFor(async () => {
    const doc = (await api('GET', `${base}/job/${j}`)).json;
    return doc.state === 'Enqueued' && doc;
  }, 'the lease to run out');
  t.equal(lost.attempts, 1);
  t.match(lost.detail, /lease/);
  t.equal((await api('POST', `${base}/job/${j}`, { status: 'running' })).status, 409, 'a lost lease is not renewed');

  // Restart: workers, lambdas and jobs are back; the queued job is contracted again.
  await agent.close();
  agent = await start();
  base = `${agent.url}/api/v0.5`;
  t.equal((await api('GET', `${base}/worker/${w}`)).json.id, w);
  t.equal((await api('GET', `${base}/job/${queued}`)).json.state, 'Enqueued');
  const again = await api('POST', `${base}/worker/${w}/contract`, { id: w, tags: ['gpu'], timeout: 5 });
  t.equal(again.json.job, j, 'FIFO: the older job first');
  t.equal((await api('GET', `${base}/job/${j}`)).json.attempts, 2);
  t.equal((await api('POST', `${base}/worker/${w}/contract`, { id: w, tags: ['gpu'], timeout: 5 })).json.job, queued, 'tags covered');
});
