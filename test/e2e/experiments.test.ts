// POST /experiments driven as the experiment runner's web app drives it (seed 003): form posts
// with password, callBack, signature, model, protocol, user and isAdmin ("True", as Django's
// requests.post sends a Python bool), callbacks received as forms by a local receiver, archives
// from a local server (one that can hold a download), cancelTask, and an agent restart while an
// experiment's archives are being fetched.
import t from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaults } from '../../lib/agent/config.js';
import { startAgent, type Agent } from '../../lib/http/server.js';
import { ArchiveServer, pack, writeApp, zipEntries } from '../helpers/archives.js';
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

/** Serves one file at /held.zip, but holds each request until release() (then serves them all). */
async function heldServer(t: { teardown(fn: () => unknown): void }, file: string) {
  const held: ServerResponse[] = [];
  let open = false;
  const requests: IncomingMessage[] = [];
  const send = (res: ServerResponse) => createReadStream(file).pipe(res);
  const server: Server = createServer((req, res) => {
    requests.push(req);
    if (open) send(res);
    else held.push(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/held.zip`,
    requests,
    release() {
      open = true;
      for (const res of held.splice(0)) if (!res.destroyed) send(res);
    },
  };
}

const zipOf = async (dir: string, name: string, file: File) => {
  const path = join(dir, name);
  writeFileSync(path, Buffer.from(await file.arrayBuffer()));
  return zipEntries(path);
};

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
    'run.sh':
      'echo "user=$EXPERIMENT_USER" > "$OUTPUT_DIR/info.txt"\ncat protocol/proto.txt >> outputs/info.txt\necho computing\necho warning >&2\n',
  });
  const failing = await zipApp('failing', { Procfile: 'experiment: exit 3\n' });
  // The runner's rule: a file named `success` is a success, whatever the exit code.
  const succeeding = await zipApp('succeeding', {
    Procfile: 'experiment: sh run.sh\n',
    'run.sh': 'mkdir -p outputs/a\ntouch outputs/a/success\nexit 1\n',
  });
  const looping = await zipApp('looping', {
    Procfile: 'experiment: sh run.sh\n',
    'run.sh':
      "trap 'echo got USR1; echo 1,2 > outputs/ap_plot_data.csv; exit 5' USR1\necho ready > outputs/ready.txt\nwhile :; do sleep 0.05; done\n",
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
  const results = (sig: string) => rx.got.filter((c) => c.fields.signature === sig && c.fields.returntype !== 'running');
  const result = (sig: string, what: string) => waitFor(() => results(sig)[0], what);

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
  for (const [f, v] of [
    ['model', 'model.zip'],
    ['protocol', 'ftp://127.0.0.1/p.zip'],
    ['dataset', 'file:///etc/passwd'],
  ]) {
    const r = await post(agent.url, fields('1', { [f]: v }));
    t.equal(r.status, 400, `${f}=${v}`);
    t.match(r.text, new RegExp(`^${f}: `), r.text);
  }
  const iface = await post(agent.url, { password: PASSWORD, getProtoInterface: protocol, callBack: rx.url, signature: '1' });
  t.equal(iface.status, 400);
  t.equal(iface.text, 'getProtoInterface: not supported: drover runs experiments only');
  const unknown = await post(agent.url, { password: PASSWORD, cancelTask: 'no-such-task' });
  t.same([unknown.status, unknown.type, unknown.text], [200, 'text/plain; charset=utf-8', ''], 'cancelTask of an unknown id: empty text');

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
  const [running, success] = rx.got.filter((c) => c.fields.signature === '41');
  t.equal(running.type, 'application/x-www-form-urlencoded', 'the seed callbacks are forms');
  t.same(running.fields, { signature: '41', taskid: id, returntype: 'running' });
  t.match(success.type, /^multipart\/form-data/);
  t.same(success.fields, { signature: '41', taskid: id, returntype: 'success' });
  t.equal(success.files.experiment.name, 'output.zip');
  const entries = await zipOf(dir, 'result.zip', success.files.experiment);
  t.same(Object.keys(entries).sort(), ['info.txt', 'stdout.txt'], 'the outputs and stdout.txt');
  t.equal(entries['info.txt'], 'user=Ada Lovelace\nprotocol v1\n', 'the protocol unpacked under protocol/');
  t.same(entries['stdout.txt'].split('\n').sort(), ['', 'computing', 'warning'], "stdout.txt: the program's stdout and stderr");
  const auth = archives.requests.filter((r) => r.path === '/model.zip' || r.path === '/protocol.zip').map((r) => r.headers.authorization);
  t.same(auth, ['Token 41', 'Token 41'], 'downloads carry the signature as the runner sends it');

  t.equal((await post(agent.url, fields('42', { model: failing }))).status, 200);
  const failed = await result('42', 'the failure');
  t.equal(failed.fields.returntype, 'failed', 'no results: failed');
  t.equal(failed.fields.returnmsg, 'the experiment exited with code 3');

  t.equal((await post(agent.url, fields('46', { model: succeeding }))).status, 200);
  const fileSuccess = await result('46', 'the success file');
  t.equal(fileSuccess.fields.returntype, 'success', 'a file named success: success, though it exited 1');
  t.same(Object.keys(await zipOf(dir, 'success.zip', fileSuccess.files.experiment)).sort(), ['a/success', 'stdout.txt']);

  // Archives that cannot be fetched: the submit still succeeds at once; the web app hears why.
  const refused = await post(agent.url, fields('47', { model: 'http://127.0.0.1:1/model.zip' }));
  t.match(refused.text, /^47 succ [0-9a-f]{32}$/, 'answered before any download');
  const refusedId = refused.text.split(' ')[2];
  const notFetched = await result('47', 'the failed download');
  t.equal(notFetched.type, 'application/x-www-form-urlencoded', 'no zip: it never ran');
  t.equal(notFetched.fields.returntype, 'failed');
  t.match(notFetched.fields.returnmsg, /^the experiment did not run: model: cannot be fetched from http:\/\/127\.0\.0\.1:1\/model\.zip: /);
  const ended = await api('GET', `${agent.url}/runs/${refusedId}/exit-data`);
  t.match(ended.json, { finished: true, build: { exit_code: null, error: /^model: cannot be fetched/ } }, 'its exit data say why');
  t.equal((await api('GET', `${agent.url}/runs/${refusedId}`)).json.user, 'Ada Lovelace');
  await post(agent.url, fields('48', { protocol: `${archives.url}/missing.zip` }));
  t.match((await result('48', 'the missing protocol')).fields.returnmsg, /protocol: cannot be fetched from .*missing\.zip: .*404/);

  // Admins first: a running experiment holds the one slot; an admin's goes ahead of a user's.
  const blocker = await post(agent.url, fields('43', { model: looping }));
  const blockerId = blocker.text.split(' ')[2];
  await waitFor(async () => (await api('GET', `${agent.url}/runs/${blockerId}/files/outputs/ready.txt`)).status === 200, 'it is ready');
  const normal = (await post(agent.url, fields('44', { user: 'Bob' }))).text.split(' ')[2];
  const admin = (await post(agent.url, fields('45', { user: 'Carol', isAdmin: 'true' }))).text.split(' ')[2];
  // Both are queued once their archives are in.
  const q = await waitFor(async () => {
    const r = await api('GET', `${agent.url}/queue`);
    return r.json.queued.length === 2 ? r : null;
  }, 'both queued');
  t.same(
    q.json.queued.map((e: { id: string }) => e.id),
    [admin, normal],
  );

  // The queued normal one is cancelled before it runs: it never does.
  await post(agent.url, { password: PASSWORD, cancelTask: normal });
  await waitFor(async () => (await api('GET', `${agent.url}/runs/${normal}`)).json.status === 'cancelled', 'the queued one cancelled');
  // cancelTask: SIGUSR1 to the running one, which still reports what it left.
  const cancelled = await post(agent.url, { password: PASSWORD, cancelTask: blockerId });
  t.same([cancelled.status, cancelled.type, cancelled.text], [200, 'text/plain; charset=utf-8', '']);
  const partial = await result('43', 'the cancelled result');
  t.equal(partial.fields.returntype, 'partial', 'it left a *plot_data.csv: partial');
  t.equal(partial.fields.returnmsg, 'the experiment was cancelled');
  const pzip = await zipOf(dir, 'partial.zip', partial.files.experiment);
  t.same(Object.keys(pzip).sort(), ['ap_plot_data.csv', 'errors.txt', 'ready.txt', 'stdout.txt']);
  t.equal(pzip['errors.txt'], '\nExperiment terminated: cancelled (cancelTask)\n', 'errors.txt says it was cancelled');
  // (The group's `sleep` got SIGUSR1 too: sh says so on stderr, also in stdout.txt.)
  t.match(pzip['stdout.txt'], /^got USR1$/m, 'the child saw SIGUSR1');
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

t.test('cancelTask while the archives are being fetched: it never runs; its web app hears it failed', async (t) => {
  const { agent, dir } = await agentWithArchives(t, { experimentsPassword: PASSWORD, callbackBackoffMs: '50' });
  const rx = await receiver(t);
  const held = await heldServer(
    t,
    await pack(writeApp(join(dir, 'm'), { Procfile: 'experiment: touch outputs/ran\n' }), join(dir, 'm.zip'), 'zip'),
  );
  const fields = { password: PASSWORD, callBack: rx.url, signature: '7', model: held.url, protocol: held.url, user: 'u', isAdmin: 'false' };
  const r = await post(agent.url, fields);
  t.match(r.text, /^7 succ [0-9a-f]{32}$/);
  const id = r.text.split(' ')[2];
  await waitFor(() => held.requests.length === 1, 'the download to start');
  t.equal(held.requests[0].headers.authorization, 'Token 7');
  const c = await post(agent.url, { password: PASSWORD, cancelTask: id });
  t.same([c.status, c.text], [200, '']);
  await waitFor(() => rx.got.length === 1, 'its callback');
  t.same(rx.got[0].fields, { signature: '7', taskid: id, returntype: 'failed', returnmsg: 'the experiment was cancelled' });
  const doc = (await api('GET', `${agent.url}/runs/${id}`)).json;
  t.match(doc, { status: 'cancelled', finished: true, started_at: null });
  t.match((await api('GET', `${agent.url}/runs/${id}/exit-data`)).json, {
    build: { error: 'cancelled while its archives were being fetched' },
  });
  held.release();
  t.equal(rx.got.length, 1, 'nothing more');
});

t.test('an agent stopped while the archives are being fetched: the next agent fetches them again', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-experiments-'));
  let agent: Agent | null = null;
  t.teardown(async () => {
    await agent?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });
  const start = async () =>
    (agent = await startAgent(
      { ...defaults, host: '127.0.0.1', port: 0, stateDir, stopGraceMs: 3000, experimentsPassword: PASSWORD, callbackBackoffMs: '50' },
      () => {},
    ));
  const dir = t.testdir();
  const rx = await receiver(t);
  const held = await heldServer(
    t,
    await pack(writeApp(join(dir, 'm'), { Procfile: 'experiment: echo hello\n' }), join(dir, 'm.zip'), 'zip'),
  );
  const first = await start();
  const fields = { password: PASSWORD, callBack: rx.url, signature: '9', model: held.url, protocol: held.url, user: 'u', isAdmin: 'false' };
  const id = (await post(first.url, fields)).text.split(' ')[2];
  t.match(id, /^[0-9a-f]{32}$/);
  await waitFor(() => held.requests.length === 1, 'the download to start');
  await first.close();
  agent = null;
  t.same(rx.got, [], 'nothing said while stopping');
  held.release();
  const second = await start();
  await waitFor(() => rx.got.length === 2, 'running and the result');
  t.same(
    rx.got.map((c) => [c.fields.taskid, c.fields.returntype]),
    [
      [id, 'running'],
      [id, 'success'],
    ],
  );
  t.same(await zipOf(dir, 'out.zip', rx.got[1].files.experiment), { 'stdout.txt': 'hello\n' });
  t.ok(held.requests.length >= 2, 'fetched again');
  t.match((await api('GET', `${second.url}/runs/${id}`)).json, { user: 'u', finished: true });

  // One stopped while running runs again from a fresh app (the runner's late acks), with its outputs/.
  const looping = await archivesOf(t, dir, {
    Procfile: 'experiment: sh run.sh\n',
    'run.sh': "echo attempt\ntrap 'echo 1 > outputs/x_plot_data.csv; exit 5' USR1\ntouch outputs/ready\nwhile :; do sleep 0.05; done\n",
  });
  const loopId = (await post(second.url, { ...fields, signature: '10', model: looping, protocol: looping })).text.split(' ')[2];
  const ready = async (base: string) => (await api('GET', `${base}/runs/${loopId}/files/outputs/ready`)).status === 200;
  await waitFor(() => ready(second.url), 'it runs');
  await second.close();
  agent = null;
  const third = await start();
  await waitFor(() => ready(third.url), 'it runs again');
  await post(third.url, { password: PASSWORD, cancelTask: loopId });
  const last = await waitFor(() => rx.got.find((c) => c.fields.signature === '10' && c.fields.returntype !== 'running'), 'its result');
  t.equal(last.fields.returntype, 'partial');
  const entries = await zipOf(dir, 'loop.zip', last.files.experiment);
  t.same(Object.keys(entries).sort(), ['errors.txt', 'ready', 'stdout.txt', 'x_plot_data.csv']);
  t.match(entries['stdout.txt'], /^attempt\n/, 'the last attempt only');
  t.notMatch(entries['stdout.txt'], /attempt[^]*attempt/);
});

/** Serves a zip of `files` from a loopback server of its own; returns its URL. */
async function archivesOf(t: { teardown(fn: () => unknown): void }, dir: string, files: Record<string, string>) {
  const name = `app-${Math.random().toString(36).slice(2)}`;
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  return archives.serve(`${name}.zip`, await pack(writeApp(join(dir, name), files), join(dir, `${name}.zip`), 'zip'));
}

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
