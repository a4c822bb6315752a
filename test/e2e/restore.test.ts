import t from 'tap';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaults, type Config } from '../../lib/agent/config.js';
import { startAgent, StartError, type Agent } from '../../lib/http/server.js';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, waitForState } from '../helpers/agent.js';
import { consecutive, readEvents } from '../helpers/events.js';
import { waitFor } from '../helpers/wait.js';

/** Agents started one after another on one state directory, as after restarts. */
function agents(t: { teardown(fn: () => unknown): void }, overrides: Partial<Config> = {}) {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-restore-'));
  const logs: string[] = [];
  let current: Agent | null = null;
  t.teardown(async () => {
    await current?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });
  return {
    stateDir,
    logs,
    async start(): Promise<Agent> {
      current = await startAgent(
        { ...defaults, host: '127.0.0.1', port: 0, stateDir, stopGraceMs: 3000, backoffInitialMs: 100, backoffMaxMs: 500, ...overrides },
        (l) => logs.push(l),
      );
      return current;
    },
    async stop(): Promise<void> {
      await current?.close();
      current = null;
    },
  };
}

t.test('a restarted agent restores its processes: same port, cached release, event ids continuing', async (t) => {
  const archives = await new ArchiveServer().start();
  let archivesUp = true;
  t.teardown(() => archivesUp && archives.close());
  const dir = t.testdir();
  const url = archives.serve(
    'web.tgz',
    await pack(
      writeApp(join(dir, 'web'), {
        Procfile: 'web: echo "up on $PORT with $GREETING"; exec sleep 600\nworker: echo working; exec sleep 600\n',
      }),
      join(dir, 'web.tgz'),
    ),
  );
  const a = agents(t);
  const first = await a.start();
  const created = [];
  for (const [node, type] of [
    ['web.0', 'web'],
    ['worker.0', 'worker'],
    ['web.1', 'web'],
  ]) {
    const r = await api('POST', `${first.url}/create-process`, {
      app: 'r',
      node,
      process_type: type,
      source_url: url,
      env: { GREETING: `hi ${node}` },
    });
    t.equal(r.status, 201);
    created.push(r.json);
  }
  const before = new Map<string, any>();
  for (const p of created) before.set(p.slug, await waitForState(p.status, 'running'));
  t.equal((await api('POST', created[2].delete, {})).status, 200, 'one is deleted before the restart');
  const lastIds = new Map<string, number>();
  for (const p of created.slice(0, 2)) lastIds.set(p.slug, (await readEvents(`${p.events}?follow=false`)).events.at(-1).id);
  await a.stop();

  // The source is gone by the time the agent comes back: the cached release is what runs.
  await archives.close();
  archivesUp = false;
  const second = await a.start();
  t.ok(
    a.logs.some((l) => /^drover: restored 2 process\(es\) from /.test(l)),
    'says so on stderr',
  );
  const list = (await api('GET', `${second.url}/list-processes`)).json.processes;
  t.same(list.map((p: any) => p.slug).sort(), ['r.web.0', 'r.worker.0'], 'every created process is back, the deleted one is not');
  for (const p of created.slice(0, 2)) {
    const status = p.status.replace(first.url, second.url);
    const doc = await waitForState(status, 'running');
    t.equal(doc.port, before.get(p.slug).port, `${p.slug} keeps its $PORT`);
    t.equal(doc.created_at, before.get(p.slug).created_at);
    t.same(doc.env_names, ['GREETING']);
    const greeting = p.slug === 'r.web.0' ? `up on ${doc.port} with hi web.0` : 'working';
    const events = await waitFor(async () => {
      const ev = (await readEvents(`${doc.events}?follow=false`)).events;
      return ev.filter((e) => e.text === greeting).length === 2 ? ev : null;
    }, `${p.slug} to print again`);
    t.ok(consecutive(events.map((e) => e.id)) && events[0].id === 1, `${p.slug}: one log, ids continuing across the restart`);
    const restartAt = events.findIndex((e) => e.type === 'agent_restarted');
    t.ok(events[restartAt].id > lastIds.get(p.slug)!, 'the agent_restarted event comes after everything the old agent logged');
    t.match(
      events.slice(restartAt - 2, restartAt),
      [
        { type: 'child_exited', signal: 'SIGTERM' },
        { type: 'state', from: 'running', to: 'deleted', why: 'agent shutting down; the child was killed by SIGTERM' },
      ],
      'the old agent logged how it stopped the process',
    );
    t.match(events.slice(restartAt + 1), [
      { type: 'state', from: null, to: 'pending', why: 'restored after an agent restart' },
      { type: 'state', from: 'pending', to: 'downloading' },
      { type: 'state', from: 'downloading', to: 'building', why: /^reused the archive from the cache/ },
    ]);
    t.pass(`${p.slug} ran before and after the restart, with its env`);
  }
  // The deleted process's log is still readable from the new agent (within retention).
  const gone = await readEvents(`${second.url}/process-events/r.web.1?follow=false`);
  t.equal(gone.status, 200);
  t.equal(gone.events.at(-1).to, 'deleted');
  await a.stop();
});

