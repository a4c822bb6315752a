import t from 'tap';
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DesiredState, StoreWriteError, type DesiredProcess } from '../../lib/store/desired.js';
import { GroupRecords, isStale, sweepStaleGroups } from '../../lib/store/groups.js';
import { acquireLock, LockError } from '../../lib/store/lock.js';
import { Store, StoreOpenError } from '../../lib/store/store.js';
import { liveGroupMembers, listProcesses, readProc } from '../../lib/os/proc.js';
import { waitFor } from '../helpers/wait.js';

const proc = (slug: string, extra: Partial<DesiredProcess> = {}): DesiredProcess => ({
  slug,
  app: slug.split('.')[0],
  node: slug.split('.').slice(1).join('.'),
  processType: 'web',
  sourceUrl: 'http://example.test/a.tgz',
  env: { SECRET: 's3cret', EMPTY: '' },
  port: 40000,
  createdAt: '2024-01-01T00:00:00.000Z',
  ...extra,
});

t.test('desired state: changes survive reopening, in order', async (t) => {
  const dir = t.testdir();
  const warnings: string[] = [];
  const d = await DesiredState.open(dir, (w) => warnings.push(w));
  // Concurrent changes share commits; each resolves only once it is on disk.
  await Promise.all([d.put(proc('a.web.0')), d.put(proc('a.web.1')), d.put(proc('b.web.0', { port: 40001 }))]);
  await d.remove('a.web.1');
  await d.put(proc('b.web.0', { port: 40001, archive: 'ff'.repeat(32) }));
  t.same(
    d
      .all()
      .map((p) => p.slug)
      .sort(),
    ['a.web.0', 'b.web.0'],
  );
  await d.close();
  t.equal(statSync(join(dir, 'desired.journal')).mode & 0o777, 0o600, 'env values are secrets: owner only');

  const again = await DesiredState.open(dir, (w) => warnings.push(w));
  t.same(
    again
      .all()
      .map((p) => p.slug)
      .sort(),
    ['a.web.0', 'b.web.0'],
  );
  t.same(again.get('b.web.0'), proc('b.web.0', { port: 40001, archive: 'ff'.repeat(32) }));
  t.same(again.get('a.web.0')?.env, { SECRET: 's3cret', EMPTY: '' });
  t.same(warnings, []);
  await again.close();
});

