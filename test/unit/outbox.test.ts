import t from 'tap';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Outbox } from '../../lib/store/outbox.js';
import { encode, retryable, sign } from '../../lib/agent/callbacks.js';

t.test('what was added and not done is owed after a reopen, in order; a torn line is ignored', async (t) => {
  const file = join(t.testdir(), 'outbox.ndjson');
  const d = (id: string) => ({ id, key: 'r', url: 'http://x/', format: 'json' as const, fields: { id } });
  const a = new Outbox(file);
  a.add(d('1'));
  a.add(d('2'));
  a.add(d('3'));
  a.done('2');
  // no close: as after a kill -9; then a torn half line
  appendFileSync(file, '{"add":{"id":"4"');
  const b = new Outbox(file);
  t.same(
    b.pending().map((x) => x.id),
    ['1', '3'],
  );
  t.equal(readFileSync(file, 'utf8').trim().split('\n').length, 2, 'compacted on open');
  b.close();
  a.close();
});

t.test('retry rules, encoding, signature', async (t) => {
  t.ok(retryable(null));
  t.ok(retryable(500));
  t.ok(retryable(408));
  t.ok(retryable(429));
  t.notOk(retryable(404));
  t.notOk(retryable(400));
  const form = encode({ id: '1', key: 'r', url: '', format: 'form', fields: { returntype: 'success', signature: 'a b', n: 2 } });
  t.equal(form.type, 'application/x-www-form-urlencoded');
  t.equal(form.body, 'returntype=success&signature=a+b&n=2');
  t.equal(encode({ id: '1', key: 'r', url: '', format: 'json', fields: { a: 1 } }).body, '{"a":1}');
  t.match(sign('k', 'body'), /^sha256=[0-9a-f]{64}$/);
});