t.test('a second agent on the same state directory is refused', async (t) => {
  const a = agents(t);
  await a.start();
  const err = await startAgent({ ...defaults, host: '127.0.0.1', port: 0, stateDir: a.stateDir }, () => {}).then(
    () => null,
    (e: Error) => e,
  );
  t.type(err, StartError);
  t.match(err?.message, /is in use by another drover agent \(pid \d+\)/);
});

t.test('disk trouble while running: the agent keeps supervising and says so, once', async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const url = archives.serve(
    't.tgz',
    await pack(
      writeApp(join(dir, 'ticker'), {
        Procfile: 'web: node ticker.js\n',
        // ~256-character lines at ~50 KB/s: a 128 KiB segment fills (and the next one fails) within
        // seconds, and the in-memory window (1024 events, 256 KiB) keeps the error event for ~5 s.
        'ticker.js': `let i = 0; setInterval(() => { for (let k = 0; k < 4; k++) console.log('line ' + i++ + ' ' + 'x'.repeat(250)); }, 20);\n`,
      }),
      join(dir, 't.tgz'),
    ),
  );
  const a = agents(t, { eventsMaxBytes: 1024 * 1024 });
  const agent = await a.start();

  // The desired state cannot be written (disk full): a create is refused, and nothing is created.
  symlinkSync('/dev/full', join(a.stateDir, 'desired.journal'));
  const body = { app: 'd', node: 'web.0', process_type: 'web', source_url: url };
  const refused = await api('POST', `${agent.url}/create-process`, body);
  t.equal(refused.status, 507);
  t.match(refused.json.errors[0].detail, /cannot save the desired state: ENOSPC/);
  t.same((await api('GET', `${agent.url}/list-processes`)).json.processes, []);
  rmSync(join(a.stateDir, 'desired.journal'));
  const created = await api('POST', `${agent.url}/create-process`, body);
  t.equal(created.status, 201, 'accepted again once the disk is back');
  await waitForState(created.json.status, 'running');

  // The event log's directory is replaced by a file: every new segment fails.
  const logDir = join(a.stateDir, 'events', 'd.web.0');
  rmSync(logDir, { recursive: true });
  writeFileSync(logDir, 'not a directory');
  await waitFor(() => a.logs.some((l) => /cannot write the event log/.test(l)), 'the failure on stderr', 30_000);
  // The error event is in the log as soon as the warning is out, but only the in-memory window
  // holds it, and output pushes it out: read it at once, before waiting for anything else.
  const doc = await waitForState(created.json.status, 'running');
  const recent = (await readEvents(`${doc.events}?follow=false`)).events;
  t.ok(
    recent.some((e) => e.type === 'error' && /ENOTDIR/.test(e.message)),
    'an error event, readable from memory',
  );
  const mark = recent.at(-1)?.id ?? 0;
  await waitFor(
    async () => (await readEvents(`${doc.events}?follow=false&since=${mark}`)).events.length > 100,
    'still supervised and streaming',
  );
  t.equal(a.logs.filter((l) => /cannot write the event log/.test(l)).length, 1, 'one warning for the whole run of failures');
  t.match(
    a.logs.find((l) => /cannot write the event log/.test(l)),
    /d\.web\.0: cannot write the event log \(ENOTDIR\)/,
  );

  // The disk is back: writes resume, and that is said too.
  rmSync(logDir);
  mkdirSync(logDir);
  await waitFor(() => a.logs.some((l) => /writes work again; \d+ events could not be saved/.test(l)), 'recovery reported', 30_000);
  await waitFor(() => readdirSync(logDir).some((f) => f.endsWith('.ndjson')), 'a new segment on disk');
  t.equal((await api('POST', created.json.delete, {})).status, 200);
});