t.test('desired state: a deferred change (putLater) is written at close or by a later put, and never after a remove', async (t) => {
  const dir = t.testdir();
  const d = await DesiredState.open(dir, () => {});
  const a = proc('a.web.0');
  const b = proc('b.web.0');
  const c = proc('c.web.0');
  await Promise.all([d.put(a), d.put(b), d.put(c)]);
  a.restarts = 3;
  d.putLater(a);
  a.restarts = 4; // the record as it is when written counts
  b.restarts = 7;
  d.putLater(b);
  await d.remove('b.web.0');
  c.restarts = 2;
  d.putLater(c);
  c.restarts = 5;
  await d.put(c);
  t.equal(
    readFileSync(join(dir, 'desired.journal'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"restarts"')).length,
    1,
    'only the put so far',
  );
  await d.close();
  const again = await DesiredState.open(dir, () => {});
  t.equal(again.get('a.web.0')?.restarts, 4, 'written at close');
  t.equal(again.get('b.web.0'), undefined, 'a removed process does not come back');
  t.equal(again.get('c.web.0')?.restarts, 5);
  await again.close();
});

t.test('desired state: a torn final journal line is cut with one warning; damage is skipped', async (t) => {
  const dir = t.testdir();
  const d = await DesiredState.open(dir, () => {});
  await d.put(proc('a.web.0'));
  await d.put(proc('a.web.1'));
  await d.close();
  const journal = join(dir, 'desired.journal');
  const good = readFileSync(journal, 'utf8');
  appendFileSync(journal, '{"op":"put","process":{"slug":"a.web.2","app":"a"');
  const warnings: string[] = [];
  const again = await DesiredState.open(dir, (w) => warnings.push(w));
  t.same(
    again.all().map((p) => p.slug),
    ['a.web.0', 'a.web.1'],
    'the torn change was never acknowledged: it is gone',
  );
  t.equal(warnings.length, 1);
  t.match(warnings[0], /cut a torn final line \(\d+ bytes\) from .*desired\.journal/);
  t.equal(readFileSync(journal, 'utf8'), good, 'the journal is repaired in place');
  await again.put(proc('a.web.3'));
  await again.close();

  // A damaged line in the middle (not something a crash produces, but a disk can): skipped, said once.
  writeFileSync(journal, good + 'garbage\n' + readFileSync(journal, 'utf8').slice(good.length));
  warnings.length = 0;
  const third = await DesiredState.open(dir, (w) => warnings.push(w));
  t.same(
    third.all().map((p) => p.slug),
    ['a.web.0', 'a.web.1', 'a.web.3'],
  );
  t.equal(warnings.length, 1);
  t.match(warnings[0], /skipped 1 unreadable line/);
  await third.close();
});

t.test('desired state: the journal is compacted into a snapshot, and a half-written snapshot is ignored', async (t) => {
  const dir = t.testdir();
  const d = await DesiredState.open(dir, () => {});
  const big = { BIG: 'x'.repeat(20_000) };
  for (let i = 0; i < 10; i++) await d.put(proc(`a.web.${i}`, { env: big }));
  for (let i = 0; i < 5; i++) await d.remove(`a.web.${i}`);
  await d.close();
  const snapshot = JSON.parse(readFileSync(join(dir, 'desired.json'), 'utf8'));
  t.equal(snapshot.version, 1);
  t.ok(statSync(join(dir, 'desired.journal')).size < 64 * 1024, 'journal emptied by compaction');
  writeFileSync(join(dir, 'desired.json.tmp-123-456'), '{"version":1,"proc');
  const again = await DesiredState.open(dir, () => {});
  t.same(
    again
      .all()
      .map((p) => p.slug)
      .sort(),
    ['a.web.5', 'a.web.6', 'a.web.7', 'a.web.8', 'a.web.9'],
  );
  t.equal(again.get('a.web.9')?.env.BIG.length, 20_000);
  await again.close();
  t.throws(() => statSync(join(dir, 'desired.json.tmp-123-456')), 'leftover temp file removed');
});

t.test('desired state: a failed write (disk full) rejects and changes nothing', async (t) => {
  const dir = t.testdir();
  const d = await DesiredState.open(dir, () => {});
  await d.put(proc('a.web.0'));
  await d.close();
  rmSync(join(dir, 'desired.journal'));
  symlinkSync('/dev/full', join(dir, 'desired.journal'));
  const warnings: string[] = [];
  const full = await DesiredState.open(dir, (w) => warnings.push(w));
  t.match(warnings, [/desired\.journal is not a regular file/]);
  await t.rejects(full.put(proc('a.web.1')), StoreWriteError);
  await t.rejects(full.remove('a.web.0'), /cannot save the desired state: ENOSPC/);
  t.same(full.all(), [], 'nothing was applied');
  await full.close();
});

/** A detached `sleep` with a child of its own: a process group, like one the agent starts. */
function group(t: { teardown(fn: () => void): void }) {
  const leader = spawn('/bin/sh', ['-c', 'sleep 600 & exec sleep 600'], { detached: true, stdio: 'ignore' });
  t.teardown(() => {
    try {
      process.kill(-leader.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return leader.pid!;
}

t.test('sweep: kills recorded groups that are still the same processes, leaves others alone', async (t) => {
  const mine = group(t);
  const reused = group(t);
  await waitFor(() => liveGroupMembers(mine).length === 2 && liveGroupMembers(reused).length === 2, 'groups started');
  const start = readProc(mine)!.starttime;
  const records = [
    { pgid: mine, starttime: start, slug: 'a.web.0', kind: 'child' as const },
    // Same pgid number as a live group, but another start time: the pid was reused, not ours.
    { pgid: reused, starttime: readProc(reused)!.starttime + 1, slug: 'a.web.1', kind: 'child' as const },
  ];
  t.ok(isStale(records[0], listProcesses()));
  t.notOk(isStale(records[1], listProcesses()));
  const killed = await sweepStaleGroups(records);
  t.same(
    killed.map((g) => g.pgid),
    [mine],
  );
  t.same(liveGroupMembers(mine), [], 'the whole group is gone');
  t.equal(liveGroupMembers(reused).length, 2, 'the other group is untouched');
});

t.test('sweep: a group whose leader died still has members to kill', async (t) => {
  const pgid = group(t);
  await waitFor(() => liveGroupMembers(pgid).length === 2, 'group started');
  const record = { pgid, starttime: readProc(pgid)!.starttime, slug: 'a.web.0', kind: 'build' as const };
  process.kill(pgid, 'SIGKILL');
  await waitFor(() => liveGroupMembers(pgid).length === 1, 'leader gone, member left');
  t.ok(isStale(record, listProcesses()));
  await sweepStaleGroups([record]);
  t.same(liveGroupMembers(pgid), []);
});

t.test('group records: written on change, read back; damage means none', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'groups.json');
  const g = new GroupRecords(file, () => {});
  g.add(process.pid, 'self.web.0', 'child');
  g.add(999_999_999, 'gone.web.0', 'child'); // no such process: not recorded
  await g.flush();
  const back = await GroupRecords.readPrevious(file, () => {});
  t.same(back, [{ pgid: process.pid, starttime: readProc(process.pid)!.starttime, slug: 'self.web.0', kind: 'child' }]);
  g.remove(process.pid);
  await g.flush();
  t.same(await GroupRecords.readPrevious(file, () => {}), []);
  writeFileSync(file, '[{"pgid":');
  const warnings: string[] = [];
  t.same(await GroupRecords.readPrevious(file, (w) => warnings.push(w)), []);
  t.match(warnings, [/groups\.json is damaged/]);
});

t.test('group records: thousands of them, written from their pieces, read back exactly; the file is private', async (t) => {
  const file = join(t.testdir(), 'groups.json');
  const g = new GroupRecords(file, (w) => t.fail(w));
  // More records than one writev takes at once (IOV_MAX is 1024 on Linux).
  for (let i = 0; i < 1500; i++) g.add(100_000 + i, `app.web.${i}`, i % 2 ? 'child' : 'build', 1_000 + i);
  await g.flush();
  const all = await GroupRecords.readPrevious(file, (w) => t.fail(w));
  t.equal(all.length, 1500);
  t.same(all[0], { pgid: 100_000, starttime: 1_000, slug: 'app.web.0', kind: 'build' });
  t.same(all[1499], { pgid: 101_499, starttime: 2_499, slug: 'app.web.1499', kind: 'child' });
  t.equal(statSync(file).mode & 0o777, 0o600);
  // The first record, whose separator is left out, goes: the next one becomes first.
  g.remove(100_000);
  for (let i = 1; i < 1500; i += 2) g.remove(100_000 + i);
  await g.flush();
  const left = await GroupRecords.readPrevious(file, (w) => t.fail(w));
  t.same(
    left.map((r) => r.pgid),
    Array.from({ length: 749 }, (_, k) => 100_002 + 2 * k),
  );
  t.same(JSON.parse(readFileSync(file, 'utf8')).length, 749, 'plain JSON');
});

t.test('lock: one agent per state directory; a dead holder is taken over', async (t) => {
  const dir = t.testdir();
  const release = await acquireLock(dir);
  // Another live process holding the lock (this test's parent) is refused.
  const parent = readProc(process.ppid)!;
  await release();
  writeFileSync(join(dir, 'agent.lock'), JSON.stringify({ pid: parent.pid, starttime: parent.starttime }));
  await t.rejects(acquireLock(dir), LockError);
  await t.rejects(acquireLock(dir), /is in use by another drover agent \(pid \d+\)/);
  // The same pid with another start time is a dead agent whose pid was reused.
  writeFileSync(join(dir, 'agent.lock'), JSON.stringify({ pid: parent.pid, starttime: parent.starttime + 1 }));
  const again = await acquireLock(dir);
  t.same(JSON.parse(readFileSync(join(dir, 'agent.lock'), 'utf8')).pid, process.pid);
  await again();
  t.throws(() => statSync(join(dir, 'agent.lock')), 'released');
});

t.test('store: an unusable state directory is a clear error', async (t) => {
  const dir = t.testdir({ 'a-file': 'not a directory' });
  const open = (d: string) => Store.open({ dir: d, eventsMaxBytes: 1 << 20, eventsRetentionMs: 1000, warn: () => {} });
  await t.rejects(open(join(dir, 'a-file')), StoreOpenError);
  await t.rejects(
    open(join(dir, 'a-file', 'sub')),
    /state directory .*a-file\/sub is not usable: a path component is not a directory \(ENOTDIR\)/,
  );
  await t.rejects(open('/proc/drover-state'), /is not usable: /);
  const ok = await open(join(dir, 'state'));
  await t.rejects(open(join(dir, 'state')), /in use by another drover agent/);
  await ok.close();
});
