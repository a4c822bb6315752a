import t from 'tap';
import { LineSplitter } from '../../lib/os/lines.js';

function split(chunks: (string | Buffer)[], max?: number): string[] {
  const out: string[] = [];
  const s = new LineSplitter((l) => out.push(l), max);
  for (const c of chunks) s.push(typeof c === 'string' ? Buffer.from(c) : c);
  s.flush();
  return out;
}

t.test('splits on newlines across chunk boundaries', async (t) => {
  t.same(split(['a\nb', 'c\n', 'd']), ['a', 'bc', 'd']);
  t.same(split(['\n\n']), ['', '']);
  t.same(split(['one', 'two', 'three\n']), ['onetwothree']);
  t.same(split([]), []);
});

t.test('drops the \\r of CRLF', async (t) => {
  t.same(split(['a\r\nb\r', '\nc\r']), ['a', 'b', 'c']);
});

t.test('keeps a multi-byte character split between chunks intact', async (t) => {
  const bytes = Buffer.from('héllo wörld ✓\n');
  const parts = [bytes.subarray(0, 2), bytes.subarray(2, 10), bytes.subarray(10, 15), bytes.subarray(15)];
  t.same(split(parts), ['héllo wörld ✓']);
});

t.test('emits over-long lines in pieces, complete or partial', async (t) => {
  t.same(split(['abcdefghij\n'], 4), ['abcd', 'efgh', 'ij']);
  t.same(split(['abcdef', 'ghij', 'kl\nmn'], 4), ['abcd', 'efgh', 'ijkl', 'mn']);
  t.same(split(['abcd', '\n', 'efghi', '\n'], 4), ['abcd', 'efgh', 'i'], 'no empty piece when a line is exactly the cap');
});

t.test('a final line without a newline is flushed once', async (t) => {
  const out: string[] = [];
  const s = new LineSplitter((l) => out.push(l));
  s.push(Buffer.from('x\ny'));
  s.flush();
  s.flush();
  t.same(out, ['x', 'y']);
});
