import t from 'tap';
import { encodeRequest, parseReply } from '../../lib/os/spawn-helper.js';
import { helperServes } from '../../lib/os/child.js';

t.test('a request: length, then NUL-terminated fields in order', async (t) => {
  const f = encodeRequest(7, {
    argv: ['sh', '-c', 'echo é'],
    cwd: '/srv',
    env: { A: '1', B: 'x=y' },
    user: { uid: 1000, gid: 100, groups: [] },
    rlimits: { nofile: { soft: 1024, hard: null } },
    cgroupFiles: ['/a/cgroup.procs', '/b/cgroup.procs'],
  });
  t.equal(f.readUInt32LE(0), f.length - 4);
  const fields = f.subarray(4).toString('utf8').split('\0');
  t.same(fields, [
    'spawn',
    '7',
    '/srv',
    '1000',
    '100',
    '-',
    '7:1024:inf',
    '/a/cgroup.procs\n/b/cgroup.procs',
    '3',
    'sh',
    '-c',
    'echo é',
    '2',
    'A=1',
    'B=x=y',
    '',
  ]);
  t.same(
    encodeRequest(1, { argv: ['x'], cwd: '/', env: {} })
      .subarray(4)
      .toString()
      .split('\0')
      .slice(3, 8),
    ['', '', '', '', ''],
  );
  t.throws(() => encodeRequest(1, { argv: ['a\0b'], cwd: '/', env: {} }), /NUL/);
  t.throws(() => encodeRequest(1, { argv: ['x'], cwd: '/', env: { A: 'a\0b' } }), /NUL/, 'in the env too');
});

t.test("a restart's request: the same env gives the same fields, another env its own", async (t) => {
  const env = { PATH: '/bin', PORT: '5000' };
  const tail = (b: Buffer) => b.subarray(4).toString('utf8').split('\0').slice(10);
  const first = encodeRequest(1, { argv: ['a'], cwd: '/', env, cgroupFiles: ['/run-1/cgroup.procs'] });
  const again = encodeRequest(2, { argv: ['a'], cwd: '/', env, cgroupFiles: ['/run-2/cgroup.procs'] });
  t.same(tail(first), ['2', 'PATH=/bin', 'PORT=5000', '']);
  t.same(tail(again), tail(first));
  t.match(again.subarray(4).toString('utf8'), /^spawn\x002\x00\/\x00.*\/run-2\/cgroup.procs/s, "the rest is this request's own");
  t.equal(again.readUInt32LE(0), again.length - 4);
  t.same(tail(encodeRequest(3, { argv: ['a'], cwd: '/', env: { ...env, PORT: '5001' } })), ['2', 'PATH=/bin', 'PORT=5001', '']);
});

t.test('replies', async (t) => {
  t.same(parseReply('pid 3 1234'), { kind: 'pid', id: 3, pid: 1234 });
  t.same(
    parseReply('pid 3 1234 1230 987654'),
    { kind: 'pid', id: 3, pid: 1234, keeper: 1230, starttime: 987654 },
    'with its keeper and start time',
  );
  t.same(parseReply('pid 3 1234 0 0'), { kind: 'pid', id: 3, pid: 1234 }, 'zeros: unknown');
  t.equal(parseReply('pid 3 1234 1230'), null, 'both or neither');
  t.same(parseReply('failed 3 2 chdir'), { kind: 'failed', id: 3, errno: 2, stage: 'chdir' });
  t.same(parseReply('cgroup-failed 4 /sys/fs/cgroup/x y/cgroup.procs'), {
    kind: 'cgroup-failed',
    id: 4,
    file: '/sys/fs/cgroup/x y/cgroup.procs',
  });
  t.same(parseReply('exit 5 139 1000 2000000 512'), {
    kind: 'exit',
    id: 5,
    report: { status: 139, utime: 0.001, stime: 2, maxrss: 512 * 1024 },
  });
  t.equal(parseReply('exit 5 nope'), null);
  t.equal(parseReply('pid x 1'), null);
  t.equal(parseReply('hello'), null);
});

t.test('the spawn helper serves plain children; explicit fds and job files are spawned directly', async (t) => {
  const prepared = { stdio: [], prelude: [], watchdogCloses: [], pipes: new Map(), opened: [] };
  t.equal(helperServes({}), true);
  t.equal(helperServes({ prepared }), false, 'a Procstar fd spec');
  t.equal(helperServes({ stdinFile: '/in' }), false, "a job's stdin file");
  t.equal(helperServes({ stdoutFile: '/out' }), false, "a job's stdout file");
});
