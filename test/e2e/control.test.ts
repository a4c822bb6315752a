import t from 'tap';
import type { Test as TestBase } from 'tap';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, attach, testAgent, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';
import { liveGroupMembers } from '../../lib/os/proc.js';

// One app, one process type per behaviour. CommonJS: the release dir has no package.json.
const APP_JS = `
const { spawn } = require('node:child_process');
const [role, arg] = process.argv.slice(2);
const log = (m) => console.log(m);
const stay = () => setInterval(() => {}, 1000);
if (role === 'tree') {
  const kid = spawn(process.execPath, [__filename, 'grandchild'], { stdio: 'inherit' });
  process.on('SIGHUP', () => log('leader got SIGHUP'));
  log('leader ready ' + kid.pid);
  stay();
} else if (role === 'grandchild') {
  process.on('SIGHUP', () => log('grandchild ' + process.pid + ' got SIGHUP'));
  log('grandchild ready ' + process.pid);
  stay();
} else if (role === 'stubborn') {
  for (const s of ['SIGUSR1', 'SIGTERM']) process.on(s, () => log('stubborn got ' + s));
  log('stubborn ready');
  stay();
} else if (role === 'exit') {
  process.exit(Number(arg));
} else if (role === 'burn') {
  const start = process.cpuUsage();
  let x = 0;
  while (process.cpuUsage(start).user < Number(arg) * 1000) for (let i = 0; i < 1e5; i++) x += i % 7;
  log('burnt ' + (x > 0));
} else {
  log('holding');
  stay();
}
`;

const PROCFILE = [
  'tree: node app.js tree',
  'stubborn: node app.js stubborn',
  'ok: node app.js exit 0',
  'fail: node app.js exit 1',
  'segv: ulimit -c 0; kill -SEGV $$',
  'burn: node app.js burn 300',
  'hold: node app.js hold',
].join('\n');

async function setup(t: TestBase, files: Record<string, string> = {}) {
  const agent = await testAgent({ usageSampleMs: 100 });
  const archives = await new ArchiveServer().start();
  t.teardown(async () => {
    await agent.close();
    await archives.close();
  });
  const dir = t.testdir();
  const url = archives.serve(
    'app.tgz',
    await pack(writeApp(join(dir, 'app'), { Procfile: PROCFILE, 'app.js': APP_JS, ...files }), join(dir, 'app.tgz')),
  );
  const create = async (node: string, extra: Record<string, unknown> = {}) => {
    const r = await api('POST', `${agent.url}/create-process`, {
      app: 'ctl',
      node,
      process_type: node.split('.')[0],
      source_url: url,
      ...extra,
    });
    if (r.status !== 201) throw new Error(`create failed: ${r.status} ${r.text}`);
    return r.json;
  };
  const exact = agent.supervisor.cgroups !== null || agent.supervisor.waitHelper !== null;
  return { agent, create, exact };
}

t.test('the status document links every control and the metrics', async (t) => {
  const { agent, create } = await setup(t);
  const doc = await create('hold.0');
  const base = agent.url;
  t.match(doc, {
    signal: `${base}/signal-process/ctl.hold.0`,
    stop: `${base}/stop-process/ctl.hold.0`,
    start: `${base}/start-process/ctl.hold.0`,
    restart: `${base}/restart-process/ctl.hold.0`,
    metrics: `${base}/process-metrics/ctl.hold.0`,
    stopped: false,
    last_exit: null,
    restart_policy: { policy: 'always', delay_ms: 200, max_delay_ms: 1000, reset_after_ms: 60_000 },
  });
  const running = await waitForState(doc.status, (d) => d.state === 'running' && d.usage !== null);
  t.match(running.usage, { method: 'proc', processes: Number });
  t.ok(running.usage.rss > 0, `live rss ${running.usage.rss}`);
  t.type(running.usage.cpu_percent, 'number');
});

