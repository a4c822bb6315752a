import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Cgroups } from '../../lib/os/cgroup.js';
import type { Socket } from 'node:net';
import { findSpawnHelper, SpawnHelper, type RunEvents, type SpawnRequest } from '../../lib/os/spawn-helper.js';
import { readProc } from '../../lib/os/proc.js';
import type { HelperReport } from '../../lib/os/wait-helper.js';
import { agentWithArchives, api, waitForState } from '../helpers/agent.js';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { descendants, spawnAgent, stillAlive } from '../helpers/agent-process.js';
import { waitFor } from '../helpers/wait.js';

const helperPath = findSpawnHelper();
const skip = helperPath ? false : 'the spawn helper is not built (no C compiler)';
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

/** One run through a helper: everything it reported, and the output of each stream. */
function run(helper: SpawnHelper, req: Partial<SpawnRequest> & { argv: string[] }) {
  const seen = {
    pid: 0,
    out: '',
    err: '',
    cgroupFailed: [] as string[],
    failed: '',
    exit: null as HelperReport | null,
    streams: [] as Socket[],
  };
  let done: () => void = () => {};
  const ended = new Promise<void>((r) => (done = r));
  let closed = 0;
  const events: RunEvents = {
    onPid: (pid) => (seen.pid = pid),
    onStream: (fd, s) => {
      seen.streams.push(s);
      s.on('data', (c: Buffer) => (fd === 1 ? (seen.out += c) : (seen.err += c)));
      s.on('close', () => ++closed === 2 && seen.exit && done());
      s.resume();
    },
    onCgroupFailed: (f) => seen.cgroupFailed.push(f),
    onFailed: (why) => {
      seen.failed = why;
      done();
    },
    onExit: (r) => {
      seen.exit = r;
      if (closed === 2) done();
    },
  };
  const id = helper.spawn({ cwd: '/tmp', env, ...req }, events);
  return { seen, ended: ended.then(() => helper.release(id)) };
}

t.test('the protocol: pid, both streams, exact wait status and wait4 usage', { skip }, async (t) => {
  const helper = new SpawnHelper(helperPath!);
  t.teardown(() => helper.close());
  const a = run(helper, { argv: ['/bin/sh', '-c', 'echo "out $X"; echo err >&2; exit 3'], env: { ...env, X: 'y' } });
  await a.ended;
  t.ok(a.seen.pid > 0, 'pid reported');
  t.equal(a.seen.out, 'out y\n');
  t.equal(a.seen.err, 'err\n');
  t.equal(a.seen.exit!.status, 3 << 8, 'raw wait status');
  t.ok(a.seen.exit!.maxrss > 0, 'wait4 usage');

  const b = run(helper, { argv: ['/bin/sh', '-c', 'ulimit -c 0; kill -SEGV $$'] });
  await b.ended;
  t.equal(b.seen.exit!.status & 0x7f, 11, 'killed by SIGSEGV');
  t.equal(b.seen.exit!.status & 0x80, 0, 'no core with ulimit -c 0: the real flag');

  const c = run(helper, { argv: ['no-such-program-here'] });
  await c.ended;
  t.equal(c.seen.exit!.status, 127 << 8, 'an exec failure exits 127, as a shell says it');
  t.match(c.seen.err, /cannot run no-such-program-here/);
});

t.test('cwd, rlimits, cgroups and user: set before the exec; failures named', { skip }, async (t) => {
  const helper = new SpawnHelper(helperPath!);
  t.teardown(() => helper.close());
  const a = run(helper, {
    argv: ['/bin/sh', '-c', 'pwd; ulimit -n; ulimit -Hn'],
    cwd: '/usr',
    rlimits: { nofile: { soft: 77, hard: 99 } },
    cgroupFiles: ['/nonexistent-drover/cgroup.procs'],
  });
  await a.ended;
  t.equal(a.seen.out, '/usr\n77\n99\n');
  t.same(a.seen.cgroupFailed, ['/nonexistent-drover/cgroup.procs'], 'a cgroup it cannot join is reported, the run goes on');

  const b = run(helper, { argv: ['true'], cwd: '/nonexistent-drover-dir' });
  await b.ended;
  t.equal(b.seen.failed, 'chdir /nonexistent-drover-dir: ENOENT');
  t.equal(b.seen.pid, 0, 'no pid for a run that never ran');

  if (process.getuid?.() === 0) {
    const c = run(helper, { argv: ['/bin/sh', '-c', 'id -u; id -g; id -G'], user: { uid: 65534, gid: 65534, groups: [65534, 4242] } });
    await c.ended;
    t.equal(c.seen.out, '65534\n65534\n65534 4242\n', 'uid, gid and supplementary groups');
  }
});

