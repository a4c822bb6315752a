import t from 'tap';
import { PidusageSampler, portableSampler } from '../../lib/os/portable-sampler.js';
import { UsageSampler } from '../../lib/os/sampler.js';
import { usageNotice } from '../../lib/agent/foreground.js';
import type { LiveUsage } from '../../lib/os/usage.js';
import { waitFor } from '../helpers/wait.js';

t.test('drover start samples /proc where it exists, pidusage where it does not', async (t) => {
  t.type(portableSampler(1000, true), UsageSampler, 'Linux: the /proc sampler');
  const fallback = portableSampler(1000, false);
  t.type(fallback, PidusageSampler, 'no /proc (macOS): pidusage');
  t.equal((fallback as PidusageSampler).intervalMs, 1000);
});

t.test('the pidusage sampler reports each answer as a live sample until unwatched', async (t) => {
  const asked: number[] = [];
  const fake = Object.assign(
    async (pid: number) => {
      asked.push(pid);
      return { cpu: 12.34, memory: 5 * 1024 * 1024, ctime: 1500, timestamp: 1000 + asked.length };
    },
    { clear() {} },
  );
  const sampler = new PidusageSampler(5, fake);
  const samples: LiveUsage[] = [];
  const unwatch = sampler.watch(4242, { startedAt: 0 }, (u) => samples.push(u));
  await waitFor(() => samples.length >= 2, 'two samples');
  unwatch();
  t.same(samples[0], { at: 1001, cpuPercent: 12.3, rss: 5 * 1024 * 1024, processes: 1, utime: 1.5, stime: 0 });
  t.ok(
    asked.every((p) => p === 4242),
    'the group leader is asked',
  );
});

t.test("drover start words a run's usage only when the sampler caught it", async (t) => {
  const exit = { code: 0, signal: null, startedAt: 0, endedAt: 1 };
  t.equal(usageNotice(null), null);
  t.equal(usageNotice({ ...exit, usage: null }), null);
  t.equal(usageNotice({ ...exit, usage: { utime: null, stime: null, maxrss: null, method: { cpu: null, maxrss: null } } }), null);
  t.equal(
    usageNotice({ ...exit, usage: { utime: 1.25, stime: 0.5, maxrss: 3 * 1024 * 1024, method: { cpu: 'proc', maxrss: 'proc' } } }),
    'used cpu 1.75 s, peak memory 3.0 MB',
  );
});
