import t from 'tap';
import { Child } from '../../lib/os/child.js';
import { groupHasLiveMembers, liveGroupMembers, listProcesses, sharedProcessList } from '../../lib/os/proc.js';
import { waitFor } from '../helpers/wait.js';

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

t.test('many children stopped at once all stop, grandchildren included', async (t) => {
  // Each group: the shell, a grandchild that ignores SIGTERM, and the watchdog.
  const kids = Array.from(
    { length: 40 },
    () => new Child({ command: 'sh -c "trap \'\' TERM; sleep 300" & echo up; wait', cwd: '/tmp', env, onLine: () => {} }),
  );
  await waitFor(() => kids.every((c) => liveGroupMembers(c.pid!).length >= 3), 'every tree to be up', 60_000);
  await Promise.all(kids.map((c) => c.stop(200)));
  const all = listProcesses();
  for (const c of kids) t.same(liveGroupMembers(c.pid!, all), [], `group ${c.pid} is gone`);
  for (const c of kids) t.equal((await c.exited).signal, 'SIGTERM');
});

t.test('callers waiting at the same time share one /proc pass', async (t) => {
  const [a, b, c] = await Promise.all([sharedProcessList(), sharedProcessList(), sharedProcessList()]);
  t.equal(a, b);
  t.equal(b, c);
  t.ok(
    a.some((p) => p.pid === process.pid),
    'the pass sees this process',
  );
  const later = await sharedProcessList();
  t.not(later, a, 'a later caller gets a fresh pass');
});

t.test('groupHasLiveMembers: true while a member lives, false once only zombies or nothing are left', async (t) => {
  const c = new Child({ command: 'sleep 300 & sleep 300 & wait', cwd: '/tmp', env, onLine: () => {} });
  await waitFor(() => liveGroupMembers(c.pid!).length >= 4, 'shell, two sleeps and the watchdog');
  t.equal(await groupHasLiveMembers(c.pid!), true);
  c.signal('SIGKILL');
  await c.exited;
  await waitFor(async () => !(await groupHasLiveMembers(c.pid!)), 'the group to be gone');
  t.same(liveGroupMembers(c.pid!), []);
});