t.test('a lazy run cgroup: the helper makes its directories, then joins them', { skip }, async (t) => {
  const cgroups = Cgroups.detect();
  if (!cgroups) return t.comment('no usable cgroups here');
  t.teardown(() => cgroups.close());
  const helper = new SpawnHelper(helperPath!);
  t.teardown(() => helper.close());
  // No spare is ready right after detection: the directories do not exist yet.
  const cg = cgroups.create({ lazy: true })!;
  const dirs = cg.procsFiles.map((f) => dirname(f));
  t.ok(
    dirs.every((d) => !existsSync(d)),
    'nothing made by the agent',
  );
  const a = run(helper, { argv: ['cat', '/proc/self/cgroup'], cgroupFiles: cg.procsFiles });
  await a.ended;
  t.same(a.seen.cgroupFailed, [], 'joined');
  for (const d of dirs) t.ok(a.seen.out.includes(basename(d)), `the command ran in ${d}`);
  t.ok(cg.read().cpu !== undefined || cg.read().memory !== undefined, 'its figures are readable');
  cg.remove();
  await waitFor(() => dirs.every((d) => !existsSync(d)), 'the directories removed');
});

t.test('what a run leaves behind dies with it: double-forked daemons, a whole tree of them', { skip }, async (t) => {
  const helper = new SpawnHelper(helperPath!);
  t.teardown(() => helper.close());
  const dir = t.testdir();
  const pids = join(dir, 'pids');
  // Three daemons out of the group (setsid), one of them with children of its own.
  const script = `for i in 1 2; do setsid sh -c 'sleep 600 & echo $! >> ${pids}' ; done; setsid sh -c '(sleep 600 & echo $! >> ${pids}; wait) & echo $! >> ${pids}'; sleep 0.2; exit 5`;
  const a = run(helper, { argv: ['/bin/sh', '-c', script] });
  await a.ended;
  t.equal(a.seen.exit?.status, 5 << 8, 'the exit status of the command');
  const left = readFileSync(pids, 'utf8').trim().split('\n').map(Number);
  t.ok(left.length >= 4, `${left.length} daemons started`);
  t.same(
    left.filter((p) => {
      const e = readProc(p);
      return e !== null && e.state !== 'Z';
    }),
    [],
    'none alive once the run reported its exit',
  );
});