t.test('stopped processes, and ones finished under their restart policy, come back down; policies are kept', async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const url = archives.serve(
    's.tgz',
    await pack(writeApp(join(dir, 's'), { Procfile: 'web: exec sleep 600\njob: echo done\n' }), join(dir, 's.tgz')),
  );
  const a = agents(t);
  let agent = await a.start();
  const create = async (node: string, extra = {}) => {
    const r = await api('POST', `${agent.url}/create-process`, {
      app: 's',
      node,
      process_type: node.split('.')[0],
      source_url: url,
      ...extra,
    });
    t.equal(r.status, 201);
    return r.json;
  };
  const stopped = await create('web.0');
  const job = await create('job.0', { restart: { policy: 'never' } });
  const running = await create('web.1', { restart: { policy: 'on-failure', delay_ms: 50 } });
  await waitForState(stopped.status, 'running');
  const stop = await api('POST', stopped.stop, {});
  t.equal(stop.status, 200);
  t.equal(stop.json.stopped, true);
  await waitForState(job.status, (d) => d.state === 'exited' && d.last_exit?.exit_code === 0);
  await waitForState(running.status, 'running');
  await a.stop();

  agent = await a.start();
  const at = (p: any) => p.status.replace(/^http:\/\/[^/]+/, agent.url);
  const s = await waitForState(at(stopped), (d) => d.state === 'exited');
  t.equal(s.stopped, true, 'the stopped process is still stopped');
  const events = (await readEvents(`${at(stopped).replace('/process-status/', '/process-events/')}?follow=false`)).events;
  const after = events.slice(events.findIndex((e) => e.type === 'agent_restarted'));
  t.match(
    after.filter((e) => e.type === 'state'),
    [
      { from: null, to: 'pending', why: 'restored after an agent restart' },
      { from: 'pending', to: 'exited', why: 'kept down across the agent restart' },
    ],
  );
  t.notOk(
    after.some((e) => e.type === 'child_started'),
    'it did not run',
  );
  const j = await waitForState(at(job), (d) => d.state === 'exited');
  t.equal(j.restart_policy.policy, 'never');
  t.equal(j.stopped, true, 'the finished job did not run again');
  const r = await waitForState(at(running), 'running');
  t.match(r.restart_policy, { policy: 'on-failure', delay_ms: 50 });

  // Started again, it stays started across the next restart.
  t.equal((await api('POST', s.start, {})).status, 200);
  await a.stop();
  agent = await a.start();
  const again = await waitForState(at(stopped), 'running');
  t.equal(again.stopped, false);
});

t.test('restarts are counted across agent restarts, and the release is the one it ran', async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const url = archives.serve(
    'flaky.tgz',
    await pack(writeApp(join(dir, 'flaky'), { Procfile: 'worker: echo trying; sleep 0.2; exit 1\n' }), join(dir, 'flaky.tgz')),
  );
  const a = agents(t);
  const first = await a.start();
  const created = (
    await api('POST', `${first.url}/create-process`, { app: 'f', node: 'worker.0', process_type: 'worker', source_url: url })
  ).json;
  const before = await waitFor(async () => {
    const doc = (await api('GET', created.status)).json;
    return doc.restarts >= 3 && doc.release.id ? doc : null;
  }, 'three restarts');
  t.match(before.release, { id: /^[0-9a-f]{12}$/, source: url });
  await a.stop();
  const second = await a.start();
  const after = (await api('GET', `${second.url}/process-status/f.worker.0`)).json;
  t.ok(after.restarts >= before.restarts, `restarts go on from ${before.restarts} (now ${after.restarts}), not from 0`);
  t.same(after.release, before.release, 'the same release');
  await waitFor(async () => (await api('GET', `${second.url}/process-status/f.worker.0`)).json.restarts > before.restarts, 'counting on');
});