t.test('a signal reaches the grandchild, through the whole process group', async (t) => {
  const { create } = await setup(t);
  const doc = await create('tree.0');
  const out = await attach(doc.attach);
  await waitForState(doc.status, 'running');
  const grandchild = Number(
    (await waitFor(() => out.lines.find((l) => l.startsWith('grandchild ready')), 'grandchild up')).split(' ').pop(),
  );
  const r = await api('POST', doc.signal, { signal: 'SIGHUP' });
  t.equal(r.status, 200);
  t.equal(r.json.state, 'running');
  await waitFor(() => out.lines.includes(`grandchild ${grandchild} got SIGHUP`), 'the grandchild to get SIGHUP');
  await waitFor(() => out.lines.includes('leader got SIGHUP'), 'the leader to get it too');
  const byNumber = await api('POST', doc.signal, { signal: 1 });
  t.equal(byNumber.status, 200, 'by number');
  await waitFor(() => out.lines.filter((l) => l.endsWith('got SIGHUP')).length === 4, 'both got the second one');
  out.ws.close();
});

t.test('signal: 400 for an unknown signal or body, 409 without a running child, 404 for no process', async (t) => {
  const { agent, create } = await setup(t);
  const doc = await create('ok.0', { restart: { policy: 'never' } });
  const bad = await api('POST', doc.signal, { signal: 'SIGBOGUS' });
  t.equal(bad.status, 400);
  t.match(bad.json.errors[0], { status: 400, field: 'signal', detail: /not a signal/ });
  t.match((await api('POST', doc.signal, { signal: 0 })).json.errors[0], { field: 'signal' }, 'signal 0 only probes: refused');
  t.match((await api('POST', doc.signal, {})).json.errors[0], { field: 'signal', detail: /required/ });
  t.match((await api('POST', doc.signal, { signal: 'HUP', pid: 1 })).json.errors[0], { status: 400, field: 'pid' });
  t.equal((await api('POST', doc.signal, '[1]')).status, 400);
  await waitForState(doc.status, 'exited');
  const gone = await api('POST', doc.signal, { signal: 'SIGHUP' });
  t.equal(gone.status, 409);
  t.match(gone.json.errors[0].detail, /no running child/);
  t.equal((await api('POST', `${agent.url}/signal-process/ctl.nope.0`, { signal: 'SIGHUP' })).status, 404);
});

t.test('stop escalates past a stop signal the child ignores; the process stays exited until start', async (t) => {
  const { create } = await setup(t);
  const doc = await create('stubborn.0');
  const out = await attach(doc.attach);
  const running = await waitForState(doc.status, 'running');
  await waitFor(() => out.lines.includes('stubborn ready'), 'ready');
  const r = await api('POST', doc.stop, { signal: 'SIGUSR1', grace_ms: 300 });
  t.equal(r.status, 200);
  t.match(r.json, { state: 'exited', stopped: true, pid: null, restarts: 0, errors: [] });
  t.match(r.json.last_exit, { exit_code: null, signal: 'SIGKILL', signum: 9, core_dump: false });
  t.ok(out.lines.includes('stubborn got SIGUSR1'), 'the stop signal came first');
  t.ok(out.lines.includes('stubborn got SIGTERM'), 'then SIGTERM after the grace');
  t.same(liveGroupMembers(running.pgid), [], 'then SIGKILL: nothing left');
  t.ok(r.json.last_exit.duration > 0);

  t.equal((await api('POST', doc.stop, {})).json.state, 'exited', 'stopping again is fine');
  const restarted = await api('POST', doc.start, {});
  t.equal(restarted.status, 200);
  t.equal(restarted.json.stopped, false);
  const again = await waitForState(doc.status, 'running');
  t.not(again.pid, running.pid, 'a new child');
  t.equal(again.restarts, 0, 'a start is not a restart');
  const twice = await api('POST', doc.start, {});
  t.equal(twice.status, 409);
  t.match(twice.json.errors[0].detail, /already running/);
  out.ws.close();
});

