import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Child, type ChildOptions, type ExitInfo } from '../../lib/os/child.js';
import { Cgroups } from '../../lib/os/cgroup.js';
import { liveGroupMembers } from '../../lib/os/proc.js';
import { UsageSampler } from '../../lib/os/sampler.js';
import { findWaitHelper } from '../../lib/os/wait-helper.js';
import { waitFor } from '../helpers/wait.js';

const fixture = join(import.meta.dirname, '..', 'fixtures', 'usage-child.js');
const node = JSON.stringify(process.execPath);
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const MB = 1024 * 1024;

const helper = findWaitHelper();
const cgroups = Cgroups.detect();
t.teardown(() => cgroups?.close());
t.comment(`exit helper: ${helper ?? 'not built'}; cgroups: ${cgroups?.describe() ?? 'not available'}`);

/** Each way of measuring this host supports, best first; the last one always works. */
const modes: { name: string; exact: boolean; spec: () => Partial<ChildOptions>; expect: RegExp }[] = [];
if (cgroups) modes.push({ name: 'cgroup', exact: true, spec: () => ({ cgroup: cgroups.create(), helper }), expect: /^cgroup-v[12]$/ });
if (helper) modes.push({ name: 'wait4', exact: true, spec: () => ({ helper }), expect: /^wait4$/ });
modes.push({ name: 'proc', exact: false, spec: () => ({ sampler: new UsageSampler({ intervalMs: 50 }) }), expect: /^proc$/ });

function run(command: string, extra: Partial<ChildOptions>, cwd = '/tmp') {
  const lines: string[] = [];
  const samples: number[] = [];
  const child = new Child({
    command,
    cwd,
    env,
    onLine: (_s, l) => lines.push(l),
    ...extra,
    onSample: (u) => {
      samples.push(u.rss);
      extra.onSample?.(u);
    },
  });
  return { child, lines, samples };
}

/** Runs to the end; with /proc sampling only, first waits until a sample saw `seen`, then stops it. */
async function totals(
  t: any,
  mode: (typeof modes)[number],
  command: string,
  seen?: (c: Child, u: { utime: number; rss: number }) => boolean,
): Promise<ExitInfo> {
  let last = { utime: 0, rss: 0 };
  const extra = mode.spec();
  // Without an exact method the children hold on (--hold) until a sample has seen them.
  let cmd = mode.exact ? command : `${command.replaceAll(' & ', ' --hold & ')} --hold`;
  if (cmd.includes(' & ')) cmd += '; wait';
  const r = run(cmd, { ...extra, onSample: (u) => (last = { utime: u.utime, rss: Math.max(last.rss, u.rss) }) });
  t.teardown(() => r.child.stop(1000));
  if (!mode.exact && seen) {
    await waitFor(() => seen(r.child, last), 'a sample that saw the figure', 60_000);
    await r.child.stop(5000);
  }
  const exit = await r.child.exited;
  t.same(liveGroupMembers(r.child.pid!), [], 'nothing of the group is left');
  return exit;
}

for (const mode of modes) {
  t.test(`${mode.name}: a child burning 1 s of CPU reports utime >= 0.9 s`, async (t) => {
    const exit = await totals(t, mode, `${node} ${fixture} --cpu 1000`, (_c, u) => u.utime >= 0.95);
    t.match(exit.usage?.method.cpu, mode.expect);
    t.ok(exit.usage!.utime! >= 0.9, `utime ${exit.usage!.utime}`);
    t.ok(exit.usage!.stime! >= 0, 'stime is a figure');
    if (mode.exact) t.equal(exit.code, 0);
  });

  t.test(`${mode.name}: a child holding 200 MB reports maxrss >= 190 MB`, async (t) => {
    const exit = await totals(t, mode, `${node} ${fixture} --mb 200`, (_c, u) => u.rss >= 200 * MB);
    t.match(exit.usage?.method.maxrss, mode.expect);
    t.ok(exit.usage!.maxrss! >= 190 * MB, `maxrss ${exit.usage!.maxrss! / MB} MB`);
  });

  t.test(`${mode.name}: a two-process tree reports the sum of its CPU`, async (t) => {
    const dir = t.testdir();
    const [a, b] = [join(dir, 'a'), join(dir, 'b')];
    // Both hold 100 MB at the same time (each waits for the other's file), then end.
    const one = (me: string, other: string) => `${node} ${fixture} --mb 100 --cpu 500 --touch ${me} --wait-for ${other}`;
    const exit = await totals(t, mode, `${one(a, b)} & ${one(b, a)}`, (_c, u) => u.utime >= 0.95);
    t.match(exit.usage?.method.cpu, mode.expect);
    t.ok(exit.usage!.utime! >= 0.9, `utime ${exit.usage!.utime} is the sum of both`);
    // cgroups and /proc see the tree's memory at once; wait4 only the largest single process.
    const floor = mode.name === 'wait4' ? 95 : 190;
    if (mode.exact) t.ok(exit.usage!.maxrss! >= floor * MB, `maxrss ${exit.usage!.maxrss! / MB} MB >= ${floor} MB`);
  });

  if (mode.exact) {
    t.test(`${mode.name}: a 50 ms child gets non-zero totals`, async (t) => {
      const exit = await totals(t, mode, 'sleep 0.05');
      t.equal(exit.code, 0);
      t.ok(exit.usage!.utime! + exit.usage!.stime! > 0, `cpu ${exit.usage!.utime} + ${exit.usage!.stime}`);
      t.ok(exit.usage!.maxrss! > 0, `maxrss ${exit.usage!.maxrss}`);
    });

    t.test(`${mode.name}: a double-forked orphan's CPU counts when it ends first`, async (t) => {
      const dir = t.testdir();
      const done = join(dir, 'done');
      // The leader waits until the orphan is gone (reaped: kill -0 fails), then ends.
      const exit = await totals(
        t,
        mode,
        `(${node} ${fixture} --cpu 800 --touch ${done} &); while [ ! -s ${done} ]; do sleep 0.02; done; while kill -0 $(cat ${done}) 2>/dev/null; do sleep 0.02; done`,
      );
      t.ok(exit.usage!.utime! >= 0.7, `utime ${exit.usage!.utime} includes the orphan`);
    });
  }
}

