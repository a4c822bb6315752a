// Procs across agent restarts, with the agent as its own OS process started with an empty
// environment: a finished proc keeps its result and output, one that was running when the
// agent was killed is reported with the reason (never silently lost, never run again).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnAgent } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';

const NODE = process.execPath;
const mem = { capture: { mode: 'memory', encoding: 'utf-8', attached: true } };
const tmp = { capture: { mode: 'tempfile', encoding: 'utf-8', attached: true } };

async function api(base: string, method: string, path: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as any };
}

t.test('procs survive agent restarts as far as processes do; the agent starts with an empty environment', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-procs-'));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  let agent = await spawnAgent([], { stateDir, env: {} });
  t.teardown(() => agent.proc.kill('SIGKILL'));
  let base = agent.url.replace(/\/$/, '');
  const result = async (id: string) => (await api(base, 'GET', `/procs/${id}`)).json.data?.procs?.[id];
  const ended = (id: string) => waitFor(async () => ((await result(id))?.state !== 'running' ? result(id) : null), `${id} to end`, 60_000);

  const envScript = 'process.stdout.write(JSON.stringify(process.env))';
  const post = await api(base, 'POST', '/procs', {
    specs: {
      env: { argv: [NODE, '-e', envScript], env: { inherit: ['HOME', 'SHELL', 'USER', 'PATH'], vars: {} }, fds: [['stdout', mem]] },
      done: { argv: [NODE, '-e', 'console.log("kept")'], fds: [['stdout', mem]] },
      file: { argv: [NODE, '-e', 'console.log("on disk")'], fds: [['stdout', tmp]] },
      long: { argv: [NODE, '-e', 'console.log("up"); setInterval(() => {}, 1000)'], fds: [['stdout', mem]] },
    },
  });
  t.equal(post.status, 200);
  const env = await ended('env');
  t.equal(env.state, 'terminated');
  // (tap's process hooks add their own variables to every child in tests; none of these exist.)
  const seen = JSON.parse(env.fds.stdout.text);
  t.same(
    ['HOME', 'SHELL', 'USER', 'PATH'].filter((n) => n in seen),
    [],
    'inherits only what exists: nothing',
  );
  const done = await ended('done');
  t.equal(done.fds.stdout.text, 'kept\n');
  await ended('file');
  await waitFor(async () => (await result('long'))?.fds.stdout.text === 'up\n', 'long to run');

  // A kill -9: the next agent never saw how `long` ended.
  agent.proc.kill('SIGKILL');
  await agent.exit;
  agent = await spawnAgent([], { stateDir, env: {} });
  base = agent.url.replace(/\/$/, '');
  const all = (await api(base, 'GET', '/procs')).json.data.procs;
  t.same(Object.keys(all).sort(), ['done', 'env', 'file', 'long']);
  t.equal(all.done.state, 'terminated');
  t.equal(all.done.fds.stdout.text, 'kept\n', 'memory capture kept');
  t.same(all.done.status, { status: 0, exit_code: 0, signum: null, signal: null, core_dump: false });
  t.equal(all.file.fds.stdout.text, 'on disk\n', 'tempfile capture kept');
  t.equal(all.long.state, 'error');
  t.match(all.long.errors, [/agent restarted while the proc was running/]);
  t.equal((await api(base, 'POST', '/procs/long/signals/15')).status, 400, 'nothing to signal');
  t.equal((await api(base, 'DELETE', '/procs/long')).status, 200);

  // A graceful stop of the agent ends a running proc with SIGTERM, and says so after.
  await api(base, 'POST', '/procs', {
    specs: { again: { argv: [NODE, '-e', 'console.log("up"); setInterval(() => {}, 1000)'], fds: [['stdout', mem]] } },
  });
  await waitFor(async () => (await result('again'))?.fds.stdout.text === 'up\n', 'again to run');
  agent.proc.kill('SIGTERM');
  await agent.exit;
  agent = await spawnAgent([], { stateDir, env: {} });
  base = agent.url.replace(/\/$/, '');
  const again = await result('again');
  t.equal(again.state, 'terminated');
  t.equal(again.status.signal, 'SIGTERM');
  t.equal(again.fds.stdout.text, 'up\n');
  t.equal(await result('long'), undefined, 'a deleted proc stays deleted');
});
