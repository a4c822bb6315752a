import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { restartGapMs } from '../../bench/lib/marks.js';
import { meetsTarget, type Row } from '../../bench/lib/row.js';
import { median, percentile, summarize } from '../../bench/lib/stats.js';
import { formatTable } from '../../bench/lib/table.js';

t.test('summaries: median of odd and even counts, min and max, raw values kept', async (t) => {
  t.same(summarize([3, 1, 2]), { median: 2, min: 1, max: 3, values: [3, 1, 2] });
  t.equal(summarize([4, 1, 3, 2]).median, 2.5);
  t.equal(median([7]), 7);
  t.throws(() => summarize([]), /no values/);
});

t.test('nearest-rank percentiles', async (t) => {
  const samples = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
  t.equal(percentile(samples, 50), 50);
  t.equal(percentile(samples, 99), 99);
  t.equal(percentile(samples, 100), 100);
  t.equal(percentile([5], 99), 5);
});

t.test('restart gap: first exit to the second start, null until both are logged', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'marks');
  t.equal(await restartGapMs(join(dir, 'missing')), null);
  writeFileSync(file, 'start 1000000000\nexit 1002000000\n');
  t.equal(await restartGapMs(file), null, 'not restarted yet');
  writeFileSync(file, 'start 1000000000\nexit 1002000000\nstart 1009500000\n');
  t.equal(await restartGapMs(file), 7.5);
  writeFileSync(file, 'start 1000000000\nexit 1002000000\nstart 1009500000\nstart 1090000000\ngarbage\n');
  t.equal(await restartGapMs(file), 7.5, 'later starts and junk lines are ignored');
});

t.test('targets are checked on the median, or on what `on` names; the table says so', async (t) => {
  const row = (median: number, on?: number): Row => ({
    id: 'x',
    label: 'thing',
    unit: 's',
    figure: summarize([median]),
    target: { max: 1, text: '<= 1 s', ...(on === undefined ? {} : { on: summarize([on]) }) },
    peers: [{ name: 'peer', figure: summarize([median * 2]) }],
    notes: ['a note'],
  });
  t.equal(meetsTarget(row(0.9)), true);
  t.equal(meetsTarget(row(1.1)), false);
  t.equal(meetsTarget(row(0.5, 1.2)), false, 'checked on `on`');
  t.equal(meetsTarget({ ...row(5), target: undefined }), null);
  const table = formatTable([row(0.9), row(1.1)]);
  t.match(table, /thing\s+0\.900 s\s+0\.900 s\s+0\.900 s\s+<= 1 s\s+yes\s+peer 1\.800 s \(drover 0\.50x\)/);
  t.match(table, /thing\s+1\.100 s.*NO/);
  t.match(table, /notes:\n {2}thing: a note/);
});