t.test('proc sampling: live samples of the group, and totals from them', async (t) => {
  const sampler = new UsageSampler({ intervalMs: 50 });
  const r = run(`${node} ${fixture} --mb 50 --hold`, { sampler });
  await waitFor(() => r.samples.some((s) => s >= 50 * MB), 'a sample with the memory');
  t.equal(sampler.watching, 1);
  await r.child.stop(5000);
  const exit = await r.child.exited;
  t.equal(sampler.watching, 0, 'unwatched at exit: no timer left behind');
  t.equal(exit.signal, 'SIGTERM');
  t.equal(exit.usage!.method.maxrss, 'proc');
  t.ok(exit.usage!.maxrss! >= 50 * MB);
});

t.test('exit detail: code, signal, core dump', async (t) => {
  const pattern = readFileSync('/proc/sys/kernel/core_pattern', 'utf8').trim();
  const coreInCwd = !pattern.startsWith('|') && !pattern.includes('/');
  for (const h of helper ? [helper, null] : [null]) {
    const label = h ? 'with the helper' : 'without the helper';
    const code = await run('exit 3', { helper: h }).child.exited;
    t.match(code, { code: 3, signal: null, signum: null, coreDump: false }, `exit code (${label})`);

    const segv = await run(`ulimit -c 0; kill -SEGV $$`, { helper: h }).child.exited;
    t.match(segv, { code: null, signal: 'SIGSEGV', signum: 11 }, `SIGSEGV reported (${label})`);
    t.equal(segv.coreDump, h ? false : null, `no core with ulimit -c 0: known only with the helper (${label})`);

    const term = await run(`kill -TERM $$`, { helper: h }).child.exited;
    t.match(term, { signal: 'SIGTERM', signum: 15, coreDump: false }, `SIGTERM never dumps core (${label})`);

    if (coreInCwd) {
      const dir = t.testdir();
      const dumped = await run(`ulimit -c unlimited; kill -SEGV $$`, { helper: h }, dir).child.exited;
      t.equal(dumped.signal, 'SIGSEGV');
      t.equal(dumped.coreDump, h ? true : null, `core dumped (${label})`);
      if (h && pattern === 'core')
        t.ok(
          readdirSync(dir).some((f) => f.startsWith('core')),
          'and the core file is there',
        );
    }
  }
});

t.test('the helper is the group leader and keeps the no-orphans guarantees', { skip: !helper && 'exit helper not built' }, async (t) => {
  const r = run(`sleep 300 & sleep 300 & echo started; wait`, { helper });
  await waitFor(
    () => r.lines.includes('started') && liveGroupMembers(r.child.pid!).length >= 5,
    'helper, shell, two sleeps and the watchdog',
  );
  await r.child.stop(5000);
  t.same(liveGroupMembers(r.child.pid!), []);
  const exit = await r.child.exited;
  t.equal(exit.signal, 'SIGTERM', 'the shell was killed by SIGTERM, as the helper saw it');
  t.equal(exit.usage?.method.cpu, 'wait4');
});

