import t from 'tap';
import { UsageSampler } from '../../lib/os/sampler.js';
import type { GroupStat } from '../../lib/os/proc.js';
import { listProcesses, parseStat, scanGroups, scanGroupsSliced } from '../../lib/os/proc.js';
import { addUsage, usageDocument, type LiveUsage, type RunUsage } from '../../lib/os/usage.js';
import { ProcessMetrics } from '../../lib/process/metrics.js';

/** A sampler over a scripted /proc and clock. */
function scripted() {
  let now = 1000;
  const groups = new Map<number, GroupStat>();
  const calls: { pgids: number[]; skip: number[] }[] = [];
  const sampler = new UsageSampler({
    intervalMs: 0, // no timer: the test calls sample()
    clockTicks: 100,
    pageSize: 4096,
    now: () => now,
    scan: (pgids, skip) => {
      calls.push({ pgids: [...pgids], skip: [...skip] });
      return new Map([...groups].filter(([g]) => pgids.has(g)));
    },
  });
  return { sampler, groups, calls, advance: (ms: number) => (now += ms) };
}

t.test('one pass for every watched group; CPU % between samples; RSS in bytes', async (t) => {
  const s = scripted();
  const a: LiveUsage[] = [];
  const b: LiveUsage[] = [];
  const stopA = s.sampler.watch(10, { startedAt: 1000, skip: () => [11, 10] }, (u) => a.push(u));
  s.sampler.watch(20, { startedAt: 1000 }, (u) => b.push(u));
  s.groups.set(10, { userTicks: 50, systemTicks: 50, rssPages: 256, processes: 2 });
  s.groups.set(20, { userTicks: 0, systemTicks: 0, rssPages: 1, processes: 1 });
  s.advance(1000);
  s.sampler.sample();
  t.equal(s.calls.length, 1, 'one scan for both groups');
  t.same(s.calls[0], { pgids: [10, 20], skip: [11, 10] });
  t.match(a[0], { cpuPercent: 100, rss: 256 * 4096, processes: 2, utime: 0.5, stime: 0.5 }, 'since the start: 1 s of CPU in 1 s');
  t.match(b[0], { cpuPercent: 0, rss: 4096 });

  s.groups.set(10, { userTicks: 75, systemTicks: 75, rssPages: 512, processes: 3 });
  s.advance(2000);
  s.sampler.sample();
  t.match(a[1], { cpuPercent: 25, rss: 512 * 4096, processes: 3 }, '0.5 s of CPU over 2 s');

  s.groups.set(10, { userTicks: 10, systemTicks: 10, rssPages: 512, processes: 1 });
  s.advance(1000);
  s.sampler.sample();
  t.equal(a[2].cpuPercent, 0, 'a member reaped outside the group: never negative');

  const seen = b.length;
  s.groups.delete(20);
  s.advance(1000);
  s.sampler.sample();
  t.equal(b.length, seen, 'a group that is gone gets no sample');
  stopA();
  t.equal(s.sampler.watching, 1);
  s.sampler.close();
  t.equal(s.sampler.watching, 0);
});

t.test('while the runs cgroup shows no CPU and no group came or went, the pass is skipped and its figures delivered again', async (t) => {
  let now = 1000;
  let activity: number | null = 500;
  let scans = 0;
  const groups = new Map<number, GroupStat>([
    [10, { userTicks: 100, systemTicks: 0, rssPages: 10, processes: 1 }],
    [20, { userTicks: 0, systemTicks: 0, rssPages: 20, processes: 1 }],
  ]);
  const sampler = new UsageSampler({
    intervalMs: 0,
    clockTicks: 100,
    pageSize: 4096,
    now: () => now,
    activity: () => activity,
    scan: (pgids) => (scans++, new Map([...groups].filter(([g]) => pgids.has(g)))),
  });
  const a: LiveUsage[] = [];
  let coveredB = true;
  sampler.watch(10, { startedAt: 0, covered: () => true }, (u) => a.push(u));
  const stopB = sampler.watch(20, { startedAt: 0, covered: () => coveredB }, () => {});
  const pass = () => ((now += 5000), sampler.sample());
  pass();
  t.equal(scans, 1, 'the first pass reads /proc');
  pass();
  t.equal(scans, 1, 'nothing ran: skipped');
  t.match(a.at(-1), { cpuPercent: 0, rss: 10 * 4096, processes: 1, utime: 1 }, 'the same figures, no CPU since');
  t.equal(a.at(-1)!.at, now, 'stamped now');
  activity = 501;
  pass();
  t.equal(scans, 2, 'something ran: a full pass');
  pass();
  t.equal(scans, 2);
  stopB();
  pass();
  t.equal(scans, 3, 'a group went: a full pass');
  sampler.watch(20, { startedAt: now, covered: () => coveredB }, () => {});
  pass();
  t.equal(scans, 4, 'a group came: a full pass');
  coveredB = false;
  pass();
  t.equal(scans, 5, 'a group outside the cgroups (its cgroup failed): always a full pass');
  coveredB = true;
  for (let i = 0; i < 30; i++) pass();
  t.equal(scans, 7, 'even when idle, a full pass every 12 ticks (pages reclaimed without CPU): 11 + 1 + 11 + 1 + 6');
  t.equal(sampler.cost.reused, 2 + 28, 'reused passes are counted');
  activity = null;
  const before = scans;
  pass();
  pass();
  t.equal(scans, before + 2, 'unknown activity (no cgroups): every pass is full');
});

