import t from 'tap';
import { decodeWaitStatus, mayDumpCore, parseSignal, signalName } from '../../lib/os/signals.js';
import { exitStatus } from '../../lib/os/child.js';
import { parseHelperLine } from '../../lib/os/wait-helper.js';

t.test('signals by name, short name or number', async (t) => {
  t.same(parseSignal('SIGHUP'), { name: 'SIGHUP', number: 1 });
  t.same(parseSignal('hup'), { name: 'SIGHUP', number: 1 });
  t.same(parseSignal(' sigusr1 '), { name: 'SIGUSR1', number: 10 });
  t.same(parseSignal(15), { name: 'SIGTERM', number: 15 });
  t.same(parseSignal('SIGIOT'), { name: 'SIGABRT', number: 6 }, 'aliases give the usual name');
  t.same(parseSignal('SIGRTMIN+2'), { name: 'SIGRTMIN+2', number: 36 });
  t.same(parseSignal(34), { name: 'SIGRTMIN', number: 34 });
  for (const bad of ['SIGBOGUS', '', '1', 0, -9, 32, 65, 1.5, null, true, {}, 'SIGRTMIN+31'])
    t.equal(parseSignal(bad), null, JSON.stringify(bad));
  t.equal(signalName(11), 'SIGSEGV');
  t.equal(signalName(99), null);
});

t.test('wait statuses decode like WIFEXITED / WTERMSIG / WCOREDUMP', async (t) => {
  t.same(decodeWaitStatus(0), { code: 0, signal: null, signum: null, coreDump: false });
  t.same(decodeWaitStatus(3 << 8), { code: 3, signal: null, signum: null, coreDump: false });
  t.same(decodeWaitStatus(255 << 8), { code: 255, signal: null, signum: null, coreDump: false });
  t.same(decodeWaitStatus(11), { code: null, signal: 'SIGSEGV', signum: 11, coreDump: false });
  t.same(decodeWaitStatus(11 | 0x80), { code: null, signal: 'SIGSEGV', signum: 11, coreDump: true });
  t.same(decodeWaitStatus(9), { code: null, signal: 'SIGKILL', signum: 9, coreDump: false });
});

t.test('without the helper, core_dump is inferred only where it cannot be otherwise', async (t) => {
  t.ok(mayDumpCore('SIGSEGV') && mayDumpCore('SIGABRT') && mayDumpCore('SIGQUIT'));
  t.notOk(mayDumpCore('SIGTERM') || mayDumpCore('SIGKILL') || mayDumpCore('SIGHUP'));
  t.same(exitStatus(null, { code: 2, signal: null }), { code: 2, signal: null, signum: null, coreDump: false });
  t.same(exitStatus(null, { code: null, signal: 'SIGTERM' }), { code: null, signal: 'SIGTERM', signum: 15, coreDump: false });
  t.same(
    exitStatus(null, { code: null, signal: 'SIGSEGV' }),
    { code: null, signal: 'SIGSEGV', signum: 11, coreDump: null },
    'unknown, not guessed',
  );
  t.same(exitStatus(null, null), { code: null, signal: null, signum: null, coreDump: null });
  const report = parseHelperLine('exit 139 1500 250 2048');
  t.same(report, { status: 139, utime: 0.0015, stime: 0.00025, maxrss: 2048 * 1024 });
  t.same(
    exitStatus(report, { code: null, signal: 'SIGSEGV' }),
    { code: null, signal: 'SIGSEGV', signum: 11, coreDump: true },
    'the helper knows',
  );
  for (const bad of ['exit', 'exit 1 2 3', 'exit a b c d', 'watchdog 12', 'exit 1 2 3 4 5']) t.equal(parseHelperLine(bad), null, bad);
});
