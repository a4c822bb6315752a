// The Procstar API's pure parts: the spec parser, RESULT and its parts, /proc parsing, the
// fd plan, proc keys and environments, and how the CLI treats procs.
import t from 'tap';
import { procKey, procSlug } from '../../lib/agent/procs.js';
import { fdResult, procResult, procState, procStatus, procstarError, type ProcView } from '../../lib/api/procstar.js';
import { plan } from '../../lib/cli/converge.js';
import { psRows } from '../../lib/cli/ps.js';
import { MemoryCaptures, openFlags, parseFdName, prepareFds, SetupError } from '../../lib/os/fds.js';
import { parseProcStat, parseProcStatm } from '../../lib/os/procstat.js';
import { parseProcsBody, SpecError } from '../../lib/http/procstar-spec.js';
import { procEnv } from '../../lib/release/launch.js';
import { constants } from 'node:fs';

const opts = { canSwitchUser: false };

t.test('spec parsing: Procstar fields, defaults, unknown fields and pipes refused with the place named', async (t) => {
  const specs = parseProcsBody(
    {
      specs: {
        p: {
          argv: ['/bin/echo', 'x'],
          env: { inherit: ['HOME'], vars: { A: '1', B: null } },
          fds: [
            ['stdin', { null: { flags: 'Default' } }],
            ['stdout', { capture: { mode: 'memory', encoding: 'utf-8', attached: true } }],
            ['stderr', { dup: { fd: 1 } }],
            [4, { file: { path: 'out', flags: 'CreateAppend', mode: 0o600 } }],
            ['5', 'close'],
            ['6', { inherit: {} }],
            ['7', { capture: { format: 'base64' } }],
          ],
          cwd: '/tmp',
        },
      },
    },
    opts,
  );
  const p = specs.get('p')!;
  t.same(p.argv, ['/bin/echo', 'x']);
  t.same(p.environ, { inherit: ['HOME'], vars: { A: '1', B: null } });
  t.same(
    p.fds!.map((e) => [e.fd, e.name, e.spec.type]),
    [
      [0, 'stdin', 'null'],
      [1, 'stdout', 'capture'],
      [2, 'stderr', 'dup'],
      [4, '4', 'file'],
      [5, '5', 'close'],
      [6, '6', 'inherit'],
      [7, '7', 'capture'],
    ],
  );
  t.same(p.fds![6].spec, { type: 'capture', mode: 'tempfile', encoding: null, attached: true }, 'tempfile by default; old format names');
  t.equal(p.cwd, '/tmp');
  t.same(parseProcsBody({ specs: { q: { argv: ['/x'] } } }, opts).get('q')!.environ, { inherit: true, vars: {} }, 'inherit all by default');

  const bad: [unknown, RegExp][] = [
    [{}, /body: missing field "specs"/],
    [{ specs: {}, more: 1 }, /body: unknown field "more"/],
    [{ specs: { a: { argv: [] } } }, /specs\.a\.argv: must not be empty/],
    [{ specs: { a: { argv: 'ls' } } }, /specs\.a\.argv: must be an array/],
    [{ specs: { a: { argv: ['/x', 3] } } }, /specs\.a\.argv\[1\]: must be a string/],
    [{ specs: { a: { argv: ['/x'], bogus: 1 } } }, /specs\.a: unknown field "bogus"/],
    [{ specs: { a: { argv: ['/x'], env: { inherit: 'yes' } } } }, /specs\.a\.env\.inherit/],
    [{ specs: { a: { argv: ['/x'], env: { vars: { A: 1 } } } } }, /specs\.a\.env\.vars\.A: must be a string/],
    [{ specs: { a: { argv: ['/x'], fds: [['stdout', 'pipe-write']] } } }, /pipes between procs\) is not supported/],
    [{ specs: { a: { argv: ['/x'], fds: [['stdout', { 'pipe-read': { proc_id: 'b', fd: 1 } }]] } } }, /pipe-read/],
    [{ specs: { a: { argv: ['/x'], fds: [['stdout', { capture: { mode: 'disk' } }]] } } }, /capture\.mode: must be "memory" or "tempfile"/],
    [{ specs: { a: { argv: ['/x'], fds: [['stdout', { null: { flags: 'Sometimes' } }]] } } }, /null\.flags: must be one of/],
    [
      {
        specs: {
          a: {
            argv: ['/x'],
            fds: [
              ['stdout', 'close'],
              [1, 'close'],
            ],
          },
        },
      },
      /fd 1 appears twice/,
    ],
    [{ specs: { a: { argv: ['/x'], fds: [['12', 'close']] } } }, /fd 12 is not supported/],
    [{ specs: { a: { argv: ['/x'], fds: [['stdio', 'close']] } } }, /"stdio" is not an fd/],
    [{ specs: { a: { argv: ['/x'], fds: [['stdout', { file: {} }]] } } }, /file\.path: is required/],
    [{ specs: { a: { argv: ['/x'], systemd_properties: { slice: {} } } } }, /systemd units are not supported/],
    [{ specs: { a: { argv: ['/x'], user: 'nobody' } } }, /user: needs the agent to run as root/],
  ];
  for (const [body, re] of bad) t.throws(() => parseProcsBody(body, opts), re, JSON.stringify(body));
  try {
    parseProcsBody({ specs: { a: {} } }, opts);
    t.fail('should throw');
  } catch (err) {
    t.ok(err instanceof SpecError, 'a SpecError');
  }
  t.equal(parseProcsBody({ specs: { a: { argv: ['/x'], user: 'app' } } }, { canSwitchUser: true }).get('a')!.user, 'app');
  t.throws(
    () => parseProcsBody({ specs: { a: { argv: ['/x'], user: 'root' } } }, { canSwitchUser: true, agentUser: 'app' }),
    /only as --user app/,
  );
});