t.test('stop and restart reject bad options with 400 naming the field', async (t) => {
  const { create } = await setup(t);
  const doc = await create('hold.0');
  t.match((await api('POST', doc.stop, { grace_ms: -1 })).json.errors[0], { status: 400, field: 'grace_ms' });
  t.match((await api('POST', doc.stop, { grace_ms: '5s' })).json.errors[0], { status: 400, field: 'grace_ms' });
  t.match((await api('POST', doc.restart, { signal: 'SIGNOPE' })).json.errors[0], { status: 400, field: 'signal' });
  t.match((await api('POST', doc.start, { now: true })).json.errors[0], { status: 400, field: 'now' });
});

t.test('restart: graceful stop, a new child at once, counted in restarts', async (t) => {
  const { create } = await setup(t);
  const doc = await create('hold.0');
  const first = await waitForState(doc.status, 'running');
  const r = await api('POST', doc.restart, {});
  t.equal(r.status, 200);
  t.equal(r.json.state, 'running');
  t.equal(r.json.restarts, 1);
  t.not(r.json.pid, first.pid);
  t.match(r.json.last_exit, { signal: 'SIGTERM', exit_code: null });
  t.same(r.json.errors, [], 'a requested restart is no error');
  t.same(liveGroupMembers(first.pgid), [], 'the old group is gone');
});

t.test('on-failure: no restart after exit 0, a restart after exit 1', async (t) => {
  const { create } = await setup(t);
  const ok = await create('ok.0', { restart: { policy: 'on-failure' } });
  const fail = await create('fail.0', { restart: { policy: 'on-failure', delay_ms: 0, max_delay_ms: 0 } });
  // The failing one restarts at once, again and again: once it has done so three times the
  // successful one, which exited at the same moment, would long have restarted too.
  await waitForState(fail.status, (d) => d.restarts >= 3);
  const done = await waitForState(ok.status, 'exited');
  t.equal(done.restarts, 0);
  t.match(done.last_exit, { exit_code: 0, signal: null, signum: null, core_dump: false });
  t.match(done.restart_policy, { policy: 'on-failure' });
  t.same(done.errors, []);
  const failing = await waitForState(fail.status, (d) => d.last_exit?.exit_code === 1);
  t.match(failing.errors, [/exited with code 1/]);
});

t.test('never: the run stays exited with its detail; start runs it again', async (t) => {
  const { create } = await setup(t);
  const doc = await create('fail.0', { restart: { policy: 'never' } });
  const first = await waitForState(doc.status, 'exited');
  t.match(first.last_exit, { exit_code: 1 });
  t.equal(first.stopped, false, 'finished, not stopped');
  const started = await api('POST', doc.start, {});
  t.equal(started.status, 200);
  const second = await waitForState(doc.status, (d) => d.state === 'exited' && d.last_exit.started_at !== first.last_exit.started_at);
  t.equal(second.restarts, 0);
});

t.test('a SIGSEGV child reports the signal (and core_dump where it can be known)', async (t) => {
  const { agent, create } = await setup(t);
  const doc = await create('segv.0', { restart: { policy: 'never' } });
  const done = await waitForState(doc.status, 'exited');
  t.match(done.last_exit, { exit_code: null, signal: 'SIGSEGV', signum: 11 });
  t.equal(done.last_exit.core_dump, agent.supervisor.waitHelper ? false : null, 'ulimit -c 0: no core (known with the exit helper)');
  t.match(done.errors, [/killed by SIGSEGV/]);
});

t.test('totals of a short-lived child, and metrics per stage', async (t) => {
  const { create, exact } = await setup(t, {
    'bin/build': '#!/bin/sh\nnode app.js burn 300\n',
  });
  const doc = await create('ok.0', { restart: { policy: 'never' } });
  const done = await waitForState(doc.status, 'exited');
  const u = done.last_exit.usage;
  if (exact) {
    t.ok(u.utime + u.stime > 0, `cpu ${u.utime} + ${u.stime}`);
    t.ok(u.maxrss > 0, `maxrss ${u.maxrss}`);
    t.match(u.method, { cpu: /^(cgroup-v[12]|wait4)$/, maxrss: /^(cgroup-v[12]|wait4)$/ });
  } else {
    t.comment('no cgroups and no exit helper here: a 50 ms run may end before the first /proc sample');
  }
  const m = await api('GET', doc.metrics);
  t.equal(m.status, 200);
  t.match(m.json, { slug: 'ctl.ok.0', status: doc.status, sample_interval_ms: 100, current: null });
  t.match(m.json.run, { runs: 1, last: u });
  t.equal(m.json.build.runs, 1, 'one build ran for it');
  if (exact) t.ok(m.json.build.last.utime >= 0.25, `the build burnt ${m.json.build.last.utime} s of CPU`);
  t.ok(Array.isArray(m.json.samples));
});

