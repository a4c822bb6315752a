import t from 'tap';
import { outputLine } from '../../lib/store/event-log/line.js';
import { WriteQueue, type WriteQueueOptions } from '../../lib/store/event-log/writer.js';
import { waitFor } from '../helpers/wait.js';

interface Sink {
  queue: WriteQueue;
  /** Every batch handed to `write`, as text, and its event count. */
  batches: { text: string; bytes: number; bufBytes: number; count: number }[];
  written: number;
  dropped: number[];
  /** Writes in flight at once, at most. */
  maxInFlight: number;
  /** While set, writes wait for it. */
  gate: Promise<void> | null;
}

function sink(opts: Partial<WriteQueueOptions> = {}): Sink {
  const s: Sink = { batches: [], written: 0, dropped: [], maxInFlight: 0, gate: null, queue: undefined as unknown as WriteQueue };
  let inFlight = 0;
  s.queue = new WriteQueue({
    segmentBytes: 1024 * 1024,
    async write(bufs, bytes, count) {
      inFlight++;
      s.maxInFlight = Math.max(s.maxInFlight, inFlight);
      s.batches.push({ text: Buffer.concat(bufs).toString('utf8'), bytes, bufBytes: bufs.reduce((n, b) => n + b.length, 0), count });
      if (s.gate) await s.gate;
      inFlight--;
    },
    written(count) {
      s.written += count;
    },
    dropped(count) {
      s.dropped.push(count);
    },
    ...opts,
  });
  return s;
}

const lines = (from: number, n: number, text = 'x') =>
  Array.from({ length: n }, (_, i) => outputLine(from + i, 'stdout', `${text}${from + i}`));

t.test('lines are written in order, in one write per turn of the event loop, and flush waits for it', async (t) => {
  const s = sink();
  const first = lines(1, 100);
  for (const l of first) s.queue.push(l);
  t.equal(s.batches.length, 0, 'nothing is written synchronously');
  await s.queue.flush();
  t.equal(s.batches.length, 1, 'one batch for one turn');
  t.equal(s.batches[0].count, 100);
  t.equal(s.batches[0].text, first.join(''));
  t.equal(s.written, 100);
  t.equal(s.queue.queued, 0);
  t.equal(s.batches[0].bufBytes, s.batches[0].bytes, 'bytes is the size of the buffers');
  await s.queue.flush(); // idle: resolves at once
  const second = lines(101, 3, '\u00e9\u{1F600}');
  for (const l of second) s.queue.push(l);
  await s.queue.flush();
  t.equal(s.batches.length, 2);
  t.equal(s.batches[1].text, second.join(''), 'UTF-8 encoded whole');
  t.equal(s.batches[1].bytes, Buffer.byteLength(second.join('')));
  t.equal(s.batches[1].bufBytes, s.batches[1].bytes);
  t.equal(s.written, 103);
});

t.test('one write at a time: what arrives meanwhile goes in the next batch', async (t) => {
  const s = sink();
  let open!: () => void;
  s.gate = new Promise((r) => (open = r));
  const all = lines(1, 20);
  for (const l of all.slice(0, 10)) s.queue.push(l);
  await waitFor(() => s.batches.length === 1, 'the first write');
  for (const l of all.slice(10)) s.queue.push(l);
  await new Promise((r) => setImmediate(r));
  t.equal(s.batches.length, 1, 'no second write while one is in flight');
  t.equal(s.written, 0);
  s.gate = null;
  open();
  await s.queue.flush();
  t.equal(s.maxInFlight, 1);
  t.same(
    s.batches.map((b) => b.count),
    [10, 10],
  );
  t.equal(s.batches.map((b) => b.text).join(''), all.join(''));
  t.equal(s.written, 20);
});

t.test('a line larger than a chunk is written whole, in order with the rest', async (t) => {
  const s = sink({ segmentBytes: 64 * 1024 }); // chunks of 16 KiB
  const big = outputLine(2, 'stdout', 'b'.repeat(100_000));
  const all = [outputLine(1, 'stdout', 'a'), big, outputLine(3, 'stdout', 'c')];
  for (const l of all) s.queue.push(l);
  await s.queue.flush();
  t.equal(s.batches.map((b) => b.text).join(''), all.join(''));
  t.equal(s.written, 3);
});

t.test('many lines are batched up to the batch size, never more than one oversized chunk', async (t) => {
  const s = sink({ segmentBytes: 64 * 1024 }); // batches of about 16 KiB
  const all = lines(1, 5000, 'z'.repeat(50));
  for (const l of all) s.queue.push(l);
  await s.queue.flush();
  t.ok(s.batches.length > 1, `${s.batches.length} batches`);
  t.ok(
    s.batches.every((b) => b.bytes <= 16 * 1024),
    'each batch within its size',
  );
  t.equal(s.batches.map((b) => b.text).join(''), all.join(''));
  t.equal(s.written, 5000);
});

t.test('producers are asked to pause above the high-water mark and to go on below half of it', async (t) => {
  const s = sink({ highWaterBytes: 10_000, maxQueuedBytes: 1_000_000 });
  const calls: boolean[] = [];
  const stop = s.queue.onPressure((c) => calls.push(c));
  const other: boolean[] = [];
  const stopOther = s.queue.onPressure((c) => other.push(c));
  stopOther();
  for (const l of lines(1, 50)) s.queue.push(l);
  t.same(calls, [], 'below the mark');
  t.notOk(s.queue.isCongested);
  for (const l of lines(51, 1000)) s.queue.push(l);
  t.same(calls, [true]);
  t.ok(s.queue.isCongested);
  await s.queue.flush();
  t.same(calls, [true, false]);
  t.notOk(s.queue.isCongested);
  t.same(other, [], 'a removed listener is not called');
  stop();
  for (const l of lines(1051, 1000)) s.queue.push(l);
  await s.queue.flush();
  t.same(calls, [true, false]);
});

t.test('over the hard cap lines are refused and counted, and the count reported once the queue drains', async (t) => {
  const s = sink({ highWaterBytes: 10_000, maxQueuedBytes: 20_000 });
  let refused = 0;
  let id = 0;
  let longest = 0;
  for (let i = 0; i < 2000; i++) {
    if (s.queue.refuse()) refused++;
    else {
      const line = outputLine(++id, 'stdout', `${i} ${'y'.repeat(40)}`);
      longest = Math.max(longest, line.length);
      s.queue.push(line);
    }
  }
  t.ok(refused > 0, `${refused} refused`);
  t.ok(s.queue.queued > 20_000 && s.queue.queued <= 20_000 + longest, 'refused only once over the cap, by less than a line');
  t.same(s.dropped, [], 'not reported while the queue is full');
  await s.queue.flush();
  t.same(s.dropped, [refused], 'reported once, with the count');
  t.equal(s.written, id);
  t.notOk(s.queue.refuse(), 'an empty queue takes lines again');
});