const view = (over: Partial<ProcView> = {}): ProcView => ({
  running: false,
  errors: [],
  pid: 42,
  procStat: { pid: 42 },
  procStatm: { size: 1 },
  start: Date.parse('2025-01-01T00:00:00Z'),
  stop: Date.parse('2025-01-01T00:00:01.5Z'),
  now: Date.parse('2025-01-01T00:00:02Z'),
  exit: { code: 3, signal: null, signum: null, coreDump: false, startedAt: 0, endedAt: 0, usage: null },
  fds: [],
  ...over,
});

t.test('RESULT: keys in order, state, times, status and rusage', async (t) => {
  const r = procResult(view());
  t.same(Object.keys(r), ['state', 'errors', 'pid', 'proc_stat', 'proc_statm', 'cgroup_accounting', 'times', 'status', 'rusage', 'fds']);
  t.equal(r.state, 'terminated');
  t.same(r.times, { start: '2025-01-01T00:00:00.000Z', now: '2025-01-01T00:00:02.000Z', stop: '2025-01-01T00:00:01.500Z', elapsed: 1.5 });
  t.same(r.status, { status: 3 << 8, exit_code: 3, signum: null, signal: null, core_dump: false });
  t.equal(r.proc_stat, null, 'only while running');
  t.same(r.rusage, {
    utime: null,
    stime: null,
    maxrss: null,
    minflt: null,
    majflt: null,
    nswap: null,
    inblock: null,
    oublock: null,
    nvcsw: null,
    nivcsw: null,
  });
  const running = procResult(view({ running: true }));
  t.equal(running.state, 'running');
  t.equal(running.status, null);
  t.equal(running.rusage, null);
  t.equal(running.times.stop, null);
  t.equal(running.times.elapsed, 2);
  t.same(running.proc_stat, { pid: 42 });
  t.equal(procState({ running: false, errors: ['x'] }), 'error');
  t.equal(procState({ running: true, errors: ['x'] }), 'running', 'running until it ends, whatever it has to say');
  t.same(procStatus({ code: null, signal: 'SIGSEGV', signum: 11, coreDump: true, startedAt: 0, endedAt: 0 }), {
    status: 11 | 0x80,
    exit_code: null,
    signum: 11,
    signal: 'SIGSEGV',
    core_dump: true,
  });
  t.equal(procStatus({ code: null, signal: null, startedAt: 0, endedAt: 0, error: 'cannot start' }), null);
  const withRusage = procResult(
    view({
      exit: {
        code: 0,
        signal: null,
        startedAt: 0,
        endedAt: 0,
        usage: { utime: 0.5, stime: 0.25, maxrss: 4096, method: { cpu: 'cgroup-v2', maxrss: 'wait4' } },
        rusage: { minflt: 1, majflt: 2, nswap: 0, inblock: 3, oublock: 4, nvcsw: 5, nivcsw: 6 },
      },
    }),
  );
  t.same(withRusage.rusage, {
    utime: 0.5,
    stime: 0.25,
    maxrss: 4096,
    minflt: 1,
    majflt: 2,
    nswap: 0,
    inblock: 3,
    oublock: 4,
    nvcsw: 5,
    nivcsw: 6,
  });
  t.same(withRusage.cgroup_accounting, { cpu: { method: 'cgroup-v2', utime: 0.5, stime: 0.25 }, memory: null });
  t.same(procstarError(404, null), { errors: { status: '404 Not Found', detail: null } });
});

t.test('fds of RESULT: null, text, base64 data, detached', async (t) => {
  const cap = (encoding: 'utf-8' | null, attached = true) => ({ type: 'capture' as const, mode: 'memory' as const, encoding, attached });
  t.equal(fdResult({ name: 'stdin', spec: { type: 'null', flags: 'Default' }, bytes: null, length: 0 }), null);
  t.same(fdResult({ name: 'stdout', spec: cap('utf-8'), bytes: Buffer.from('hé\n'), length: 0 }), {
    type: 'text',
    text: 'hé\n',
    encoding: 'utf-8',
  });
  t.same(fdResult({ name: 'stdout', spec: cap(null), bytes: Buffer.from([0, 255]), length: 0 }), {
    type: 'data',
    data: 'AP8=',
    encoding: 'base64',
  });
  t.same(fdResult({ name: 'stdout', spec: cap(null, false), bytes: null, length: 9 }), { type: 'detached', length: 9, encoding: null });
});

