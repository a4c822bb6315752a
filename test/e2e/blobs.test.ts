import t from 'tap';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BlobStore, BlobTooLargeError, blobIdFromUrl } from '../../lib/store/blobs.js';
import { pack } from '../helpers/archives.js';
import { api, testAgent, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

const examples = join(import.meta.dirname, '..', '..', 'examples');
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function store(dir: string, opts: { maxBytes?: number; retentionMs?: number; referenced?: Set<string> } = {}) {
  return new BlobStore({
    dir,
    maxBytes: opts.maxBytes ?? 1024 * 1024,
    retentionMs: opts.retentionMs ?? 60_000,
    referenced: () => opts.referenced ?? new Set(),
  });
}

t.test('store: content-addressed, streamed, capped, nothing half-written left', async (t) => {
  const dir = t.testdir();
  const s = store(dir, { maxBytes: 1000 });
  await s.init();
  const bytes = Buffer.from('hello blobs\n');
  const a = await s.put(Readable.from([bytes.subarray(0, 5), bytes.subarray(5)]));
  t.same({ id: a.info.id, size: a.info.size, created: a.created }, { id: sha(bytes), size: bytes.length, created: true });
  const b = await s.put(Readable.from([bytes]));
  t.equal(b.info.id, a.info.id, 'same bytes, same id');
  t.equal(b.created, false, 'second upload of the same bytes is a reuse');
  t.same(readFileSync(s.path(a.info.id)), bytes);
  t.same(
    (await s.list()).map((i) => i.id),
    [a.info.id],
  );

  await t.rejects(s.put(Readable.from([Buffer.alloc(600), Buffer.alloc(600)])), { name: 'BlobTooLargeError' });
  t.same(readdirSync(dir), [a.info.id], 'the oversized upload left no temp file');
  const exact = await s.put(Readable.from([Buffer.alloc(1000, 7)]));
  t.equal(exact.info.size, 1000, 'exactly the cap is accepted');

  writeFileSync(join(dir, '.upload-deadbeef'), 'torn');
  await s.init();
  t.notOk(existsSync(join(dir, '.upload-deadbeef')), 'init removes uploads a crash left behind');
  t.equal(await s.get('nope'), null);
  t.equal(await s.get('0'.repeat(64)), null);
});

t.test('store: retention removes only unreferenced blobs unused for longer than the retention', async (t) => {
  const dir = t.testdir();
  const referenced = new Set<string>();
  const s = store(dir, { retentionMs: 10_000, referenced });
  const old = (await s.put(Readable.from(['old and unreferenced']))).info.id;
  const kept = (await s.put(Readable.from(['old but referenced']))).info.id;
  const fresh = (await s.put(Readable.from(['fresh']))).info.id;
  referenced.add(kept);
  const longAgo = new Date(Date.now() - 60_000);
  utimesSync(s.path(old), longAgo, longAgo);
  utimesSync(s.path(kept), longAgo, longAgo);
  t.same(await s.sweep(), [old]);
  t.same((await s.list()).map((i) => i.id).sort(), [kept, fresh].sort());
  const touched = (await s.get(kept))!.usedAt.getTime();
  t.ok(Date.now() - touched < 10_000, 'a referenced blob is marked used, so its retention restarts when the reference goes');
  referenced.delete(kept);
  t.same(await s.sweep(), [], 'just released: still within the retention');
  t.same(await s.sweep(Date.now() + 20_000), [kept, fresh].sort(), 'after the retention both go');
});

t.test('blobIdFromUrl', async (t) => {
  const id = sha('x');
  t.equal(blobIdFromUrl(`http://h:1/data/${id}/blob`), id);
  t.equal(blobIdFromUrl(`https://h/prefix/data/${id}/blob?x=1`), id);
  t.equal(blobIdFromUrl(`http://h/data/${id}`), null);
  t.equal(blobIdFromUrl(`http://h/data/${id.slice(1)}/blob`), null);
  t.equal(blobIdFromUrl('not a url'), null);
});

async function upload(url: string, body: BodyInit | null, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', body, headers, duplex: 'half' } as RequestInit);
  return { status: res.status, headers: res.headers, json: (await res.json()) as any };
}

t.test('HTTP: upload, metadata, download, errors', async (t) => {
  const agent = await testAgent({ blobMaxBytes: 64 * 1024 });
  t.teardown(() => agent.close());
  const index = (await api('GET', agent.url)).json;
  t.equal(index.data, `${agent.url}/data`, 'the index links to the data API');

  const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
  const up = await upload(index.data, bytes, { 'content-type': 'application/octet-stream' });
  t.equal(up.status, 201);
  t.same(up.json, {
    id: sha(bytes),
    checksum: `sha256:${sha(bytes)}`,
    size: 3000,
    used_at: up.json.used_at,
    self: `${index.data}/${sha(bytes)}`,
    blob: `${index.data}/${sha(bytes)}/blob`,
    reused: false,
  });
  t.equal(up.headers.get('location'), up.json.self);

  const again = await upload(index.data, bytes, { 'content-type': 'application/octet-stream' });
  t.equal(again.status, 201);
  t.equal(again.json.id, up.json.id);
  t.equal(again.json.reused, true, 'the same bytes reuse the stored blob');

  // multipart, as seed 002 uploads: the file part is stored, other fields ignored
  const form = new FormData();
  form.append('note', 'ignored');
  form.append('file', new Blob([bytes]), 'data.bin');
  const multi = await upload(index.data, form);
  t.equal(multi.status, 201);
  t.equal(multi.json.id, up.json.id, 'multipart upload of the same bytes: same id');

  const meta = await api('GET', up.json.self);
  t.equal(meta.status, 200);
  t.equal(meta.json.size, 3000);
  const res = await fetch(up.json.blob);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'application/octet-stream');
  t.equal(res.headers.get('content-length'), '3000');
  t.equal(res.headers.get('etag'), `"${sha(bytes)}"`);
  t.same(Buffer.from(await res.arrayBuffer()), bytes);
  const cached = await fetch(up.json.blob, { headers: { 'if-none-match': `"${sha(bytes)}"` } });
  t.equal(cached.status, 304);
  const listing = await api('GET', index.data);
  t.same(
    listing.json.data.map((d: any) => d.id),
    [up.json.id],
  );

  const missing = await api('GET', `${index.data}/${'0'.repeat(64)}/blob`);
  t.equal(missing.status, 404);
  t.match(missing.json, { errors: [{ status: 404, field: 'id', detail: /no data object/ }] });
  t.equal((await api('GET', `${index.data}/../../etc/passwd/blob`)).status, 404);
  t.equal((await api('GET', `${index.data}/xyz`)).status, 404);

  const wrongType = await upload(index.data, 'hello', { 'content-type': 'text/plain' });
  t.equal(wrongType.status, 415);
  t.match(wrongType.json.errors[0].detail, /octet-stream or multipart/);

  const noFile = new FormData();
  noFile.append('just', 'a field');
  const nf = await upload(index.data, noFile);
  t.equal(nf.status, 400);
  t.match(nf.json.errors[0], { field: 'file', detail: /no file part/ });

  const two = new FormData();
  two.append('a', new Blob(['one']), 'a');
  two.append('b', new Blob(['two']), 'b');
  const tw = await upload(index.data, two);
  t.equal(tw.status, 400);
  t.match(tw.json.errors[0].detail, /only one file/);

  const broken = await upload(index.data, '--x\r\nnot really\r\n', { 'content-type': 'multipart/form-data; boundary=x' });
  t.equal(broken.status, 400);
  const noBoundary = await upload(index.data, 'x', { 'content-type': 'multipart/form-data' });
  t.equal(noBoundary.status, 400);
  t.match(noBoundary.json.errors[0].detail, /multipart/);

  const blobsDir = join(agent.stateDir, 'blobs');
  t.same(readdirSync(blobsDir), [up.json.id], 'failed uploads left nothing behind');
});

