import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, testAgent, waitForState } from '../helpers/agent.js';
import { bin, spawnAgent } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';
import { forwardToStately } from '../../lib/agent/stately.js';

const root = join(import.meta.dirname, '..', '..');

/** A TCP port that accepts and at once drops every connection, counting the attempts. */
async function refusingPort() {
  let attempts = 0;
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    attempts++;
    s.destroy();
  });
  server.on('connection', (s) => sockets.add(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`,
    attempts: () => attempts,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

t.test('raw inspection events reach a Stately-style inspector, without the child environment', async (t) => {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const received: any[] = [];
  wss.on('connection', (ws) => ws.on('message', (m) => received.push(JSON.parse(m.toString()))));
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}`;

  const agent = await testAgent({ inspectUrl: url });
  const archives = await new ArchiveServer().start();
  t.teardown(async () => {
    await agent.close();
    await archives.close();
  });
  const dir = t.testdir();
  const source = archives.serve(
    'a.tgz',
    await pack(
      writeApp(join(dir, 'a'), { Procfile: 'web: sleep 600\n', '.env': 'DOTENV_SECRET=from-dotenv-s3cret\n' }),
      join(dir, 'a.tgz'),
    ),
  );
  const created = await api('POST', `${agent.url}/create-process`, {
    app: 'app',
    node: 'web.0',
    process_type: 'web',
    source_url: source,
    env: { API_KEY: 'hunter2-request-s3cret' },
  });
  t.equal(created.status, 201);
  const running = await waitForState(created.json.status, 'running');
  await waitFor(
    () =>
      received.some((e) => e.type === '@xstate.snapshot' && e.snapshot?.value === 'running' && e.snapshot?.context?.pid === running.pid),
    'the running snapshot with its pid',
  );

  const actor = received.find((e) => e.type === '@xstate.actor' && e.name === 'app.web.0');
  t.ok(actor, 'the process actor is announced under its slug');
  t.match(actor.definition, /"id":"process"/, 'with the machine definition');
  t.ok(
    received.some((e) => e.type === '@xstate.event' && e.event.type === 'START'),
    'events are forwarded',
  );
  t.ok(
    received.every((e) => typeof e._version === 'string' && typeof e.sessionId === 'string'),
    'in the Stately inspector format',
  );
  const text = JSON.stringify(received);
  t.notMatch(text, /hunter2-request-s3cret|from-dotenv-s3cret/, 'no environment value is ever sent');
  t.notMatch(text, /"launch"|"deps"|"archive"/, 'nor the launch, the archive or the code');
  await api('POST', created.json.delete, {});
  await waitFor(() => received.some((e) => e.type === '@xstate.snapshot' && e.snapshot?.value === 'deleted'), 'deleted forwarded');
});

t.test('an unreachable inspector: retried with backoff in the background, stop() leaves nothing behind', async (t) => {
  const port = await refusingPort();
  t.teardown(() => port.close());
  const logs: string[] = [];
  const fwd = await forwardToStately(port.url, { log: (l) => logs.push(l), retryMinMs: 20, retryMaxMs: 40 });
  await waitFor(() => port.attempts() >= 3, 'a few reconnection attempts');
  t.equal(logs.length, 1, 'one warning, not one per attempt');
  t.match(logs[0], /unreachable.*retrying in the background/);
  await waitFor(() => fwd.retrying, 'a retry scheduled');
  fwd.stop();
  t.notOk(fwd.retrying, 'no retry timer left');
  t.notOk(fwd.connected);
});

t.test('an agent with an unreachable --inspect-url exits by itself once closed', async (t) => {
  const port = await refusingPort();
  t.teardown(() => port.close());
  const dir = t.testdir();
  // The compiled agent in a plain Node process that does NOT call process.exit: it can only end
  // when nothing (no timer, no socket) is left holding the event loop.
  const script = `
    import { startAgent } from ${JSON.stringify(join(root, 'dist', 'lib', 'http', 'server.js'))};
    import { defaults } from ${JSON.stringify(join(root, 'dist', 'lib', 'agent', 'config.js'))};
    const agent = await startAgent({ ...defaults, port: 0, stateDir: ${JSON.stringify(dir)}, inspectUrl: ${JSON.stringify(port.url)} }, (l) => console.error(l));
    console.log('started');
    process.stdin.once('data', async () => { await agent.close(); console.log('closed'); });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (err += c));
  let code: number | null | undefined;
  child.on('exit', (c) => (code = c));
  await waitFor(() => out.includes('started'), 'the agent started');
  await waitFor(() => port.attempts() >= 1 && /unreachable/.test(err), 'a failed connection to the inspector');
  child.stdin.write('close\n');
  child.stdin.end();
  await waitFor(() => out.includes('closed'), 'the agent closed');
  await waitFor(() => code !== undefined, 'the process to end on its own, with nothing left holding it');
  t.equal(code, 0);
});

t.test('drover serve --inspect-url: bad URLs refused at start; an unreachable one does not stop SIGTERM', async (t) => {
  const bad = spawnSync(process.execPath, [bin, 'serve', '--inspect-url', 'http://example.com'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /^drover: setting "inspect_url" must be a ws:\/\/ or wss:\/\/ URL/);
  const port = await refusingPort();
  t.teardown(() => port.close());
  const agent = await spawnAgent(['--inspect-url', port.url]);
  t.teardown(() => agent.proc.kill('SIGKILL'));
  t.equal((await api('GET', agent.url)).status, 200, 'the agent serves meanwhile');
  await waitFor(() => port.attempts() >= 1, 'it tried the inspector');
  agent.proc.kill('SIGTERM');
  t.same(await agent.exit, { code: 0, signal: null });
});