t.test('stop escalates past an ignored stop signal, and the helper still reports', async (t) => {
  for (const h of helper ? [helper, null] : [null]) {
    const r = run(`trap '' USR1 TERM; echo ready; while true; do sleep 0.05; done`, { helper: h });
    await waitFor(() => r.lines.includes('ready'), 'ready line');
    await r.child.stop(200, 'SIGUSR1');
    const exit = await r.child.exited;
    t.equal(exit.signal, 'SIGKILL', `SIGUSR1, then SIGTERM, then SIGKILL (${h ? 'helper' : 'no helper'})`);
    t.equal(exit.coreDump, false);
    if (h) t.equal(exit.usage?.method.cpu, 'wait4', 'the helper was spared and reported');
    t.same(liveGroupMembers(r.child.pid!), []);
  }
});

t.test('build steps: measured from their first instruction, and a failed exec is still "could not start"', async (t) => {
  const { runBuild } = await import('../../lib/release/build.js');
  const { groupMeter } = await import('../../lib/os/meter.js');
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const meter = groupMeter(cgroups, new UsageSampler({ intervalMs: 50 }), helper);
  const app = (script: string) => {
    const dir = t.testdir();
    mkdirSync(join(dir, 'bin'));
    writeFileSync(join(dir, 'bin', 'build'), script, { mode: 0o755 });
    return dir;
  };
  const buildEnv = { PATH: env.PATH };
  // The script starts its burner at once: joining the cgroup after spawn() would miss it.
  const usage = await runBuild(app(`#!/bin/sh\n${node} ${fixture} --cpu 400\n`), { env: buildEnv, onLine: () => {}, meter });
  if (cgroups && helper) {
    t.match(usage?.method, { cpu: /^cgroup-v[12]$/, maxrss: /^cgroup-v[12]$/ });
    t.ok(usage!.utime! >= 0.35, `the step's child burnt ${usage!.utime} s`);
  } else {
    t.ok(usage === null || usage.method.cpu === 'proc', 'without a pre-exec join: /proc samples or nothing');
  }
  await t.rejects(runBuild(app('#!/nonexistent/interpreter\n'), { env: buildEnv, onLine: () => {}, meter }), /could not start: .*ENOENT/);
  const lines: string[] = [];
  let pgid = 0;
  const ac = new AbortController();
  const p = runBuild(app('#!/bin/sh\nsleep 1000 &\necho "started $$"\nsleep 1000\n'), {
    env: buildEnv,
    meter,
    signal: ac.signal,
    onLine: (l) => {
      lines.push(l);
      const m = /^started (\d+)$/.exec(l);
      if (!m) return;
      pgid = Number(m[1]);
      t.ok(liveGroupMembers(pgid).length >= 2, 'the step leads its own process group');
      ac.abort();
    },
  });
  await t.rejects(p, { name: 'AbortError' });
  await waitFor(() => liveGroupMembers(pgid).length === 0, 'the group to be gone');
});

t.test(
  'a --user child: the helper joins its cgroup as root, then it runs as the user',
  { skip: process.getuid?.() !== 0 ? 'needs root' : !helper || !cgroups ? 'needs the exit helper and cgroups' : false },
  async (t) => {
    const { resolveUser } = await import('../../lib/os/identity.js');
    const runAs = resolveUser('nobody');
    // A shell loop, not node: tap instruments node children, which then cannot write as nobody.
    const r = run(`sh -c 'while :; do :; done'`, { helper, cgroup: cgroups!.create(), runAs });
    await waitFor(() => liveGroupMembers(r.child.pid!).length >= 3, 'helper, command and watchdog');
    const status = (pid: number) => readFileSync(`/proc/${pid}/status`, 'utf8');
    const members = liveGroupMembers(r.child.pid!);
    t.same(
      members.map((p) => status(p).match(/^Uid:\s*(\d+)/m)![1]),
      members.map(() => String(runAs.uid)),
      "every process of the group is the user's, the leader included",
    );
    t.match(readFileSync(`/proc/${r.child.pid}/cgroup`, 'utf8'), /drover-\d+-\d+\/run-\d+/, 'and in the run cgroup');
    // 0.3 s of CPU, as /proc counts it (10 ms ticks), then stop: the totals come from the cgroup.
    const ticks = () =>
      liveGroupMembers(r.child.pid!).reduce(
        (n, p) => n + Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ')[11] ?? 0),
        0,
      );
    await waitFor(() => ticks() >= 30, 'the loop to burn 0.3 s');
    await r.child.stop(5000);
    const exit = await r.child.exited;
    t.match(exit.usage?.method, { cpu: /^cgroup-v[12]$/, maxrss: /^cgroup-v[12]$/ });
    t.ok(exit.usage!.utime! >= 0.25, `utime ${exit.usage!.utime}`);
    t.match(exit, { signal: 'SIGTERM', coreDump: false }, 'the helper, as the user, still reported the exact status');
  },
);
