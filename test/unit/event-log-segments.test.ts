import t from 'tap';
import { existsSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cursorAt, eventLine, lineId, outputLine, segmentName, type Cursor } from '../../lib/store/event-log/line.js';
import { Segments, type SegmentsOptions } from '../../lib/store/event-log/segments.js';

const open = (dir: string, extra: Partial<SegmentsOptions> = {}) =>
  Segments.open({ dir, maxBytes: 64 * 1024 * 1024, segmentBytes: 16 * 1024, ...extra });

/** Writes events from..from+n-1 as one batch; returns their lines. */
async function write(segs: Segments, from: number, n: number, text = 'x'): Promise<string[]> {
  const lines = Array.from({ length: n }, (_, i) => outputLine(from + i, 'stdout', `${text}${from + i}`));
  const buf = Buffer.from(lines.join(''));
  await segs.write([buf], buf.length, from, n);
  return lines;
}

/** Every line from `id` up to `upTo`, read in small steps. */
async function readAll(segs: Segments, id: number, upTo: number, inMemory = upTo + 1): Promise<string[]> {
  const out: string[] = [];
  let cursor: Cursor = cursorAt(id);
  for (let i = 0; i < 10_000; i++) {
    const r = await segs.read(cursor.id, cursor, 300, upTo, inMemory);
    out.push(...r.lines);
    if (r.next.id > upTo) break;
    if (!r.lines.length && r.next.id === cursor.id && r.next.seg === cursor.seg && r.next.pos === cursor.pos) break;
    cursor = r.next;
  }
  return out;
}

t.test('a fresh directory has no segments; the first write starts one named by its first id', async (t) => {
  const dir = join(t.testdir(), 'log');
  const segs = await open(dir);
  t.equal(segs.lastId, 0);
  t.equal(segs.firstStart, undefined);
  t.same(readdirSync(dir), []);
  const lines = await write(segs, 1, 3);
  t.same(readdirSync(dir), [segmentName(1)]);
  t.equal(readFileSync(join(dir, segmentName(1)), 'utf8'), lines.join(''));
  t.equal(segs.firstStart, 1);
  t.equal(segs.bytes, Buffer.byteLength(lines.join('')));
  await segs.close();
  t.equal((await open(dir)).lastId, 3, 'reopened, the last id is found');
});

t.test('a new segment starts once the active one reaches the segment size', async (t) => {
  const dir = t.testdir();
  const segs = await open(dir, { segmentBytes: 16 * 1024 });
  let id = 1;
  while (id < 600) {
    await write(segs, id, 50, 'y'.repeat(40));
    id += 50;
  }
  await segs.close();
  const files = readdirSync(dir).sort();
  t.ok(files.length > 1, `${files.length} segments`);
  let expect = 1;
  for (const f of files) {
    const ids = readFileSync(join(dir, f), 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => lineId(l));
    t.equal(f, segmentName(ids[0]), 'named by its first id');
    t.equal(ids[0], expect, 'continues where the previous one ended');
    expect = ids.at(-1)! + 1;
  }
  t.equal(expect, 601);
  t.same(
    (await readAll(segs, 1, 600)).map((l) => lineId(l)),
    Array.from({ length: 600 }, (_, i) => i + 1),
    'read across segments',
  );
});

t.test('the disk cap drops the oldest segments, never the active one', async (t) => {
  const dir = t.testdir();
  const segs = await open(dir, { segmentBytes: 16 * 1024, maxBytes: 64 * 1024 });
  let id = 1;
  while (id < 5000) {
    await write(segs, id, 100, 'z'.repeat(40));
    id += 100;
  }
  await segs.close();
  const files = readdirSync(dir);
  const onDisk = files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
  t.ok(onDisk <= 64 * 1024, `${onDisk} bytes on disk`);
  t.equal(segs.bytes, onDisk, 'the count matches the files');
  t.ok(segs.firstStart! > 1);
  t.equal(segmentName(segs.firstStart!), files.sort()[0]);
  const ids = (await readAll(segs, 1, 5000)).map((l) => lineId(l));
  t.equal(ids[0], segs.firstStart, 'reading from before the first segment starts at it');
  t.equal(ids.at(-1), 5000);
});

t.test('opening repairs a torn tail, drops empty newer segments, and keeps an empty first one', async (t) => {
  const dir = t.testdir();
  const warnings: string[] = [];
  const segs = await open(dir);
  const lines = await write(segs, 1, 4);
  await segs.close();
  const file = join(dir, segmentName(1));
  writeFileSync(file, lines.join('') + '{"id":5,"time":"2024-01-01T00:00:00.000Z","ty');
  // A newer segment holding nothing valid: torn in its first line.
  writeFileSync(join(dir, segmentName(5)), '{"id":5,"ti');
  const again = await open(dir, { warn: (w) => warnings.push(w), name: 'p' });
  t.equal(again.lastId, 4);
  t.same(readdirSync(dir), [segmentName(1)], 'the empty newer segment is gone');
  t.equal(readFileSync(file, 'utf8'), lines.join(''), 'the torn line is cut');
  t.equal(warnings.length, 2, warnings.join('\n'));
  t.match(warnings[0], /^drover: p: no complete event in .*0000000000000005\.ndjson; emptied it$/);
  t.match(warnings[1], /^drover: p: cut \d+ bytes of a torn or damaged final event/);

  // Only garbage in the first segment: it is emptied but kept, and ids resume at its start.
  const dir2 = t.testdir();
  writeFileSync(join(dir2, segmentName(42)), 'not an event\n\0\0');
  const third = await open(dir2, { warn: (w) => warnings.push(w) });
  t.equal(third.lastId, 41);
  t.equal(third.firstStart, 42);
  t.equal(statSync(join(dir2, segmentName(42))).size, 0);
  await write(third, 42, 2);
  await third.close();
  t.same(
    (await readAll(third, 1, 43)).map((l) => lineId(l)),
    [42, 43],
  );
});

