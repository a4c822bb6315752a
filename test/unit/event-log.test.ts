import t from 'tap';
import { appendFileSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { followLog } from '../../lib/store/event-log/follow.js';
import { cursorAt, lineId, segmentName } from '../../lib/store/event-log/line.js';
import { EventLog, type EventLogOptions } from '../../lib/store/event-log/log.js';

const open = (dir: string, extra: Partial<EventLogOptions> = {}) => EventLog.open({ dir, maxBytes: 64 * 1024 * 1024, ...extra });

/** Every event readable from `since` on, parsed. */
async function readAll(log: EventLog, since = 0): Promise<any[]> {
  const out: any[] = [];
  for await (const batch of followLog(log, since, { follow: false, signal: new AbortController().signal })) {
    for (const line of batch!) out.push(JSON.parse(line));
  }
  return out;
}

function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

t.test('events are numbered, written in batches, and read back from memory and disk', async (t) => {
  const dir = t.testdir();
  const log = await open(dir, { recentEvents: 10 });
  t.equal(log.append('state', { from: null, to: 'pending', why: 'created' }), 1);
  for (let i = 0; i < 1000; i++) log.output(i % 2 ? 'stderr' : 'stdout', `line ${i} "quoted" \u00e9`);
  t.equal(log.append('agent_restarted'), 1002);
  t.equal(log.writtenId, 0, 'nothing is written synchronously');
  await log.flush();
  t.equal(log.writtenId, 1002);
  const files = readdirSync(dir);
  t.same(files, [segmentName(1)]);
  const onDisk = readFileSync(join(dir, files[0]), 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(onDisk.length, 1002);
  t.match(onDisk[0], { id: 1, type: 'state', from: null, to: 'pending', why: 'created' });
  t.match(onDisk[0].time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.same(onDisk[1001], { id: 1002, time: onDisk[1001].time, type: 'agent_restarted' });
  t.same(onDisk[2], { id: 3, time: onDisk[2].time, type: 'output', stream: 'stderr', text: 'line 1 "quoted" \u00e9' });

  // From disk (older than the 10-event window), across into memory, and from an arbitrary id.
  const all = await readAll(log);
  t.same(
    all.map((e) => e.id),
    Array.from({ length: 1002 }, (_, i) => i + 1),
  );
  const rest = await readAll(log, 995);
  t.same(
    rest.map((e) => e.id),
    [996, 997, 998, 999, 1000, 1001, 1002],
  );
  const mid = await readAll(log, 500);
  t.equal(mid[0].id, 501);
  t.equal(mid.length, 502);
  await log.close();
  t.equal(log.append('late'), 0, 'a closed log takes no more events');
});

t.test('ids continue after reopening; a torn final line is cut with one warning', async (t) => {
  const dir = t.testdir();
  const log = await open(dir);
  for (let i = 0; i < 5; i++) log.output('stdout', `a${i}`);
  await log.close();
  // A crash mid-write: half a line at the end.
  appendFileSync(join(dir, segmentName(1)), '{"id":6,"time":"2024-01-01T00:00:00.000Z","type":"out');
  const warnings: string[] = [];
  const again = await open(dir, { warn: (w) => warnings.push(w), name: 'app.web.0' });
  t.equal(warnings.length, 1);
  t.match(warnings[0], /app\.web\.0: cut \d+ bytes of a torn or damaged final event/);
  t.equal(again.lastId, 5);
  t.equal(again.output('stdout', 'b'), 6, 'the torn id is handed out again: no client ever saw it');
  await again.close();
  const ids = (await readAll(again)).map((e) => e.id);
  t.same(ids, [1, 2, 3, 4, 5, 6]);
  t.ok(readFileSync(join(dir, segmentName(1)), 'utf8').endsWith('"text":"b"}\n'));

  // A final line that ends in a newline but is garbage (e.g. zeros after power loss) is cut too.
  appendFileSync(join(dir, segmentName(1)), '\0\0\0\0\n');
  warnings.length = 0;
  const third = await open(dir, { warn: (w) => warnings.push(w) });
  t.equal(third.lastId, 6);
  t.equal(warnings.length, 1);
  await third.close();
  const quiet: string[] = [];
  await (await open(dir, { warn: (w) => quiet.push(w) })).close();
  t.same(quiet, [], 'a clean log opens without warnings');
});

t.test('the disk cap drops the oldest segments; readers are told where the log starts', async (t) => {
  const dir = t.testdir();
  const cap = 256 * 1024;
  const log = await open(dir, { maxBytes: cap });
  const text = 'x'.repeat(200);
  for (let i = 0; i < 20_000; i++) {
    log.output('stdout', `${i} ${text}`);
    if (i % 1000 === 0) await log.flush();
  }
  await log.close();
  t.ok(dirBytes(dir) <= cap, `log is ${dirBytes(dir)} bytes, cap ${cap}`);
  t.ok(readdirSync(dir).length > 1, 'several segments');
  t.ok(log.firstId > 1, `first kept id ${log.firstId}`);
  const all = await readAll(log);
  t.equal(all[0].id, log.firstId, 'reading from 0 starts at the first kept event');
  t.equal(all.at(-1).id, 20_000);
  t.same(
    all.map((e) => e.id),
    Array.from({ length: all.length }, (_, i) => log.firstId + i),
    'no gap after the first kept id',
  );
  t.equal(all.at(-1).text, `19999 ${text}`);

  const reopened = await open(dir, { maxBytes: cap });
  t.equal(reopened.firstId, Number(readdirSync(dir).sort()[0].slice(0, 16)), 'after a restart the log starts at its first segment');
  t.equal(reopened.lastId, 20_000);
  await reopened.close();
});

t.test('findTail finds the first of the last n events of a type, in memory or on disk', async (t) => {
  const dir = t.testdir();
  const log = await open(dir, { recentEvents: 5, segmentBytes: 16 * 1024, maxBytes: 1024 * 1024 });
  for (let i = 0; i < 3000; i++) {
    if (i % 3 === 0) log.append('state', { from: 'a', to: 'b', why: '"type":"output"' });
    else log.output('stdout', `line ${i}`);
  }
  await log.flush();
  const tailStart = async (n: number) => {
    const id = await log.findTail(n, 'output');
    return (await readAll(log, id - 1)).filter((e) => e.type === 'output').map((e) => e.text);
  };
  t.same(await tailStart(2), ['line 2998', 'line 2999']);
  t.same(await tailStart(3), ['line 2996', 'line 2998', 'line 2999']);
  const many = await tailStart(1500);
  t.equal(many.length, 1500);
  const outputs = Array.from({ length: 3000 }, (_, i) => i).filter((i) => i % 3 !== 0);
  t.equal(many[0], `line ${outputs.at(-1500)}`);
  t.equal((await tailStart(100_000)).length, 2000, 'asking for more than there is gives everything');
  t.equal(await log.findTail(0, 'output'), log.writtenId + 1);
  await log.close();
});

t.test('a follower gets every event exactly once while the producer keeps going', async (t) => {
  const dir = t.testdir();
  const log = await open(dir, { recentEvents: 50, recentBytes: 4096 });
  const ac = new AbortController();
  const seen: number[] = [];
  const reader = (async () => {
    for await (const batch of followLog(log, 0, { follow: true, signal: ac.signal })) {
      for (const line of batch!) seen.push(lineId(line));
    }
  })();
  let produced = 0;
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 500; i++) (log.output('stdout', `r${round} l${i}`), produced++);
    await new Promise((r) => setImmediate(r));
  }
  await log.close();
  await reader;
  t.equal(seen.length, produced);
  t.ok(
    seen.every((id, i) => id === i + 1),
    'in order, no gap, no duplicate',
  );
});

t.test('a write failure (disk full) is reported, loses only that batch, and the log goes on', async (t) => {
  const dir = t.testdir();
  // The first segment's writes fail with ENOSPC; once it cannot even be truncated back, the log
  // moves on to a fresh segment, which works.
  symlinkSync('/dev/full', join(dir, segmentName(1)));
  const warnings: string[] = [];
  const log = await open(dir, { warn: (w) => warnings.push(w), name: 'x.web.0' });
  log.output('stdout', 'lost to a full disk');
  await log.flush();
  log.output('stdout', 'saved');
  await log.flush();
  t.equal(warnings.length, 2, warnings.join('\n'));
  t.match(warnings[0], /x\.web\.0: cannot write the event log \(ENOSPC\)/);
  t.match(warnings[1], /writes work again; 1 events could not be saved/);
  const events = await readAll(log);
  t.match(events, [
    { id: 1, type: 'output', text: 'lost to a full disk' }, // still in memory
    { id: 2, type: 'error', message: /ENOSPC/ },
    { id: 3, type: 'error', message: /work again/ },
    { id: 4, type: 'output', text: 'saved' },
  ]);
  t.equal(log.writtenId, log.lastId, 'readers are not left waiting for lost events');
  await log.close();
  const reopened = await open(dir);
  t.same(
    (await readAll(reopened)).map((e) => e.id),
    [2, 3, 4],
    'on disk: everything but the lost batch',
  );
  await reopened.close();
});

t.test('producers are asked to pause when the queue is high, and to go on once it drains', async (t) => {
  const dir = t.testdir();
  const log = await open(dir, { highWaterBytes: 64 * 1024, maxQueuedBytes: 128 * 1024 });
  const calls: boolean[] = [];
  log.onPressure((c) => calls.push(c));
  let dropped = 0;
  for (let i = 0; i < 10_000; i++) if (log.output('build', `${i} ${'y'.repeat(100)}`) === 0) dropped++;
  t.same(calls, [true]);
  t.ok(dropped > 0, `lines over the hard cap are dropped (${dropped})`);
  await log.flush();
  t.same(calls, [true, false]);
  const events = await readAll(log);
  const note = events.find((e) => e.type === 'lines_dropped');
  t.equal(note?.count, dropped, 'the drop is recorded with its count');
  t.equal(events.filter((e) => e.type === 'output').length, 10_000 - dropped);
  await log.close();
});

t.test('reading from a cursor continues where the previous read stopped', async (t) => {
  const dir = t.testdir();
  const log = await open(dir, { recentEvents: 1 });
  for (let i = 0; i < 100; i++) log.output('stdout', `n${i}`);
  await log.flush();
  let cursor = cursorAt(1);
  const ids: number[] = [];
  for (;;) {
    const r = await log.read(cursor, 200);
    if (!r.lines.length) break;
    ids.push(...r.lines.map((l) => lineId(l)));
    cursor = r.next;
  }
  t.same(
    ids,
    Array.from({ length: 100 }, (_, i) => i + 1),
  );
  writeFileSync(join(dir, 'unrelated.txt'), 'ignored');
  await log.close();
  t.equal((await open(dir)).lastId, 100, 'other files in the directory are ignored');
});

t.test('the registry: a new log is made fresh; a retired one taken up again continues and loses its deletion mark', async (t) => {
  const { EventLogs } = await import('../../lib/store/event-log/registry.js');
  const root = t.testdir();
  const warnings: string[] = [];
  const logs = new EventLogs(root, { maxBytes: 1024 * 1024, retentionMs: 60_000, warn: (w) => warnings.push(w) });
  const first = await logs.open('app.web.0');
  t.ok(first.fresh, 'a directory made just now');
  first.append('state', { from: null, to: 'pending', why: 'created' });
  first.append('state', { from: 'pending', to: 'downloading', why: 'started' });
  await first.flush();
  await logs.retire('app.web.0');
  t.ok(readdirSync(join(root, 'app.web.0')).includes('deleted.json'), 'retired: marked deleted');
  const again = await logs.open('app.web.0');
  t.notOk(again.fresh, 'the retained directory is taken up');
  t.notOk(readdirSync(join(root, 'app.web.0')).includes('deleted.json'), 'the mark is gone');
  t.equal(again.append('state', { from: null, to: 'pending', why: 'created' }), 3, 'ids continue');
  await again.flush();
  t.same(
    (await readAll(again)).map((e) => e.id),
    [1, 2, 3],
  );
  await again.close();
  t.same(warnings, []);
});
