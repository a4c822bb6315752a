import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { agentWithArchives, api, attach, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

/** A WebSocket client that completes the handshake and then never reads another byte. */
async function rawNeverReadingClient(url: string): Promise<Socket> {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  socket.write(
    `GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await new Promise<void>((resolve) => {
    let head = '';
    const onData = (c: Buffer) => {
      head += c.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        socket.off('data', onData);
        socket.pause();
        resolve();
      }
    };
    socket.on('data', onData);
  });
  return socket;
}

async function setup(t: any, procfile: string, overrides = {}) {
  const { agent, dir, serveApp } = await agentWithArchives(t, overrides);
  const url = await serveApp('app', procfile);
  const r = await api('POST', `${agent.url}/create-process`, { app: 'out', node: 'web.0', process_type: 'web', source_url: url });
  t.equal(r.status, 201);
  return { agent, proc: r.json, dir };
}

t.test('every line in order, stderr included, final partial line included', async (t) => {
  const gate = join(t.testdir(), 'go');
  const then = join(t.testdir(), 'then');
  // The run ends after a last line without "\n": it must arrive when the output stream ends.
  // stdout and stderr reach the agent over two connections, so a line written to stderr just
  // after 20000 to stdout may be read first; the child writes it once the stdout lines are in.
  const { proc } = await setup(
    t,
    `web: while [ ! -e ${gate} ]; do sleep 0.02; done; seq 1 20000; while [ ! -e ${then} ]; do sleep 0.02; done; echo to-stderr >&2; printf 'no newline at end'\n`,
  );
  const client = await attach(proc.attach);
  writeFileSync(gate, '');
  await waitFor(() => client.lines.includes('20000'), 'the stdout lines');
  writeFileSync(then, '');
  await waitFor(() => client.lines.includes('no newline at end'), 'the final partial line');
  const firstRun = client.lines.slice(0, client.lines.indexOf('no newline at end'));
  const numbers = firstRun.filter((l) => /^\d+$/.test(l)).map(Number);
  t.equal(numbers.length, 20000, 'no line lost');
  t.ok(
    numbers.every((n, i) => n === i + 1),
    'in order',
  );
  t.ok(firstRun.includes('to-stderr'));
  t.ok(firstRun.indexOf('to-stderr') > firstRun.indexOf('20000'), 'stderr after the stdout it followed');
});

t.test('several clients each get every line', async (t) => {
  const gate = join(t.testdir(), 'go');
  const { proc } = await setup(t, `web: while [ ! -e ${gate} ]; do sleep 0.02; done; seq 1 3000; exec sleep 600\n`);
  const clients = await Promise.all([attach(proc.attach), attach(proc.attach), attach(proc.attach)]);
  writeFileSync(gate, '');
  for (const c of clients) await waitFor(() => c.lines.includes('3000'), 'all lines');
  for (const c of clients) t.equal(c.lines.length, 3000);
});

t.test('a client that stops reading is dropped; the child and the other clients go on', async (t) => {
  const { agent, proc } = await setup(
    t,
    // ~100-byte lines as fast as the shell can print them.
    `web: exec yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n`,
    { clientMaxBufferedBytes: 256 * 1024 },
  );
  await waitForState(proc.status, 'running');
  const hub = agent.supervisor.get('out.web.0')!.output;
  const slow = await rawNeverReadingClient(proc.attach);
  t.teardown(() => slow.destroy());
  const fast = await attach(proc.attach);
  await waitFor(() => hub.size === 2, 'both attached');
  await waitFor(() => hub.size === 1, 'the slow client to be dropped', 60_000);
  const before = fast.lines.length;
  await waitFor(() => fast.lines.length > before + 1000, 'the fast client to keep receiving');
  // Read what was queued: the connection then ends, as the agent closed or cut it.
  const ended = new Promise((r) => slow.once('close', r));
  slow.on('data', () => {});
  slow.resume();
  await ended;
  t.pass('the agent closed the slow client');
  const doc = (await api('GET', proc.status)).json;
  t.equal(doc.state, 'running');
  t.equal(doc.restarts, 0, 'the child was never stalled or restarted');
  fast.ws.close();
});
