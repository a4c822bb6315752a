import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { Cgroups, ownCgroupDirs } from '../../lib/os/cgroup.js';
import { waitFor } from '../helpers/wait.js';

const hybridMounts = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

t.test("finds this process's own cgroups: hybrid v1 + v2", async (t) => {
  const own = ownCgroupDirs({
    mountinfo: hybridMounts,
    selfCgroup: '4:memory:/box/42\n2:cpu,cpuacct:/\n0::/user.slice\n',
  });
  t.equal(own.v2, '/sys/fs/cgroup/unified/user.slice');
  t.equal(own.v1.get('memory'), '/sys/fs/cgroup/memory/box/42');
  t.equal(own.v1.get('cpuacct'), '/sys/fs/cgroup/cpu,cpuacct');
});

t.test('pure v2, and a mount whose root is not "/" (a container sees a sub-tree)', async (t) => {
  const own = ownCgroupDirs({
    mountinfo: '30 23 0:26 /system.slice/box.scope /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate',
    selfCgroup: '0::/system.slice/box.scope/agent\n',
  });
  t.equal(own.v2, '/sys/fs/cgroup/agent');
  t.equal(own.v1.size, 0);
  const outside = ownCgroupDirs({
    mountinfo: '30 23 0:26 /other /sys/fs/cgroup rw - cgroup2 cgroup2 rw',
    selfCgroup: '0::/system.slice/x\n',
  });
  t.equal(outside.v2, null, 'our cgroup is not under that mount: not used');
  t.same(ownCgroupDirs({ mountinfo: '', selfCgroup: '' }), { v2: null, v1: new Map() });
  const spaced = ownCgroupDirs({ mountinfo: '30 23 0:26 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw', selfCgroup: '0::/a\n' });
  t.equal(spaced.v2, '/sys/fs/my cgroup/a', 'mountinfo escapes are decoded');
});

t.test('detection on this host gives a working cgroup or null, and cleans up after itself', async (t) => {
  const cg = Cgroups.detect();
  if (!cg) {
    t.comment('no usable cgroups here (no permission or no cgroupfs): runs are measured with wait4 or /proc');
    t.equal(Cgroups.detect({ mountinfo: '', selfCgroup: '' }), null);
    return;
  }
  t.comment(cg.describe());
  const run = cg.create()!;
  t.ok(run.procsFiles.length >= 1);
  const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
  t.teardown(() => sleeper.kill('SIGKILL'));
  t.ok(run.adopt(sleeper.pid!), 'a running process moved in');
  const dirs = run.procsFiles.map((f) => dirname(f));
  const cgLines = readFileSync(`/proc/${sleeper.pid}/cgroup`, 'utf8');
  for (const d of dirs) t.ok(cgLines.includes(basename(d)), `it is in ${d}`);
  const gone = new Promise((r) => sleeper.once('exit', (_c, sig) => r(sig)));
  run.remove();
  t.equal(await gone, 'SIGKILL', 'removing a run kills what is left in it');
  // A group is removable once its last member is gone; busy ones are retried, at the latest on close.
  cg.close();
  for (const d of dirs) {
    t.notOk(existsSync(d), `${d} removed`);
    t.notOk(existsSync(dirname(d)), `${dirname(d)} removed`);
  }
  t.equal(Cgroups.detect({ mountinfo: '', selfCgroup: '' }), null, 'nothing to detect from empty tables');
});

t.test('spare run groups are made ahead off the event loop, used by create(), and removed on close', async (t) => {
  const cg = Cgroups.detect();
  if (!cg) return t.comment('no usable cgroups here');
  const first = cg.create()!;
  const base = dirname(dirname(first.procsFiles[0]));
  const runsIn = () => readdirSync(base, { withFileTypes: true }).filter((e) => e.isDirectory()).length;
  await waitFor(() => runsIn() > 1, 'spare groups to be made');
  const second = cg.create()!;
  for (const f of second.procsFiles) t.equal(readFileSync(f, 'utf8'), '', `${dirname(f)} exists and is empty`);
  first.remove();
  await waitFor(() => first.procsFiles.every((f) => !existsSync(dirname(f))), 'the first run removed (asynchronously)');
  second.remove();
  cg.close();
  // Spares still being made when it closed are removed as they complete, and the base with them.
  await waitFor(() => !existsSync(base), 'the base, spares included, removed');
  t.pass('nothing left');
});

t.test("the runs' CPU counter moves when a run's process works", async (t) => {
  const cg = Cgroups.detect();
  if (!cg?.cpu) return t.comment('no cpu cgroup here');
  t.teardown(() => cg.close());
  const run = cg.create()!;
  // Moved in while stopped, so all of its work is counted in the run.
  const worker = spawn('sh', ['-c', 'kill -STOP $$; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 300'], {
    stdio: 'ignore',
  });
  t.teardown(() => worker.kill('SIGKILL'));
  await waitFor(() => readFileSync(`/proc/${worker.pid}/stat`, 'utf8').split(') ')[1].startsWith('T'), 'the worker to stop itself');
  t.ok(run.adopt(worker.pid!));
  const before = cg.cpuUsage();
  t.type(before, 'number');
  worker.kill('SIGCONT');
  await waitFor(() => readFileSync(`/proc/${worker.pid}/cmdline`, 'utf8').startsWith('sleep'), 'the loop to finish');
  const after = cg.cpuUsage()!;
  t.ok(after > before!, `it moved (${before} -> ${after})`);
  run.remove();
});