t.test('a torn tail after a line longer than the first look-back window is still found', async (t) => {
  const dir = t.testdir();
  const segs = await open(dir, { segmentBytes: 64 * 1024 * 1024 });
  const long = eventLine(1, 'big', { text: 'q'.repeat(1_500_000) });
  await segs.write([Buffer.from(long)], Buffer.byteLength(long), 1, 1);
  await segs.close();
  writeFileSync(join(dir, segmentName(1)), long + '{"id":2,');
  const again = await open(dir);
  t.equal(again.lastId, 1);
  t.equal(statSync(join(dir, segmentName(1))).size, Buffer.byteLength(long));
});

t.test('reads stop at upTo and resume at the cursor position', async (t) => {
  const dir = t.testdir();
  const segs = await open(dir, { segmentBytes: 1024 * 1024 });
  const lines = await write(segs, 1, 100);
  const r = await segs.read(1, cursorAt(1), 1, 100, 101);
  t.ok(r.lines.length >= 1);
  t.same(r.lines, lines.slice(0, r.lines.length));
  t.equal(r.next.seg, 1);
  t.equal(r.next.pos, Buffer.byteLength(lines.slice(0, r.next.id - 1).join('')), 'the cursor holds the byte offset of the next line');
  const upTo = await readAll(segs, 10, 20);
  t.same(upTo, lines.slice(9, 20), 'nothing past upTo (not yet known to be written)');
  t.same(await readAll(segs, 1, 100), lines);
  await segs.close();
});

t.test('a vanished segment and ids lost to a failed write are skipped over', async (t) => {
  const dir = t.testdir();
  const segs = await open(dir, { segmentBytes: 16 * 1024 });
  let id = 1;
  while (id < 1000) {
    await write(segs, id, 100, 'v'.repeat(40));
    id += 100;
  }
  await segs.close();
  const files = readdirSync(dir).sort();
  unlinkSync(join(dir, files[1]));
  const second = Number(files[1].slice(0, 16));
  const third = Number(files[2].slice(0, 16));
  const r = await segs.read(second, cursorAt(second), 1000, 1000, 1001);
  t.same(r.lines, []);
  t.equal(r.next.id, third, 'moves on to the next segment');

  // The last segment ends early (its last ids were never saved): skip to what is in memory.
  const end = await segs.read(1001, cursorAt(1001), 1000, 1005, 1003);
  t.same(end.lines, []);
  t.equal(end.next.id, 1003);
});

t.test('a write failure is reported once, loses only its batch, and recovery is reported', async (t) => {
  const dir = t.testdir();
  symlinkSync('/dev/full', join(dir, segmentName(1)));
  const warnings: string[] = [];
  const reports: string[] = [];
  const segs = await open(dir, { warn: (w) => warnings.push(w), name: 'x.web.0', report: (m) => reports.push(m) });
  await write(segs, 1, 2);
  t.equal(reports.length, 1, 'reported');
  t.match(reports[0], /^cannot write the event log \(ENOSPC\)/);
  t.same(
    warnings,
    reports.map((m) => `drover: x.web.0: ${m}`),
    'and warned, with the name',
  );
  // /dev/full cannot be truncated back: the next write starts a fresh segment, which works.
  await write(segs, 3, 1);
  t.equal(reports.length, 2);
  t.match(reports[1], /writes work again; 2 events could not be saved/);
  t.ok(existsSync(join(dir, segmentName(3))));
  await write(segs, 4, 1);
  t.equal(reports.length, 2, 'nothing more to report');
  await segs.close();
  t.same(
    (await readAll(segs, 1, 4)).map((l) => lineId(l)),
    [3, 4],
    'only the failed batch is lost',
  );
});

t.test('lastOfType finds the first of the last n events of a type on disk, newest segments first', async (t) => {
  const dir = t.testdir();
  const segs = await open(dir, { segmentBytes: 16 * 1024 });
  for (let id = 1; id <= 900; id++) {
    const line = id % 3 === 0 ? eventLine(id, 'state', { why: '"type":"output"' }) : outputLine(id, 'stdout', `o${id}`);
    await segs.write([Buffer.from(line)], Buffer.byteLength(line), id, 1);
  }
  t.ok(readdirSync(dir).length > 1);
  t.same(await segs.lastOfType('state', 2, 901), { count: 2, first: 897 });
  t.same(await segs.lastOfType('output', 3, 901), { count: 3, first: 896 }, '899, 898, 896');
  t.same(await segs.lastOfType('state', 2, 800), { count: 2, first: 795 }, 'only ids below `below`');
  t.same(await segs.lastOfType('state', 10_000, 901), { count: 300, first: 3 }, 'all there are');
  t.same(await segs.lastOfType('none', 5, 901), { count: 0, first: 901 });
  await segs.close();
});

t.test('remove deletes the directory', async (t) => {
  const dir = join(t.testdir(), 'log');
  const segs = await open(dir);
  await write(segs, 1, 1);
  await segs.remove();
  t.notOk(existsSync(dir));
});