t.test('HTTP: past the size cap is a 413, declared or streamed, and nothing is kept', async (t) => {
  const agent = await testAgent({ blobMaxBytes: 64 * 1024 });
  t.teardown(() => agent.close());
  const url = `${agent.url}/data`;
  const big = Buffer.alloc(200 * 1024, 1);
  const declared = await upload(url, big, { 'content-type': 'application/octet-stream' });
  t.equal(declared.status, 413);
  t.match(declared.json.errors[0], { status: 413, detail: /larger than the limit of 65536 bytes/ });

  // Streamed without Content-Length: the agent must notice while reading, and still answer.
  const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    let sent = 0;
    const pump = () => {
      while (sent < 1024 * 1024) {
        sent += 16 * 1024;
        if (!req.write(Buffer.alloc(16 * 1024, 2))) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
  t.equal(chunked.status, 413);
  t.match(JSON.parse(chunked.body), { errors: [{ status: 413 }] });

  const form = new FormData();
  form.append('file', new Blob([big]), 'big.bin');
  const multi = await upload(url, form);
  t.equal(multi.status, 413);
  const streamedForm = new FormData();
  streamedForm.append('file', new Blob([Buffer.alloc(65 * 1024, 3)]), 'just-over.bin');
  const justOver = await upload(url, streamedForm);
  t.equal(justOver.status, 413, 'a file just over the cap inside a small multipart body');

  await waitFor(() => readdirSync(join(agent.stateDir, 'blobs')).length === 0, 'no temp files left');
  const ok = await upload(url, Buffer.from('still works'), { 'content-type': 'application/octet-stream' });
  t.equal(ok.status, 201, 'the agent still takes uploads afterwards');
});

t.test("a process whose source_url is the agent's own blob URL runs from it", async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const archive = await pack(join(examples, 'web'), join(t.testdir(), 'web.tgz'));
  const up = await upload(`${agent.url}/data`, readFileSync(archive), { 'content-type': 'application/octet-stream' });
  t.equal(up.status, 201);
  const created = await api('POST', `${agent.url}/create-process`, {
    app: 'blob',
    node: 'web.0',
    process_type: 'web',
    source_url: up.json.blob,
  });
  t.equal(created.status, 201);
  const doc = await waitForState(created.json.status, 'running');
  await waitFor(async () => (await fetch(`http://127.0.0.1:${doc.port}/`)).ok, 'the app answers');
  t.same(readdirSync(join(agent.stateDir, 'archives')), [`${up.json.id}.archive`], 'the release is the uploaded archive');
});

t.test('agent retention: unreferenced blobs go, blobs a process uses stay', async (t) => {
  const agent = await testAgent({ blobRetentionMs: 300 });
  t.teardown(() => agent.close());
  const archive = await pack(join(examples, 'worker'), join(t.testdir(), 'worker.tgz'));
  const used = await upload(`${agent.url}/data`, readFileSync(archive), { 'content-type': 'application/octet-stream' });
  const created = await api('POST', `${agent.url}/create-process`, {
    app: 'keep',
    node: 'worker.0',
    process_type: 'worker',
    source_url: used.json.blob,
  });
  t.equal(created.status, 201);
  const unused = await upload(`${agent.url}/data`, Buffer.from('nobody wants me'), { 'content-type': 'application/octet-stream' });
  await waitFor(async () => (await api('GET', unused.json.self)).status === 404, 'the unreferenced blob to be removed', 30_000);
  t.equal((await api('GET', used.json.self)).status, 200, 'the referenced blob is kept');
  await api('POST', created.json.delete, {});
  await waitFor(async () => (await api('GET', used.json.self)).status === 404, 'the blob to go once its process is deleted', 30_000);
  t.pass('removed after the retention once nothing refers to it');
});
