import t from 'tap';
import { eventLine, lineId, outputLine } from '../../lib/store/event-log/line.js';
import { RecentWindow } from '../../lib/store/event-log/window.js';

/** Pushes events next..next+count-1 (outputs, with every third a state event). */
function fill(w: RecentWindow, from: number, count: number, text = 'x'): void {
  for (let id = from; id < from + count; id++)
    w.push(id % 3 === 0 ? eventLine(id, 'state', { to: 'running' }) : outputLine(id, 'stdout', `${text}${id}`));
}

t.test('an empty window starts at the next id', async (t) => {
  const w = new RecentWindow(101);
  t.equal(w.firstId, 101);
  t.same(w.read(101, 100, 1000), { lines: [], next: { id: 101, seg: -1, pos: 0 } }, 'nothing up to 100');
});

t.test('the window keeps the newest events by count', async (t) => {
  const w = new RecentWindow(1, { maxEvents: 10 });
  fill(w, 1, 25);
  t.equal(w.firstId, 16);
  for (let id = 16; id <= 25; id++) t.equal(lineId(w.get(id)), id);
});

t.test('the window keeps the newest events by size, but always the newest one', async (t) => {
  const w = new RecentWindow(1, { maxChars: 500 });
  fill(w, 1, 100);
  const held = 100 - w.firstId + 1;
  const chars = Array.from({ length: held }, (_, i) => w.get(w.firstId + i).length).reduce((a, b) => a + b, 0);
  t.ok(chars <= 500, `${chars} chars held`);
  t.ok(chars + 100 > 500, 'no more dropped than needed (a line is under 100 chars)');
  w.push(outputLine(101, 'stdout', 'y'.repeat(2000)));
  t.equal(w.firstId, 101, 'a line over the bound alone is still held');
  t.equal(JSON.parse(w.get(101)).text.length, 2000);
});

t.test('reads go up to the given id and stop after about maxChars', async (t) => {
  const w = new RecentWindow(1);
  fill(w, 1, 50);
  const all = w.read(1, 50, Infinity);
  t.same(
    all.lines.map((l) => lineId(l)),
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
  t.same(all.next, { id: 51, seg: -1, pos: 0 });
  const upTo = w.read(10, 20, Infinity);
  t.same(
    upTo.lines.map((l) => lineId(l)),
    Array.from({ length: 11 }, (_, i) => i + 10),
    'not past upTo (unwritten events)',
  );
  const small = w.read(1, 50, 1);
  t.equal(small.lines.length, 1, 'at least one line');
  t.equal(small.next.id, 2);
  const some = w.read(1, 50, 200);
  const len = some.lines.reduce((n, l) => n + l.length, 0);
  t.ok(len >= 200 && len - some.lines.at(-1)!.length < 200, 'stops at the first line that reaches maxChars');
});

t.test('lines stay addressable by id across compaction of dropped slots', async (t) => {
  const w = new RecentWindow(1, { maxEvents: 100 });
  fill(w, 1, 20_000);
  t.equal(w.firstId, 19_901);
  t.same(
    w.read(19_901, 20_000, Infinity).lines.map((l) => lineId(l)),
    Array.from({ length: 100 }, (_, i) => 19_901 + i),
  );
});

t.test('lastOfType finds the first of the last n events of a type held, up to an id', async (t) => {
  const w = new RecentWindow(1, { maxEvents: 30 });
  fill(w, 1, 60); // held: 31..60; state events at multiples of 3
  t.same(w.lastOfType('state', 2, 60), { count: 2, first: 57 });
  t.same(w.lastOfType('state', 2, 58), { count: 2, first: 54 }, 'nothing after upTo counts');
  t.same(w.lastOfType('output', 3, 60), { count: 3, first: 56 }, '59, 58, 56');
  t.same(w.lastOfType('state', 100, 60), { count: 10, first: 33 }, 'only what is held');
  t.same(w.lastOfType('none', 5, 60), { count: 0, first: 61 });
  t.same(w.lastOfType('state', 5, 20), { count: 0, first: 21 }, 'upTo below the window');
});