t.test('metrics add up every run, and keep recent samples', async (t) => {
  const { create, exact } = await setup(t);
  const doc = await create('burn.0', { restart: { policy: 'on-failure' } });
  await waitForState(doc.status, 'exited');
  await api('POST', doc.restart, {});
  await waitForState(doc.status, (d) => d.state === 'exited' && d.restarts === 1);
  const m = (await api('GET', doc.metrics)).json;
  t.equal(m.run.runs, 2);
  if (exact) {
    t.ok(m.run.last.utime >= 0.25, `last run ${m.run.last.utime} s`);
    t.ok(m.run.total.utime >= 2 * 0.25, `both runs ${m.run.total.utime} s`);
    t.ok(m.run.total.utime > m.run.last.utime);
  }
  const held = await create('hold.0');
  await waitFor(async () => (await api('GET', held.metrics)).json.samples.length >= 3, 'three samples');
  const hm = (await api('GET', held.metrics)).json;
  t.match(hm.samples[0], { at: String, cpu_percent: Number, rss: Number, processes: Number });
  t.ok(hm.current.rss > 0);
  t.equal((await api('GET', hm.status.replace('process-status', 'process-metrics').replace('hold.0', 'nope.0'))).status, 404);
});

t.test('create validates the restart object, naming the field', async (t) => {
  const { agent } = await setup(t);
  const create = (restart: unknown) =>
    api('POST', `${agent.url}/create-process`, {
      app: 'v',
      node: 'web.0',
      process_type: 'web',
      source_url: 'http://127.0.0.1:1/x.tgz',
      restart,
    });
  const cases: [unknown, string, RegExp][] = [
    [{ policy: 'sometimes' }, 'restart.policy', /"always", "on-failure", "never"/],
    [{ policy: 3 }, 'restart.policy', /must be one of/],
    [{ delay_ms: -5 }, 'restart.delay_ms', /integer/],
    [{ delay_ms: 1.5 }, 'restart.delay_ms', /integer/],
    [{ max_delay_ms: '10' }, 'restart.max_delay_ms', /integer/],
    [{ reset_after_ms: 1e12 }, 'restart.reset_after_ms', /from 0 to/],
    [{ delay_ms: 5000, max_delay_ms: 1000 }, 'restart.max_delay_ms', /not be less than restart.delay_ms/],
    [{ polcy: 'never' }, 'restart.polcy', /not a restart setting/],
    ['never', 'restart', /must be an object/],
    [[], 'restart', /must be an object/],
  ];
  for (const [restart, field, detail] of cases) {
    const r = await create(restart);
    t.equal(r.status, 400, JSON.stringify(restart));
    t.match(r.json.errors[0], { status: 400, field, detail }, JSON.stringify(restart));
  }
  const proto = await api(
    'POST',
    `${agent.url}/create-process`,
    '{"app":"v","node":"web.0","process_type":"web","source_url":"http://127.0.0.1:1/x.tgz","restart":{"__proto__":5}}',
  );
  t.match(proto.json.errors?.[0], { status: 400, field: 'restart.__proto__' }, '"__proto__" is no setting either');
  const ok = await create({ policy: 'never', delay_ms: 50, max_delay_ms: 100, reset_after_ms: 1000 });
  t.equal(ok.status, 201);
  t.match(ok.json.restart_policy, { policy: 'never', delay_ms: 50, max_delay_ms: 100, reset_after_ms: 1000 });
});
