// The Procstar-compatible API (/procs) with real children, asserting the wire format its
// clients depend on: status codes, `Content-Type: application/json` exactly, the envelopes,
// RESULT's keys in order, bytes of captured output, and polling like a scheduler does.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { testAgent } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

const ECHO = existsSync('/usr/bin/echo') ? '/usr/bin/echo' : '/bin/echo';
const NODE = process.execPath;

const RESULT_KEYS = ['state', 'errors', 'pid', 'proc_stat', 'proc_statm', 'cgroup_accounting', 'times', 'status', 'rusage', 'fds'];

const captured = (encoding: 'utf-8' | null = 'utf-8', mode = 'memory', attached = true) => ({ capture: { mode, encoding, attached } });
const clientFds = [
  ['stdin', { null: { flags: 'Default' } }],
  ['stdout', captured()],
  ['stderr', captured()],
];

async function call(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: any;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: res.status, type: res.headers.get('content-type'), headers: res.headers, json, bytes };
}

async function start(t: { teardown(fn: () => unknown): void }, overrides = {}) {
  const agent = await testAgent(overrides);
  t.teardown(() => agent.close());
  const base = agent.url.replace(/\/$/, '');
  const api = (method: string, path: string, body?: unknown, headers?: Record<string, string>) => call(base, method, path, body, headers);
  const result = async (id: string) => {
    const r = await api('GET', `/procs/${encodeURIComponent(id)}`);
    return r.json?.data?.procs?.[id];
  };
  const until = (id: string, state = 'terminated') =>
    waitFor(
      async () => {
        const r = await result(id);
        return r && r.state !== 'running' ? r : null;
      },
      `${id} to end (${state})`,
      60_000,
    );
  return { agent, base, api, result, until };
}

