import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PROCFILE_MAX_BYTES, ProcfileError, describeTypes, parseProcfile, type ProcfileEntry } from '../../lib/release/procfile.js';

const corpus = fileURLToPath(new URL('../../procfiles/', import.meta.url));

function caseNames(kind: 'valid' | 'invalid', ext: string): string[] {
  return readdirSync(corpus + kind)
    .filter((f) => f.endsWith(ext))
    .map((f) => f.slice(0, -ext.length))
    .sort();
}

function thrown(fn: () => unknown): ProcfileError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProcfileError) return err;
    throw err;
  }
  throw new Error('expected a ProcfileError, nothing was thrown');
}

const isUtf8 = (b: Buffer) => {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
};

t.test('corpus: every .Procfile has a .json and there are enough cases', async (t) => {
  for (const kind of ['valid', 'invalid'] as const) {
    const procfiles = caseNames(kind, '.Procfile');
    t.strictSame(procfiles, caseNames(kind, '.json'), `${kind}: .Procfile and .json pair up`);
    t.ok(procfiles.length >= 15, `${kind}: ${procfiles.length} cases`);
  }
});

t.test('corpus: valid', async (t) => {
  for (const name of caseNames('valid', '.Procfile')) {
    t.test(name, async (t) => {
      const bytes = readFileSync(`${corpus}valid/${name}.Procfile`);
      const expected = JSON.parse(readFileSync(`${corpus}valid/${name}.json`, 'utf8')) as ProcfileEntry[];
      const got = parseProcfile(bytes);
      t.strictSame([...got.values()], expected, 'entries, in order');
      t.strictSame(
        [...got.keys()],
        expected.map((e) => e.type),
        'map keys are the types',
      );
      t.strictSame([...parseProcfile(bytes.toString('utf8')).values()], expected, 'same from a string');
    });
  }
});

t.test('corpus: invalid', async (t) => {
  for (const name of caseNames('invalid', '.Procfile')) {
    t.test(name, async (t) => {
      const bytes = readFileSync(`${corpus}invalid/${name}.Procfile`);
      const expected = JSON.parse(readFileSync(`${corpus}invalid/${name}.json`, 'utf8')) as {
        line: number | null;
        message_includes: string;
        options?: { maxBytes?: number };
      };
      const inputs: (string | Buffer)[] = [bytes];
      // A string can't hold invalid UTF-8 (it would become U+FFFD), so only test valid text as a string too.
      if (isUtf8(bytes)) inputs.push(bytes.toString('utf8'));
      for (const input of inputs) {
        const kind = typeof input === 'string' ? 'string' : 'Buffer';
        const err = thrown(() => parseProcfile(input, expected.options));
        t.equal(err.line, expected.line ?? undefined, `${kind}: line`);
        t.ok(err.message.includes(expected.message_includes), `${kind}: message "${err.message}"`);
        const prefix = expected.line === null ? 'Procfile: ' : `Procfile line ${expected.line}: `;
        t.ok(err.message.startsWith(prefix), `${kind}: message starts with "${prefix}"`);
      }
    });
  }
});

t.test('messages read as documented', async (t) => {
  t.equal(thrown(() => parseProcfile('# x\nweb: a\nworker b\n')).message, 'Procfile line 3: expected "<type>: <command>"');
  t.equal(
    thrown(() => parseProcfile('\nweb: a\n\n\n\nworker: b\nweb: c\n')).message,
    'Procfile line 7: duplicate process type "web" (first defined on line 2)',
  );
  const err = thrown(() => parseProcfile('web:'));
  t.ok(err instanceof Error);
  t.equal(err.name, 'ProcfileError');
});

t.test('size cap counts bytes, default 64 KiB', async (t) => {
  t.equal(DEFAULT_PROCFILE_MAX_BYTES, 65536);
  const exact = 'web: ' + 'x'.repeat(65536 - 6) + '\n';
  t.equal(Buffer.byteLength(exact), 65536);
  t.equal(parseProcfile(exact).get('web')?.command.length, 65536 - 6);
  t.equal(parseProcfile(Buffer.from(exact)).size, 1);

  const over = thrown(() => parseProcfile(Buffer.from(exact + 'x')));
  t.equal(over.line, undefined);
  t.match(over.message, /65537 bytes; the limit is 65536/);

  // 40000 two-byte characters: under the limit in UTF-16 code units, over it in bytes.
  t.match(thrown(() => parseProcfile('web: ' + 'é'.repeat(40000))).message, /the limit is 65536/);
  t.equal(parseProcfile('web: ok', { maxBytes: 7 }).size, 1);
  t.match(thrown(() => parseProcfile('web: ok', { maxBytes: 6 })).message, /7 bytes; the limit is 6/);
});

t.test('string-only checks', async (t) => {
  const bom = thrown(() => parseProcfile('\uFEFFweb: a\n'));
  t.equal(bom.line, 1);
  t.match(bom.message, /byte order mark/);
  const lone = thrown(() => parseProcfile('web: a\nworker: b\uD800c\n'));
  t.equal(lone.line, 2);
  t.match(lone.message, /unpaired surrogate/);
  // A well-formed pair is fine.
  t.equal(parseProcfile('web: echo \uD83D\uDE00\n').get('web')?.command, 'echo \u{1F600}');
});

t.test('Buffer views are read from their own offset', async (t) => {
  const whole = Buffer.from('\0\0\0web: a\nworker: b\n');
  const got = parseProcfile(whole.subarray(3));
  t.strictSame([...got.keys()], ['web', 'worker']);
});

t.test('inline env is a plain object even for odd names', async (t) => {
  const env = parseProcfile('web: __proto__=x constructor=y node s\n').get('web')!.env;
  t.equal(Object.getPrototypeOf(env), Object.prototype);
  t.strictSame(Object.keys(env), ['__proto__', 'constructor']);
  t.equal(Object.getOwnPropertyDescriptor(env, '__proto__')?.value, 'x');
  t.equal(env.constructor, 'y');
});

t.test('describeTypes', async (t) => {
  t.equal(describeTypes(parseProcfile('web: a\nworker: b\nclock: c\n')), 'web, worker, clock');
  t.equal(describeTypes(parseProcfile('web: a')), 'web');
  t.equal(describeTypes(new Map()), '(none)');
});
