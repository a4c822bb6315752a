import t from 'tap';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_DOTENV_MAX_BYTES, agentEnv, childEnv, readDotenv, type EnvLayers } from '../../lib/release/env.js';
import { parseProcfile } from '../../lib/release/procfile.js';

const identity = { app: 'shop', node: 'web.0', slug: 'shop-v42', processType: 'web' };

function layers(over: Partial<EnvLayers> = {}): EnvLayers {
  return { agent: {}, dotenv: {}, procfile: {}, request: {}, port: 5000, identity, ...over };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

t.test('agentEnv drops DROVER_* and undefined values, copies the rest', async (t) => {
  const input: NodeJS.ProcessEnv = {
    PATH: '/usr/bin',
    HOME: '/home/agent',
    DROVER_TOKEN: 'secret',
    DROVER_LISTEN: ':7000',
    drover_api_key: 'also-secret',
    DROVERISH: 'kept: no underscore',
    MY_DROVER_THING: 'kept: prefix only',
    GONE: undefined,
  };
  const out = agentEnv(input);
  t.strictSame(out, {
    PATH: '/usr/bin',
    HOME: '/home/agent',
    DROVERISH: 'kept: no underscore',
    MY_DROVER_THING: 'kept: prefix only',
  });
  out.PATH = 'changed';
  t.equal(input.PATH, '/usr/bin', 'a copy, not a view');
});

t.test('agentEnv(process.env) hides a real DROVER_ secret', async (t) => {
  process.env.DROVER_TEST_SECRET = 'hunter2';
  t.teardown(() => {
    delete process.env.DROVER_TEST_SECRET;
  });
  const out = agentEnv(process.env);
  t.equal(out.DROVER_TEST_SECRET, undefined);
  t.equal(out.PATH, process.env.PATH);
  t.notOk(Object.keys(out).some((k) => k.toUpperCase().startsWith('DROVER_')));
});

t.test('childEnv precedence: agent < .env < Procfile < request < PORT/identity', async (t) => {
  const env = childEnv({
    agent: { A: 'agent', B: 'agent', C: 'agent', D: 'agent', ONLY_AGENT: 'agent', PORT: '1' },
    dotenv: { B: 'dotenv', C: 'dotenv', D: 'dotenv', ONLY_DOTENV: 'dotenv', DROVER_APP: 'from-dotenv' },
    procfile: { C: 'procfile', D: 'procfile', ONLY_PROCFILE: 'procfile', DYNO: 'fake.9' },
    request: { D: 'request', ONLY_REQUEST: 'request', PORT: '9999', DROVER_SLUG: 'spoofed' },
    port: 5123,
    identity,
  });
  t.strictSame(env, {
    A: 'agent',
    B: 'dotenv',
    C: 'procfile',
    D: 'request',
    ONLY_AGENT: 'agent',
    PORT: '5123',
    ONLY_DOTENV: 'dotenv',
    DROVER_APP: 'shop',
    ONLY_PROCFILE: 'procfile',
    DYNO: 'web.0',
    ONLY_REQUEST: 'request',
    DROVER_SLUG: 'shop-v42',
    DROVER_PROCESS_TYPE: 'web',
  });
});

t.test('childEnv filters the agent layer even when given process.env as is', async (t) => {
  const env = childEnv(layers({ agent: { PATH: '/bin', DROVER_TOKEN: 'secret', DROVER_APP: 'agent-app' } }));
  t.equal(env.DROVER_TOKEN, undefined);
  t.equal(env.PATH, '/bin');
  t.equal(env.DROVER_APP, 'shop', 'identity, not the agent value');
  t.strictSame(
    Object.keys(env)
      .filter((k) => k.startsWith('DROVER_'))
      .sort(),
    ['DROVER_APP', 'DROVER_PROCESS_TYPE', 'DROVER_SLUG'],
  );
});

t.test('childEnv rejects what spawn() would choke on', async (t) => {
  for (const port of [0, -1, 65536, 1.5, Number.NaN]) {
    t.throws(() => childEnv(layers({ port })), /invalid PORT/, `port ${port}`);
  }
  t.equal(childEnv(layers({ port: 65535 })).PORT, '65535');
  t.throws(() => childEnv(layers({ request: { 'A=B': 'x' } })), /invalid variable name "A=B" in request env/);
  t.throws(() => childEnv(layers({ dotenv: { '': 'x' } })), /invalid variable name "" in \.env env/);
  t.throws(() => childEnv(layers({ request: { A: 'x\0y' } })), /invalid value for A in request env/);
  const notString = { N: 5 } as unknown as Record<string, string>; // e.g. from a JSON body
  t.throws(() => childEnv(layers({ request: notString })), /invalid value for N/);
});

t.test('childEnv keeps __proto__ as a plain key', async (t) => {
  const request = JSON.parse('{"__proto__": "x", "A": "1"}') as Record<string, string>;
  const env = childEnv(layers({ request }));
  t.equal(Object.getPrototypeOf(env), Object.prototype);
  t.equal(Object.getOwnPropertyDescriptor(env, '__proto__')?.value, 'x');
  t.equal(env.A, '1');
});

t.test('readDotenv: missing file or directory is {}', async (t) => {
  const dir = t.testdir({});
  t.strictSame(await readDotenv(dir), {});
  t.strictSame(await readDotenv(join(dir, 'no-such-app')), {});
});

t.test('readDotenv parses with dotenv rules', async (t) => {
  const dir = t.testdir({
    '.env': [
      '# comment',
      'PLAIN=1',
      'export EXPORTED=yes',
      'SPACED = padded  # trailing comment',
      'DOUBLE="a b\\nc"',
      "SINGLE='x # not a comment'",
      'MULTI="line1',
      'line2"',
      'EMPTY=',
      'DUP=first',
      'DUP=second',
      '',
    ].join('\n'),
  });
  t.strictSame(await readDotenv(dir), {
    PLAIN: '1',
    EXPORTED: 'yes',
    SPACED: 'padded',
    DOUBLE: 'a b\nc',
    SINGLE: 'x # not a comment',
    MULTI: 'line1\nline2',
    EMPTY: '',
    DUP: 'second',
  });
});

t.test('readDotenv accepts CRLF and a BOM', async (t) => {
  const dir = t.testdir({ '.env': '\uFEFFA=1\r\nB="two"\r\n' });
  t.strictSame(await readDotenv(dir), { A: '1', B: 'two' });
});

t.test('readDotenv does not print', async (t) => {
  const dir = t.testdir({ '.env': 'A=1\n' });
  const writes: unknown[] = [];
  const orig = { out: process.stdout.write, err: process.stderr.write };
  process.stdout.write = ((chunk: unknown) => (writes.push(chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown) => (writes.push(chunk), true)) as typeof process.stderr.write;
  try {
    await readDotenv(dir);
  } finally {
    process.stdout.write = orig.out;
    process.stderr.write = orig.err;
  }
  t.strictSame(writes, []);
});

t.test('readDotenv size cap', async (t) => {
  t.equal(DEFAULT_DOTENV_MAX_BYTES, 256 * 1024);
  const atCap = 'A=' + 'x'.repeat(DEFAULT_DOTENV_MAX_BYTES - 3) + '\n';
  const dir = t.testdir({ ok: { '.env': atCap }, big: { '.env': atCap + 'B' } });
  t.equal((await readDotenv(join(dir, 'ok'))).A.length, DEFAULT_DOTENV_MAX_BYTES - 3);
  const err = await rejection(readDotenv(join(dir, 'big')));
  t.match(err.message, /^\.env: file is larger than the limit of 262144 bytes$/);

  const small = t.testdir({ '.env': 'A=12345\n' }); // 8 bytes
  t.strictSame(await readDotenv(small, { maxBytes: 8 }), { A: '12345' });
  t.match((await rejection(readDotenv(small, { maxBytes: 7 }))).message, /limit of 7 bytes/);
});

t.test('readDotenv rejects binary, invalid UTF-8, directories and symlinks (a FIFO: test/e2e/env.test.ts)', async (t) => {
  const dir = t.testdir({ nul: {}, latin1: {}, asdir: { '.env': {} }, link: {} });
  writeFileSync(join(dir, 'nul', '.env'), Buffer.from('A=1\nB=\0\0\n'));
  t.match((await rejection(readDotenv(join(dir, 'nul')))).message, /^\.env: contains NUL bytes/);

  writeFileSync(join(dir, 'latin1', '.env'), Buffer.from('A=caf\xe9\n', 'latin1'));
  t.match((await rejection(readDotenv(join(dir, 'latin1')))).message, /^\.env: not valid UTF-8/);

  t.match((await rejection(readDotenv(join(dir, 'asdir')))).message, /^\.env: not a regular file/);

  mkdirSync(join(dir, 'secret'));
  writeFileSync(join(dir, 'secret', 'agent.env'), 'DROVER_TOKEN=secret\n');
  symlinkSync(join(dir, 'secret', 'agent.env'), join(dir, 'link', '.env'));
  t.match((await rejection(readDotenv(join(dir, 'link')))).message, /^\.env: is a symbolic link/);
});

t.test('the pieces together: Procfile + .env + request', async (t) => {
  const dir = t.testdir({ '.env': 'NODE_ENV=development\nDB_URL=postgres://localhost/dev\nLOG=info\n' });
  const entry = parseProcfile('web: NODE_ENV=production LOG=warn node server.js\n').get('web')!;
  const env = childEnv({
    agent: agentEnv({ PATH: '/usr/bin', DROVER_TOKEN: 'secret', LOG: 'agent' }),
    dotenv: await readDotenv(dir),
    procfile: entry.env,
    request: { LOG: 'debug' },
    port: 5001,
    identity,
  });
  t.equal(entry.command, 'node server.js');
  t.strictSame(env, {
    PATH: '/usr/bin',
    LOG: 'debug',
    NODE_ENV: 'production',
    DB_URL: 'postgres://localhost/dev',
    PORT: '5001',
    DYNO: 'web.0',
    DROVER_APP: 'shop',
    DROVER_SLUG: 'shop-v42',
    DROVER_PROCESS_TYPE: 'web',
  });
});
