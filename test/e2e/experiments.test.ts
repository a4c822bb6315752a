// POST /experiments driven as the experiment runner's web app drives it (seed 003): form posts
// with password, callBack, signature, model, protocol, user and isAdmin ("True", as Django's
// requests.post sends a Python bool), callbacks received as forms by a local receiver, and
// cancelTask.
import t from 'tap';
import { createServer, type Server } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack, writeApp, zipEntries } from '../helpers/archives.js';
import { agentWithArchives, api, testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

const PASSWORD = 'runner-password-0123456789';

type Callback = { type: string; fields: Record<string, string>; files: Record<string, File> };

async function receiver(t: { teardown(fn: () => unknown): void }) {
  const got: Callback[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const type = String(req.headers['content-type']);
      const form = await new Response(new Uint8Array(Buffer.concat(chunks)), { headers: { 'content-type': type } }).formData();
      const cb: Callback = { type, fields: {}, files: {} };
      for (const [k, v] of form) {
        if (typeof v === 'string') cb.fields[k] = v;
        else cb.files[k] = v;
      }
      got.push(cb);
      // Django's receivers answer 200 JSON whatever they make of it.
      res.setHeader('content-type', 'application/json');
      res.end('{"experiment":"ok"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/experiments/callback`, got };
}

const post = async (url: string, fields: Record<string, string>) => {
  const res = await fetch(`${url}/experiments`, { method: 'POST', body: new URLSearchParams(fields) });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
};

t.test('the experiment runner API, as its web app uses it', async (t) => {
  const { agent, archives, dir } = await agentWithArchives(t, {
    experimentsPassword: PASSWORD,
    maxConcurrentRuns: 1,
    adminReservedRuns: 0,
    callbackBackoffMs: '50',
  });
  const rx = await receiver(t);
  // COMBINE archives are zips.
  const zipApp = async (name: string, files: Record<string, string>) =>
    archives.serve(`${name}.zip`, await pack(writeApp(join(dir, name), files), join(dir, `${name}.zip`), 'zip'));
  const model = await zipApp('model', {
    Procfile: 'experiment: sh run.sh\n',
    'run.sh': 'echo "user=$EXPERIMENT_USER" > "$OUTPUT_DIR/info.txt"\ncat protocol/proto.txt >> outputs/info.txt\n',
  });
  const failing = await zipApp('failing', { Procfile: 'experiment: exit 3\n' });
  const looping = await zipApp('looping', {
    Procfile: 'experiment: sh run.sh\n',
    'run.sh': "trap 'echo got USR1 > outputs/partial.txt; exit 5' USR1\necho ready > outputs/ready.txt\nwhile :; do sleep 0.05; done\n",
  });
  const protocol = await zipApp('protocol', { 'proto.txt': 'protocol v1\n' });
  const fields = (signature: string, extra: Record<string, string> = {}) => ({
    password: PASSWORD,
    callBack: rx.url,
    signature,
    model,
    protocol,
    user: 'Ada Lovelace',
    isAdmin: 'False',
    ...extra,
  });

  const wrong = await post(agent.url, { ...fields('1'), password: 'nope' });
  t.equal(wrong.status, 401);
  t.match(wrong.type, /^text\/plain/);
  t.equal(wrong.text, 'Missing or incorrect password supplied.');
  const { password: _, ...nopw } = fields('1');
  t.equal((await post(agent.url, nopw)).status, 401, 'a missing password too');
  const { protocol: __, ...noproto } = fields('1');
  const missing = await post(agent.url, noproto);
  t.equal(missing.status, 400);
  t.equal(missing.text, 'protocol: is required');
  const badAdmin = await post(agent.url, fields('1', { isAdmin: 'maybe' }));
  t.equal(badAdmin.status, 400);
  t.match(badAdmin.text, /^isAdmin: /);

  // A success, with isAdmin=True as Django sends it.
  const ok = await post(agent.url, fields('41', { isAdmin: 'True' }));
  t.equal(ok.status, 200, ok.text);
  t.match(ok.type, /^text\/plain/);
  const m = /^41 succ ([0-9a-f]{32})$/.exec(ok.text);
  t.ok(m, `"<signature> succ <id>": ${ok.text}`);
  const id = m![1];
  const doc = await api('GET', `${agent.url}/runs/${id}`);
  t.equal(doc.json.priority, 'admin', 'isAdmin=True is an admin');
  t.equal(doc.json.user, 'Ada Lovelace');
  await waitFor(() => rx.got.filter((c) => c.fields.signature === '41').length === 2, 'running and the result');
  const [running, result] = rx.got.filter((c) => c.fields.signature === '41');
  t.equal(running.type, 'application/x-www-form-urlencoded', 'the seed callbacks are forms');
  t.same(running.fields, { signature: '41', taskid: id, returntype: 'running' });
  t.match(result.type, /^multipart\/form-data/);
  t.same(result.fields, { signature: '41', taskid: id, returntype: 'success' });
  const zip = join(dir, 'result.zip');
  writeFileSync(zip, Buffer.from(await result.files.experiment.arrayBuffer()));
  t.equal(result.files.experiment.name, 'output.zip');
  t.same(
    await zipEntries(zip),
    { 'info.txt': 'user=Ada Lovelace\nprotocol v1\n' },
    'the outputs, with the protocol unpacked under protocol/',
  );
  const auth = archives.requests.filter((r) => r.path === '/model.zip' || r.path === '/protocol.zip').map((r) => r.headers.authorization);
  t.same(auth, ['Token 41', 'Token 41'], 'downloads carry the signature as the runner sends it');

  const bad = await post(agent.url, fields('42', { model: failing }));
  t.equal(bad.status, 200);
  await waitFor(() => rx.got.some((c) => c.fields.signature === '42' && c.fields.returntype !== 'running'), 'the failure');
  const failed = rx.got.find((c) => c.fields.signature === '42' && c.fields.returntype !== 'running')!;
  t.equal(failed.fields.returntype, 'failed', 'no results: failed');
  t.equal(failed.fields.returnmsg, 'the experiment exited with code 3');

  // Admins first: a running experiment holds the one slot; an admin's goes ahead of a user's.
  const blocker = await post(agent.url, fields('43', { model: looping }));
  const blockerId = blocker.text.split(' ')[2];
  await waitFor(async () => (await api('GET', `${agent.url}/runs/${blockerId}/files/outputs/ready.txt`)).status === 200, 'it is ready');
  const normal = (await post(agent.url, fields('44', { user: 'Bob' }))).text.split(' ')[2];
  const admin = (await post(agent.url, fields('45', { user: 'Carol', isAdmin: 'true' }))).text.split(' ')[2];
  const q = await api('GET', `${agent.url}/queue`);
  t.same(
    q.json.queued.map((e: { id: string }) => e.id),
    [admin, normal],
  );

  // The queued normal one is cancelled before it runs: it never does.
  await post(agent.url, { password: PASSWORD, cancelTask: normal });
  await waitFor(async () => (await api('GET', `${agent.url}/runs/${normal}`)).json.status === 'cancelled', 'the queued one cancelled');
  // cancelTask: SIGUSR1 to the running one, which still reports what it left.
  const cancelled = await post(agent.url, { password: PASSWORD, cancelTask: blockerId });
  t.equal(cancelled.status, 200);
  t.equal(cancelled.text, '');
  await waitFor(() => rx.got.some((c) => c.fields.signature === '43' && c.fields.returntype !== 'running'), 'the cancelled result');
  const partial = rx.got.find((c) => c.fields.signature === '43' && c.fields.returntype !== 'running')!;
  t.equal(partial.fields.returntype, 'partial', 'it left results: partial');
  t.equal(partial.fields.returnmsg, 'the experiment was cancelled');
  const pzip = join(dir, 'partial.zip');
  writeFileSync(pzip, Buffer.from(await partial.files.experiment.arrayBuffer()));
  t.same(await zipEntries(pzip), { 'partial.txt': 'got USR1\n', 'ready.txt': 'ready\n' }, 'the child saw SIGUSR1');
  await waitFor(() => rx.got.some((c) => c.fields.signature === '45' && c.fields.returntype === 'success'), "the admin's runs");
  const never = await waitFor(() => {
    const got = rx.got.filter((c) => c.fields.signature === '44');
    return got.length ? got : null;
  }, 'the cancelled queued one to be reported');
  t.same(
    never.map((c) => [c.fields.returntype, c.fields.returnmsg]),
    [['failed', 'the experiment was cancelled']],
    'a queued experiment cancelled never runs; its web app hears it failed',
  );
  t.same((await api('GET', `${agent.url}/runs/${normal}/exit-data`)).json, { finished: true });
});

t.test('off without a password; in the OpenAPI document either way', async (t) => {
  const agent = await testAgent();
  t.teardown(() => agent.close());
  const r = await post(agent.url, { password: '', callBack: 'http://x/' });
  t.equal(r.status, 404);
  t.match(r.text, /experiments-password-file/);
  const doc = await api('GET', `${agent.url}/openapi.json`);
  const op = doc.json.paths['/experiments'].post;
  t.ok(op.requestBody.content['application/x-www-form-urlencoded'], 'the form body is declared');
  t.same(op.security, [], 'it takes its own password, not the token');
});