t.test('/proc/PID/stat and statm', async (t) => {
  const stat =
    '1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 2 0 150 50 0 0 20 0 3 0 1000 10000000 200 18446744073709551615 ' +
    '1 1 0 0 0 0 0 4098 4096 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0';
  const s = parseProcStat(stat, { bootTime: Date.parse('2025-01-01T00:00:00Z'), pageSize: 4096 })!;
  t.equal(s.pid, 1234);
  t.equal(s.comm, 'my (odd) prog');
  t.equal(s.state, 'S');
  t.equal(s.tpgid, null);
  t.equal(s.utime, 1.5);
  t.equal(s.stime, 0.5);
  t.equal(s.num_threads, 3);
  t.equal(s.starttime, '2025-01-01T00:00:10.000Z');
  t.equal(s.rss, 200 * 4096);
  t.same(s.sigignore, ['SIGINT', 'SIGPIPE'], 'mask 4098: signals 2 and 13');
  t.same(s.sigcatch, ['SIGPIPE']);
  t.equal(s.exit_signal, 'SIGCHLD');
  t.equal(parseProcStat('garbage', { bootTime: 0, pageSize: 4096 }), null);
  t.same(parseProcStatm('10 5 2 1 0 3 0\n', { bootTime: 0, pageSize: 4096 }), {
    size: 40960,
    resident: 20480,
    shared: 8192,
    text: 4096,
    data: 12288,
  });
});

t.test('the fd plan: stdio entries, staged fd 3, dups and closes for the wrapper', async (t) => {
  const plan3 = prepareFds(
    [
      { fd: 0, name: 'stdin', spec: { type: 'close' } },
      { fd: 1, name: 'stdout', spec: { type: 'capture', mode: 'memory', encoding: 'utf-8', attached: true } },
      { fd: 2, name: 'stderr', spec: { type: 'dup', fd: 1 } },
      { fd: 3, name: '3', spec: { type: 'null', flags: 'Default' } },
    ],
    '/',
    () => '/nonexistent',
  );
  t.equal(plan3.stdio[1], 'pipe');
  t.equal(plan3.pipes.get(1), 1);
  t.equal(plan3.stdio[3], 'pipe', 'fd 3 stays the control pipe');
  t.type(plan3.stdio[4], 'number', "the spec's fd 3 waits at fd 4");
  t.same(plan3.prelude, ['exec 3>&4 4>&-', 'exec 0<&-', 'exec 2>&1']);
  t.same(plan3.watchdogCloses, [4]);
  t.equal(plan3.opened.length, 1);
  for (const n of plan3.opened) (await import('node:fs')).closeSync(n);
  try {
    prepareFds([{ fd: 0, name: 'stdin', spec: { type: 'file', path: '/nonexistent/x', flags: 'Read', mode: 0o666 } }], '/', () => '');
    t.fail('should throw');
  } catch (err) {
    t.ok(err instanceof SetupError);
    t.match((err as Error).message, /^failed to open \/nonexistent\/x for fd 0: ENOENT/);
  }
  t.equal(openFlags('Default', 0), constants.O_RDONLY);
  t.equal(openFlags('Default', 1), constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC);
  t.equal(openFlags('Default', 5), constants.O_RDWR | constants.O_CREAT);
  t.same(['stdin', 'stdout', 'stderr', '7', '07', 'x'].map(parseFdName), [0, 1, 2, 7, null, null]);
});

t.test('memory captures: bytes as written, one cap for all fds, drops counted', async (t) => {
  const c = new MemoryCaptures(10);
  c.push(1, Buffer.from('abc\n'));
  c.push(2, Buffer.from('12345'));
  c.push(1, Buffer.from('defgh'));
  t.equal(c.bytes(1).toString(), 'abc\nd');
  t.equal(c.bytes(2).toString(), '12345');
  t.same([...c.dropped], [[1, 4]]);
});

t.test('proc keys, environments, and the CLI leaving procs alone', async (t) => {
  t.equal(procKey('proc1'), 'proc1');
  t.match(procKey('a/b'), /^~[0-9a-f]{40}$/);
  t.match(procKey('..'), /^~/);
  t.equal(procSlug('proc1'), 'proc:proc1');
  t.same(procEnv({ HOME: '/h', PATH: '/bin', X: '1' }, { inherit: ['HOME', 'USER'], vars: { Y: '2' } }), { HOME: '/h', Y: '2' });
  t.same(procEnv({ HOME: '/h', X: '1' }, { inherit: true, vars: { X: null } }), { HOME: '/h' });
  t.same(procEnv({ HOME: '/h' }, { inherit: false, vars: {} }), {});
  const docs = [
    { slug: 'proc:job', app: 'proc', proc_id: 'job' },
    { slug: 'shop.web.0', app: 'shop' },
  ];
  t.same(
    plan([], docs, () => true).remove.map((d) => d.slug),
    ['shop.web.0'],
    'apply never deletes procs',
  );
  t.equal(psRows([{ slug: 'proc:~abc', proc_id: 'a/b', state: 'exited' }], 0)[0][0], 'proc:a/b');
});
