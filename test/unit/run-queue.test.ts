import t from 'tap';
import { countsByUser, freeSlots, nextToStart, parsePriority, serveOrder, type QueueEntry } from '../../lib/agent/run-queue.js';

const e = (id: string, user: string, seq: number, priority: QueueEntry['priority'] = 'normal'): QueueEntry => ({ id, user, seq, priority });

t.test('round-robin by user, FIFO within a user: 50 submissions do not starve one', async (t) => {
  const entries: QueueEntry[] = [];
  for (let i = 0; i < 50; i++) entries.push(e(`a${i}`, 'alice', i));
  entries.push(e('b0', 'bob', 50));
  const order = serveOrder(entries, new Map()).map((x) => x.id);
  t.same(order.slice(0, 3), ['a0', 'b0', 'a1']);
  t.equal(order.length, 51);
  t.same(
    order.filter((x) => x.startsWith('a')),
    entries.slice(0, 50).map((x) => x.id),
  );
});

t.test('the user served longest ago goes first', async (t) => {
  const order = serveOrder(
    [e('a', 'alice', 1), e('b', 'bob', 2)],
    new Map([
      ['alice', 5],
      ['bob', 3],
    ]),
  );
  t.same(
    order.map((x) => x.id),
    ['b', 'a'],
  );
});

t.test('a run queued again after a restart goes first within its priority, whoever was served last', async (t) => {
  const resumed: QueueEntry = { ...e('b', 'bob', 4), resumed: true };
  const order = serveOrder([e('a1', 'alice', 2), e('a2', 'alice', 3), resumed, e('ad', 'carol', 5, 'admin')], new Map([['bob', 9]]));
  t.same(
    order.map((x) => x.id),
    ['ad', 'b', 'a1', 'a2'],
  );
});

t.test('priorities: admin, then higher numbers, then normal, then low', async (t) => {
  const order = serveOrder([e('l', 'u', 1, 'low'), e('n', 'u', 2), e('h', 'u', 3, 5), e('ad', 'v', 4, 'admin')], new Map());
  t.same(
    order.map((x) => x.id),
    ['ad', 'h', 'n', 'l'],
  );
});

t.test('reserved slots are only for admins; one slot stays open to all', async (t) => {
  const limits = { maxConcurrent: 3, adminReserved: 1 };
  t.same(freeSlots(2, limits), { admin: 1, other: 0 });
  t.same(freeSlots(0, { maxConcurrent: 1, adminReserved: 1 }), { admin: 1, other: 1 });
  t.equal(nextToStart([e('n', 'u', 1)], 2, limits, new Map()), null);
  t.equal(nextToStart([e('n', 'u', 1), e('a', 'v', 2, 'admin')], 2, limits, new Map())?.id, 'a');
  t.equal(nextToStart([e('n', 'u', 1)], 1, limits, new Map())?.id, 'n');
  t.equal(nextToStart([e('a', 'v', 2, 'admin')], 3, limits, new Map()), null);
  t.equal(nextToStart([], 0, limits, new Map()), null);
});

t.test('parsePriority and counts', async (t) => {
  t.equal(parsePriority('admin'), 'admin');
  t.equal(parsePriority(3), 3);
  t.equal(parsePriority('urgent'), null);
  t.equal(parsePriority(Number.NaN), null);
  t.same(countsByUser([e('1', 'a', 1), e('2', 'a', 2), e('3', 'b', 3)]), { a: 2, b: 1 });
});