t.test('a slow reader blocks the child; nothing piles up in the helper', { skip }, async (t) => {
  const helper = new SpawnHelper(helperPath!);
  t.teardown(() => helper.close());
  const a = run(helper, { argv: ['/bin/sh', '-c', 'head -c 20000000 /dev/zero; echo done >&2'] });
  const stream = await waitFor(() => a.seen.streams.find((s) => s.listenerCount('data') > 0 && s === a.seen.streams[0]), 'stdout');
  stream.pause();
  // The writer blocks once the socket buffers are full: it sleeps in the kernel, unfinished.
  await waitFor(() => {
    const pids = descendants(a.seen.pid).map((p) => p.pid);
    return pids.some((p) => /unix_stream|sock_alloc|wait_for|sk_stream/.test(readFileSync(`/proc/${p}/wchan`, 'utf8')));
  }, 'the writer to block on its socket');
  t.equal(a.seen.exit, null, 'not finished while nobody reads');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${helper.pid}/status`, 'utf8'))![1]);
  t.ok(rss < 10_000, `helper RSS stays small (${rss} kB)`);
  stream.resume();
  await a.ended;
  t.equal(a.seen.out.length, 20_000_000, 'every byte arrives once read');
  t.equal(a.seen.err, 'done\n');
});

t.test('agent SIGKILL with the helper: no survivor, a setsid double-forked daemon included', { skip }, async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const pidFile = join(dir, 'daemon.pid');
  const procfile = `web: setsid sh -c 'sleep 600 & echo $! > ${pidFile}' ; exec sleep 600\n`;
  const url = await archives.serve('d.tgz', await pack(writeApp(join(dir, 'app'), { Procfile: procfile }), join(dir, 'd.tgz')));
  const agent = await spawnAgent();
  t.teardown(() => agent.proc.kill('SIGKILL'));
  const r = await api('POST', `${agent.url}/create-process`, { app: 'd', node: 'web.0', process_type: 'web', source_url: url });
  t.equal(r.status, 201);
  await waitForState(r.json.status, 'running');
  // The pid comes from the helper a moment after the start.
  const doc = await waitFor(
    async () => ((await api('GET', r.json.status)).json.pid ? (await api('GET', r.json.status)).json : null),
    'its pid',
  );
  const daemon = Number(await waitFor(() => readFileSync(pidFile, 'utf8').trim(), 'the daemon to start'));
  const tree = descendants(agent.proc.pid!);
  t.ok(
    tree.some((p) => p.pid === daemon),
    'the daemon is still a descendant of the agent (the helper reaps orphans)',
  );
  t.ok(
    tree.some((p) => p.pid === doc.pid),
    `the app ${doc.pid} in ${JSON.stringify(tree.map((p) => p.pid))}`,
  );
  t.not(readProc(daemon)!.pgid, doc.pid, 'the daemon left the process group');
  agent.proc.kill('SIGKILL');
  await agent.exit;
  await waitFor(() => stillAlive(tree).length === 0, 'every descendant to die', 20_000);
  t.pass(`all ${tree.length} descendants gone (helper, keeper, app, daemon)`);
});

t.test('spawn_helper false forces the direct spawn (the fallback without a C compiler)', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { spawnHelper: false });
  t.equal(agent.supervisor.spawner, null);
  const source = await serveApp('direct', 'web: echo hello; exec sleep 600\n');
  const r = await api('POST', `${agent.url}/create-process`, { app: 'f', node: 'web.0', process_type: 'web', source_url: source });
  t.equal(r.status, 201);
  const doc = await waitForState(r.json.status, 'running');
  const leader = readProc(doc.pgid ?? doc.pid)!;
  t.equal(leader.ppid, process.pid, "the group's leader is the agent's own child");
  t.equal((await api('POST', r.json.delete, {})).status, 200);
});

t.test('with the helper, the agent forks nothing itself', { skip }, async (t) => {
  const { agent, serveApp } = await agentWithArchives(t);
  t.not(agent.supervisor.spawner, null);
  const source = await serveApp('helped', 'web: exec sleep 600\n');
  const r = await api('POST', `${agent.url}/create-process`, { app: 'h', node: 'web.0', process_type: 'web', source_url: source });
  const doc = await waitForState(r.json.status, 'running');
  const keeper = readProc(readProc(doc.pid)!.ppid)!;
  t.equal(readProc(keeper.ppid)!.pid, agent.supervisor.spawner!.pid, 'app <- keeper <- helper');
  t.equal(readProc(doc.pid)!.pgid, doc.pid, 'the app leads its own group');
  // The helper reports the app's start time, which the groups file records for the next agent's sweep.
  const groups = join(agent.stateDir, 'groups.json');
  const recorded = await waitFor(() => {
    const list = existsSync(groups) ? (JSON.parse(readFileSync(groups, 'utf8')) as { pgid: number; starttime: number }[]) : [];
    return list.find((g) => g.pgid === doc.pid);
  }, 'the group to be recorded');
  t.equal(recorded.starttime, readProc(doc.pid)!.starttime, "the app's start time, as /proc has it");
  t.equal((await api('POST', r.json.delete, {})).status, 200);
});
