// Randomized inputs with a fixed seed: the same thousands of cases on every run, so a failure
// reproduces. The Procfile parser must return a well-formed result or throw ProcfileError,
// nothing else; the create-request validator must agree with an independent oracle.
import t from 'tap';
import path from 'node:path';
import { ApiError } from '../../lib/http/errors.js';
import { validateCreate } from '../../lib/http/validate.js';
import { parseProcfile, ProcfileError, TYPE_PATTERN } from '../../lib/release/procfile.js';

/** mulberry32: a tiny, good-enough PRNG that is the same everywhere. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick, chance: (p: number) => next() < p };
}

const ITERATIONS = 4000;

t.test('Procfile parser: well-formed result or ProcfileError, for random input', async (t) => {
  const r = prng(0x5eed1);
  const fragments = [
    'web',
    'worker',
    'clock',
    'w_1',
    '-bad',
    'a.b',
    'x'.repeat(63),
    'y'.repeat(64),
    'é',
    ':',
    ': ',
    ' :',
    '::',
    ' ',
    '\t',
    'node server.js',
    'echo $PORT',
    'A=1 ',
    'B="two words" ',
    "C='x' ",
    'D=$HOME ',
    'E=\\ ',
    'F="a\\"b" ',
    '"',
    "'",
    '\\',
    '\\\\',
    '\\\n',
    '\n',
    '\r\n',
    '\r',
    '#',
    '# comment\n',
    '\0',
    '\x01',
    '\x7f',
    '\x1b[0m',
    '\u2028',
    '\ufeff',
    '\ud800',
    '😀',
    '=',
    '$',
    '`',
    ';',
    '|',
    '&&',
  ];
  const types = ['web', 'worker', 'clock', 'w_1', 'release-2', 'web'];
  const assignments = ['A=1 ', 'B="two words" ', "C='x y' ", 'D=a\\ b ', 'E= ', 'F="$HOME" '];
  const commands = [
    'node server.js',
    'bundle exec puma -p $PORT',
    'sh -c "echo hi; sleep 1"',
    'exec ./bin/run',
    "python -c 'print(1)'",
    'a | b && c',
  ];
  let ok = 0;
  let errors = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    let input: string | Buffer;
    if (r.chance(0.15)) {
      input = Buffer.from(Array.from({ length: r.int(200) }, () => r.int(256)));
    } else if (r.chance(0.3)) {
      const parts: string[] = [];
      const n = r.int(40);
      for (let j = 0; j < n; j++) parts.push(r.pick(fragments));
      input = parts.join('');
      if (r.chance(0.05)) input = input.repeat(1 + r.int(3000)); // large, sometimes over the 64 KiB cap
    } else {
      // Mostly plausible Procfiles, each line mutated now and then.
      const lines: string[] = [];
      for (let n = 1 + r.int(6); n > 0; n--) {
        let line = r.pick([
          () => `${r.pick(types)}:${r.pick(['', ' ', '\t', '  '])}${r.chance(0.3) ? r.pick(assignments) : ''}${r.pick(commands)}`,
          () => r.pick(['', '# a comment', '   # indented comment', '\t']),
        ])();
        if (r.chance(0.15)) {
          const at = r.int(line.length + 1);
          line = line.slice(0, at) + r.pick(fragments) + line.slice(at);
        }
        lines.push(line);
      }
      input = lines.join(r.chance(0.9) ? '\n' : '\r\n') + (r.chance(0.7) ? '\n' : '');
    }
    const text = typeof input === 'string' ? input : input.toString('latin1');
    const lineCount = text.split('\n').length;
    let result: ReturnType<typeof parseProcfile> | undefined;
    let failure: unknown;
    try {
      result = parseProcfile(input);
    } catch (err) {
      failure = err;
    }
    if (failure !== undefined) {
      errors++;
      if (!(failure instanceof ProcfileError)) {
        t.fail(`case ${i} threw ${(failure as Error)?.name}: ${(failure as Error)?.message} for ${JSON.stringify(text.slice(0, 200))}`);
        continue;
      }
      if (!/^Procfile( line \d+)?: ./.test(failure.message)) t.fail(`case ${i}: message ${JSON.stringify(failure.message)}`);
      if (failure.line !== undefined && !(Number.isInteger(failure.line) && failure.line >= 1 && failure.line <= lineCount)) {
        t.fail(`case ${i}: line ${failure.line} outside 1..${lineCount}`);
      }
      continue;
    }
    ok++;
    const entries = [...result!.entries()];
    if (entries.length === 0) t.fail(`case ${i}: an empty result instead of an error`);
    for (const [type, e] of entries) {
      const problems = [
        type !== e.type && 'key differs from type',
        !TYPE_PATTERN.test(type) && `bad type ${JSON.stringify(type)}`,
        (e.command === '' || /^[ \t]|[ \t]$/.test(e.command)) && `untrimmed or empty command ${JSON.stringify(e.command)}`,
        /[\n\0]/.test(e.command) && 'newline or NUL in command',
        Object.entries(e.env).some(([k, v]) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string') && 'bad env',
        !(Number.isInteger(e.line) && e.line >= 1 && e.line <= lineCount) && `line ${e.line}`,
      ].filter(Boolean);
      if (problems.length > 0) t.fail(`case ${i}: ${problems.join(', ')} for ${JSON.stringify(text.slice(0, 200))}`);
    }
    // Deterministic: the same input gives the same answer.
    const again = parseProcfile(input);
    if (JSON.stringify([...again]) !== JSON.stringify(entries)) t.fail(`case ${i}: a second parse differs`);
  }
  t.ok(ok > ITERATIONS / 20, `${ok} inputs parsed`);
  t.ok(errors > ITERATIONS / 20, `${errors} inputs refused with ProcfileError`);
});

// ---- the create-request validator ----------------------------------------------------

// The oracle, written differently from the validator (character loops, not regexes).
const isAlnum = (c: string) => (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
function okName(v: unknown): boolean {
  if (typeof v !== 'string' || v.length < 1 || v.length > 64 || !isAlnum(v[0]) || v.includes('..')) return false;
  return [...v].every((c) => isAlnum(c) || c === '_' || c === '.' || c === '-');
}
function okType(v: unknown): boolean {
  if (typeof v !== 'string' || v.length < 1 || v.length > 63 || v[0] === '-') return false;
  return [...v].every((c) => isAlnum(c) || c === '_' || c === '-');
}
function okUrl(v: unknown, allowFile: boolean, hosts: string[]): boolean {
  if (typeof v !== 'string' || v === '' || v.length > 8192) return false;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return false;
  }
  if (u.protocol === 'file:') return allowFile;
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return false;
  return hosts.length === 0 || hosts.includes(u.hostname);
}
function okEnv(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (typeof v !== 'object' || Array.isArray(v)) return false;
  const entries = Object.entries(v);
  if (entries.length > 1000) return false;
  let bytes = 0;
  for (const [k, val] of entries) {
    if (k === '' || !(isAlnum(k[0]) || k[0] === '_') || (k[0] >= '0' && k[0] <= '9')) return false;
    if (![...k].every((c) => isAlnum(c) || c === '_')) return false;
    if (typeof val !== 'string' || val.includes('\0')) return false;
    // Linux's MAX_ARG_STRLEN: "NAME=value" and its NUL.
    if (Buffer.byteLength(`${k}=${val}`) + 1 > 131072) return false;
    bytes += Buffer.byteLength(k) + Buffer.byteLength(val);
    if (bytes > 256 * 1024) return false;
  }
  return true;
}

t.test('create-request validator agrees with an independent oracle on random requests', async (t) => {
  const r = prng(0xd20fe1);
  const chars = ['a', 'Z', '0', '9', '_', '-', '.', '..', '/', '\\', ' ', '\0', '\n', '%2e', 'é', '😀', ':', '@', '#', '?'];
  const randomString = (max: number) => Array.from({ length: r.int(max) }, () => r.pick(chars)).join('');
  // Nearly valid names: a valid one with one random character (or "..") spliced in, or at its edge.
  const nameish = () => {
    const base = r.pick(['shop', 'web.0', 'a', 'x'.repeat(63), 'my_app-2']);
    const at = r.int(base.length + 1);
    return base.slice(0, at) + r.pick(chars) + base.slice(at);
  };
  const randomValue = (): unknown =>
    r.pick([
      () => randomString(12),
      () => r.int(100),
      () => null,
      () => true,
      () => ['web'],
      () => ({ a: 1 }),
      () => 'x'.repeat(60 + r.int(10)),
      () => undefined,
    ])();
  const urls = [
    'http://127.0.0.1/a.tgz',
    'https://codeload.example.com/x/tar.gz/main',
    'http://localhost/a.tgz',
    'file:///tmp/a.tgz',
    'ftp://127.0.0.1/a',
    'javascript:alert(1)',
    '/relative.tgz',
    'http://[::1',
    'http://user:pw@127.0.0.1/a.tgz',
    'http://127.0.0.1@evil.example/',
    '',
    `http://127.0.0.1/${'a'.repeat(8200)}`,
  ];
  const randomEnv = (): unknown => {
    if (r.chance(0.1)) return randomValue();
    const env: Record<string, unknown> = {};
    const good = ['A', 'PATH', '_x', 'x1', '__proto__', 'constructor'];
    const bad = ['1x', 'A-B', 'A=B', '', 'É', 'a b'];
    for (let i = r.int(5); i > 0; i--)
      env[r.chance(0.9) ? r.pick(good) : r.pick(bad)] = r.chance(0.9)
        ? randomString(8).replaceAll('\0', '')
        : r.chance(0.5)
          ? 'a\0b'
          : randomValue();
    if (r.chance(0.02)) for (let i = 0; i < 1001; i++) env[`V${i}`] = '';
    if (r.chance(0.02)) env.BIG = 'x'.repeat(300_000);
    return env;
  };
  let accepted = 0;
  const refusedBy = new Map<string, number>();
  for (let i = 0; i < ITERATIONS; i++) {
    const allowFileUrls = r.chance(0.3);
    const sourceHosts = r.chance(0.5) ? [] : ['127.0.0.1', 'codeload.example.com'];
    let body: unknown;
    if (r.chance(0.05)) body = r.pick([null, [], 'x', 42, true]);
    else {
      const b: Record<string, unknown> = {
        app: r.chance(0.8) ? r.pick(['shop', 'my-app', 'a.b', 'A_1']) : r.chance(0.6) ? nameish() : randomValue(),
        node: r.chance(0.8) ? r.pick(['web.0', 'worker.12', 'x']) : r.chance(0.6) ? nameish() : randomValue(),
        process_type: r.chance(0.8) ? r.pick(['web', 'worker_2', 'a-b']) : r.chance(0.6) ? nameish() : randomValue(),
        source_url: r.chance(0.1) ? randomValue() : r.chance(0.5) ? 'http://127.0.0.1/a.tgz' : r.pick(urls),
        env: r.chance(0.3) ? undefined : randomEnv(),
      };
      for (const k of Object.keys(b)) if (b[k] === undefined) delete b[k];
      // JSON round trip: what the validator really sees comes from JSON.parse.
      body = JSON.parse(JSON.stringify(b));
    }

    const b = body as Record<string, unknown>;
    const expected =
      typeof body !== 'object' || body === null || Array.isArray(body)
        ? 'body'
        : !okName(b.app)
          ? 'app'
          : !okName(b.node)
            ? 'node'
            : !okType(b.process_type)
              ? 'process_type'
              : !okUrl(b.source_url, allowFileUrls, sourceHosts)
                ? 'source_url'
                : !okEnv(b.env)
                  ? 'env'
                  : null;

    let got: ReturnType<typeof validateCreate> | undefined;
    let err: unknown;
    try {
      got = validateCreate(body, { allowFileUrls, sourceHosts });
    } catch (e) {
      err = e;
    }
    if (err !== undefined) {
      if (!(err instanceof ApiError) || err.status !== 400) {
        t.fail(`case ${i}: threw ${String(err)} for ${JSON.stringify(body).slice(0, 300)}`);
        continue;
      }
      const field = err.field ?? 'body';
      refusedBy.set(field, (refusedBy.get(field) ?? 0) + 1);
      if (field !== expected)
        t.fail(`case ${i}: refused on ${field}, oracle says ${expected}: ${err.message} for ${JSON.stringify(body).slice(0, 300)}`);
      if (err.field && !err.message.startsWith(`${err.field}: `)) t.fail(`case ${i}: message does not name the field: ${err.message}`);
      continue;
    }
    accepted++;
    if (expected !== null) {
      t.fail(`case ${i}: accepted, oracle says ${expected} is bad: ${JSON.stringify(body).slice(0, 300)}`);
      continue;
    }
    // What is accepted is safe to use as file names and to spawn with.
    for (const name of [got!.app, got!.node]) {
      if (path.join('/state', name) !== `/state/${name}` || path.dirname(path.join('/state', name)) !== '/state')
        t.fail(`case ${i}: ${name} escapes`);
    }
    const env = got!.env;
    if (Object.keys(env).length !== Object.keys((b.env as object | undefined) ?? {}).length) t.fail(`case ${i}: env variables lost`);
    if (Object.getPrototypeOf(env) !== Object.prototype || Object.entries(env).some(([, v]) => typeof v !== 'string' || v.includes('\0'))) {
      t.fail(`case ${i}: env is not a plain map of strings`);
    }
  }
  t.ok(accepted > ITERATIONS / 20, `${accepted} requests accepted`);
  for (const field of ['body', 'app', 'node', 'process_type', 'source_url', 'env']) {
    t.ok((refusedBy.get(field) ?? 0) > 20, `${refusedBy.get(field) ?? 0} refused on ${field}`);
  }
});