t.test('echo: POST, GET, RESULT in order, output bytes, DELETE; exact headers and envelopes', async (t) => {
  const { api, until, base } = await start(t);
  const empty = await api('GET', '/procs');
  t.equal(empty.status, 200);
  t.equal(empty.type, 'application/json', 'exactly application/json, no charset');
  t.equal(empty.bytes.toString(), '{"data":{"procs":{}}}');

  const post = await api('POST', '/procs', {
    specs: { proc1: { argv: [ECHO, 'Hello, world!'], env: { inherit: ['HOME', 'SHELL', 'USER'], vars: {} }, fds: clientFds } },
  });
  t.equal(post.status, 200);
  t.equal(post.type, 'application/json');
  t.equal(post.bytes.toString(), '{"data":{}}');
  t.equal(post.headers.get('location'), null, 'no Location');

  const res = await until('proc1');
  t.same(Object.keys(res), RESULT_KEYS, 'RESULT keys in Procstar order');
  t.equal(res.state, 'terminated');
  t.same(res.errors, []);
  t.type(res.pid, 'number');
  t.same(res.status, { status: 0, exit_code: 0, signum: null, signal: null, core_dump: false });
  t.same(res.fds, {
    stdin: null,
    stdout: { type: 'text', text: 'Hello, world!\n', encoding: 'utf-8' },
    stderr: { type: 'text', text: '', encoding: 'utf-8' },
  });
  t.equal(res.proc_stat, null, 'no /proc figures once it ended');
  t.same(Object.keys(res.times), ['start', 'now', 'stop', 'elapsed']);
  t.match(res.times.start, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  t.type(res.times.elapsed, 'number');
  t.same(Object.keys(res.rusage), ['utime', 'stime', 'maxrss', 'minflt', 'majflt', 'nswap', 'inblock', 'oublock', 'nvcsw', 'nivcsw']);

  const one = await api('GET', '/procs/proc1');
  t.same(Object.keys(one.json.data), ['procs'], 'keyed under procs, not proc');
  t.same(Object.keys(one.json.data.procs), ['proc1']);

  const out = await api('GET', '/procs/proc1/output/stdout/data');
  t.equal(out.status, 200);
  t.equal(out.type, 'text/plain; charset=utf-8');
  t.equal(out.bytes.toString(), 'Hello, world!\n');
  t.equal((await api('GET', '/procs/proc1/output/1/data')).bytes.toString(), 'Hello, world!\n', 'fd by number');
  const stdin = await api('GET', '/procs/proc1/output/stdin/data');
  t.equal(stdin.status, 200, 'an fd that is not captured: empty 200');
  t.equal(stdin.bytes.length, 0);
  const noFd = await api('GET', '/procs/proc1/output/7/data');
  t.equal(noFd.status, 400);
  t.same(noFd.json, { errors: { status: '400 Bad Request', detail: 'no fd: 7' } });
  const badFd = await api('GET', '/procs/proc1/output/x/data');
  t.same(badFd.json, { errors: { status: '400 Bad Request', detail: 'bad fd: x' } });

  const list = await api('GET', '/procs');
  t.same(Object.keys(list.json.data.procs), ['proc1']);

  // drover's own listing shows it, marked as a proc.
  const dl = await call(base, 'GET', '/list-processes');
  const doc = dl.json.processes.find((p: any) => p.proc_id === 'proc1');
  t.ok(doc, 'in /list-processes with proc_id');
  t.equal(doc.slug, 'proc:proc1');

  const del = await api('DELETE', '/procs/proc1');
  t.equal(del.status, 200);
  t.equal(del.bytes.toString(), '{"data":{}}');
  const gone = await api('GET', '/procs/proc1');
  t.equal(gone.status, 404);
  t.equal(gone.type, 'application/json');
  t.same(gone.json, { errors: { status: '404 Not Found', detail: null } });
});

t.test('request errors: 400s, 404, 405, duplicate ids, unknown fields', async (t) => {
  const { api } = await start(t);
  const spec = { argv: [ECHO, 'x'] };
  const noType = await api('POST', '/procs', JSON.stringify({ specs: { a: spec } }), { 'content-type': 'text/plain' });
  t.equal(noType.status, 400);
  t.same(noType.json, { errors: { status: '400 Bad Request', detail: 'body not JSON' } });
  t.equal(noType.type, 'application/json');
  t.equal((await api('POST', '/procs', '', { 'content-type': 'application/json' })).status, 400, 'empty body');
  const badJson = await api('POST', '/procs', '{"specs":', { 'content-type': 'application/json' });
  t.equal(badJson.status, 400);
  t.match(badJson.json.errors.detail, /^parsing body: /);
  const unknown = await api('POST', '/procs', { specs: { a: { ...spec, shell: true } } });
  t.equal(unknown.status, 400);
  t.match(unknown.json.errors.detail, /specs\.a: unknown field "shell"/);
  const unknownFd = await api('POST', '/procs', {
    specs: { a: { ...spec, fds: [['stdout', { capture: { mode: 'memory', colour: 1 } }]] } },
  });
  t.match(unknownFd.json.errors.detail, /specs\.a\.fds\[0\]\[1\]\.capture: unknown field "colour"/);
  const pipe = await api('POST', '/procs', { specs: { a: { ...spec, fds: [['stdout', 'pipe-write']] } } });
  t.equal(pipe.status, 400);
  t.match(pipe.json.errors.detail, /pipes between procs/);
  t.equal((await api('POST', '/procs', { specs: { a: {} } })).status, 400, 'argv is required');
  t.equal((await api('POST', '/procs', { other: {} })).status, 400);

  t.equal((await api('POST', '/procs', { specs: { a: spec } })).status, 200);
  const dup = await api('POST', '/procs', { specs: { b: spec, a: spec } });
  t.equal(dup.status, 400);
  t.same(dup.json, { errors: { status: '400 Bad Request', detail: 'duplicate proc id: a' } });
  t.equal((await api('GET', '/procs/b')).status, 404, 'all or nothing: b was not created');

  for (const [method, path] of [
    ['GET', '/procs/nope'],
    ['DELETE', '/procs/nope'],
    ['POST', '/procs/nope/signals/15'],
    ['GET', '/procs/nope/output/stdout/data'],
    ['GET', '/procs/a/nothing'],
  ]) {
    const r = await api(method, path);
    t.equal(r.status, 404, `${method} ${path}`);
    t.same(r.json, { errors: { status: '404 Not Found', detail: null } });
  }
  for (const [method, path] of [
    ['PUT', '/procs'],
    ['POST', '/procs/a'],
    ['GET', '/procs/a/signals/15'],
    ['DELETE', '/procs/a/output/stdout/data'],
  ]) {
    const r = await api(method, path);
    t.equal(r.status, 405, `${method} ${path}`);
    t.equal(r.type, 'application/json');
    t.same(r.json, { errors: { status: '405 Method Not Allowed', detail: null } });
  }
});

t.test('a missing executable is state error; no PATH search; exe overrides argv[0]', async (t) => {
  const { api, until } = await start(t);
  await api('POST', '/procs', {
    specs: {
      missing: { argv: ['/nonexistent/prog', 'x'], fds: clientFds },
      bare: { argv: ['echo', 'hi'], fds: clientFds },
      exe: { exe: ECHO, argv: ['my-name', 'via', 'exe'], fds: clientFds },
    },
  });
  const missing = await until('missing');
  t.equal(missing.state, 'error');
  t.match(missing.errors[0], /^execve failed: \/nonexistent\/prog: ENOENT/);
  t.equal(missing.status, null);
  const bare = await until('bare');
  t.equal(bare.state, 'error', 'argv[0] without a slash is not looked up in PATH');
  t.match(bare.errors[0], /^execve failed: echo: ENOENT/);
  const exe = await until('exe');
  t.equal(exe.state, 'terminated');
  t.equal(exe.fds.stdout.text, 'via exe\n');
  t.equal((await api('DELETE', '/procs/missing')).status, 200, 'a proc in state error can be deleted');
});

t.test('a 1 MiB single line comes back whole; stdout and stderr never mixed; base64 and detached', async (t) => {
  const { api, until } = await start(t);
  const script = 'process.stdout.write("x".repeat(1 << 20)); process.stderr.write("err\\n"); process.stdout.write("\\n")';
  await api('POST', '/procs', {
    specs: {
      big: {
        argv: [NODE, '-e', script],
        fds: [
          ['stdout', captured('utf-8')],
          ['stderr', captured(null)],
        ],
      },
      detached: { argv: [ECHO, 'abc'], fds: [['stdout', captured('utf-8', 'memory', false)]] },
    },
  });
  const big = await until('big');
  t.equal(big.state, 'terminated');
  t.equal(big.fds.stdout.text.length, (1 << 20) + 1);
  t.equal(big.fds.stdout.text, 'x'.repeat(1 << 20) + '\n', 'one line, trailing newline kept');
  t.same(big.fds.stderr, { type: 'data', data: Buffer.from('err\n').toString('base64'), encoding: 'base64' });
  const raw = await api('GET', '/procs/big/output/stderr/data');
  t.equal(raw.type, 'application/octet-stream');
  t.equal(raw.bytes.toString(), 'err\n');
  const whole = await api('GET', '/procs/big/output/stdout/data');
  t.equal(whole.bytes.length, (1 << 20) + 1);
  const detached = await until('detached');
  t.same(detached.fds.stdout, { type: 'detached', length: 4, encoding: 'utf-8' });
  t.equal((await api('GET', '/procs/detached/output/stdout/data')).bytes.toString(), 'abc\n', 'detached output is still served');
});

t.test('the memory cap: kept up to it, the rest dropped and named in errors', async (t) => {
  const { api, until } = await start(t, { procCaptureMaxBytes: 1000 });
  await api('POST', '/procs', { specs: { capped: { argv: [NODE, '-e', 'process.stdout.write("y".repeat(5000))'], fds: clientFds } } });
  const r = await until('capped');
  t.equal(r.state, 'error');
  t.equal(r.fds.stdout.text, 'y'.repeat(1000));
  t.match(r.errors[0], /capture of fd 1 exceeded 1000 bytes .*4000 bytes were dropped/);
  t.same(r.status.exit_code, 0);
});

t.test('signals by number and name; a proc ignoring SIGTERM; DELETE while running is 400', async (t) => {
  const { api, until, result } = await start(t);
  const script = 'process.on("SIGTERM", () => console.log("ignored TERM")); console.log("ready"); setInterval(() => {}, 1000)';
  await api('POST', '/procs', { specs: { stubborn: { argv: [NODE, '-e', script], fds: clientFds } } });
  await waitFor(async () => (await result('stubborn'))?.fds.stdout.text.includes('ready'), 'ready');
  const running = await result('stubborn');
  t.equal(running.state, 'running');
  t.equal(running.status, null);
  t.equal(running.rusage, null);
  t.equal(running.times.stop, null);
  t.match(running.proc_stat, { pid: running.pid, state: /^[RSD]$/ }, 'proc_stat from /proc while running');
  t.type(running.proc_statm.resident, 'number');

  const del = await api('DELETE', '/procs/stubborn');
  t.equal(del.status, 400);
  t.same(del.json, { errors: { status: '400 Bad Request', detail: 'process running: stubborn' } });

  const term = await api('POST', '/procs/stubborn/signals/15');
  t.equal(term.status, 200);
  t.equal(term.bytes.toString(), '{"data":{}}');
  await waitFor(async () => (await result('stubborn'))?.fds.stdout.text.includes('ignored TERM'), 'SIGTERM handled');
  t.equal((await result('stubborn')).state, 'running', 'SIGTERM ignored');
  t.equal((await api('POST', '/procs/stubborn/signals/SIGBOGUS')).status, 400, 'unknown signal');
  t.equal((await api('POST', '/procs/stubborn/signals/SIGKILL')).status, 200, 'by name');
  const r = await until('stubborn');
  t.equal(r.state, 'terminated');
  t.same(r.status, { status: 9, exit_code: null, signum: 9, signal: 'SIGKILL', core_dump: false });
  const late = await api('POST', '/procs/stubborn/signals/15');
  t.equal(late.status, 400);
  t.same(late.json, { errors: { status: '400 Bad Request', detail: 'no process' } });
  t.equal((await api('DELETE', '/procs/stubborn')).status, 200);
});

t.test('file, dup, null, close fds and tempfile capture; env inherit/vars/unset', async (t) => {
  const { api, until, agent } = await start(t);
  const dir = t.testdir({ 'in.txt': 'from a file\n' });
  const out = join(dir, 'out.txt');
  const script = [
    'const fs = require("fs");',
    'const input = fs.readFileSync(0, "utf8");',
    'process.stdout.write("stdin=" + input);',
    'process.stderr.write("to stderr, dup of stdout\\n");',
    'fs.writeSync(4, "fd four\\n");',
    'console.log(JSON.stringify({ A: process.env.A, GONE: process.env.GONE ?? null, PATH: process.env.PATH ?? null }));',
  ].join('\n');
  await api('POST', '/procs', {
    specs: {
      files: {
        argv: [NODE, '-e', script],
        env: { inherit: false, vars: { A: 'a value', GONE: null } },
        fds: [
          ['stdin', { file: { path: join(dir, 'in.txt'), flags: 'Read' } }],
          ['stdout', { file: { path: out, flags: 'Write', mode: 0o600 } }],
          ['stderr', { dup: { fd: 1 } }],
          [4, { capture: { mode: 'tempfile', encoding: 'utf-8', attached: true } }],
          ['5', 'close'],
        ],
      },
      closed: {
        argv: ['/bin/sh', '-c', 'if { true 5<&0; } 2>/dev/null; then echo open; else echo closed; fi'],
        fds: [
          ['stdin', 'close'],
          ['stdout', captured()],
        ],
      },
      badfile: { argv: [ECHO], fds: [['stdin', { file: { path: join(dir, 'absent') } }]] },
    },
  });
  const r = await until('files');
  t.equal(r.state, 'terminated', JSON.stringify(r.errors));
  t.same(r.fds, { stdin: null, stdout: null, stderr: null, '4': { type: 'text', text: 'fd four\n', encoding: 'utf-8' }, '5': null });
  const text = readFileSync(out, 'utf8').split('\n');
  t.equal(text[0], 'stdin=from a file');
  t.equal(text[1], 'to stderr, dup of stdout');
  t.same(JSON.parse(text[2]), { A: 'a value', GONE: null, PATH: null }, 'exactly the env asked for');
  t.equal((await until('closed')).fds.stdout.text, 'closed\n', 'a closed stdin is closed, not /dev/null');
  const procsDir = join(agent.stateDir, 'procs', 'files');
  t.ok(readdirSync(procsDir).includes('fd-4'), 'the tempfile capture is under the state dir');
  const bad = await until('badfile');
  t.equal(bad.state, 'error');
  t.match(bad.errors[0], /failed to open .*absent.* ENOENT/);
  await api('DELETE', '/procs/files');
  t.notOk(existsSync(procsDir), 'delete removes its files');
});

t.test('polling in a tight loop on one keep-alive connection sees running, then one final state', async (t) => {
  const { base, api } = await start(t);
  const agentUrl = new URL(base);
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => keepAlive.destroy());
  const sockets = new Set<unknown>();
  const get = (path: string) =>
    new Promise<{ status: number; type: string | undefined; body: string }>((resolve, reject) => {
      const req = http.get({ host: agentUrl.hostname, port: agentUrl.port, path, agent: keepAlive }, (res) => {
        sockets.add(res.socket);
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
    });
  await api('POST', '/procs', { specs: { job: { argv: [NODE, '-e', 'setTimeout(() => console.log("done"), 300)'], fds: clientFds } } });
  const seen: string[] = [];
  let final: any;
  for (let i = 0; i < 100_000; i++) {
    const r = await get('/procs/job');
    t.equal(r.type, 'application/json');
    const res = JSON.parse(r.body).data.procs.job;
    if (seen.at(-1) !== res.state) seen.push(res.state);
    if (res.state !== 'running') {
      final = res;
      break;
    }
  }
  t.same(seen, ['running', 'terminated'], 'running, then the final state, nothing in between');
  t.equal(final.fds.stdout.text, 'done\n', 'complete output the moment it says terminated');
  t.equal(sockets.size, 1, 'one connection throughout');
  for (let i = 0; i < 20; i++) t.equal(JSON.parse((await get('/procs/job')).body).data.procs.job.state, 'terminated', 'stays final');
});

t.test('percent-encoded ids, used verbatim', async (t) => {
  const { api, until } = await start(t);
  const id = 'a/b c?d';
  await api('POST', '/procs', { specs: { [id]: { argv: [ECHO, 'odd id'], fds: clientFds } } });
  const r = await until(id);
  t.equal(r.fds.stdout.text, 'odd id\n');
  t.same(Object.keys((await api('GET', '/procs')).json.data.procs), [id]);
  t.equal((await api('DELETE', `/procs/${encodeURIComponent(id)}`)).status, 200);
});

t.test('with a token, /procs needs it like every route', async (t) => {
  const token = 'procs-test-token-0123456789';
  const { api } = await start(t, { token });
  t.equal((await api('GET', '/procs')).status, 401);
  const ok = await api('GET', '/procs', undefined, { authorization: `Bearer ${token}` });
  t.equal(ok.status, 200);
});