t.test('the timer runs only while something is watched', async (t) => {
  const sampler = new UsageSampler({ intervalMs: 10, clockTicks: 100, pageSize: 4096, scan: () => new Map() });
  const stop = sampler.watch(process.pid, { startedAt: Date.now() }, () => {});
  await new Promise((r) => setTimeout(r, 50));
  t.ok(sampler.cost.passes >= 1, 'it sampled');
  stop();
  const passes = sampler.cost.passes;
  await new Promise((r) => setTimeout(r, 50));
  t.equal(sampler.cost.passes, passes, 'no pass after the last unwatch');
});

t.test('/proc stat parsing and a real pass over this process group', async (t) => {
  const line = '4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 3 4 20 0 1 0 987654 123456789 2560 18446744073709551615';
  t.match(parseStat(line), {
    pid: 4242,
    state: 'S',
    ppid: 1,
    pgid: 4242,
    utime: 150,
    stime: 25,
    cutime: 3,
    cstime: 4,
    starttime: 987654,
    rss: 2560,
  });
  const me = parseStat(`${process.pid} (node) R 1 ${process.pid} 0 0`)!;
  t.equal(me.pgid, process.pid);
  const own = scanGroups(new Set([process.pid]));
  // tap runs each test file as its own process; whether it leads a group depends on the runner.
  const g = [...own.values()][0];
  if (g) t.ok(g.processes >= 1 && g.rssPages > 0);
  t.same(scanGroups(new Set()), new Map(), 'nothing watched, nothing read');
});

t.test('the sliced pass finds what the synchronous one does, and lets timers run between slices', async (t) => {
  const pgids = new Set([process.pid]);
  const sync = scanGroups(pgids);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const sliced = await scanGroupsSliced(pgids);
  clearInterval(timer);
  t.same([...sliced.stats.keys()], [...sync.keys()], 'the same groups');
  const mine = sliced.stats.get(process.pid);
  if (mine) t.ok(mine.processes >= 1 && mine.rssPages > 0, 'with their figures');
  // Slices are ~2 ms: a pass that held the loop much longer must have let the timer in.
  if (sliced.blockedMs > 10) t.ok(ticks >= 1, 'timers ran between slices');
  t.comment(`${listProcesses().length} processes, ${ticks} timer turns during the pass, held the loop ${sliced.blockedMs.toFixed(1)} ms`);
  t.same((await scanGroupsSliced(new Set())).stats, new Map(), 'nothing watched, nothing read');
});

const u = (utime: number, stime: number, maxrss: number, m: RunUsage['method']['cpu'] = 'wait4'): RunUsage => ({
  utime,
  stime,
  maxrss,
  method: { cpu: m, maxrss: m },
});

t.test('totals: CPU adds up, memory peaks do not, the least exact method names the sum', async (t) => {
  t.same(addUsage(null, null), null);
  t.same(addUsage(u(1, 2, 100), null), u(1, 2, 100));
  t.same(addUsage(u(1, 2, 100, 'cgroup-v2'), u(0.5, 0.5, 300, 'proc')), u(1.5, 2.5, 300, 'proc'));
  const partial: RunUsage = { utime: null, stime: null, maxrss: 50, method: { cpu: null, maxrss: 'proc' } };
  t.same(addUsage(u(1, 1, 10, 'wait4'), partial), { utime: 1, stime: 1, maxrss: 50, method: { cpu: 'wait4', maxrss: 'proc' } });
  t.same(usageDocument(u(1 / 3, 0, 1.6)), { utime: 0.333333, stime: 0, maxrss: 2, method: { cpu: 'wait4', maxrss: 'wait4' } });

  const m = new ProcessMetrics(3);
  for (let i = 0; i < 5; i++) m.sample({ at: i, cpuPercent: i, rss: i, processes: 1, utime: 0, stime: 0 });
  t.same(
    m.samples.map((s) => s.at),
    [2, 3, 4],
    'a bounded window, newest last',
  );
  t.equal(m.live?.at, 4);
  m.runEnded(u(1, 0, 10));
  m.runEnded(null);
  m.runEnded(u(2, 1, 5));
  t.equal(m.live, null, 'nothing live after an exit');
  t.match(m.run, { runs: 3, measured: 2, total: u(3, 1, 10), last: u(2, 1, 5) });
  m.releaseBuilt('sha-a', u(4, 0, 1));
  m.releaseBuilt('sha-a', u(4, 0, 1));
  t.match(m.build, { runs: 1, total: u(4, 0, 1) }, 'a reused release is not built again');
  m.releaseBuilt('sha-b', null);
  t.match(m.build, { runs: 2, measured: 1 });
});
